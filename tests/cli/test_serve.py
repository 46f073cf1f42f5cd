"""`persea serve` as a person runs it: a fresh directory, the first key printed once, and a
call with the openai client using that key. (That a second start prints no key is checked on
`bootstrap` itself in test_api_ops.py: a second process start costs seconds.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from persea.serve.stub_upstream import free_port

PERSEA = Path(sys.executable).parent / "persea"


def _start(tmp_path: Path, port: int) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen(
        [str(PERSEA), "serve", "--port", str(port), "--model", "toy=qwen3-toy"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PERSEA_DB": "", "COLUMNS": "200"})
    lines = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        lines.append(line.rstrip())
        if line.startswith("serving ") or time.monotonic() > deadline:
            break
    return proc, lines


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _ready(port: int) -> None:
    import httpx

    for _ in range(200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("the gateway never became ready")


@pytest.mark.slow
def test_first_start_prints_a_working_key_once(tmp_path):
    if not PERSEA.exists():
        pytest.skip(f"the persea command is not installed next to {sys.executable}")
    port = free_port()
    proc, lines = _start(tmp_path, port)
    try:
        text = "\n".join(lines)
        keys = re.findall(r"psk-[A-Za-z0-9_-]{43}", text)
        assert len(keys) == 1, text
        assert "shown once" in text and (tmp_path / "persea.db").exists()
        _ready(port)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=keys[0],
                               max_retries=0)
        r = client.chat.completions.create(model="toy", max_tokens=8,
                                           messages=[{"role": "user", "content": "hi"}])
        assert r.usage.total_tokens > 0
    finally:
        _stop(proc)
