"""A real gateway for API tests: uvicorn on a loopback port, a real accounts database, the
built-in toy model and a stub upstream, with orgs on plans that exercise every refusal.

`GatewayEnv` is what the tests get: the gateway's URL, raw keys by org, the `Accounts`
behind it (to look at usage records and balances), the backends and the stub.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest
import sqlalchemy as sa

from persea.db import upgrade
from persea.db.schema import usage_records
from persea.accounts import Accounts, Price
from persea.serve.app import create_app
from persea.serve.backends.builtin import BuiltinBackend
from persea.serve.backends.upstream import UpstreamBackend
from persea.serve.stub_upstream import LiveServer, StubUpstream

ADMIN_TOKEN = "admin-" + "x" * 32
PRICE = Price(Decimal("1.00"), Decimal("2.00"))

# org -> (plan name, plan keyword arguments, models it is sold)
ORGS = {
    "acme": ("standard", {}, ("toy", "stub")),
    "lp": ("logprobs", {"allow_logprobs": True, "max_top_logprobs": 2}, ("toy", "stub")),
    "tight": ("tight", {"rpm": 2}, ("toy", "stub")),
    "poor": ("poor", {"monthly_budget": Decimal("0.0002")}, ("toy", "stub")),
    "toyonly": ("toyonly", {}, ("toy",)),
    "tokens": ("tokens", {"tpm": 600}, ("toy", "stub")),
}


@dataclass
class GatewayEnv:
    url: str
    keys: dict[str, str]
    accounts: Accounts
    toy: BuiltinBackend
    stub: StubUpstream
    server: LiveServer
    gateway: object  # persea.serve.gateway.Gateway, to wait for background settles
    app: object = None  # the app served (persea.serve.app.GatewayApp)

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def headers(self, org: str = "acme") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[org]}"}

    def post(self, path: str, body, org: str | None = "acme", **kw) -> httpx.Response:
        headers = self.headers(org) if org else {}
        if isinstance(body, (bytes, str)):
            return httpx.post(self.url + path, content=body, headers={
                **headers, "Content-Type": "application/json"}, timeout=30, **kw)
        return httpx.post(self.url + path, json=body, headers=headers, timeout=30, **kw)

    def settled(self, seconds: float = 10.0) -> None:
        """Wait until no usage record is still being written (answers go out first)."""
        deadline = time.monotonic() + seconds
        while self.gateway.settling:
            if time.monotonic() > deadline:
                raise AssertionError("settles still running after {seconds} s")
            time.sleep(0.005)

    def balance(self, org: str):
        self.settled()
        return self.accounts.balance(self.accounts.authenticate(self.keys[org]).org_id)

    def usage(self, request_id: str):
        self.settled()
        with self.accounts.engine.connect() as conn:
            return conn.execute(sa.select(usage_records)
                                .where(usage_records.c.request_id == request_id)).first()

    def usage_count(self) -> int:
        self.settled()
        with self.accounts.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(usage_records)).scalar()


def populate(accounts: Accounts) -> dict[str, str]:
    keys = {}
    for org, (plan, terms, models) in ORGS.items():
        accounts.admin.create_plan(plan, {m: PRICE for m in models}, **terms)
        accounts.admin.create_org(org, plan)
        keys[org] = accounts.admin.create_key(org, name="test").raw_key
    return keys


def start_env(db_url: str, toy_model, **app_kwargs) -> tuple[GatewayEnv, LiveServer]:
    """The stub upstream and the gateway, both started; stop both with `stop_env`."""
    upgrade(db_url)
    accounts = Accounts(db_url, actor="test")
    keys = populate(accounts)
    stub = StubUpstream()
    stub_server = LiveServer(stub).start()
    toy = BuiltinBackend("toy", toy_model, torch_threads=1)
    backends = {"toy": toy, "stub": UpstreamBackend("stub", stub_server.url + "/v1",
                                                    upstream_model="stub-model")}
    app = create_app(accounts, backends, admin_token=ADMIN_TOKEN, **app_kwargs)
    server = LiveServer(app).start()
    return GatewayEnv(server.url, keys, accounts, toy, stub, server,
                      app.state.gateway, app), stub_server


def stop_env(env: GatewayEnv, stub_server: LiveServer) -> None:
    env.server.stop()
    stub_server.stop()
    env.accounts.close()


@pytest.fixture(scope="session")
def toy_model():
    """The built-in qwen3-toy teacher, loaded once per test session (about 1.5 s)."""
    from persea.models.sources import load_hf_dir
    from persea.toyworld.builtin import BUILTIN_TEACHERS

    return load_hf_dir("toy", BUILTIN_TEACHERS["qwen3-toy"].path)


@pytest.fixture(scope="module")
def env(tmp_path_factory, toy_model):
    """A gateway on a fresh SQLite database, shared by the tests of one module."""
    db = tmp_path_factory.mktemp("gateway") / "persea.db"
    gateway, stub_server = start_env(f"sqlite:///{db}", toy_model)
    yield gateway
    stop_env(gateway, stub_server)
