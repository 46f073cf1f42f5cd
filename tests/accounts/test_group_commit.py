"""Group commit (persea.accounts.writer): many ops, one transaction, each with its own answer.

A batch is built on purpose by queueing ops on a writer that is not started yet; the writer
then takes them all at once. Runs on SQLite and PostgreSQL (the `accounts` fixture)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from persea.db.schema import reservations, usage_records
from persea.accounts import Accounts, AccountsError, BudgetExhausted, Price
from persea.accounts.writer import GroupWriter, WriterClosed
from tests.serve.gateway_env import PRICE, start_env, stop_env, toy_model  # noqa: F401

# output 1 per million tokens: reserving 1000 output tokens holds exactly 0.001
PRICES = {"m": Price(Decimal("0.2"), Decimal("1"))}


@pytest.fixture
def caller(accounts):
    accounts.admin.create_plan("small", PRICES, monthly_budget=Decimal("0.01"))
    accounts.admin.create_org("acme", "small")
    return accounts.authenticate(accounts.admin.create_key("acme").raw_key)


def _count(accounts, table) -> int:
    with accounts.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


def _outcome(future):
    try:
        return future.result(timeout=30)
    except Exception as err:  # noqa: BLE001 - the test looks at which error
        return err


def test_a_batch_gives_each_reserve_its_own_answer(accounts, caller):
    """12 reserves in one batch against a budget with room for 0.01: the ones that fit are
    held, the ones that would pass the budget fail alone, the total never passes it."""
    writer = GroupWriter(accounts.engine, refusals=(AccountsError,), start=False)
    sizes = [3000, 4000, 5000, 2000, 1000, 1000, 500, 4000, 500, 1, 1, 100]
    futures = [writer.submit(accounts.reserve_op(caller, "m", 0, n, f"r{i}"), key="acme")
               for i, n in enumerate(sizes)]
    writer.start()
    outcomes = [_outcome(f) for f in futures]
    writer.close()
    assert writer.batches == 1 and writer.ops == len(sizes)
    # in order: 3000+4000 fit (7000), 5000 does not, 2000 fits (9000), 1000 fits (10000),
    # then only nothing more fits: every later reserve is refused on its own
    held = [n for n, o in zip(sizes, outcomes) if not isinstance(o, Exception)]
    assert held == [3000, 4000, 2000, 1000]
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert all(isinstance(o, BudgetExhausted) for o in refused) and len(refused) == 8
    assert accounts.balance(caller.org_id) == (0, Decimal("0.010"))
    assert _count(accounts, reservations) == 4


def test_a_batch_mixes_settles_releases_and_refusals(accounts, caller):
    first = accounts.reserve(caller, "m", 0, 4000, "first")
    second = accounts.reserve(caller, "m", 0, 4000, "second")
    writer = GroupWriter(accounts.engine, refusals=(AccountsError,), start=False)
    settled = writer.submit(accounts.settle_op(first, 0, 1000), urgent=False)
    again = writer.submit(accounts.settle_op(first, 0, 1000))  # idempotent inside a batch
    released = writer.submit(accounts.release_op(second))
    # the settle and release above free room before these run, in the same transaction
    fits = writer.submit(accounts.reserve_op(caller, "m", 0, 8000, "fits"))
    duplicate = writer.submit(accounts.reserve_op(caller, "m", 0, 1, "first"))
    writer.start()
    record = settled.result(30)
    assert _outcome(again) == record
    assert released.result(30) is None and fits.result(30).amount == Decimal("0.008")
    dup = _outcome(duplicate)
    assert isinstance(dup, AccountsError) and dup.code == "duplicate_request_id"
    writer.close()
    assert writer.batches == 1
    assert accounts.balance(caller.org_id) == (Decimal("0.001"), Decimal("0.008"))
    assert _count(accounts, usage_records) == 1


def test_an_op_that_crashes_fails_alone(accounts, caller):
    """A bug inside one op (after it wrote) rolls its batch back; every op is applied again
    alone, so only the buggy one fails and nothing it wrote stays; the others are committed
    and the writer goes on with the next batch."""
    writer = GroupWriter(accounts.engine, refusals=(AccountsError,), start=False)

    def crash(conn):
        accounts.reserve_op(caller, "m", 0, 1000, "crash")(conn)  # writes, then fails
        raise RuntimeError("a bug")

    before = writer.submit(accounts.reserve_op(caller, "m", 0, 1000, "before"))
    bad = writer.submit(crash)
    after = writer.submit(accounts.reserve_op(caller, "m", 0, 1000, "after"))
    writer.start()
    assert isinstance(_outcome(bad), RuntimeError)
    assert before.result(30).request_id == "before" and after.result(30).request_id == "after"
    later = writer.submit(accounts.reserve_op(caller, "m", 0, 1000, "later")).result(30)
    writer.close()
    assert later.request_id == "later"
    assert accounts.balance(caller.org_id) == (0, Decimal("0.003"))
    with accounts.engine.connect() as conn:
        ids = set(conn.execute(sa.select(reservations.c.request_id)).scalars())
    assert ids == {"before", "after", "later"}


class _Deadlock(Exception):
    """What psycopg raises for PostgreSQL's deadlock_detected: the SQLSTATE on the error."""

    sqlstate = "40P01"


def _deadlock() -> sa.exc.OperationalError:
    return sa.exc.OperationalError("UPDATE balances ...", {}, _Deadlock("deadlock detected"))


class _Merging:
    """An op of a merge group that writes one reservation row; `apply_many` writes them
    all in one statement, or fails (`broken`) after writing."""

    def __init__(self, accounts, caller, name, broken=False):
        self.op = accounts.reserve_op(caller, "m", 0, 100, name)
        self.merge_group = ("test", broken)
        self.broken = broken

    def __call__(self, conn):
        return self.op(conn).request_id

    @staticmethod
    def apply_many(conn, ops):
        answers = [op(conn) for op in ops]
        if ops[0].broken:
            raise AccountsError("a refusal inside a merged group")
        return answers


@pytest.mark.parametrize("broken", [False, True], ids=["merged", "merge fails"])
def test_ops_of_one_merge_group_are_applied_together_or_each_alone(accounts, caller, broken):
    writer = GroupWriter(accounts.engine, refusals=(AccountsError,), start=False)
    ops = [_Merging(accounts, caller, f"g{i}", broken) for i in range(3)]
    futures = [writer.submit(ops[0], key="acme"),
               writer.submit(accounts.reserve_op(caller, "m", 0, 100, "plain"), key="acme"),
               *(writer.submit(op, key="acme") for op in ops[1:])]
    writer.start()
    answers = [f.result(timeout=30) for f in futures]
    writer.close()
    assert [answers[0], *answers[2:]] == ["g0", "g1", "g2"]
    assert answers[1].request_id == "plain"
    # merged: one batch; failed: the batch rolled back, then each op alone (4 batches more)
    assert (writer.merged, writer.batches) == ((0, 5) if broken else (3, 1))
    assert _count(accounts, reservations) == 4
    assert accounts.balance(caller.org_id)[1] == Decimal("0.0004")


def test_an_op_that_meets_a_deadlock_is_applied_again_and_written_once(accounts, caller):
    """The database aborts an op's transaction as a deadlock victim after the op wrote:
    the rollback undoes that write, the writer applies the op again, and the caller gets one
    reservation, held once."""
    writer = GroupWriter(accounts.engine, refusals=(AccountsError,))
    tries = []

    def victim_once(conn):
        held = accounts.reserve_op(caller, "m", 0, 1000, "victim")(conn)
        tries.append(held)
        if len(tries) == 1:
            raise _deadlock()
        return held

    held = writer.submit(victim_once).result(30)
    writer.close()
    assert held.request_id == "victim" and len(tries) == 2 and writer.retried == 1
    assert accounts.balance(caller.org_id) == (0, Decimal("0.001"))
    assert _count(accounts, reservations) == 1


def test_a_transient_error_that_persists_reaches_the_caller_after_the_retries(accounts,
                                                                            caller):
    writer = GroupWriter(accounts.engine, refusals=(AccountsError,), retries=2)
    tries = []

    def always(conn):
        accounts.reserve_op(caller, "m", 0, 1000, f"always{len(tries)}")(conn)
        tries.append(1)
        raise _deadlock()

    error = _outcome(writer.submit(always))
    # a plain bug is not a transient error: tried once
    bug = _outcome(writer.submit(lambda conn: 1 / 0))
    writer.close()
    assert isinstance(error, sa.exc.OperationalError) and len(tries) == 3
    assert isinstance(bug, ZeroDivisionError) and writer.retried == 2
    assert _count(accounts, reservations) == 0


def test_a_failed_commit_loses_no_committed_work_and_the_writer_lives(accounts, caller):
    """The commit of one batch fails every time: its callers get the error (after each op
    was tried alone, in vain), nothing of it is stored, the batch committed before it stays,
    and the next batch commits."""
    writer = GroupWriter(accounts.engine, refusals=(AccountsError,))
    kept = writer.submit(accounts.reserve_op(caller, "m", 0, 1000, "kept")).result(30)
    broken = threading.Event()

    @event.listens_for(accounts.engine, "commit")
    def _fail(conn):
        if broken.is_set():
            raise RuntimeError("disk full")

    broken.set()
    writer.close()
    writer = GroupWriter(accounts.engine, refusals=(AccountsError,), start=False)
    lost = [writer.submit(accounts.reserve_op(caller, "m", 0, 1000, f"lost{i}"))
            for i in range(3)]
    writer.start()
    assert all(isinstance(_outcome(f), RuntimeError) for f in lost)
    broken.clear()
    after = writer.submit(accounts.reserve_op(caller, "m", 0, 1000, "after")).result(30)
    writer.close()
    event.remove(accounts.engine, "commit", _fail)
    assert kept.request_id == "kept" and after.request_id == "after"
    assert accounts.balance(caller.org_id) == (0, Decimal("0.002"))
    assert _count(accounts, reservations) == 2


def test_lazy_ops_wait_for_company_and_close_applies_them(accounts, caller):
    res = accounts.reserve(caller, "m", 0, 1000, "r")
    writer = GroupWriter(accounts.engine, refusals=(AccountsError,), lazy_delay=60.0)
    lazy = writer.submit(accounts.settle_op(res, 0, 10), urgent=False)
    urgent = writer.submit(accounts.reserve_op(caller, "m", 0, 1000, "next"))
    urgent.result(30)
    assert lazy.result(30).completion_tokens == 10  # it rode along with the reserve
    alone = writer.submit(accounts.settle_op(urgent.result(), 0, 20), urgent=False)
    writer.close()  # does not wait the 60 s: closing applies what is queued
    assert alone.result(0).completion_tokens == 20
    assert accounts.balance(caller.org_id) == (Decimal("0.00003"), 0)
    with pytest.raises(WriterClosed):
        writer.submit(accounts.reserve_op(caller, "m", 0, 1, "too-late"))


def test_two_writers_on_two_replicas_never_pass_the_budget(accounts, caller, migrated_url):
    """Two gateways (two Accounts, two writers) reserve the same org's budget at once: the
    conditional UPDATE inside each op keeps the total within it."""
    replica = Accounts(migrated_url, clock=accounts.clock)
    writers = [GroupWriter(acc.engine, refusals=(AccountsError,)) for acc in (accounts, replica)]

    def worker(t: int) -> int:
        futures = [writers[t % 2].submit(accounts.reserve_op(caller, "m", 0, 1000,
                                                             f"t{t}-{i}"), key="acme")
                   for i in range(6)]
        return sum(not isinstance(_outcome(f), Exception) for f in futures)

    with ThreadPoolExecutor(4) as pool:
        won = sum(pool.map(worker, range(4)))
    for w in writers:
        w.close()
    replica.close()
    assert won == 10
    assert accounts.balance(caller.org_id) == (0, Decimal("0.010"))
    assert _count(accounts, reservations) == 10


def test_many_concurrent_requests_through_the_gateway_are_metered_once(migrated_url,
                                                                       toy_model):
    """48 requests at once (whole and streamed answers, a few backend failures) through a
    gateway whose writes are grouped: every answered request is exactly one usage record,
    failed ones cost nothing, spent stays within the budget and nothing is left held."""
    env, stub_server = start_env(migrated_url, toy_model)
    try:
        env.accounts.admin.create_plan("grouped", {"stub": PRICE},
                                       monthly_budget=Decimal("0.0005"))
        env.accounts.admin.create_org("grouped", "grouped")
        key = env.accounts.admin.create_key("grouped").raw_key
        env.stub.fail_next = 4

        def one(i: int) -> httpx.Response:
            body = {"model": "stub", "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 10, "stream": i % 3 == 0}
            return httpx.post(env.url + "/v1/chat/completions", json=body, timeout=30,
                              headers={"Authorization": f"Bearer {key}"})

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(one, range(48)))
        statuses = [r.status_code for r in answers]
        assert set(statuses) <= {200, 402, 502} and 200 in statuses and 402 in statuses
        caller = env.accounts.authenticate(key)
        env.settled()  # answers go out before their usage records are committed
        spent, held = env.accounts.balance(caller.org_id)
        assert held == 0 and 0 < spent <= Decimal("0.0005")
        with env.accounts.engine.connect() as conn:
            rows = conn.execute(sa.select(usage_records.c.request_id, usage_records.c.cost)
                                .where(usage_records.c.org_id == caller.org_id)).all()
        answered = sorted(r.headers["x-request-id"] for r in answers if r.status_code == 200)
        assert sorted(r.request_id for r in rows) == answered  # one record each, no more
        assert sum(r.cost for r in rows) == spent
        assert env.gateway.writer.ops >= len(answered)
    finally:
        stop_env(env, stub_server)


def test_a_settle_finds_a_record_another_process_wrote_first(accounts, caller):
    """The usage record's unique request id is the last line of defence: when another
    process recorded this request first, settle returns that record, charges nothing and
    leaves the batch usable (ON CONFLICT DO NOTHING, no database error)."""
    res = accounts.reserve(caller, "m", 0, 1000, "raced")
    theirs = accounts.settle(accounts.reserve(caller, "m", 0, 1000, "model"), 0, 7)
    with accounts.engine.begin() as conn:  # as if another gateway had just recorded "raced"
        conn.execute(usage_records.insert().values(
            {**{c: getattr(theirs, c) for c in theirs.__dataclass_fields__},
             "id": "use_theirs", "request_id": "raced",
             "input_per_mtok": Decimal("0.2"), "output_per_mtok": Decimal("1")}))
    writer = GroupWriter(accounts.engine, refusals=(AccountsError,), start=False)
    settled = writer.submit(accounts.settle_op(res, 0, 500))
    after = writer.submit(accounts.reserve_op(caller, "m", 0, 1000, "after"))
    writer.start()
    assert settled.result(30).id == "use_theirs"
    assert after.result(30).request_id == "after"
    writer.close()
    assert writer.batches == 1
    spent, held = accounts.balance(caller.org_id)
    assert spent == Decimal("0.000007")  # only "model" was charged through settle
    assert held == Decimal("0.002")  # "raced" still held (its own record was not written)


def test_wal_checkpoints_leave_the_commit_path(tmp_path):
    """With a WalCheckpointer, commits never checkpoint (wal_autocheckpoint=0 on every new
    connection) and its own checkpoint copies the whole WAL back; closing restores the
    default for connections made afterwards."""
    from persea.db import make_engine
    from persea.accounts.writer import WalCheckpointer

    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x TEXT)")
    checkpointer = WalCheckpointer(engine, interval=3600)  # by hand below
    with engine.begin() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        for i in range(200):
            conn.exec_driver_sql("INSERT INTO t VALUES (?)", (str(i) * 500,))
    before = (tmp_path / "w.db").stat().st_size  # the rows are still only in the WAL
    checkpointer.checkpoint()
    assert (tmp_path / "w.db").stat().st_size > before + 50_000  # copied back
    raw = engine.raw_connection()
    busy, frames, copied = raw.driver_connection.execute(
        "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    raw.close()
    assert busy == 0 and copied == frames  # nothing was left behind
    checkpointer.close()
    engine.dispose()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
    engine.dispose()
