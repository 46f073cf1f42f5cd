"""An upstream killed (SIGKILL) while about a hundred requests are in flight through a
fallback route: every request is answered, by the backup where the primary died under it,
and every answer is billed exactly once; nothing stays reserved."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal

import httpx

from persea.serve.stub_upstream import StubUpstream, free_port
from tests.route.route_env import start_route_env

REQUESTS = 100

# The primary in its own process, so it can be killed for real: every answer waits 0.5 s,
# so that many requests are inside it when it dies.
PRIMARY = """
import sys, uvicorn
from persea.serve.stub_upstream import StubUpstream
stub = StubUpstream()
stub.delay = 0.5
uvicorn.run(stub, host="127.0.0.1", port=int(sys.argv[1]), log_level="error")
"""


def _start_primary() -> tuple[subprocess.Popen, str]:
    port = free_port()
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    proc = subprocess.Popen([sys.executable, "-c", PRIMARY, str(port)],
                            env={**os.environ, "PYTHONPATH": os.path.abspath(src)})
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the primary stub did not start")
            time.sleep(0.05)


def test_killing_an_upstream_under_load_fails_no_request(tmp_path):
    proc, primary_url = _start_primary()
    env = start_route_env(f"sqlite:///{tmp_path / 'persea.db'}",
                          {"auto": {"policy": "fallback", "models": ["primary", "backup"]}},
                          stubs={"primary": primary_url, "backup": StubUpstream()})
    try:
        in_flight = env.gateway.metrics.in_flight.labels("primary")
        headers = {"Authorization": f"Bearer {env.key}"}
        body = {"model": "auto", "max_tokens": 8,
                "messages": [{"role": "user", "content": "What is 12 plus 30?"}]}

        def call(_):
            return httpx.post(env.v1 + "/chat/completions", json=body, headers=headers,
                              timeout=60)

        with concurrent.futures.ThreadPoolExecutor(REQUESTS) as pool:
            futures = [pool.submit(call, i) for i in range(REQUESTS)]
            deadline = time.monotonic() + 60
            while in_flight._value.get() < 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            inside = in_flight._value.get()
            proc.send_signal(signal.SIGKILL)
            answers = [f.result() for f in futures]
        assert inside >= 20, "the kill was meant to land under load"
        assert [a.status_code for a in answers] == [200] * REQUESTS
        ids = [a.json()["id"] for a in answers]
        assert len(set(ids)) == REQUESTS
        rows = {r.request_id: r for r in env.rows()}
        assert sorted(rows) == sorted(ids)  # one usage record per answer, no more
        for a in answers:
            row = rows[a.json()["id"]]
            assert row.model == a.json()["model"] == a.headers["x-persea-model"]
            assert row.route == "auto"
        fell_over = [r for r in rows.values() if r.model == "backup" and r.attempts >= 2]
        assert len(fell_over) >= 1  # those inside the primary when it died
        spent, reserved = env.balance()
        assert spent == sum((r.cost for r in rows.values()), Decimal(0)) and reserved == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        env.stop()
