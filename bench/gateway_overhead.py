"""What the gateway adds over its backend, measured side by side in one run.

    .venv/bin/python bench/gateway_overhead.py [--requests 2000] [--seconds 5] [--clients 100]
                                               [--postgres URL]

A stub OpenAI-shaped upstream (bare ASGI, canned answer) runs in one process, the persea
gateway in front of it in another (keys, rate limits, reservation and metering all on, on a
SQLite database), and this process is the client. The same non-streaming chat request goes
to the stub directly and through the gateway:

- sequential: one request at a time over a kept-alive connection; the gateway's added
  latency at p50 and p99 is the difference of the two distributions' percentiles;
- concurrent: `--clients` clients for `--seconds` each way; throughput through the gateway
  as a fraction of the direct throughput.

Anchors (independent localhost measurements, not run here): about 0.44 ms added by Bifrost
(Go), 2.4 ms by Portkey, 4.3 ms by LiteLLM. Targets: p50 added <= 1 ms, p99 <= 5 ms,
throughput through the gateway >= 0.5 of direct.

Routing, in the same run against the same stub: the SQLite gateway and the in-memory one
also serve a second name for the stub (`stub-b`) and two routes over the two, and the same
request goes to each route beside the model row of that gateway, interleaved with it:

- `fallback`: [stub, stub-b], the first healthy, so every request is answered by `stub`
  (what a route adds: the policy, the breaker's check, the per-attempt bookkeeping);
- `learned`: the learned router (`persea.route.learned`) over the route's models at
  threshold 0.5, loaded from its file through `build_routes` as `persea serve` does. By
  default a router fitted here on the toy world's dev prompts (100 per skill) with planted
  labels (`stub` right on addition, sort and count, `stub-b` on the rest, one label in ten
  flipped): timing only, the size of a real one. `--router FILE` serves a trained router
  instead (from `persea route train`; its models are then names for the stub, and its
  first two form the fallback route).

The added p50 and p99 of each route are its percentiles minus those of the model row of the
same gateway. Target (the route issue): routing adds at most 0.2 ms at p50, judged on the
larger of the two routes on the gateway without a database: routing touches no database,
and on SQLite each request waits for one commit whose time varies by a millisecond or more
from request to request on a shared disk, which hides a tenth of that; the SQLite routes are
printed beside it. The request is one toy-world prompt, the same on every row.

Budget leases (docs/billing.md): the row `through the gateway, budget leases of 64` is the
first gateway with `create_app(lease_requests=64)`; `persea serve --workers N` is the real
command, which takes leases of 64 by default, beside the same command with
`--budget-leases 0` (every reserve committed before its answer). With a lease the reserve is
a memory operation, and a lone request waits for no commit. Every `persea serve` row gets
its own verdict lines against the targets and the peers. The row `diagnostic: the same,
through FastAPI's routing` is that leased gateway with its direct path off
(persea.serve.app.GatewayApp): what the framework's routing cost the chat endpoint. The
row `floor: bare ASGI forwarder` is uvicorn and aiohttp passing the request's bytes to the
stub and its answer back, with nothing else: what any gateway built on this stack adds
before its own work, so the last verdict line splits persea's added p50 into that floor and
its own part. The row `floor: the same forwarder, N processes` runs it once per core on one
port (SO_REUSEPORT, as `persea serve --workers N` listens): the most requests per second a
gateway on this stack serves with these cores, whatever it does.

The column `server CPU µs per request` is the user and system CPU time that the server's
processes (every thread, every worker) spent during its concurrent phase, divided by the
requests answered: unlike req/s, it hardly depends on what else shares the cores, so it
says what each row costs per request and where the difference lies. The throughput
verdict line splits persea's CPU per request into the forwarder's and its own.

Ends with the verdict lines: the gateway's, each `persea serve` row's, and routing's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BODY = {"model": "stub", "messages": [{"role": "user",
                                       "content": "In what year was Birtrinavia founded?"}],
        "max_tokens": 16}
ROUTE_TARGET_MS = 0.2
ROUTE_NAMES = ("fallback", "learned")


def body_for(model: str) -> dict:
    return {**BODY, "model": model}


# -- the two servers, each in its own process ---------------------------------------------


def serve_stub(port: int) -> None:
    import uvicorn

    from persea.serve.stub_upstream import StubUpstream

    uvicorn.run(StubUpstream(), host="127.0.0.1", port=port, log_level="error",
                access_log=False)


class MemoryAccounts:
    """A diagnostic stand-in with the `Accounts` request-path methods and no database, to
    show how much of the gateway's cost is its own and how much is the durable writes."""

    def __init__(self, real):
        self._real = real
        self.engine = real.engine

    def authenticate(self, raw_key):
        return self._real.authenticate(raw_key)  # cached after the first call

    def cached_caller(self, raw_key):
        return self._real.cached_caller(raw_key)

    def check_model(self, caller, model):
        return self._real.check_model(caller, model)

    def reserve_op(self, caller, model, prompt_tokens, max_tokens, request_id, *, instead=()):
        from datetime import datetime, timezone

        from persea.accounts import Reservation

        reservation = Reservation(request_id, request_id, caller.org_id, caller.key_id, model,
                                  Decimal(0), datetime.now(timezone.utc))
        return lambda conn: reservation

    def settle_op(self, reservation, prompt_tokens, completion_tokens, **answered):
        return lambda conn: None

    def release_op(self, reservation):
        return lambda conn: None

    def reconcile(self):
        return 0


class MemoryWriter:
    """The group-commit writer's interface, applying each op at once with no connection."""

    async def run(self, fn, *, urgent=True, key=""):
        return fn(None)

    async def call(self, fn, *args):
        return fn(*args)

    def submit(self, fn, *, urgent=True, key=""):
        from concurrent.futures import Future

        future = Future()
        future.set_result(fn(None))
        return future

    def close(self):
        pass


def serve_forwarder(port: int, upstream: str, shared_port: bool = False) -> None:
    """The floor of this stack: a bare ASGI app on the same server (uvicorn, uvloop,
    httptools) that forwards each request body to the stub with the gateway's upstream
    client (aiohttp, kept-alive) and answers its bytes. No keys, no checks, no parsing, no
    metering: what any gateway written this way adds before it does anything.
    `shared_port`: listen as each `persea serve --workers` process does (its own socket with
    SO_REUSEPORT), so that several of these share one port."""
    import aiohttp
    import uvicorn

    session = None

    async def app(scope, receive, send):
        nonlocal session
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    session = aiohttp.ClientSession()
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        async with session.post(upstream + "/chat/completions", data=body,
                                headers={"Content-Type": "application/json"}) as r:
            answer = await r.read()
            status = r.status
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})

    if not shared_port:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)
        return
    from persea.serve.workers import _listen

    config = uvicorn.Config(app, log_level="error", access_log=False)
    uvicorn.Server(config).run(sockets=[_listen("127.0.0.1", port)])


class _Processes:
    """Several processes that make one row (the forwarder on every core), with the few
    `subprocess.Popen` methods the rows use, so that this process starts and stops each of
    them itself."""

    def __init__(self, procs: list[subprocess.Popen]):
        self.procs = procs
        self.returncode = None

    def poll(self):
        for p in self.procs:
            if p.poll() is not None:
                self.returncode = p.returncode
                return self.returncode
        return None

    def terminate(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()

    def wait(self, timeout: float | None = None) -> None:
        for p in self.procs:
            p.wait(timeout)


def route_router(router_file: str, models: list[str]):
    """The gateway's routes over `models` (every one a name for the stub): `fallback` over
    the first two, `learned` over all with the router at `router_file`, built as `persea
    serve` builds them."""
    from persea.project import RouteSpec
    from persea.route.breaker import MemoryBreaker
    from persea.route.policy import Router, build_routes

    specs = {"fallback": RouteSpec(policy="fallback", models=models[:2]),
             "learned": RouteSpec(policy="learned", models=models, router=router_file,
                                  threshold=0.5)}
    routes, latency = build_routes(specs, models)
    return Router(routes, MemoryBreaker(), latency)


def serve_gateway(port: int, db_url: str, upstream: str, variant: str,
                  router_file: str | None = None) -> None:
    import uvicorn
    from persea.db import make_engine
    from persea.accounts import Accounts
    from persea.route.learned import read_router
    from persea.serve.app import create_app
    from persea.serve.backends.upstream import UpstreamBackend

    if variant == "normal":  # fsync at checkpoints only: safe from a killed process, not
        db_url += "?synchronous=normal"  # from a power cut (persea.db.make_engine)
    accounts = Accounts(make_engine(db_url))
    if variant == "memory":
        accounts = MemoryAccounts(accounts)
    backends = {"stub": UpstreamBackend("stub", upstream)}
    router = None
    if router_file:
        models = read_router(router_file).models
        backends.update({m: UpstreamBackend(m, upstream) for m in models if m != "stub"})
        router = route_router(router_file, models)
    app = create_app(accounts, backends, router=router,
                     overlap=variant != "serial",
                     lease_requests=LEASE_REQUESTS if variant in ("leases", "fastapi") else 0)
    if variant == "fastapi":  # the chat endpoint through FastAPI's routing, as before
        app.direct = {}
    if variant == "memory":
        app.state.gateway.writer.close()
        app.state.gateway.writer = MemoryWriter()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


def planted_router(path: Path) -> Path:
    """A learned router over `stub` and `stub-b`, fitted on the toy world's dev prompts with
    planted labels (module docstring): a real router's size and work, for timing only."""
    import random

    import numpy as np

    from persea.route.learned import train_router
    from persea.route.records import RoutingData
    from persea.toyworld.dataset import make_mixture

    items = make_mixture("dev", 100, allow_fewer=True)
    rng = random.Random(0)
    first = [float((it.skill in ("addition", "sort", "count")) != (rng.random() < 0.1))
             for it in items]
    correct = np.array([[a, 1.0 - a] for a in first])
    data = RoutingData(models=["stub", "stub-b"], fingerprints={"stub": "0" * 64,
                                                                "stub-b": "1" * 64},
                       runs={"stub": "planted", "stub-b": "planted"},
                       ids=[it.id for it in items], prompts=[it.prompt for it in items],
                       correct=correct, suite="toyworld", split="dev",
                       metric="toyworld/overall")
    return train_router(data, {"stub": 1.0, "stub-b": 2.0}).save(path)


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def _wait_ready(url: str, proc: subprocess.Popen, headers: dict) -> None:
    deadline = time.monotonic() + 300  # a loaded machine imports slowly
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server for {url} exited with {proc.returncode}")
        try:
            if httpx.post(url, json=BODY, headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"server for {url} did not become ready")


def _prepare_database(db_url: str, models: list[str] = ["stub"]) -> str:
    from persea.db import upgrade
    from persea.accounts import Accounts, Price

    upgrade(db_url)
    acc = Accounts(db_url)
    # Limits and budget are set but far away, so every check runs and none refuses.
    price = Price(Decimal("0.5"), Decimal("1.5"))
    acc.admin.create_plan("bench", {m: price for m in models},
                    rpm=10_000_000, tpm=1_000_000_000, monthly_budget=Decimal("1000000"))
    acc.admin.create_org("bench", "bench")
    key = acc.admin.create_key("bench").raw_key
    acc.close()
    return key


# -- the client ------------------------------------------------------------------------------


def sequential(url: str, headers: dict, n: int, model: str = "stub") -> list[float]:
    out = []
    body = body_for(model)
    with httpx.Client(headers=headers, timeout=30) as client:
        for _ in range(50):  # warm up the connection and both servers
            client.post(url, json=body)
        for _ in range(n):
            t = time.perf_counter()
            r = client.post(url, json=body)
            out.append((time.perf_counter() - t) * 1000)
            if r.status_code != 200:
                raise SystemExit(f"{url} answered {r.status_code}: {r.text[:200]}")
    return out


class _Connection:
    """A minimal kept-alive HTTP/1.1 client connection (asyncio streams), so that under 100
    concurrent clients the load generator is not the bottleneck (httpx's async pool is)."""

    def __init__(self, url: str, headers: dict):
        u = httpx.URL(url)
        self.host, self.port = u.host, u.port
        body = json.dumps(BODY).encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.request = (f"POST {u.raw_path.decode()} HTTP/1.1\r\nHost: {u.host}\r\n{head}"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}"
                        "\r\n\r\n").encode() + body

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self) -> int:
        self.writer.write(self.request)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])

    def close(self):
        self.writer.close()


async def _concurrent(url: str, headers: dict, clients: int, seconds: float
                      ) -> tuple[float, int]:
    conns = [_Connection(url, headers) for _ in range(clients)]
    await asyncio.gather(*[c.open() for c in conns])
    for c in conns:  # warm up every connection
        await c.post()
    done = 0
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker(conn):
        nonlocal done, errors
        while time.perf_counter() < stop:
            if await conn.post() == 200:
                done += 1
            else:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*[worker(c) for c in conns])
    elapsed = time.perf_counter() - start
    for c in conns:
        c.close()
    if errors:
        raise SystemExit(f"{url}: {errors} requests failed under load")
    return done / elapsed, done


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and every process under it, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        children = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += f.read().split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0  # it ended meanwhile
    return total + sum(_cpu_seconds(int(child)) for child in children)


def _under_load(url: str, headers: dict, proc, clients: int, seconds: float
                ) -> tuple[float, float]:
    """Requests per second from `clients` kept-alive clients, and the CPU time the server
    (`proc` and the processes under it) spent per request meanwhile, in microseconds: what
    each request costs the machine, whatever else shares its cores."""
    pids = [p.pid for p in getattr(proc, "procs", [proc])]
    before = sum(_cpu_seconds(pid) for pid in pids)
    rate, done = asyncio.run(_concurrent(url, headers, clients, seconds))
    return rate, (sum(_cpu_seconds(pid) for pid in pids) - before) / done * 1e6


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="sequential requests each way")
    ap.add_argument("--seconds", type=float, default=5.0, help="concurrent phase, each way")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--postgres", metavar="URL",
                    help="also measure a gateway on this PostgreSQL (in a fresh schema, "
                    "dropped after), e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test")
    ap.add_argument("--workers", type=int, help="workers of the `persea serve --workers` row "
                    "(default: one per core)")
    ap.add_argument("--router", metavar="FILE",
                    help="serve this trained router in the learned route (default: one "
                    "fitted here on planted labels)")
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--upstream", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "stub":
        return serve_stub(args.port)
    if args.role == "forwarder":
        return serve_forwarder(args.port, args.upstream)
    if args.role == "forwarder-shared":
        return serve_forwarder(args.port, args.upstream, shared_port=True)
    if args.role in ("gateway", "gateway-memory", "gateway-normal", "gateway-serial",
                     "gateway-leases", "gateway-fastapi"):
        return serve_gateway(args.port, args.db, args.upstream, args.role.partition("-")[2],
                             args.router)

    from persea.route.learned import read_router
    from persea.serve.stub_upstream import free_port

    with tempfile.TemporaryDirectory() as tmp:
        router_file = args.router or str(planted_router(Path(tmp) / "router.json"))
        router_models = read_router(router_file).models
        models = list(dict.fromkeys(["stub", *router_models]))
        sqlite_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        key = _prepare_database(sqlite_url, models)
        # (label, gateway variant, database, with routes): the first is the one the verdicts
        # are about.
        targets = [("through the gateway (SQLite)", "", sqlite_url, True),
                   (f"through the gateway, budget leases of {LEASE_REQUESTS} (SQLite)",
                    "leases", sqlite_url, False),
                   ("diagnostic: the same, through FastAPI's routing (no direct path)",
                    "fastapi", sqlite_url, False),
                   ("diagnostic: SQLite synchronous=NORMAL", "normal", sqlite_url, False),
                   ("diagnostic: accounts in memory, no database", "memory", sqlite_url, True),
                   ("diagnostic: reserve committed before the model", "serial", sqlite_url,
                    False)]
        schema = None
        if args.postgres:
            pg_url, schema = _fresh_schema(args.postgres)
            pg_key = _prepare_database(pg_url)
            targets.append(("diagnostic: PostgreSQL", "", pg_url, False))
        stub_port = free_port()
        stub_url = f"http://127.0.0.1:{stub_port}/v1"
        procs = [_spawn("--role", "stub", "--port", str(stub_port))]
        urls = []
        for _, variant, db, routed in targets:
            port = free_port()
            role = f"gateway-{variant}" if variant else "gateway"
            procs.append(_spawn("--role", role, "--port", str(port), "--db", db,
                                "--upstream", stub_url,
                                *(["--router", router_file] if routed else [])))
            urls.append(f"http://127.0.0.1:{port}/v1/chat/completions")
        keys = [pg_key if db != sqlite_url else key for _, _, db, _ in targets]
        # the routes of each routed gateway: (target index, route name) -> latencies
        routed = {(i, r): [] for i, t in enumerate(targets) if t[3] for r in ROUTE_NAMES}
        direct = stub_url + "/chat/completions"
        extra, missing = _start_rows(args, stub_url, sqlite_url, key, Path(tmp))
        procs += [proc for _, proc, _, _ in extra]
        try:
            _wait_ready(direct, procs[0], {})
            for url, proc, k in zip(urls, procs[1:], keys):
                _wait_ready(url, proc, {"Authorization": f"Bearer {k}"})
            extra = _ready_rows(extra, missing)
            lats_x = [[] for _ in extra]
            # Interleave blocks so drift in machine load hits every side alike.
            lat_d, lats = [], [[] for _ in targets]
            block = max(1, args.requests // 8)
            for _ in range(0, args.requests, block):
                lat_d += sequential(direct, {}, block)
                for i, (lat, url, k) in enumerate(zip(lats, urls, keys)):
                    auth = {"Authorization": f"Bearer {k}"}
                    lat += sequential(url, auth, block)
                    for r in ROUTE_NAMES:
                        if (i, r) in routed:
                            routed[(i, r)] += sequential(url, auth, block, r)
                for lat, (_, _, url, headers) in zip(lats_x, extra):
                    lat += sequential(url, headers, block)
            rps_d, cpu_d = _under_load(direct, {}, procs[0], args.clients, args.seconds)
            rpss, cpus = zip(*[_under_load(url, {"Authorization": f"Bearer {k}"}, proc,
                                           args.clients, args.seconds)
                               for url, k, proc in zip(urls, keys, procs[1:])])
            loaded_x = [_under_load(url, headers, proc, args.clients, args.seconds)
                        for _, proc, url, headers in extra]
            rpss_x = [rps for rps, _ in loaded_x]
            cpus_x = [cpu for _, cpu in loaded_x]
            answered = _answered_by(urls[0], keys[0])
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(10)
            if schema:
                _drop_schema(args.postgres, schema)

    print(f"\n{len(lat_d)} sequential requests each way; {args.clients} concurrent clients for "
          f"{args.seconds:g} s each way; non-streaming chat, max_tokens 16\n")
    print(f"| path | p50 ms | p90 ms | p99 ms | req/s at {args.clients} clients | "
          "server CPU µs per request |")
    print("|---|---|---|---|---|---|")
    print(f"| stub directly | {pct(lat_d, 0.5):.2f} | {pct(lat_d, 0.9):.2f} | "
          f"{pct(lat_d, 0.99):.2f} | {rps_d:.0f} | {cpu_d:.0f} |")
    for (name, *_), lat, rps, cpu in [*zip(targets, lats, rpss, cpus),
                                      *zip(extra, lats_x, rpss_x, cpus_x)]:
        print(f"| {name} | {pct(lat, 0.5):.2f} | {pct(lat, 0.9):.2f} | {pct(lat, 0.99):.2f} | "
              f"{rps:.0f} | {cpu:.0f} |")
    for name, why in missing:
        print(f"| {name} | not run: {why} | | | | |")
    for (name, _, _, _), lat, rps in zip(targets, lats, rpss):
        added = name.replace("through the gateway", "added by the gateway").replace(
            "diagnostic:", "added,")
        print(f"| {added} | {pct(lat, 0.5) - pct(lat_d, 0.5):+.2f} | "
              f"{pct(lat, 0.9) - pct(lat_d, 0.9):+.2f} | {pct(lat, 0.99) - pct(lat_d, 0.99):+.2f}"
              f" | {rps / rps_d:.2f}x |")
    p50 = pct(lats[0], 0.5) - pct(lat_d, 0.5)
    p99 = pct(lats[0], 0.99) - pct(lat_d, 0.99)
    ratio = rpss[0] / rps_d
    met = p50 <= 1.0 and p99 <= 5.0 and ratio >= 0.5
    print(f"\ngateway overhead: p50 {p50:+.2f} ms (target <= 1), p99 {p99:+.2f} ms (<= 5), "
          f"throughput {ratio:.2f}x direct (>= 0.5): {'met' if met else 'not met'}")
    _peer_verdicts(lat_d, rps_d, [(n, lat, rps) for (n, *_), lat, rps in zip(targets, lats, rpss)]
                   + [(n, lat, rps) for (n, *_), lat, rps in zip(extra, lats_x, rpss_x)],
                   missing)
    floor = [(lat, rps) for (n, *_), lat, rps in zip(extra, lats_x, rpss_x) if n == FLOOR_ROW]
    if floor:
        f50 = pct(floor[0][0], 0.5) - pct(lat_d, 0.5)
        leased = pct(lats[1], 0.5) - pct(lat_d, 0.5)
        print(f"what bounds p50: the bare forwarder adds {f50:+.2f} ms and serves "
              f"{floor[0][1]:.0f} req/s ({floor[0][1] / rps_d:.2f}x the stub's); the one-process "
              f"gateway with leases adds {leased:+.2f} ms, {leased - f50:+.2f} ms of its own work")
    cores = _workers(args)
    loaded = {n: (rps, cpu) for (n, *_), rps, cpu in zip(extra, rpss_x, cpus_x)}
    floor_n = loaded.get(FLOOR_N_ROW.format(n=cores))
    ours = loaded.get(WORKERS_ROW.format(n=cores))
    if floor_n and ours:
        print(f"what bounds throughput: the bare forwarder in {cores} processes serves "
              f"{floor_n[0]:.0f} req/s ({floor_n[0] / rps_d:.2f}x the stub's) at {floor_n[1]:.0f} "
              f"µs of CPU per request (the stub: {cpu_d:.0f}); persea serve --workers {cores} "
              f"serves {ours[0]:.0f} ({ours[0] / floor_n[0]:.2f}x the forwarder's) at "
              f"{ours[1]:.0f} µs, {ours[1] - floor_n[1]:+.0f} µs of its own work")

    which_router = args.router or "fitted on planted labels"
    print(f"\nrouting: {len(lats[0])} sequential requests per row, interleaved with the model "
          f"row of the same gateway; learned router {which_router} over "
          f"{', '.join(router_models)}; one request each: {answered}\n")
    print("| gateway | row | p50 ms | p90 ms | p99 ms | added p50 ms | added p99 ms |")
    print("|---|---|---|---|---|---|---|")
    added: dict[str, list[tuple[float, str]]] = {}
    for i, (name, variant, _, has_routes) in enumerate(targets):
        if not has_routes:
            continue
        gw = name.replace("through the gateway ", "").replace("diagnostic: ", "")
        base = lats[i]
        print(f"| {gw} | model stub | {pct(base, 0.5):.2f} | {pct(base, 0.9):.2f} | "
              f"{pct(base, 0.99):.2f} | | |")
        for r in ROUTE_NAMES:
            lat = routed[(i, r)]
            a50, a99 = pct(lat, 0.5) - pct(base, 0.5), pct(lat, 0.99) - pct(base, 0.99)
            added.setdefault(variant or "sqlite", []).append((a50, r))
            print(f"| {gw} | route {r} | {pct(lat, 0.5):.2f} | {pct(lat, 0.9):.2f} | "
                  f"{pct(lat, 0.99):.2f} | {a50:+.3f} | {a99:+.3f} |")
    worst, which = max(added["memory"])
    on_sqlite, which_sqlite = max(added["sqlite"])
    print(f"\nrouting adds <= {ROUTE_TARGET_MS} ms at p50: "
          f"{'yes' if worst <= ROUTE_TARGET_MS else 'no'} ({worst:+.3f} ms, route {which}, "
          f"the larger of the two routes on the gateway without a database; on SQLite "
          f"{on_sqlite:+.3f} ms, route {which_sqlite}, inside that gateway's commit jitter)")


# -- persea serve --workers, and the peers (LiteLLM proxy, Portkey gateway) ----------------

PEERS = ROOT / "bench" / ".peers"  # `make bench-peers` installs them here (git-ignored)
WORKERS_ROW = "persea serve --workers {n} (SQLite; default: budget leases of 64)"
NO_LEASES_ROW = "persea serve --workers {n} --budget-leases 0 (SQLite)"
LEASE_REQUESTS = 64  # requests per budget lease in the one-process row with leases
LITELLM_ROW = "peer: LiteLLM proxy"
FLOOR_ROW = "floor: bare ASGI forwarder (uvicorn + aiohttp, no checks, one process)"
FLOOR_N_ROW = "floor: the same forwarder, {n} processes on one port (SO_REUSEPORT)"
PORTKEY_ROW = "peer: Portkey gateway"


def _workers(args) -> int:
    """Processes of the `persea serve --workers` and N-process floor rows."""
    return args.workers or len(os.sched_getaffinity(0))


def _start_rows(args, stub_url: str, sqlite_url: str, key: str, tmp: Path):
    """The rows that run as their own commands: `persea serve --workers N` on the same
    database as the first gateway, and each peer that is installed. Returns
    ([(name, process, url, headers)], [(name, why it did not run)])."""
    from persea.serve.stub_upstream import free_port

    started, missing = [], []
    port = free_port()
    started.append((FLOOR_ROW, _spawn("--role", "forwarder", "--port", str(port),
                                      "--upstream", stub_url),
                    f"http://127.0.0.1:{port}/v1/chat/completions", {}))
    n = _workers(args)
    port = free_port()
    started.append((FLOOR_N_ROW.format(n=n), _Processes(
        [_spawn("--role", "forwarder-shared", "--port", str(port), "--upstream", stub_url)
         for _ in range(n)]), f"http://127.0.0.1:{port}/v1/chat/completions", {}))
    for name, flags in ((WORKERS_ROW.format(n=n), []),
                        (NO_LEASES_ROW.format(n=n), ["--budget-leases", "0"])):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "persea.cli", "serve", "--workers",
                                 str(n), "--port", str(port), "--db", sqlite_url,
                                 "--upstream", f"stub={stub_url}", *flags], cwd=ROOT,
                                stdout=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        started.append((name, proc, f"http://127.0.0.1:{port}/v1/chat/completions",
                        {"Authorization": f"Bearer {key}"}))
    litellm = PEERS / "litellm" / "bin" / "litellm"
    if not litellm.exists():
        missing.append((LITELLM_ROW, f"not installed (`make bench-peers`: {litellm})"))
    else:
        config = tmp / "litellm.yaml"
        # a master key, as the proxy refuses to start without one (and no database: the
        # proxy then checks the key and keeps no spend records)
        master = "sk-bench-" + "0" * 32
        config.write_text(json.dumps({
            "model_list": [{"model_name": "stub", "litellm_params": {
                "model": "openai/stub", "api_base": stub_url, "api_key": "none"}}],
            "general_settings": {"master_key": master}}))
        port = free_port()
        started.append((LITELLM_ROW, subprocess.Popen(
            [str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port",
             str(port), "--num_workers", str(len(os.sched_getaffinity(0)))],
            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            f"http://127.0.0.1:{port}/v1/chat/completions",
            {"Authorization": f"Bearer {master}"}))
    portkey = PEERS / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build" / \
        "start-server.js"
    if not portkey.exists():
        missing.append((PORTKEY_ROW, f"not installed (`make bench-peers`: {portkey})"))
    else:
        port = free_port()
        started.append((PORTKEY_ROW, subprocess.Popen(
            ["node", str(portkey), f"--port={port}", "--headless"], cwd=tmp,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            f"http://127.0.0.1:{port}/v1/chat/completions",
            {"x-portkey-provider": "openai", "x-portkey-custom-host": stub_url,
             "Authorization": "Bearer none"}))
    return started, missing


def _ready_rows(started, missing):
    """Those of `started` that answer; the others are moved to `missing`, with why."""
    ready = []
    for name, proc, url, headers in started:
        try:
            _wait_ready(url, proc, headers)
        except SystemExit as err:
            missing.append((name, f"could not start ({err})"))
            proc.terminate()
            continue
        ready.append((name, proc, url, headers))
    return ready


def _peer_verdicts(lat_d, rps_d, rows, missing) -> None:
    """One verdict line per target that compares persea (`persea serve --workers N`: the
    default deployment, durable metering on SQLite with synchronous=FULL) with a peer."""
    ours = [(n, lat, rps) for n, lat, rps in rows if n.startswith("persea serve")]
    if not ours:
        print("persea serve --workers: did not run, no comparison with the peers")
        return
    for name, lat, rps in ours:
        _verdicts_of(name, lat, rps, lat_d, rps_d, rows, missing)


def _verdicts_of(name, lat, rps, lat_d, rps_d, rows, missing) -> None:
    def added(values, q):
        return pct(values, q) - pct(lat_d, q)

    p50, p99 = added(lat, 0.5), added(lat, 0.99)
    print(f"{name}: p50 {p50:+.2f} ms added (target <= 1 ms for a lone request): "
          f"{'met' if p50 <= 1.0 else 'not met'}; {rps:.0f} req/s = {rps / rps_d:.2f}x the "
          f"stub's (target >= 0.5x): {'met' if rps / rps_d >= 0.5 else 'not met'}")
    for peer, plat, prps in rows:
        if not peer.startswith("peer:"):
            continue
        q50, q99 = added(plat, 0.5), added(plat, 0.99)
        met = p50 < q50 and p99 < q99 and rps > prps
        print(f"vs {peer[6:]}: p50 added {p50:+.2f} vs {q50:+.2f} ms, p99 added {p99:+.2f} vs "
              f"{q99:+.2f} ms, {rps:.0f} vs {prps:.0f} req/s (ratio {rps / prps:.2f}x): "
              f"{'met' if met else 'not met'}")
    for peer, why in missing:
        if peer.startswith("peer:"):
            print(f"vs {peer[6:]}: not measured ({why})")


def _answered_by(url: str, key: str) -> str:
    """Which model answered one request to each route (the x-persea-model header)."""
    out = []
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        for r in ROUTE_NAMES:
            resp = client.post(url, json=body_for(r))
            out.append(f"{r} -> {resp.headers.get('x-persea-model', '?')}")
    return ", ".join(out)


def _fresh_schema(url: str) -> tuple[str, str]:
    """A new uniquely named schema on the PostgreSQL at `url`, and a URL that uses it."""
    import secrets

    import sqlalchemy as sa

    schema = f"persea_bench_{secrets.token_hex(6)}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine.dispose()
    scoped = sa.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    return scoped.render_as_string(hide_password=False), schema


def _drop_schema(url: str, schema: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    engine.dispose()

if __name__ == "__main__":
    main()
