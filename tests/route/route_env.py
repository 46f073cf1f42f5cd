"""A real gateway serving routes over upstream stubs: uvicorn on loopback, a real accounts
database, and a breaker whose clock the test moves by hand.

Models: `primary` and `backup` (each its own stub upstream, priced differently so the bill
shows which answered) and `dead` (a loopback port nobody listens on). Routes are given per
test as persea.yaml's `serve.routes` mapping.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa

from persea.accounts import Accounts, Price
from persea.db import upgrade
from persea.db.schema import usage_records
from persea.project import RouteSpec
from persea.route.breaker import BreakerSettings, MemoryBreaker
from persea.route.policy import Router, build_routes
from persea.serve.app import create_app
from persea.serve.backends.upstream import UpstreamBackend
from persea.serve.stub_upstream import LiveServer, StubUpstream, free_port

PRICES = {"primary": Price(Decimal("1.00"), Decimal("2.00")),
          "backup": Price(Decimal("3.00"), Decimal("5.00")),
          "dead": Price(Decimal("0.50"), Decimal("0.50"))}


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self, start: float = 1_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RouteEnv:
    url: str
    key: str
    accounts: Accounts
    stubs: dict[str, StubUpstream]
    servers: list[LiveServer]
    gateway: object
    clock: FakeClock

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def settled(self, seconds: float = 10.0) -> None:
        deadline = time.monotonic() + seconds
        while self.gateway.settling:
            if time.monotonic() > deadline:
                raise AssertionError(f"settles still running after {seconds} s")
            time.sleep(0.005)

    def usage(self, request_id: str):
        self.settled()
        with self.accounts.engine.connect() as conn:
            return conn.execute(sa.select(usage_records)
                                .where(usage_records.c.request_id == request_id)).first()

    def rows(self) -> list:
        self.settled()
        with self.accounts.engine.connect() as conn:
            return conn.execute(sa.select(usage_records)).all()

    def balance(self):
        self.settled()
        return self.accounts.balance(self.accounts.authenticate(self.key).org_id)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.accounts.close()


def routes_of(config: dict) -> dict[str, RouteSpec]:
    return {name: RouteSpec.model_validate(spec) for name, spec in config.items()}


def make_router(config: dict, served, breaker) -> Router:
    routes, latency = build_routes(routes_of(config), list(served))
    return Router(routes, breaker, latency)


def start_route_env(db_url: str, routes: dict, *, breaker=None, clock: FakeClock | None = None,
                    key_models: list[str] | None = None, stubs: dict | None = None,
                    accounts_prefix: str = "") -> RouteEnv:
    """Stubs for `primary` and `backup` (or those given), the gateway over them with
    `routes`, and an org `acme` whose plan sells all three models."""
    upgrade(db_url)
    accounts = Accounts(db_url, actor="test")
    org = f"{accounts_prefix}acme"
    if not accounts.admin.orgs():
        accounts.admin.create_plan("routed", dict(PRICES))
    accounts.admin.create_org(org, "routed")
    key = accounts.admin.create_key(org, name="test", models=key_models).raw_key
    stubs = stubs or {"primary": StubUpstream(), "backup": StubUpstream()}
    servers = []
    backends = {}
    for name, stub in stubs.items():
        if isinstance(stub, StubUpstream):
            server = LiveServer(stub).start()
            servers.append(server)
            base = server.url
        else:  # a URL given as is (a process the test runs, or a closed port)
            base = stub
        backends[name] = UpstreamBackend(name, base + "/v1", upstream_model=f"{name}-model",
                                         timeout=30)
    if "dead" not in backends:
        backends["dead"] = UpstreamBackend("dead", f"http://127.0.0.1:{free_port()}/v1")
    clock = clock or FakeClock()
    breaker = breaker or MemoryBreaker(BreakerSettings(failures=2, open_s=30, probe_s=60),
                                       clock)
    app = create_app(accounts, backends, router=make_router(routes, backends, breaker))
    server = LiveServer(app).start()
    return RouteEnv(server.url, key, accounts,
                    {n: s for n, s in stubs.items() if isinstance(s, StubUpstream)},
                    [server, *servers], app.state.gateway, clock)
