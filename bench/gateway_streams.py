"""Streams at scale: many concurrent streaming requests through one gateway, the upstream
streaming slowly. Side by side in one run: the same streams straight to the stub, then
through the gateway.

    .venv/bin/python bench/gateway_streams.py [--streams 1000] [--token-delay 0.2]
                                              [--spread 1.0] [--budget-leases 0] [--workers N]

Three processes: the stub upstream (persea.serve.stub_upstream, one word per token, each
chunk `--token-delay` seconds after the last), one persea gateway process in front of it
(`create_app` on SQLite with `synchronous=FULL`: keys, limits, budget, durable usage; with
`--budget-leases N`, leases of N requests; with `--workers N`, the real command instead:
`persea serve --workers N` on the same database, its N processes on one port), and this
client, which sends every request
within `--spread` seconds, each on its own connection, so that all streams are open
together (raw asyncio sockets: the client must cost less than what it measures; httpx with
1,000 streams in one process was itself the bottleneck). For each side it reports:

- streams completed (a 200, every chunk, the `[DONE]` line) and dropped (anything else);
- time to first token at p50 / p99 / max, and what the gateway adds at each;
- the wall time for all of them;
- for the gateway: its resident memory before and at its peak (VmHWM; with `--workers`,
  summed over the command and its workers), and the usage records written, which must equal the streams it completed (each billed once).

Ends with one verdict line: none dropped, every completed stream billed once, and the
numbers above.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

BODY = {"model": "stub", "stream": True, "max_tokens": 16,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "In what year was Birtrinavia founded?"}]}


def serve_stub(port: int, token_delay: float) -> None:
    import uvicorn

    from persea.serve.stub_upstream import StubUpstream

    uvicorn.run(StubUpstream(token_delay=token_delay), host="127.0.0.1", port=port,
                log_level="error", access_log=False, backlog=4096)


def serve_gateway(port: int, db_url: str, upstream: str, leases: int) -> None:
    import uvicorn

    from persea.accounts import Accounts
    from persea.serve.app import create_app
    from persea.serve.backends.upstream import UpstreamBackend

    app = create_app(Accounts(db_url), {"stub": UpstreamBackend("stub", upstream)},
                     lease_requests=leases)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False,
                backlog=4096)


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def _rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process and its child processes, summed, in KiB."""
    fields = {"VmRSS": 0, "VmHWM": 0}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in fields:
                fields[name] += int(value.split()[0])
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        for child in f.read().split():
            rss, hwm = _rss_kib(int(child))
            fields["VmRSS"] += rss
            fields["VmHWM"] += hwm
    return fields["VmRSS"], fields["VmHWM"]


async def _one(host: str, port: int, path: str, headers: dict, start: float, stagger: float
               ) -> tuple[bool, float | None]:
    """One stream over a raw connection (`Connection: close`: the body ends at EOF), so the
    client costs as little as it can: (completed, seconds from its send to the first content
    chunk). `stagger`: seconds to wait before sending, spreading the connects."""
    import json

    await asyncio.sleep(stagger)
    body = json.dumps(BODY).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: "
               f"application/json\r\nContent-Length: {len(body)}\r\n{head}"
               "Connection: close\r\n\r\n").encode() + body
    first = None
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False, None
    try:
        sent = time.perf_counter()
        writer.write(request)
        await writer.drain()
        data = await reader.read(65536)
        status_ok = data.startswith(b"HTTP/1.1 200")
        seen = b""
        while data:
            seen = seen[-64:] + data  # a marker may straddle two reads
            if first is None and b'"content"' in seen:
                first = time.perf_counter() - sent
            if b"data: [DONE]" in seen:
                return status_ok and first is not None, first
            data = await reader.read(65536)
        return False, first
    except OSError:
        return False, first
    finally:
        writer.close()


WARM = 20  # streams sent first, to warm the servers


async def _burst(url: str, headers: dict, n: int, spread: float
                 ) -> tuple[int, int, list[float], float]:
    """WARM streams, then `n` more all open together (their sends spread over `spread`
    seconds); (warm-up streams completed, streams completed, first-token seconds of each,
    wall seconds)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    where = (parts.hostname, parts.port, parts.path)
    warm = await asyncio.gather(*(_one(*where, headers, 0, 0) for _ in range(WARM)))
    start = time.perf_counter()
    results = await asyncio.gather(*(_one(*where, headers, start, spread * i / n)
                                     for i in range(n)))
    wall = time.perf_counter() - start
    ok = sum(1 for done, _ in results if done)
    return (sum(1 for done, _ in warm if done), ok, [t for _, t in results if t is not None],
            wall)


def _records(db_url: str) -> int:
    import sqlalchemy as sa

    from persea.accounts import Accounts
    from persea.db.schema import usage_records

    accounts = Accounts(db_url)
    with accounts.engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(usage_records)).scalar()
    accounts.close()
    return count


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def _wait(url: str, headers: dict, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server for {url} exited with {proc.returncode}")
        try:
            if httpx.post(url, json={**BODY, "stream": False}, headers=headers,
                          timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server for {url} did not become ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--token-delay", type=float, default=0.2,
                    help="seconds between the stub's chunks")
    ap.add_argument("--spread", type=float, default=1.0,
                    help="seconds over which the streams' requests are sent (all are open "
                    "together: each lasts 16 x --token-delay)")
    ap.add_argument("--budget-leases", type=int, default=0,
                    help="requests per budget lease in the gateway (0: off)")
    ap.add_argument("--workers", type=int, default=0,
                    help="run `persea serve --workers N` as the gateway (default: one process "
                    "with create_app)")
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--upstream", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "stub":
        return serve_stub(args.port, args.token_delay)
    if args.role == "gateway":
        return serve_gateway(args.port, args.db, args.upstream, args.budget_leases)

    from gateway_overhead import _prepare_database
    from persea.serve.stub_upstream import free_port

    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{Path(tmp) / 'streams.db'}"
        key = _prepare_database(db_url)
        stub_port, gw_port = free_port(), free_port()
        stub = _spawn("--role", "stub", "--port", str(stub_port),
                      "--token-delay", str(args.token_delay))
        direct = f"http://127.0.0.1:{stub_port}/v1/chat/completions"
        if args.workers:
            gateway = subprocess.Popen(
                [sys.executable, "-m", "persea.cli", "serve", "--workers", str(args.workers),
                 "--port", str(gw_port), "--db", db_url, "--upstream",
                 f"stub=http://127.0.0.1:{stub_port}/v1", "--budget-leases",
                 str(args.budget_leases)], cwd=ROOT, stdout=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        else:
            gateway = _spawn("--role", "gateway", "--port", str(gw_port), "--db", db_url,
                             "--upstream", f"http://127.0.0.1:{stub_port}/v1",
                             "--budget-leases", str(args.budget_leases))
        through = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        auth = {"Authorization": f"Bearer {key}"}
        try:
            _wait(direct, {}, stub)
            _wait(through, auth, gateway)
            rss_before, _ = _rss_kib(gateway.pid)
            _, ok_d, ttft_d, wall_d = asyncio.run(_burst(direct, {}, args.streams,
                                                         args.spread))
            before = _records(db_url)  # the readiness request's
            warm_g, ok_g, ttft_g, wall_g = asyncio.run(_burst(through, auth, args.streams,
                                                              args.spread))
            _, peak = _rss_kib(gateway.pid)
        finally:
            for p in (gateway, stub):
                p.terminate()  # the gateway writes every usage record left before it exits
            for p in (gateway, stub):
                p.wait(60)
        billed = _records(db_url) - before - warm_g

    print(f"\n{args.streams} concurrent streams each way, sent within {args.spread:g} s, "
          f"{BODY['max_tokens']} chunks each, one every {args.token_delay * 1000:.0f} ms "
          "from the stub"
          f"{f'; budget leases of {args.budget_leases}' if args.budget_leases else ''}"
          f"{f'; persea serve --workers {args.workers}' if args.workers else ''}\n")
    print("| path | completed | dropped | TTFT p50 ms | TTFT p99 ms | TTFT max ms | wall s |")
    print("|---|---|---|---|---|---|---|")
    for name, ok, ttft, wall in (("stub directly", ok_d, ttft_d, wall_d),
                                 ("through the gateway (SQLite)", ok_g, ttft_g, wall_g)):
        print(f"| {name} | {ok} | {args.streams - ok} | {_pct(ttft, 0.5):.1f} | "
              f"{_pct(ttft, 0.99):.1f} | {max(ttft) * 1000 if ttft else float('nan'):.1f} | "
              f"{wall:.2f} |")
    added = [(_pct(ttft_g, q) - _pct(ttft_d, q)) for q in (0.5, 0.99)]
    print(f"\ngateway: TTFT added p50 {added[0]:+.1f} ms, p99 {added[1]:+.1f} ms; resident "
          f"memory {rss_before / 1024:.0f} MiB before, {peak / 1024:.0f} MiB at peak; usage "
          f"records {billed} for {ok_g} completed streams")
    met = ok_g == args.streams and billed == ok_g
    print(f"streams at scale: {ok_g}/{args.streams} completed, {args.streams - ok_g} dropped, "
          f"billed once each: {'yes' if billed == ok_g else 'no'}: "
          f"{'met' if met else 'not met'}")


if __name__ == "__main__":
    main()
