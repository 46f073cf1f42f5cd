"""Budgets hold under concurrency; settle records once; release and failures cost nothing;
reservations a killed gateway left behind are given back once expired, not before."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from persea.db.schema import reservations, usage_records
from persea.accounts import (Accounts, AccountsError, BudgetExhausted, Price)
from persea.errors import Kind

# output 1 per million tokens: a request reserving 1000 output tokens holds exactly 0.001
PRICES = {"m": Price(Decimal("0.2"), Decimal("1"))}


@pytest.fixture
def caller(accounts):
    accounts.admin.create_plan("small", PRICES, monthly_budget=Decimal("0.05"))
    accounts.admin.create_org("acme", "small")
    return accounts.authenticate(accounts.admin.create_key("acme").raw_key)


def _usage_rows(accounts):
    with accounts.engine.connect() as conn:
        return conn.execute(sa.select(usage_records)).all()


def test_reserve_holds_worst_case_and_settle_charges_exact_cost(accounts, caller):
    res = accounts.reserve(caller, "m", prompt_tokens=100, max_tokens=1000, request_id="r1")
    assert res.amount == Decimal("0.00002") + Decimal("0.001")
    assert accounts.balance(caller.org_id) == (0, res.amount)
    record = accounts.settle(res, prompt_tokens=100, completion_tokens=37)
    assert (record.input_cost, record.output_cost) == (Decimal("0.00002"), Decimal("0.000037"))
    assert record.cost == Decimal("0.000057") and record.month == "2026-03"
    assert accounts.balance(caller.org_id) == (Decimal("0.000057"), 0)


def test_settle_twice_records_and_charges_once(accounts, caller):
    res = accounts.reserve(caller, "m", 10, 1000, "req-1")
    first = accounts.settle(res, 10, 500)
    again = accounts.settle(res, 10, 500)
    assert again == first
    assert len(_usage_rows(accounts)) == 1
    assert accounts.balance(caller.org_id) == (first.cost, 0)


def test_concurrent_settles_of_one_request_record_once(accounts, caller):
    res = accounts.reserve(caller, "m", 10, 1000, "req-1")
    with ThreadPoolExecutor(8) as pool:
        records = list(pool.map(lambda _: accounts.settle(res, 10, 900), range(8)))
    assert len({r.id for r in records}) == 1 and len(_usage_rows(accounts)) == 1
    assert accounts.balance(caller.org_id) == (records[0].cost, 0)


def test_release_costs_nothing_and_restores_the_budget(accounts, caller):
    res = accounts.reserve(caller, "m", 0, 50_000, "fails")  # the whole budget
    with pytest.raises(BudgetExhausted):
        accounts.reserve(caller, "m", 0, 1, "next")
    accounts.release(res)
    accounts.release(res)  # harmless twice
    assert _usage_rows(accounts) == [] and accounts.balance(caller.org_id) == (0, 0)
    accounts.reserve(caller, "m", 0, 50_000, "retry")  # the budget is whole again
    with pytest.raises(AccountsError, match="released"):
        accounts.settle(res, 0, 10)


def test_budget_exhausted_is_a_refusal_with_a_safe_message(accounts, caller):
    with pytest.raises(BudgetExhausted) as err:
        accounts.reserve(caller, "m", 0, 50_001, "too-big")
    assert err.value.kind == Kind.BUDGET_EXHAUSTED and err.value.code == "insufficient_quota"
    assert "up to 0.050001 and 0.05 is left" in err.value.message
    assert "psk-" not in err.value.message
    assert accounts.balance(caller.org_id) == (0, 0)


def test_a_request_id_is_reserved_once(accounts, caller):
    accounts.reserve(caller, "m", 0, 1000, "same")
    with pytest.raises(AccountsError) as err:
        accounts.reserve(caller, "m", 0, 1000, "same")
    assert err.value.kind == Kind.CONFLICT
    for bad in ("", "x" * 201):
        with pytest.raises(AccountsError, match="request id"):
            accounts.reserve(caller, "m", 0, 1000, bad)
    assert accounts.balance(caller.org_id) == (0, Decimal("0.001"))  # the second held nothing


@pytest.mark.parametrize("threads, attempts", [(16, 8)])
def test_concurrent_reservations_never_pass_the_budget(accounts, caller, migrated_url, threads,
                                                       attempts):
    """16 threads x 8 reservations of 0.001 against a budget of 0.05, through two `Accounts`
    (two gateway replicas, each with its own connection pool): exactly 50 succeed."""
    start = threading.Barrier(threads)
    replicas = [accounts, Accounts(migrated_url, clock=accounts.clock)]

    def worker(t: int) -> int:
        start.wait()
        won = 0
        for i in range(attempts):
            try:
                replicas[t % 2].reserve(caller, "m", 0, 1000, f"t{t}-{i}")
                won += 1
            except BudgetExhausted:
                pass
        return won

    with ThreadPoolExecutor(threads) as pool:
        won = sum(pool.map(worker, range(threads)))
    replicas[1].close()
    spent, held = accounts.balance(caller.org_id)
    assert won == 50 and held == Decimal("0.050") and spent == 0
    with accounts.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(reservations)).scalar() == 50


def test_concurrent_request_lifecycles_spend_at_most_the_budget(accounts, caller):
    """Many threads reserve, then settle (some using fewer tokens) or release (backend
    failed), all at once: spent + held never passes the budget, and spent is exactly the sum
    of the usage records."""
    budget = Decimal("0.05")
    start = threading.Barrier(12)

    def worker(t: int) -> None:
        start.wait()
        for i in range(10):
            try:
                res = accounts.reserve(caller, "m", 5, 1000, f"t{t}-{i}")
            except BudgetExhausted:
                continue
            spent, held = accounts.balance(caller.org_id)
            assert spent + held <= budget
            if (t + i) % 3 == 0:
                accounts.release(res)
            else:
                accounts.settle(res, 5, 100 * (i % 11))

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(worker, range(12)))
    spent, held = accounts.balance(caller.org_id)
    rows = _usage_rows(accounts)
    assert held == 0 and spent <= budget
    assert spent == sum((r.cost for r in rows), Decimal(0)) and len(rows) > 10


def test_killed_gateway_reservation_is_released_once_expired_not_before(
        migrated_url, accounts, caller, clock):
    res = accounts.reserve(caller, "m", 0, 50_000, "in-flight")  # then the gateway dies
    restarted = Accounts(migrated_url, clock=clock, reservation_ttl=accounts.reservation_ttl)
    try:
        assert restarted.reconcile() == 0  # not expired yet: still held
        assert accounts.balance(caller.org_id) == (0, Decimal("0.05"))
        clock.now = res.expires_at - timedelta(seconds=1)
        assert restarted.reconcile() == 0
        clock.now = res.expires_at
        assert restarted.reconcile() == 1
        assert restarted.reconcile() == 0  # once
        assert accounts.balance(caller.org_id) == (0, 0) and _usage_rows(accounts) == []
        restarted.reserve(caller, "m", 0, 50_000, "after-restart")  # budget usable again
    finally:
        restarted.close()


def test_late_settle_after_expiry_charges_once_without_double_release(accounts, caller, clock):
    res = accounts.reserve(caller, "m", 0, 1000, "slow")
    clock.now = res.expires_at
    assert accounts.reconcile() == 1
    record = accounts.settle(res, 0, 400)  # the work was done: it is billed
    assert accounts.balance(caller.org_id) == (Decimal("0.0004"), 0)
    assert accounts.settle(res, 0, 400) == record


def test_monthly_budget_resets_each_utc_calendar_month(accounts, caller, clock):
    clock.now = datetime(2026, 3, 31, 23, 59, 59, tzinfo=timezone.utc)
    march = accounts.reserve(caller, "m", 0, 50_000, "march")
    with pytest.raises(BudgetExhausted):
        accounts.reserve(caller, "m", 0, 1000, "march-2")
    clock.now = datetime(2026, 4, 1, 0, 0, 0, tzinfo=timezone.utc)
    april = accounts.reserve(caller, "m", 0, 50_000, "april")
    # a request reserved in March and settled in April counts in March
    assert accounts.settle(march, 0, 10).month == "2026-03"
    assert accounts.balance(caller.org_id, "2026-03") == (Decimal("0.00001"), 0)
    assert accounts.balance(caller.org_id, "2026-04") == (0, april.amount)


def test_budget_change_applies_at_once_and_unlimited_is_unlimited(accounts, caller):
    accounts.reserve(caller, "m", 0, 50_000, "all")
    with pytest.raises(BudgetExhausted):
        accounts.reserve(caller, "m", 0, 1000, "one-more")
    accounts.admin.update_plan("small", monthly_budget=Decimal("0.051"))
    accounts.reserve(caller, "m", 0, 1000, "one-more")  # the cached caller is not stale
    accounts.admin.update_plan("small", monthly_budget=None)
    accounts.reserve(caller, "m", 0, 10**9, "huge")


@pytest.mark.parametrize("prompt, max_tokens", [(-1, 10), (10, -1), (2**31, 1), (1.5, 1)])
def test_token_counts_out_of_range_are_refused_and_hold_nothing(accounts, caller, prompt,
                                                                max_tokens):
    with pytest.raises(AccountsError, match="token counts"):
        accounts.reserve(caller, "m", prompt, max_tokens, "bad")
    assert accounts.balance(caller.org_id) == (0, 0)


KILLED_GATEWAY = """
import os, signal, sys
from datetime import datetime, timedelta, timezone
from persea.accounts import Accounts
clock = lambda: datetime(2026, 3, 14, 12, 0, tzinfo=timezone.utc)
acc = Accounts(sys.argv[1], clock=clock, reservation_ttl=timedelta(minutes=15))
res = acc.reserve(acc.authenticate(sys.argv[2]), "m", 0, 20_000, "killed-mid-request")
print(res.id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # generation never finishes: no settle, no release
"""


def test_a_really_killed_gateway_leaves_nothing_held_after_reconcile(accounts, migrated_url,
                                                                     clock):
    import subprocess
    import sys

    accounts.admin.create_plan("small", PRICES, monthly_budget=Decimal("0.05"))
    accounts.admin.create_org("acme", "small")
    raw = accounts.admin.create_key("acme").raw_key
    proc = subprocess.run([sys.executable, "-c", KILLED_GATEWAY, migrated_url, raw],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9 and proc.stdout.startswith("res_"), proc.stderr
    org_id = accounts.admin.org("acme").id
    assert accounts.balance(org_id) == (0, Decimal("0.02"))  # held by a dead process
    assert accounts.reconcile() == 0  # the next gateway starts at once: not expired yet
    clock.advance(minutes=15)
    assert accounts.reconcile() == 1
    assert accounts.balance(org_id) == (0, 0) and _usage_rows(accounts) == []


def test_purge_keeps_held_and_recent_reservations_and_settle_stays_idempotent(accounts,
                                                                              caller, clock):
    done = accounts.reserve(caller, "m", 0, 1000, "done")
    record = accounts.settle(done, 0, 10)
    accounts.release(accounts.reserve(caller, "m", 0, 1000, "failed"))
    clock.advance(days=29)
    held = accounts.reserve(caller, "m", 0, 1000, "held-long")
    assert accounts.purge_reservations() == 0  # closed ones expired only 29 days ago
    clock.advance(days=2)
    assert accounts.purge_reservations() == 2  # the settled and the released one
    with accounts.engine.connect() as conn:
        left = conn.execute(sa.select(reservations.c.request_id)).scalars().all()
    assert left == ["held-long"] and held.request_id == "held-long"
    assert accounts.settle(done, 0, 10) == record  # still answered from the usage record
    assert len(_usage_rows(accounts)) == 1
