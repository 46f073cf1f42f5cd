"""`persea route train` and `persea route eval` on a project with synthetic records: the
table and the curve, prices from the right place, and bad input as one line and exit 2."""

from __future__ import annotations

import json

import pytest

from persea.evaluate.records import RunStore
from persea.route.learned import resolve_prices, serve_prices
from persea.errors import PerseaError
from persea.project import load_project
from tests.cli_helpers import run_cli
from tests.route.learned_records import PRICES, write_project, write_split


@pytest.fixture
def project(tmp_path):
    project = write_project(tmp_path / "p")
    store = RunStore(project / "evals")
    write_split(store, "dev", 200, seed=1)
    write_split(store, "test", 100, seed=2)
    return project


def _prices():
    return [a for m, p in PRICES.items() for a in ("--price", f"{m}={p}")]


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_train_then_eval_prints_every_row_and_writes_the_curve(project, capsys, monkeypatch):
    code, out, err = run_cli(capsys, monkeypatch, "route", "train", "-p", str(project),
                             *_prices())
    assert code == 0, err
    router = json.loads((project / "router.json").read_text())
    assert router["prices"] == PRICES and router["trained_on"]["items"] == 200
    assert "--price" in out and f"wrote {project / 'router.json'}" in out
    code, out, err = run_cli(capsys, monkeypatch, "route", "eval", "-p", str(project),
                             "-t", "0.5", "-t", "1")
    assert code == 0, err
    rows = {cells[0]: cells for cells in (
        [c.strip() for c in line.strip().strip("│").split("│")]
        for line in out.splitlines() if line.strip().startswith("│"))}
    assert list(rows) == ["cheap", "digits", "letters", "random", "learned @ 0.50",
                          "learned @ 1.00", "oracle"], out
    accuracy = {name: float(cells[2]) for name, cells in rows.items()}
    assert accuracy["learned @ 1.00"] > max(accuracy[m] for m in PRICES) + 0.2
    assert accuracy["oracle"] >= accuracy["learned @ 1.00"]
    assert rows["cheap"][3] == "100.0" and rows["letters"][3] == "2,000.0"
    assert "100 items" in out and "cost / 1k requests" in out
    png = project / "route-quality.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prices_default_to_one_each(project, capsys, monkeypatch):
    code, out, err = run_cli(capsys, monkeypatch, "route", "train", "-p", str(project),
                             "--out", str(project / "r" / "flat.json"))
    assert code == 0, err
    assert json.loads((project / "r" / "flat.json").read_text())["prices"] == \
        {m: 1.0 for m in ("cheap", "digits", "letters")}
    assert "default" in out


def test_prices_come_from_the_serve_section_and_a_clashing_flag_is_refused(tmp_path):
    serve = {"models": [
        {"name": "digits", "builtin": "qwen3-toy", "price": {"input": "0.001", "output": "0.002"}},
        {"name": "cheap", "builtin": "gemma3-toy", "price": {"input": "0.0001", "output": "0"}},
        {"name": "x", "builtin": "gptoss-toy"}]}
    found = serve_prices(load_project(write_project(tmp_path / "priced", serve)))
    # per request: a reference request of 1,000 prompt and 1,000 completion tokens
    assert found == pytest.approx({"digits": 0.003, "cheap": 0.0001})
    assert serve_prices(load_project(write_project(tmp_path / "bare"))) == {}
    prices, source = resolve_prices(["cheap", "digits", "letters"], found, {"letters": 2.0})
    assert prices == pytest.approx({"cheap": 0.0001, "digits": 0.003, "letters": 2.0})
    assert source == {"cheap": "serve", "digits": "serve", "letters": "--price"}
    with pytest.raises(PerseaError, match="disagrees with the project's serve section"):
        resolve_prices(["digits"], found, {"digits": 1.0})


def test_missing_records_are_one_line(tmp_path, capsys, monkeypatch):
    bare = write_project(tmp_path / "bare")
    code, _, err = run_cli(capsys, monkeypatch, "route", "train", "-p", str(bare))
    assert code == 2
    assert "no complete toyworld evaluation runs on the dev split" in _one_line(err)
    assert f"persea eval --project {bare} --split dev" in err


def test_bad_input_is_one_line_and_exit_2(project, capsys, monkeypatch):
    cases = [
        (["route", "train", "-p", str(project), "--price", "digits=abc"],
         "expected MODEL=X with X a positive number"),
        (["route", "train", "-p", str(project), "--price", "nobody=1"],
         "--price names nobody"),
        (["route", "train", "-p", str(project), "--threshold", "1.5"],
         "expected a number from 0 to 1"),
        (["route", "eval", "-p", str(project)], "no router at"),
    ]
    for args, expected in cases:
        code, _, err = run_cli(capsys, monkeypatch, *args)
        assert code == 2 and expected in _one_line(err), (args, err)
    assert run_cli(capsys, monkeypatch, "route", "train", "-p", str(project))[0] == 0
    for args, expected in [
        (["-t", "-0.2"], "expected a number from 0 to 1"),
        (["--split", "dev"], "the router was trained on the dev split"),
    ]:
        code, _, err = run_cli(capsys, monkeypatch, "route", "eval", "-p", str(project), *args)
        assert code == 2 and expected in _one_line(err), (args, err)


def test_a_router_for_other_models_is_refused(project, tmp_path, capsys, monkeypatch):
    other = write_project(tmp_path / "other")
    store = RunStore(other / "evals")
    write_split(store, "dev", 60, seed=4, models=("digits", "letters", "cheap"),
                fingerprints={"digits": "d" * 63 + "0"})
    write_split(store, "test", 30, seed=5, models=("digits", "letters"))
    assert run_cli(capsys, monkeypatch, "route", "train", "-p", str(other))[0] == 0
    # judged on records without one of its models
    code, _, err = run_cli(capsys, monkeypatch, "route", "eval", "-p", str(other))
    assert code == 2 and "no complete toyworld run of cheap on the test split" in _one_line(err)
    # judged on records of other weights of a model
    code, _, err = run_cli(capsys, monkeypatch, "route", "eval", "-p", str(project),
                           "--router", str(other / "router.json"))
    assert code == 2 and "other weights than the router was trained on" in _one_line(err)
