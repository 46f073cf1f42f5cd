"""Routes and served models as persea.yaml declares them: what a policy orders, and every
mistake refused at start in one line that names it, with a non-zero exit and no gateway."""

from __future__ import annotations

import json
import random
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from persea.route import learned
from persea.route.policy import LatencyBoard, LeastLatency, Learned, Weighted, build_routes
from tests.cli_helpers import run_cli
from tests.route.route_env import routes_of

TEACHERS = [{"name": "t", "builtin": "qwen3-toy"}]
MODELS = [{"name": "a", "builtin": "qwen3-toy"}, {"name": "b", "builtin": "gemma3-toy"}]


def _project(tmp_path: Path, serve: dict, **more) -> Path:
    d = tmp_path / "proj"
    d.mkdir(exist_ok=True)
    (d / "persea.yaml").write_text(yaml.safe_dump({"name": "p", "teachers": TEACHERS,
                                                   "serve": serve, **more}))
    return d


def _serve(capsys, monkeypatch, project: Path, *flags: str) -> tuple[int, str]:
    import uvicorn

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append(app))
    monkeypatch.setenv("PERSEA_DB", "")
    code, out, err = run_cli(capsys, monkeypatch, "serve", "-p", str(project), *flags)
    assert not started, "the gateway must not start on bad input"
    return code, err.strip()


@pytest.mark.parametrize("routes, says", [
    ({"auto": {"policy": "fallback", "models": ["a", "nope"]}},
     "serve.routes.auto: `nope` is neither a served model (a, b) nor a route"),
    ({"x": {"policy": "fallback", "models": ["a", "y"]},
      "y": {"policy": "fallback", "models": ["z"]},
      "z": {"policy": "fallback", "models": ["b", "x"]}},
     "serve.routes: a cycle of fallbacks: x -> y -> z -> x"),
    ({"auto": {"policy": "magic", "models": ["a"]}},
     "serve.routes.auto.policy: Input should be 'fallback', 'weighted', 'least_latency' or "
     "'learned' (found: 'magic')"),
    ({"auto": {"policy": "learned", "models": ["a", "b"], "router": "r.bin",
               "threshold": 1.5}},
     "serve.routes.auto.threshold: Input should be less than or equal to 1 (found: 1.5)"),
    ({"auto": {"policy": "weighted", "models": {"a": 1, "b": 0}}},
     "serve.routes.auto.models: the weight of b must be a number above 0"),
    ({"a": {"policy": "fallback", "models": ["b"]}},
     "a is both a model and a route"),
    ({"auto": {"policy": "learned", "models": ["a"], "router": "missing.bin",
               "threshold": 0.5}},
     "serve.routes.auto.router: no router file at"),
])
def test_a_bad_route_stops_the_start_in_one_line(tmp_path, capsys, monkeypatch, routes, says):
    project = _project(tmp_path, {"models": MODELS, "routes": routes})
    code, err = _serve(capsys, monkeypatch, project)
    assert code == 2 and says in err, err
    assert len(err.splitlines()) == 1


def test_a_route_over_a_model_the_flags_no_longer_serve(tmp_path, capsys, monkeypatch):
    project = _project(tmp_path, {"models": MODELS, "routes": {
        "auto": {"policy": "fallback", "models": ["a", "b"]}}})
    code, err = _serve(capsys, monkeypatch, project, "--model", "a=qwen3-toy")
    assert code == 2 and "`b` is neither a served model (a) nor a route" in err


def test_a_damaged_router_file_stops_the_start(tmp_path, capsys, monkeypatch):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "router.bin").write_bytes(b"x")
    project = _project(tmp_path, {"models": MODELS, "routes": {"smart": {
        "policy": "learned", "models": ["a", "b"], "router": "router.bin",
        "threshold": 0.5}}})
    code, err = _serve(capsys, monkeypatch, project)
    assert code == 2 and "serve.routes.smart.router" in err and "router.bin" in err
    assert len(err.splitlines()) == 1


def _fake_learned(monkeypatch, choose_for):
    """A stand-in persea.route.learned that records how it was loaded."""
    loaded = []

    class Router:  # the shape of persea.route.learned.Router
        def choose(self, messages, threshold):
            loaded.append(("choose", threshold))
            return choose_for(threshold)(messages)

    def load_router(path, served_models):
        loaded.append((Path(path).name, dict(served_models)))
        return Router()

    monkeypatch.setattr(learned, "load_router", load_router)
    return loaded


def test_the_learned_interface(tmp_path, monkeypatch):
    (tmp_path / "r.bin").write_bytes(b"x")

    def choose_for(threshold):
        def choose(messages):
            long = len(messages[-1]["content"]) > 20
            return ["b", "zz"] if long else ["a"]  # unknown names are dropped
        return choose

    loaded = _fake_learned(monkeypatch, choose_for)
    routes, _ = build_routes(routes_of({"smart": {
        "policy": "learned", "models": ["a", "b", "c"], "router": "r.bin",
        "threshold": 0.25}}), ["a", "b", "c"], root=tmp_path)
    assert loaded == [("r.bin", {"a": None, "b": None, "c": None})]
    policy = routes["smart"].policy
    assert isinstance(policy, Learned)
    assert policy.order([{"role": "user", "content": "short"}]) == ["a", "b", "c"]
    assert policy.order([{"role": "user", "content": "a much longer question here"}]) == [
        "b", "a", "c"]
    assert loaded[1:] == [("choose", 0.25)] * 2

    def broken(messages):
        raise RuntimeError("bug")

    assert Learned(["a", "b"], broken, 0.5, "smart").order([]) == ["a", "b"]


def test_weighted_order_follows_the_weights():
    policy = Weighted({"a": 3.0, "b": 1.0}, random.Random(0))
    firsts = [policy.order([])[0] for _ in range(4000)]
    share = firsts.count("a") / len(firsts)
    assert 0.72 < share < 0.78  # 3 : 1
    assert all(sorted(policy.order([])) == ["a", "b"] for _ in range(20))  # both, always


def test_least_latency_puts_the_untried_then_the_fastest_first():
    board = LatencyBoard()
    policy = LeastLatency(["a", "b", "c"], board)
    board.observe("a", 0.5)
    board.observe("b", 0.1)
    assert policy.order([]) == ["c", "b", "a"]
    board.observe("c", 0.3)
    assert policy.order([]) == ["b", "c", "a"]
    for _ in range(20):
        board.observe("b", 2.0)
    assert policy.order([]) == ["c", "a", "b"]


# -- the student, by default --------------------------------------------------------------


@pytest.fixture
def student_weights():
    """A small model directory to stand for a distilled student (a built-in teacher's copy:
    ready at once, where training a tokenizer takes a while)."""
    from persea.models.builtin import builtin_models

    return builtin_models()["qwen3-toy"].path


def _student_project(tmp_path: Path, weights, serve: dict | None = None) -> Path:
    project = _project(tmp_path, serve or {}, distill={"out": "runs"})
    shutil.copytree(weights, project / "runs" / "student")
    return project


def test_the_default_is_the_student_and_it_is_refused_until_released(
        tmp_path, student_weights, capsys, monkeypatch):
    project = _student_project(tmp_path, student_weights)
    code, err = _serve(capsys, monkeypatch, project)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "is not released: no release gate was run on these weights" in err
    assert "--force-release --reason" in err


def _passing_gate(model_dir: Path) -> None:
    """The record `persea gate` leaves in a model directory, for these weights, passed."""
    from persea.models.fingerprint import fingerprint_model_dir

    (model_dir / "release-gate.json").write_text(json.dumps({
        "id": "gate_test", "verdict": "passed", "created_at": "2026-01-01T00:00:00+00:00",
        "fingerprint": fingerprint_model_dir(model_dir)}))


def test_a_released_student_is_served_at_its_configured_price(tmp_path, student_weights,
                                                             capsys, monkeypatch):
    import uvicorn

    serve = {"models": [{"name": "student", "student": True,
                         "price": {"input": "0.0002", "output": "0.0008"}},
                        {"name": "rival", "builtin": "qwen3-toy"}],
             "routes": {"auto": {"policy": "fallback", "models": ["student", "rival"]}}}
    project = _student_project(tmp_path, student_weights, serve)
    _passing_gate(project / "runs" / "student")
    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append((app, kw)))
    monkeypatch.setenv("PERSEA_DB", "")
    code, out, err = run_cli(capsys, monkeypatch, "serve", "-p", str(project), "--port", "8123",
                             "--workers", "1")
    assert code == 0, err
    app, kw = started[0]
    try:
        gw = app.state.gateway
        assert sorted(gw.backends) == ["rival", "student"] and list(gw.router.routes) == ["auto"]
        assert kw["port"] == 8123
        assert "student at 0.20/0.80, rival at 0.50/1.50 per million tokens" in out
        assert "serving student, rival, auto on" in out
        plan = gw.accounts.admin.plan("default")
        assert (plan.prices["student"].input_per_mtok,
                plan.prices["student"].output_per_mtok) == (Decimal("0.2"), Decimal("0.8"))
        releases = list((project / "releases").glob("*.json"))
        assert len(releases) == 1 and json.loads(releases[0].read_text())["forced"] is False
    finally:
        gw.close()
        gw.accounts.close()


def test_a_price_must_be_exact_money(tmp_path, capsys, monkeypatch):
    project = _project(tmp_path, {"models": [{"name": "a", "builtin": "qwen3-toy",
                                              "price": {"input": 0.1, "output": "1"}}]})
    code, err = _serve(capsys, monkeypatch, project)
    assert code == 2 and "serve.models[0].price.input: write money as a quoted decimal" in err


# -- a learned route is checked against the weights actually served ------------------------


def _router_for(path: Path, fingerprints: dict[str, str]) -> Path:
    """A router file over `fingerprints`' models, as `persea route train` writes one (one
    feature and no weights: only its models and fingerprints matter here)."""
    import numpy as np

    names = list(fingerprints)
    return learned.Router(models=names, prices={m: 1.0 for m in names},
                          fingerprints=dict(fingerprints), trained_on={"split": "dev"},
                          vocabulary=[" x "], idf=np.ones(1), weights=np.zeros((1, len(names))),
                          bias=np.zeros(len(names))).save(path)


def test_a_router_trained_on_other_weights_is_refused_at_start(tmp_path, capsys, monkeypatch):
    import uvicorn

    from persea.models.builtin import builtin_models
    from persea.models.fingerprint import fingerprint_model_dir

    real = {m["name"]: fingerprint_model_dir(builtin_models()[m["builtin"]].path)
            for m in MODELS}
    project = _project(tmp_path, {"models": MODELS, "routes": {"smart": {
        "policy": "learned", "models": ["a", "b"], "router": "router.json", "threshold": 0.5}}})
    # trained on evaluation records of other weights of b
    _router_for(project / "router.json", {"a": real["a"], "b": "0" * 64})
    code, err = _serve(capsys, monkeypatch, project)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "serve.routes.smart.router: router" in err and "router.json" in err
    assert f"other weights of b (trained on 000000000000, served {real['b'][:12]})" in err
    assert "nothing served" in err and "persea route train" in err

    # the same router over the weights it learned about starts
    _router_for(project / "router.json", real)
    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append(app))
    monkeypatch.setenv("PERSEA_DB", "")
    code, out, err = run_cli(capsys, monkeypatch, "serve", "-p", str(project), "--workers", "1")
    assert code == 0, err
    gw = started[0].state.gateway
    try:
        assert list(gw.router.routes) == ["smart"]
        assert gw.router.order("smart", [{"role": "user", "content": "x"}]) in (
            ["a", "b"], ["b", "a"])
    finally:
        gw.close()
        gw.accounts.close()
