"""The money path through HTTP on both databases (SQLite and PostgreSQL, from conftest's
`migrated_url`): many concurrent callers never spend past the budget, and every answered
request is exactly one usage record whose costs add up to what was spent."""

from __future__ import annotations

import concurrent.futures

import httpx
import sqlalchemy as sa

from persea.db.schema import usage_records
from tests.serve.gateway_env import start_env, stop_env, toy_model  # noqa: F401 - fixture

CHAT = {"model": "stub", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


def test_concurrent_callers_stay_within_budget_and_are_metered_once(migrated_url, toy_model):
    env, stub_server = start_env(migrated_url, toy_model)
    try:
        def one(_):
            return httpx.post(env.url + "/v1/chat/completions", json=CHAT,
                              headers=env.headers("poor"), timeout=30)

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(one, range(24)))
        statuses = [r.status_code for r in answers]
        assert set(statuses) <= {200, 402} and 200 in statuses and 402 in statuses
        caller = env.accounts.authenticate(env.keys["poor"])
        spent, reserved = env.balance("poor")
        assert spent <= caller.plan.monthly_budget and reserved == 0
        with env.accounts.engine.connect() as conn:
            rows = conn.execute(sa.select(usage_records.c.request_id, usage_records.c.cost,
                                          usage_records.c.completion_tokens)
                                .where(usage_records.c.org_id == caller.org_id)).all()
        ok = [r.json() for r in answers if r.status_code == 200]
        assert sorted(r.request_id for r in rows) == sorted(a["id"] for a in ok)
        assert sum(r.cost for r in rows) == spent
        assert sum(r.completion_tokens for r in rows) == \
            sum(a["usage"]["completion_tokens"] for a in ok)
    finally:
        stop_env(env, stub_server)


def test_rate_limits_in_redis_through_the_gateway(tmp_path, toy_model):
    import uuid

    import pytest
    import redis

    from persea.serve.limits import RedisLimiter

    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as err:
        pytest.skip(f"Redis at 127.0.0.1:6379 is not reachable ({type(err).__name__}); "
                    "the CI script starts it")
    prefix = f"persea-test:{uuid.uuid4().hex}:"
    env, stub_server = start_env(f"sqlite:///{tmp_path / 'p.db'}", toy_model,
                                 limiter=RedisLimiter(url, prefix=prefix))
    try:
        codes = [httpx.post(env.url + "/v1/chat/completions", json=CHAT,
                            headers=env.headers("tight")).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert httpx.get(env.url + "/readyz").json()["rate_limiter"] is True
        keys = list(redis.Redis.from_url(url).scan_iter(match=prefix + "*"))
        assert keys  # the buckets live in Redis, not in the process
    finally:
        stop_env(env, stub_server)
        r = redis.Redis.from_url(url)
        for key in r.scan_iter(match=prefix + "*"):
            r.delete(key)


def test_unreachable_redis_fails_closed_with_503(tmp_path, toy_model):
    from persea.serve.limits import RedisLimiter
    from persea.serve.stub_upstream import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    env, stub_server = start_env(f"sqlite:///{tmp_path / 'p.db'}", toy_model,
                                 limiter=RedisLimiter(dead))
    try:
        r = httpx.post(env.url + "/v1/chat/completions", json=CHAT,
                       headers=env.headers("tight"))
        assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable"
        assert dead not in r.text
        assert env.usage_count() == 0
        ready = httpx.get(env.url + "/readyz")
        assert ready.status_code == 503 and ready.json()["rate_limiter"] is False
    finally:
        stop_env(env, stub_server)


def test_unreachable_database_is_a_503_without_its_url(tmp_path, toy_model):
    from persea.db import make_engine

    env, stub_server = start_env(f"sqlite:///{tmp_path / 'p.db'}", toy_model)
    try:
        assert httpx.post(env.url + "/v1/chat/completions", json=CHAT,
                          headers=env.headers()).status_code == 200  # key now cached
        env.settled()
        gone = tmp_path / "no-such-dir" / "secret-name.db"
        env.accounts.engine = make_engine(f"sqlite:///{gone}")  # as if the disk went away
        r = httpx.post(env.url + "/v1/chat/completions", json=CHAT, headers=env.headers())
        assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable"
        assert "secret-name" not in r.text
        assert httpx.get(env.url + "/readyz").json()["database"] is False
    finally:
        stop_env(env, stub_server)
