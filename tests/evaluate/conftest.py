"""Shared pieces of the evaluation tests: a tiny project (the untrained tiny Qwen as the
student, built-in qwen3-toy as the teacher), models whose answers the test chooses, and a
loopback OpenAI-compatible stub. The databases come from tests/databases.py."""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

def write_project(directory, student_from=None, release=None, per_skill=3, teachers=None):
    """A project directory; `student_from` (a model directory) is copied in as the student
    that `persea distill` would have written."""
    directory.mkdir(parents=True, exist_ok=True)
    data = {"name": "ev", "teachers": teachers or [{"name": "qwen3-toy",
                                                     "builtin": "qwen3-toy"}],
            "eval": {"per_skill": per_skill, "max_new_tokens": 8, "batch_size": 16}}
    if release is not None:
        data["release"] = release
    (directory / "persea.yaml").write_text(yaml.safe_dump(data))
    if student_from is not None:
        shutil.copytree(student_from, directory / "runs" / "student" / "student")
    return directory


@pytest.fixture
def project_dir(tmp_path, tiny_model_dir):
    return write_project(tmp_path / "p", student_from=tiny_model_dir)


@dataclass
class _Out:
    text: str


class ScriptedModel:
    """A model of the protocol whose answer to each prompt is `answer(prompt)`; it counts
    the prompts it was asked and can fail on a chosen call."""

    def __init__(self, answer, name="scripted", fingerprint="f" * 64, fail_on_call=None,
                 failure=KeyboardInterrupt):
        self.answer = answer
        self.name = name
        self.fingerprint = fingerprint
        self.asked: list[str] = []
        self.calls = 0
        self.fail_on_call = fail_on_call
        self.failure = failure

    def generate(self, prompts, max_new_tokens, top_k=0):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise self.failure()
        self.asked.extend(prompts)
        return [_Out(self.answer(p)) for p in prompts]


class _Handler(BaseHTTPRequestHandler):
    answers: dict = {}
    delay = 0.0

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(self.server.delay)
        prompt = body["messages"][-1]["content"]
        content = self.server.answers.get(prompt, "no idea")
        payload = json.dumps({
            "id": "cmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout test)


@pytest.fixture
def stub_endpoint():
    """`start(answers, delay)` -> base URL of a loopback chat-completions stub."""
    servers = []

    def start(answers, delay=0.0):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.answers, server.delay = answers, delay
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def add_run(store, model, outcomes, status="complete", fingerprint=None, suite="toyworld",
            finished_at="2026-01-01T00:00:00+00:00"):
    """Write a run whose per-item outcomes the test chose: `outcomes` maps a skill to its
    list of 0/1 values (item ids `<skill>-<i>`); `toyworld/overall` covers them all."""
    from persea.evaluate.records import RunRecord, scores_of

    items = [{"id": f"{skill}-{i}", "group": skill, "prompt": "", "target": "", "output": "",
              "outcomes": {f"toyworld/{skill}": float(v), "toyworld/overall": float(v)}}
             for skill, values in outcomes.items() for i, v in enumerate(values)]
    rec = RunRecord(run_id=f"{model}--{suite}--{status}", model=model,
                    fingerprint=fingerprint or model.ljust(64, "0")[:64], source="test",
                    suite=suite, suite_version="1+test", seed=0, config={},
                    n_items=len(items), status=status, items_done=len(items),
                    scores=scores_of(items), finished_at=finished_at)
    store.save(rec)
    store.rewrite_items(rec.run_id, items)
    return rec
