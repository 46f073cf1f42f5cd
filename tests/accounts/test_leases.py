"""Budget leases (persea.accounts.leases): requests reserved in memory out of a durable chunk
of the budget. On both databases: the books balance to the cent once the leases are given
back, a retired lease's requests still settle and give back their rest, no lease opens
near the budget's end, several processes' leases and requests never pass the budget
together, settling twice charges once, and a killed process's lease comes back through
reconcile."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from persea.accounts import Accounts, AccountsError, BudgetExhausted, Price
from persea.accounts.leases import LeaseBook, NoLease
from persea.accounts.writer import GroupWriter
from persea.db.schema import reservations, usage_records

# output 1 per million tokens: 1000 output tokens hold exactly 0.001
PRICES = {"m": Price(Decimal("0"), Decimal("1"))}
HOLD = Decimal("0.001")


@pytest.fixture
def caller(accounts):
    accounts.admin.create_plan("small", PRICES, monthly_budget=Decimal("0.05"))
    accounts.admin.create_org("acme", "small")
    return accounts.authenticate(accounts.admin.create_key("acme").raw_key)


def _open(book: LeaseBook, caller, size: Decimal):
    lease = book.accounts._alone(book.open_op(caller, "m", size))
    for lease_back, amount in book.add(lease):
        book.accounts._alone(book.shrink_op(lease_back, amount))
    return lease


def _give_back(book: LeaseBook) -> None:
    for lease, amount in book.due(everything=True):
        book.accounts._alone(book.shrink_op(lease, amount))


def _lease_rows(accounts):
    with accounts.engine.connect() as conn:
        return conn.execute(sa.select(reservations).where(
            reservations.c.request_id.like("lease-%"))).all()


def _usage(accounts):
    with accounts.engine.connect() as conn:
        return conn.execute(sa.select(usage_records)).all()


def test_requests_out_of_a_lease_balance_to_the_cent(accounts, caller):
    book = LeaseBook(accounts, requests=4)
    assert book.take(caller, "m", 0, 1000, "r0")[0] is None  # no lease yet
    lease = _open(book, caller, book.chunk(HOLD))
    assert accounts.balance(caller.org_id) == (0, Decimal("0.004"))
    costs = []
    for i, used in enumerate([10, 1000, 0, 500, 999, 3]):  # more than 4: room comes back
        res, amount = book.take(caller, "m", 0, 1000, f"r{i}")
        assert res is not None and res.lease == lease.id and amount == HOLD
        record = accounts._alone(book.settle_op(res, 0, used))
        costs.append(record.cost)
        assert record.cost == Decimal(used) / 1_000_000
    spent, held = accounts.balance(caller.org_id)
    assert spent == sum(costs) and held == Decimal("0.004") - sum(costs)
    _give_back(book)
    assert accounts.balance(caller.org_id) == (sum(costs), 0)
    assert [r.state for r in _lease_rows(accounts)] == ["settled"]  # closed, holds nothing
    assert len(_usage(accounts)) == 6 and book.holding() == 0


def test_a_full_lease_takes_nothing_more(accounts, caller):
    book = LeaseBook(accounts, requests=2)
    _open(book, caller, book.chunk(HOLD))
    assert book.take(caller, "m", 0, 1000, "a")[0] is not None
    assert book.take(caller, "m", 0, 1000, "b")[0] is not None
    assert book.take(caller, "m", 0, 1000, "c")[0] is None  # in flight: 2 holds, no room
    assert book.take(caller, "m", 0, 1001, "d")[0] is None


def test_a_retired_lease_settles_and_releases_its_requests_in_flight(accounts, caller):
    book = LeaseBook(accounts, requests=4)
    _open(book, caller, book.chunk(HOLD))
    settled, released = (book.take(caller, "m", 0, 1000, r)[0] for r in ("s", "x"))
    _give_back(book)  # the room of 2 holds goes back; 2 stay held for the requests in flight
    assert accounts.balance(caller.org_id) == (0, Decimal("0.002"))
    assert book.take(caller, "m", 0, 1000, "late")[0] is None  # retired: takes nothing
    record = accounts._alone(book.settle_op(settled, 0, 250))
    assert accounts.balance(caller.org_id) == (record.cost, HOLD)  # its whole hold left
    lease, amount = book.release(released)
    accounts._alone(book.shrink_op(lease, amount))
    assert accounts.balance(caller.org_id) == (record.cost, 0)
    assert [r.state for r in _lease_rows(accounts)] == ["settled"]
    assert book.holding() == 0


def test_no_lease_opens_near_the_end_of_the_budget(accounts, caller):
    book = LeaseBook(accounts, requests=4, headroom=4)  # needs 4 x 0.004 free
    accounts.reserve(caller, "m", 0, 35_000, "big")  # 0.035 of 0.05 held: 0.015 left
    with pytest.raises(NoLease):
        _open(book, caller, book.chunk(HOLD))
    assert accounts.balance(caller.org_id) == (0, Decimal("0.035"))  # nothing written
    assert _lease_rows(accounts) == []
    assert LeaseBook(accounts, requests=3, headroom=4).chunk(HOLD) == Decimal("0.003")
    assert book.chunk(Decimal(0)) is None  # a free request needs no lease


def test_a_lease_that_runs_dry_while_serving_makes_the_next_one_larger(accounts, caller):
    book = LeaseBook(accounts, requests=2, grow=4)
    org = caller.org_id
    assert book.chunk(HOLD, org) == Decimal("0.002") and book.growth(org) == 1
    _open(book, caller, book.chunk(HOLD, org))
    taken = [book.take(caller, "m", 0, 1000, f"a{i}")[0] for i in range(4)]
    assert [t is not None for t in taken] == [True, True, False, False]
    assert book.growth(org) == 2  # doubled once for that lease, however often it is asked
    grown = _open(book, caller, book.chunk(HOLD, org))
    assert grown.room == Decimal("0.004") and grown.capacity == 4
    assert all(book.take(caller, "m", 0, 1000, f"b{i}")[0] is not None for i in range(4))
    assert book.take(caller, "m", 0, 1000, "b4")[0] is None
    assert book.growth(org) == 4 and book.chunk(HOLD, org) == Decimal("0.008")
    _open(book, caller, book.chunk(HOLD, org))
    for i in range(5):
        book.take(caller, "m", 0, 1000, f"c{i}")
    assert book.growth(org) == 4  # never past `grow`
    # the other organisations' leases keep the base size
    assert book.chunk(HOLD, "another") == book.chunk(HOLD) == Decimal("0.002")


def test_a_lease_retired_with_little_in_flight_makes_the_next_one_smaller(accounts, caller):
    now = [0.0]
    book = LeaseBook(accounts, requests=2, grow=8, seconds=2, clock=lambda: now[0])
    org = caller.org_id
    _open(book, caller, book.chunk(HOLD, org))
    for i in range(3):
        book.take(caller, "m", 0, 1000, f"a{i}")  # dry: growth 2
    lease = _open(book, caller, book.chunk(HOLD, org))  # capacity 4
    for i in range(5):
        book.take(caller, "m", 0, 1000, f"b{i}")  # dry: growth 4
    assert book.growth(org) == 4
    lease = _open(book, caller, book.chunk(HOLD, org))  # capacity 8
    one = book.take(caller, "m", 0, 1000, "lone")[0]  # one in flight at most: under 8 / 4
    accounts._alone(book.settle_op(one, 0, 10))
    now[0] += 2  # past its seconds: retired by age (at shutdown, nothing is learnt)
    for back, amount in book.due():
        accounts._alone(book.shrink_op(back, amount))
    assert lease.retired and book.growth(org) == 2


def test_a_grown_lease_that_does_not_fit_falls_back_to_the_base_size(accounts, caller):
    book = LeaseBook(accounts, requests=4, headroom=4, grow=4)  # base: 4 x 0.004 free
    org = caller.org_id
    _open(book, caller, book.chunk(HOLD, org))
    for i in range(5):
        book.take(caller, "m", 0, 1000, f"a{i}")
    _give_back(book)
    assert book.growth(org) == 2  # the next would need 4 x 0.008 = 0.032 free
    accounts.reserve(caller, "m", 0, 30_000, "big")  # 0.034 of 0.05 held: 0.016 left
    with pytest.raises(NoLease):
        _open(book, caller, book.chunk(HOLD, org))
    assert book.refused(org) is True and book.growth(org) == 1  # grown: try the base size
    lease = _open(book, caller, book.chunk(HOLD, org))
    assert lease.room == Decimal("0.004")
    _give_back(book)
    accounts.reserve(caller, "m", 0, 1_000, "more")  # 0.035 held: 0.015 left, base too big
    with pytest.raises(NoLease):
        _open(book, caller, book.chunk(HOLD, org))
    assert book.refused(org) is False  # even the base size does not fit: per request


def test_settling_a_leased_request_twice_charges_once(accounts, caller):
    book = LeaseBook(accounts, requests=4)
    _open(book, caller, book.chunk(HOLD))
    res = book.take(caller, "m", 0, 1000, "once")[0]
    first = accounts._alone(accounts.settle_op(res, 0, 400))
    again = accounts._alone(accounts.settle_op(res, 0, 400))
    assert again.id == first.id and len(_usage(accounts)) == 1
    assert accounts.balance(caller.org_id) == (first.cost, Decimal("0.004") - first.cost)


def _settle_scenario(accounts, caller, merged: bool, whole: bool):
    """Settles of one lease, alone one after the other or as one batch of the group-commit
    writer (merged: persea.accounts.writer); what is written and answered."""
    book = LeaseBook(accounts, requests=2 if whole else 8)
    _open(book, caller, book.chunk(HOLD))
    if whole:  # the lease retires after the first settle: the others give their whole
        first = book.take(caller, "m", 0, 1000, "w0")[0]  # hold back, until none is left
        held = [first, book.take(caller, "m", 0, 1000, "w1")[0],
                dataclasses.replace(first, id="res_late", request_id="w2")]
        ops = [accounts.settle_op(r, 0, used, whole_hold=i > 0)
               for i, (r, used) in enumerate(zip(held, [10, 700, 20]))]
    else:
        held = [book.take(caller, "m", 0, 1000, f"r{i}")[0] for i in range(6)]
        ops = [accounts.settle_op(r, 0, used)
               for r, used in zip(held, [10, 1000, 0, 500, 999, 3])]
        ops.insert(3, accounts.settle_op(held[1], 0, 1000))  # a retry, in the same batch
    if merged:
        writer = GroupWriter(accounts.engine, start=False, refusals=(AccountsError,))
        futures = [writer.submit(op, key=caller.org_id) for op in ops]
        writer.start()
        answers = [f.result(30) for f in futures]
        writer.close()
        assert (writer.batches, writer.merged) == (1, len(ops))
    else:
        answers = [accounts._alone(op) for op in ops]
    usage = sorted((u.request_id, u.cost, u.completion_tokens) for u in _usage(accounts))
    leases = [(r.amount, r.state) for r in _lease_rows(accounts)]
    return ([(a.request_id, a.cost, a.completion_tokens) for a in answers],
            [answers.index(a) for a in answers], accounts.balance(caller.org_id), leases,
            usage)


@pytest.mark.parametrize("whole", [False, True], ids=["live lease", "retired lease"])
def test_settles_merged_in_one_batch_write_what_they_write_one_by_one(
        accounts, caller, migrated_url, clock, whole):
    alone = _settle_scenario(accounts, caller, merged=False, whole=whole)
    # the same on a second organisation of the same database, merged
    accounts.admin.create_org("acme2", "small")
    other = accounts.authenticate(accounts.admin.create_key("acme2").raw_key)
    with accounts.engine.begin() as conn:  # only the first organisation's rows
        conn.execute(usage_records.delete())
        conn.execute(reservations.delete())
    merged = _settle_scenario(accounts, other, merged=True, whole=whole)
    assert merged == alone
    answers, firsts, (spent, held), leases, usage = merged
    if whole:  # the last whole hold finds less than itself left: it takes that, and closes
        assert leases == [(0, "settled")] and held == 0
        assert spent == Decimal("0.00073")
    else:  # the retry in the batch is answered with the first record, charged once
        assert firsts[3] == 1 and len(usage) == 6
        assert spent == Decimal("0.002512") and held == Decimal("0.008") - spent


def test_a_killed_process_lease_is_given_back_by_reconcile(accounts, caller, clock):
    book = LeaseBook(accounts, requests=8, seconds=2)
    _open(book, caller, book.chunk(HOLD))
    book.take(caller, "m", 0, 1000, "in-flight")  # answered, never settled: the process dies
    assert accounts.reconcile() == 0  # not expired yet: another process may be using it
    clock.advance(seconds=2)
    assert accounts.reconcile() == 0
    clock.advance(minutes=15)  # the lease's time, then the reservation TTL
    assert accounts.reconcile() == 1
    assert accounts.balance(caller.org_id) == (0, 0)


def test_lease_ops_check_their_arguments(accounts, caller):
    book = LeaseBook(accounts)
    with pytest.raises(Exception, match="not available"):
        book.take(caller, "nope", 0, 10, "r")
    with pytest.raises(Exception, match="not available"):
        book.open_op(caller, "nope", Decimal(1))
    with pytest.raises(ValueError):
        LeaseBook(accounts, requests=0)
    with pytest.raises(ValueError):
        LeaseBook(accounts, grow=0)


def test_processes_with_leases_never_pass_the_budget_together(accounts, caller, migrated_url):
    """Two processes (two Accounts, each with its own LeaseBook), 8 threads each, run request
    lifecycles against a budget of 0.05: out of a lease when there is one, else opening one,
    else per request (giving the process's own lease room back first). Spent plus held never
    passes the budget, spent is exactly the usage records' sum, and once the leases are
    given back nothing is held."""
    budget = Decimal("0.05")
    other = Accounts(migrated_url, clock=accounts.clock)
    books = [LeaseBook(accounts, requests=4, headroom=2),
             LeaseBook(other, requests=4, headroom=2)]
    locks = [threading.Lock(), threading.Lock()]
    start = threading.Barrier(16)
    refused = []

    def reserve(p: int, request_id: str):
        book = books[p]
        res = book.take(caller, "m", 0, 1000, request_id)[0]
        if res is not None:
            return res
        with locks[p]:  # one lease opening per process at a time, as the gateway does
            res = book.take(caller, "m", 0, 1000, request_id)[0]
            if res is not None:
                return res
            try:
                _open(book, caller, book.chunk(HOLD))
            except NoLease:
                _give_back(book)
                try:
                    return book.accounts.reserve(caller, "m", 0, 1000, request_id)
                except BudgetExhausted:
                    refused.append(request_id)
                    return None
        return book.take(caller, "m", 0, 1000, request_id)[0]

    def worker(t: int) -> None:
        p = t % 2
        start.wait()
        for i in range(12):
            res = reserve(p, f"t{t}-{i}")
            if res is None:
                continue
            spent, held = accounts.balance(caller.org_id)
            assert spent + held <= budget
            if i % 4 == 3 and res.lease is not None:
                back = books[p].release(res)
                if back is not None:
                    books[p].accounts._alone(books[p].shrink_op(*back))
            elif i % 4 == 3:
                books[p].accounts.release(res)
            else:
                op = (books[p].settle_op if res.lease else books[p].accounts.settle_op)(
                    res, 0, 100 * (i % 10 + 1))
                books[p].accounts._alone(op)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(worker, range(16)))
    for book in books:
        _give_back(book)
    other.close()
    rows = _usage(accounts)
    spent, held = accounts.balance(caller.org_id)
    assert held == 0 and spent == sum((r.cost for r in rows), Decimal(0))
    assert spent <= budget and refused  # the budget did run out
    assert len(rows) == len({r.request_id for r in rows})
    assert books[0].opened + books[1].opened > 0 and books[0].taken + books[1].taken > 0
