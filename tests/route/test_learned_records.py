"""The records a learned router trains on live beside the test runs: `persea eval --split
dev` writes them, and the project's scorecard and gate keep reading only `eval.split`."""

from __future__ import annotations

from persea.evaluate.records import RunStore, store_for
from persea.evaluate.scorecard import scorecard_for_project
from persea.project import load_project
from persea.route.records import project_routing_data
from tests.cli_helpers import run_cli
from tests.route.learned_records import write_project, write_run


def test_dev_runs_are_kept_apart_from_the_projects_results(tmp_path):
    project = write_project(tmp_path / "p")
    store = RunStore(project / "evals")
    items = [("a", "please: 1", True), ("b", "please: x", False)]
    write_run(store, "digits", "test", items, [1.0, 0.0])
    write_run(store, "cheap", "test", items, [0.0, 0.0])
    write_run(store, "digits", "dev", items, [0.0, 0.0])  # newer, and on another split
    write_run(store, "cheap", "dev", items, [1.0, 1.0])
    proj = load_project(project)
    latest = store_for(proj).latest_complete()
    assert latest[("digits", "toyworld")].split == "test"
    assert {r.split for r in store.runs()} == {"dev", "test"}  # an unlimited store sees all
    card = scorecard_for_project(proj)
    assert card.get("toyworld/overall", "digits").mean == 0.5  # the test run, not the dev
    assert project_routing_data(proj, "dev").accuracy() == {"cheap": 1.0, "digits": 0.0}
    assert project_routing_data(proj, "test").accuracy() == {"cheap": 0.0, "digits": 0.5}


def test_eval_refuses_an_unknown_split_in_one_line(tmp_path, capsys, monkeypatch):
    project = write_project(tmp_path / "p")
    code, _, err = run_cli(capsys, monkeypatch, "eval", "-p", str(project), "--split", "val")
    assert code == 2
    assert err.strip().splitlines() == ["error: --split 'val': expected one of train, dev, test"]
