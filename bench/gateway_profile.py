"""Where a gateway request's CPU goes: py-spy samples one gateway process under load.

    .venv/bin/pip install py-spy      # a profiler, not a dependency of persea
    .venv/bin/python bench/gateway_profile.py [--seconds 15] [--clients 8] [--budget-leases 64]

The stub upstream and one gateway process (SQLite, `synchronous=FULL`, keys, limits, budget,
durable usage; `--budget-leases N`: with leases) start as in bench/gateway_overhead.py; this
process sends the same non-streaming chat request from `--clients` concurrent kept-alive
clients for `--seconds` while `py-spy record --format raw` samples the gateway (every thread,
idle ones left out). The folded stacks are then summed two ways and printed:

- by area: the share of the gateway's busy samples whose stack passes through each part
  (the HTTP server, FastAPI's routing and dependencies, request validation, the accounts
  writer and the database driver, the upstream client, JSON, persea's own handlers ...), a
  sample counted once per area it touches;
- by function: the 25 functions with the most samples where they are the innermost frame.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

# (area, a substring of a frame "function (file:line)") in the order they are printed
AREAS = [
    ("uvicorn/httptools: HTTP parsing and writing", ("uvicorn/", "httptools")),
    ("starlette/fastapi: routing, middleware, responses", ("starlette/", "fastapi/routing",
                                                           "fastapi/dependencies")),
    ("pydantic: request validation, response models", ("pydantic",)),
    ("persea wire types and errors", ("persea/serve/wire", "persea/serve/errors")),
    ("persea gateway: admission, limits, settle", ("persea/serve/gateway",
                                                   "persea/serve/limits")),
    ("persea accounts (leases, ops)", ("persea/accounts/service", "persea/accounts/leases",
                                       "persea/accounts/types", "persea/accounts/money")),
    ("accounts writer thread + SQLAlchemy + sqlite3", ("persea/accounts/writer",
                                                       "sqlalchemy/", "sqlite3")),
    ("upstream client (aiohttp)", ("aiohttp/",)),
    ("thread pool hops (concurrent.futures)", ("concurrent/futures",)),
    ("upstream backend (persea)", ("persea/serve/backends",)),
    ("JSON encode/decode", ("json/", "orjson", "encoder", "decoder")),
    ("asyncio event loop", ("asyncio/", "uvloop")),
]


def _folded(path: Path) -> collections.Counter:
    stacks = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


def report(stacks: collections.Counter) -> None:
    total = sum(stacks.values())
    if not total:
        print("no samples")
        return
    print(f"\n{total} busy samples of the gateway process (every thread)\n")
    print("| area | share of busy samples |")
    print("|---|---|")
    for name, needles in AREAS:
        hit = sum(n for s, n in stacks.items() if any(k in s for k in needles))
        print(f"| {name} | {100 * hit / total:.1f}% |")
    inner = collections.Counter()
    for stack, n in stacks.items():
        inner[stack.split(";")[-1]] += n
    print("\n| innermost function | share |")
    print("|---|---|")
    for frame, n in inner.most_common(25):
        print(f"| `{frame[:110]}` | {100 * n / total:.1f}% |")


async def _load(url: str, headers: dict, clients: int, seconds: float) -> int:
    import httpx

    from gateway_overhead import BODY

    done = 0
    stop = time.monotonic() + seconds

    async def client():
        nonlocal done
        async with httpx.AsyncClient(headers=headers, timeout=30) as c:
            while time.monotonic() < stop:
                r = await c.post(url, json=BODY)
                done += r.status_code == 200

    await asyncio.gather(*(client() for _ in range(clients)))
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--budget-leases", type=int, default=0)
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")

    from gateway_overhead import _prepare_database, _wait_ready
    from persea.serve.stub_upstream import free_port

    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{Path(tmp) / 'profile.db'}"
        key = _prepare_database(db_url)
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        overhead = str(ROOT / "bench" / "gateway_overhead.py")
        stub_port, gw_port = free_port(), free_port()
        stub = subprocess.Popen([sys.executable, overhead, "--role", "stub", "--port",
                                 str(stub_port)], cwd=ROOT, env=env)
        role = "gateway-leases" if args.budget_leases else "gateway"
        gateway = subprocess.Popen([sys.executable, overhead, "--role", role, "--port",
                                    str(gw_port), "--db", db_url, "--upstream",
                                    f"http://127.0.0.1:{stub_port}/v1"], cwd=ROOT, env=env)
        url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        headers = {"Authorization": f"Bearer {key}"}
        out = Path(tmp) / "stacks.txt"
        try:
            _wait_ready(f"http://127.0.0.1:{stub_port}/v1/chat/completions", stub, {})
            _wait_ready(url, gateway, headers)
            asyncio.run(_load(url, headers, args.clients, 2.0))  # warm up
            spy_proc = subprocess.Popen([spy, "record", "--format", "raw", "--pid",
                                         str(gateway.pid), "--duration",
                                         str(int(args.seconds)), "--rate", "500",
                                         "--threads", "--output", str(out), "--nonblocking"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            done = asyncio.run(_load(url, headers, args.clients, args.seconds))
            spy_proc.wait(args.seconds + 60)
        finally:
            for p in (gateway, stub):
                p.terminate()
            for p in (gateway, stub):
                p.wait(30)
        print(f"{done} requests from {args.clients} clients in {args.seconds:g} s "
              f"({done / args.seconds:.0f} req/s while sampled"
              f"{f', budget leases of {args.budget_leases}' if args.budget_leases else ''})")
        report(_folded(out))


if __name__ == "__main__":
    main()
