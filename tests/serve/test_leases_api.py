"""The gateway with budget leases on (`create_app(lease_requests=N)`, `persea serve
--budget-leases N`), through the HTTP API on both databases: requests are reserved out of a
lease with no commit before the answer, each answered request is one usage record, a failed
one costs nothing, a small budget is never passed (its requests fall back to per-request
reserves), and at shutdown every lease is given back: nothing stays held."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest
import sqlalchemy as sa

from persea.db.schema import usage_records
from tests.serve.gateway_env import start_env, stop_env, toy_model  # noqa: F401 - fixture


@pytest.fixture
def leased(db_url, toy_model):  # noqa: F811
    env, stub_server = start_env(db_url, toy_model, lease_requests=8)
    stopped = []

    def stop():
        if not stopped:
            stop_env_keep_accounts(env, stub_server)
            stopped.append(True)

    yield env, stop
    stop()
    env.accounts.close()


def stop_env_keep_accounts(env, stub_server) -> None:
    """Stop the gateway (its shutdown gives the leases back) but keep the Accounts open."""
    env.server.stop()
    stub_server.stop()


def _chat(env, org: str, i: int, max_tokens: int = 16) -> httpx.Response:
    return env.post("/v1/chat/completions", {
        "model": "stub", "messages": [{"role": "user", "content": f"hello {i}"}],
        "max_tokens": max_tokens, "stream": i % 3 == 0}, org=org)


def _usage(env, org: str) -> list:
    org_id = env.accounts.authenticate(env.keys[org]).org_id
    with env.accounts.engine.connect() as conn:
        return conn.execute(sa.select(usage_records)
                            .where(usage_records.c.org_id == org_id)).all()


def test_leased_requests_are_each_billed_once_and_nothing_stays_held(leased):
    env, stop = leased
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: _chat(env, "acme", i), range(40)))
    assert [a.status_code for a in answers] == [200] * 40
    book = env.gateway.leases
    assert book.opened >= 1 and book.taken >= 30  # most requests waited for no commit
    env.stub.fail_next = 1  # a failed request out of a lease: released, nothing charged
    failed = _chat(env, "acme", 1)
    assert failed.status_code >= 500
    env.settled()
    stop()  # shutdown gives every lease back
    rows = _usage(env, "acme")
    assert len(rows) == 40 and len({r.request_id for r in rows}) == 40
    spent, held = env.accounts.balance(rows[0].org_id)
    assert held == 0 and spent == sum((r.cost for r in rows), Decimal(0)) > 0


def test_a_small_budget_is_never_passed_with_leases_on(leased):
    env, stop = leased
    # poor: a budget of 0.0002 against holds of ~0.0001 (48 output tokens at 2/M): a lease of
    # 8 such requests never fits, so each reserves alone and the 402s are exact
    with ThreadPoolExecutor(8) as pool:
        statuses = [r.status_code for r in pool.map(
            lambda i: _chat(env, "poor", i, max_tokens=48), range(12))]
    answered = statuses.count(200)
    assert set(statuses) <= {200, 402} and 0 < answered < 12, statuses
    env.settled()
    stop()
    rows = _usage(env, "poor")
    spent, held = env.accounts.balance(rows[0].org_id)
    assert len(rows) == answered and held == 0
    assert spent == sum((r.cost for r in rows), Decimal(0)) <= Decimal("0.0002")


def test_workers_with_leases_share_one_budget_and_give_every_lease_back(migrated_url):
    """`persea serve --workers 2 --budget-leases 8`: two processes, each with its own leases,
    on one database. The rich org's requests are each one usage record; the poor org's
    budget is never passed; after SIGTERM nothing is held."""
    import uuid

    from persea.accounts import Accounts
    from persea.serve.stub_upstream import LiveServer, StubUpstream
    from tests.serve.test_workers import PRICE, _many, serving

    accounts = Accounts(migrated_url, actor="test")
    tag = uuid.uuid4().hex[:8]
    keys, orgs = {}, {}
    for org, terms in {"poor": {"monthly_budget": Decimal("0.0003")}, "rich": {}}.items():
        accounts.admin.create_plan(f"{org}-{tag}", {"stub": PRICE}, **terms)
        orgs[org] = accounts.admin.create_org(f"{org}-{tag}", f"{org}-{tag}").id
        keys[org] = accounts.admin.create_key(f"{org}-{tag}").raw_key
    stub_server = LiveServer(StubUpstream()).start()
    try:
        with serving(migrated_url, stub_server.url, 2, "--budget-leases", "8") as (url, _):
            assert _many(url, keys["rich"], 40) == [200] * 40
            statuses = _many(url, keys["poor"], 30, max_tokens=48)
            answered = statuses.count(200)
            assert set(statuses) <= {200, 402} and 0 < answered < 30, statuses
    finally:
        stub_server.stop()
    try:
        for org, count in (("rich", 40), ("poor", answered)):
            with accounts.engine.connect() as conn:
                rows = conn.execute(sa.select(usage_records)
                                    .where(usage_records.c.org_id == orgs[org])).all()
            spent, held = accounts.balance(orgs[org])
            assert len(rows) == count == len({r.request_id for r in rows}), org
            assert held == 0 and spent == sum((r.cost for r in rows), Decimal(0)), org
        assert accounts.balance(orgs["poor"])[0] <= Decimal("0.0003")
    finally:
        accounts.close()
