"""Operations and admin: health, readiness, Prometheus metrics, the admin API behind its own
token, and what `persea serve` sets up on an empty database."""

from __future__ import annotations

import logging

import httpx
import pytest
import sqlalchemy as sa

from persea.errors import PerseaError
from tests.serve.gateway_env import ADMIN_TOKEN, env, toy_model  # noqa: F401 - fixtures

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CHAT = {"model": "stub", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def test_health_and_readiness(env):
    assert httpx.get(env.url + "/healthz").json() == {"status": "ok"}
    r = httpx.get(env.url + "/readyz")
    assert r.status_code == 200
    assert r.json() == {"ready": True, "database": True, "rate_limiter": True,
                        "models": {"toy": True, "stub": True}}


def _metric(text: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_tokens_and_rejections(env):
    before = httpx.get(env.url + "/metrics").text
    r = env.post("/v1/chat/completions", CHAT)
    assert r.status_code == 200
    env.settled()  # tokens are counted when the usage is recorded
    env.post("/v1/chat/completions", CHAT, org=None)  # 401
    env.post("/v1/chat/completions", {**CHAT, "model": "nope"})  # 404
    after = httpx.get(env.url + "/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    route = "/v1/chat/completions"
    for status, added in (("200", 1), ("401", 1), ("404", 1)):
        assert _metric(text, "persea_requests_total", route=route, status=status) - \
            _metric(before, "persea_requests_total", route=route, status=status) == added
    usage = r.json()["usage"]
    for name, key in (("persea_prompt_tokens_total", "prompt_tokens"),
                      ("persea_completion_tokens_total", "completion_tokens")):
        assert _metric(text, name, model="stub") - _metric(before, name, model="stub") \
            == usage[key]
    for reason in ("invalid_api_key", "model_not_found"):
        assert _metric(text, "persea_rejections_total", reason=reason) - \
            _metric(before, "persea_rejections_total", reason=reason) == 1
    assert _metric(text, "persea_request_seconds_count", route=route) >= 3
    assert env.keys["acme"] not in text


def test_a_settle_that_fails_after_the_answer_is_logged_and_not_counted(
        env, monkeypatch, caplog):
    """A whole answer goes out before its usage record is written: when that write fails
    (the database went away), the failure is logged, the tokens are not counted as
    charged, and the reservation stays held for reconcile to give back."""
    caplog.set_level(logging.ERROR, logger="persea.serve")
    gw = env.gateway

    def failing(reservation, *args, **kwargs):
        def op(conn):
            raise sa.exc.OperationalError("UPDATE balances", {}, Exception("disk I/O error"))
        return op

    monkeypatch.setattr(gw, "_settle_op", failing)
    before = httpx.get(env.url + "/metrics").text
    r = env.post("/v1/chat/completions", CHAT)
    assert r.status_code == 200  # the answer was not held back for the settle
    env.settled()  # the failed settle is not left waiting for
    after = httpx.get(env.url + "/metrics").text
    for name in ("persea_prompt_tokens_total", "persea_completion_tokens_total"):
        assert _metric(after, name, model="stub") == _metric(before, name, model="stub")
    assert f"settling {r.headers['x-request-id']} failed: OperationalError" in caplog.text
    assert "disk I/O error" not in caplog.text  # by type only: the text may hold the URL
    assert env.balance("acme")[1] > 0  # still held: reconcile gives it back


def test_admin_api_needs_its_own_token(env):
    for headers in ({}, {"Authorization": "Bearer wrong"}, env.headers("acme")):
        r = httpx.post(env.url + "/admin/orgs", json={"name": "x", "plan": "standard"},
                       headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_admin_token"


def test_admin_creates_plan_org_key_then_reports_usage(env):
    plan = {"name": "gold", "prices": {"stub": {"input_per_mtok": "2",
                                                "output_per_mtok": "4.5"}},
            "rpm": 100, "monthly_budget": "25.00"}
    r = httpx.post(env.url + "/admin/plans", json=plan, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["prices"]["stub"] == {"input_per_mtok": "2", "output_per_mtok": "4.5"}
    r = httpx.post(env.url + "/admin/orgs", json={"name": "globex", "plan": "gold"},
                   headers=ADMIN)
    assert r.status_code == 201 and r.json()["plan"] == "gold"
    r = httpx.post(env.url + "/admin/orgs/globex/keys", json={"name": "ci"}, headers=ADMIN)
    assert r.status_code == 201
    key = r.json()["key"]
    assert key.startswith("psk-") and r.json()["prefix"] == key[:8]
    listed = httpx.get(env.url + "/admin/orgs/globex/keys", headers=ADMIN).json()["data"]
    assert [k["id"] for k in listed] == [r.json()["id"]] and key not in str(listed)

    answer = httpx.post(env.url + "/v1/chat/completions", json=CHAT,
                        headers={"Authorization": f"Bearer {key}"}).json()
    u = answer["usage"]
    env.settled()  # the answer goes out before its usage record is written
    usage = httpx.get(env.url + "/admin/orgs/globex/usage", headers=ADMIN).json()
    from decimal import Decimal

    expected = (Decimal(2) * u["prompt_tokens"] + Decimal("4.5") * u["completion_tokens"]) \
        / 1_000_000
    assert Decimal(usage["spent"]) == expected and usage["reserved"] == "0"
    assert Decimal(usage["left"]) == Decimal("25") - expected

    # Moving the org to a plan that does not sell `stub` refuses it at once.
    r = httpx.put(env.url + "/admin/orgs/globex/plan", json={"plan": "toyonly"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["plan"] == "toyonly"
    r = httpx.post(env.url + "/v1/chat/completions", json=CHAT,
                   headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403


def test_admin_errors_are_in_shape(env):
    r = httpx.post(env.url + "/admin/orgs", json={"name": "y", "plan": "no-such-plan"},
                   headers=ADMIN)
    assert r.status_code in (400, 404) and "no-such-plan" in r.json()["error"]["message"]
    r = httpx.post(env.url + "/admin/keys/key_missing/revoke", headers=ADMIN)
    assert r.status_code == 404
    r = httpx.post(env.url + "/admin/orgs", json={"name": "z"}, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == "plan"


def test_first_start_creates_a_default_org_and_one_key(tmp_path):
    from persea.db import upgrade
    from persea.accounts import Accounts
    from persea.cli.serve import bootstrap

    url = f"sqlite:///{tmp_path / 'p.db'}"
    upgrade(url)
    accounts = Accounts(url)
    key = bootstrap(accounts, ["persea-small", "big"])
    caller = accounts.authenticate(key)
    assert caller.org_name == "default" and sorted(caller.plan.prices) == ["big",
                                                                          "persea-small"]
    assert bootstrap(accounts, ["persea-small"]) is None  # not on a second start
    assert len(accounts.admin.keys()) == 1
    accounts.close()


@pytest.mark.parametrize("flag", [["--model", "nameonly"], ["--upstream", "x=ftp://h"],
                                  ["--model", "a=/no/such/dir"]])
def test_serve_refuses_bad_model_flags(flag):
    from persea.cli.serve import ServeOptions, build_backends

    key = "models" if flag[0] == "--model" else "upstreams"
    with pytest.raises(PerseaError) as err:
        build_backends(ServeOptions(**{key: [flag[1]]}))
    assert flag[0] in err.value.message


def test_start_gives_back_reservations_a_killed_gateway_left(tmp_path):
    from datetime import datetime, timedelta, timezone

    from persea.db import upgrade
    from persea.accounts import Accounts
    from persea.serve.app import create_app
    from tests.serve.gateway_env import populate
    from persea.serve.stub_upstream import LiveServer

    url = f"sqlite:///{tmp_path / 'p.db'}"
    upgrade(url)
    an_hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    earlier = Accounts(url, clock=lambda: an_hour_ago)
    keys = populate(earlier)
    caller = earlier.authenticate(keys["acme"])
    earlier.reserve(caller, "stub", 100, 1000, "req-left-behind")  # never settled
    assert earlier.balance(caller.org_id, an_hour_ago.strftime("%Y-%m"))[1] > 0
    earlier.close()

    accounts = Accounts(url)
    with LiveServer(create_app(accounts, {})):
        pass  # startup ran reconcile()
    assert accounts.balance(caller.org_id, an_hour_ago.strftime("%Y-%m"))[1] == 0
    accounts.close()
