"""`persea serve --workers N`: N gateway processes on one port, sharing the database and the
rate limits. What held for two replicas (tests/accounts/test_budget.py) holds for N workers
of one `persea serve`, through the HTTP API: a rate limit is one limit across them (in the
shared file, or in Redis), the budget is never passed, every answered request is exactly
one usage record, nothing is left held, and a worker killed with SIGKILL is replaced while
the others go on answering."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from persea.accounts import Accounts, Price
from persea.db.schema import usage_records
from persea.serve.stub_upstream import LiveServer, StubUpstream, free_port

WORKERS = 3
PRICE = Price(Decimal("1.00"), Decimal("2.00"))  # per million tokens
REDIS_URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    """The worker processes under the supervisor `pid` (not multiprocessing's helpers)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        pids = [int(p) for p in f.read().split()]
    workers = []
    for child in pids:
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    workers.append(child)
        except FileNotFoundError:  # gone meanwhile
            pass
    return workers


def _redis_or_skip() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as err:
        pytest.skip(f"Redis at 127.0.0.1:6379 is not reachable ({type(err).__name__})")
    return REDIS_URL


@pytest.fixture(params=["shared-file", "redis"])
def limits(request):
    return None if request.param == "shared-file" else _redis_or_skip()


@pytest.fixture
def gateway(migrated_url, limits):
    """A stub upstream (each answer after 50 ms, so requests overlap) and `persea serve
    --workers 3` in front of it, on orgs with a tight rate limit and a small budget."""
    accounts = Accounts(migrated_url, actor="test")
    tag = uuid.uuid4().hex[:8]  # fresh rate-limit buckets in a shared Redis
    keys = {}
    for org, terms in {"tight": {"rpm": 5}, "poor": {"monthly_budget": Decimal("0.0003")},
                       "rich": {}}.items():
        accounts.admin.create_plan(f"{org}-{tag}", {"stub": PRICE}, **terms)
        accounts.admin.create_org(f"{org}-{tag}", f"{org}-{tag}")
        keys[org] = accounts.admin.create_key(f"{org}-{tag}").raw_key
    stub = StubUpstream()
    stub.delay = 0.05
    stub_server = LiveServer(stub).start()
    try:
        with serving(migrated_url, stub_server.url, WORKERS,
                     *(["--redis", limits] if limits else [])) as (url, proc):
            yield url, keys, accounts, proc
    finally:
        stub_server.stop()
        accounts.close()


@contextmanager
def serving(db_url: str, stub_url: str, workers: int, *flags: str):
    """`persea serve --workers N` in front of the stub at `stub_url`, on `db_url`, with
    `flags`; yields (its URL, the supervisor process) once every worker is up, and stops it
    with SIGTERM (the workers then finish what they hold) afterwards."""
    port = free_port()
    cmd = [sys.executable, "-m", "persea.cli", "serve", "--workers", str(workers), "--port",
           str(port), "--db", db_url, "--upstream", f"stub={stub_url}/v1", *flags]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src"),
                                            "COLUMNS": "300"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while len(_children(proc.pid)) < workers or not _ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"persea serve did not start:\n{proc.stdout.read()}")
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _post(url: str, key: str, max_tokens: int = 16, stream: bool = False) -> httpx.Response:
    body = {"model": "stub", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens, "stream": stream}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {key}"})


def _many(url: str, key: str, n: int, **kw) -> list[int]:
    with ThreadPoolExecutor(16) as pool:
        return [r.status_code for r in pool.map(lambda i: _post(url, key, stream=i % 3 == 0,
                                                                **kw), range(n))]


def _usage(accounts: Accounts, org_id: str) -> list:
    with accounts.engine.connect() as conn:
        return conn.execute(sa.select(usage_records)
                            .where(usage_records.c.org_id == org_id)).all()


def _settled(accounts: Accounts, org_id: str, answered: int) -> tuple[list, tuple]:
    """Usage records and (spent, held) once every answered request is recorded (a whole
    answer is sent before its record is written)."""
    deadline = time.monotonic() + 30
    while True:
        rows = _usage(accounts, org_id)
        balance = accounts.balance(org_id)
        if (len(rows) >= answered and balance[1] == 0) or time.monotonic() > deadline:
            return rows, balance
        time.sleep(0.05)


def test_workers_share_one_rate_limit_and_one_budget(gateway):
    url, keys, accounts, proc = gateway
    assert len(_children(proc.pid)) == WORKERS

    # rpm 5 is one limit across the three workers: 5 answered, not 5 per worker
    statuses = _many(url, keys["tight"], 24)
    assert statuses.count(200) == 5 and statuses.count(429) == 19, statuses

    # a budget of 0.0003 against holds of ~0.0001 each (up to 48 output tokens at 2/M):
    # concurrent requests on three workers never pass it together
    poor = accounts.authenticate(keys["poor"]).org_id
    statuses = _many(url, keys["poor"], 30, max_tokens=48)
    answered = statuses.count(200)
    assert set(statuses) <= {200, 402} and 0 < answered < 30, statuses
    rows, (spent, held) = _settled(accounts, poor, answered)
    assert len(rows) == answered and len({r.request_id for r in rows}) == answered
    assert held == 0 and spent == sum((r.cost for r in rows), Decimal(0))
    assert spent <= Decimal("0.0003")


def test_a_killed_worker_is_replaced_and_the_rest_is_metered_once(gateway):
    url, keys, accounts, proc = gateway
    rich = accounts.authenticate(keys["rich"]).org_id
    victim = _children(proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while victim in _children(proc.pid) or len(_children(proc.pid)) < WORKERS:
        assert time.monotonic() < deadline, "the supervisor did not replace the worker"
        time.sleep(0.2)
    while not _ready(url):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    statuses = _many(url, keys["rich"], 30)
    assert statuses == [200] * 30
    rows, (spent, held) = _settled(accounts, rich, 30)
    assert len(rows) == 30 and held == 0
    assert spent == sum((r.cost for r in rows), Decimal(0))
