"""What persea's own request path costs in CPU, without HTTP: the app called in process.

    .venv/bin/python bench/gateway_app_cost.py [--clients 100] [--requests 6000] [--reps 3]

bench/gateway_overhead.py measures the gateway as clients see it, through uvicorn and
aiohttp, against a stub upstream, with the load generator and the stub on the same cores:
its numbers move by a tenth from run to run, more than most single changes to the request
path are worth. Here the gateway app (`create_app`, the direct path, keys, limits,
validation, the reservation, the OpenAI answer, the settle) is called as an ASGI app by
`--clients` concurrent callers in its own process, with a backend that answers at once and
no sockets anywhere, and the CPU time it spends is divided by the requests it answered:

- `event loop thread`: the thread that runs the app (what bounds one process's throughput);
- `whole process`: every thread, the accounts writer's included;
- `wall`: elapsed time per request, all callers together.

Each row runs in a process of its own, three times (`--reps`); the median is printed:

- `accounts in memory`: the diagnostic stand-in of bench/gateway_overhead.py (no database,
  no writer thread): the app's own work;
- `SQLite, a reserve committed per request`: `create_app(lease_requests=0)`;
- `SQLite, budget leases of 64`: `create_app(lease_requests=64)`, as `persea serve` runs;
- `the same, pinned to one core`: the leased row with its process held to one core, so that
  the event loop and the writer thread never run on two cores: the difference between the
  two leased rows is what handing Python's lock and the data it touches between two cores
  costs (the writer thread takes it for its SQLAlchemy work).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

ROWS = [("memory", "accounts in memory"),
        ("sqlite", "SQLite, a reserve committed per request"),
        ("leases", "SQLite, budget leases of 64"),
        ("leases-pinned", "the same, pinned to one core")]


def _app(variant: str, db_url: str):
    from gateway_overhead import MemoryAccounts, MemoryWriter

    from persea.accounts import Accounts
    from persea.db import make_engine
    from persea.serve.app import create_app
    from persea.serve.backends.base import Choice, Result
    from persea.serve.backends.upstream import UpstreamBackend

    class Instant(UpstreamBackend):
        """The upstream backend's prompt counting, with an answer at once (no socket)."""

        async def start(self):
            pass

        async def aclose(self):
            pass

        async def complete(self, prepared, sampling):
            await asyncio.sleep(0)  # a backend always yields to the loop at least once
            return Result([Choice(0, "in 1832", "stop", 4)], prepared.prompt_tokens, 4)

    accounts = Accounts(make_engine(db_url))
    if variant == "memory":
        accounts = MemoryAccounts(accounts)
    app = create_app(accounts, {"stub": Instant("stub", "http://127.0.0.1:9/v1")},
                     lease_requests=64 if variant.startswith("leases") else 0)
    if variant == "memory":
        app.state.gateway.writer.close()
        app.state.gateway.writer = MemoryWriter()
    return app


async def _measure(app, key: str, clients: int, requests: int) -> dict:
    from gateway_overhead import BODY

    body = json.dumps(BODY).encode()
    headers = [(b"authorization", f"Bearer {key}".encode()),
               (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
             "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}

    async def one() -> None:
        given = False
        statuses = []

        async def receive():
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never goes away

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(dict(scope), receive, send)
        if statuses != [200]:
            raise SystemExit(f"the gateway answered {statuses}")

    async def caller(n: int) -> None:
        for _ in range(n):
            await one()

    inbox, outbox = asyncio.Queue(), asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    life = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}},
                                   inbox.get, outbox.put))
    if (await outbox.get())["type"] != "lifespan.startup.complete":
        raise SystemExit("the gateway did not start")
    each = max(1, requests // clients)
    await asyncio.gather(*(caller(max(1, 200 // clients)) for _ in range(clients)))  # warm
    thread, process, wall = time.thread_time(), time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller(each) for _ in range(clients)))
    done = each * clients
    out = {"loop": (time.thread_time() - thread) / done * 1e6,
           "process": (time.process_time() - process) / done * 1e6,
           "wall": (time.perf_counter() - wall) / done * 1e6}
    await inbox.put({"type": "lifespan.shutdown"})
    await outbox.get()
    await life
    return out


def run_row(variant: str, clients: int, requests: int) -> None:
    """One measurement in this process; prints it as JSON."""
    import uvloop
    from gateway_overhead import _prepare_database

    if variant.endswith("-pinned"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{Path(tmp) / 'cost.db'}"
        key = _prepare_database(db_url)
        result = uvloop.run(_measure(_app(variant, db_url), key, clients, requests))
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--row", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.row:
        return run_row(args.row, args.clients, args.requests)
    results: dict[str, list[dict]] = {v: [] for v, _ in ROWS}
    for _ in range(args.reps):  # interleaved, so that drift hits every row alike
        for variant, _ in ROWS:
            out = subprocess.run([sys.executable, __file__, "--row", variant, "--clients",
                                  str(args.clients), "--requests", str(args.requests)],
                                 capture_output=True, text=True, check=True, cwd=ROOT)
            results[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"\n{args.requests} non-streaming chat requests from {args.clients} concurrent "
          f"callers, in process (no HTTP), median of {args.reps} runs; µs per request\n")
    print("| row | event loop thread | whole process | wall |")
    print("|---|---|---|---|")
    med = {}
    for variant, name in ROWS:
        med[variant] = {k: statistics.median(r[k] for r in results[variant])
                        for k in ("loop", "process", "wall")}
        m = med[variant]
        print(f"| {name} | {m['loop']:.0f} | {m['process']:.0f} | {m['wall']:.0f} |")
    own, leased = med["memory"]["process"], med["leases"]["process"]
    print(f"\ndurable metering with leases costs {leased - own:+.0f} µs of CPU per request "
          f"over accounts in memory ({leased / own:.2f}x); held to one core, "
          f"{med['leases-pinned']['process'] - own:+.0f} µs")


if __name__ == "__main__":
    main()
