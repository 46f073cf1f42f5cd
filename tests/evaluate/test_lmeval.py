"""lm-evaluation-harness as a suite: local YAML tasks (a generation task and a multiple-
choice one) on the built-in qwen3-toy, offline, into ordinary run records."""

from __future__ import annotations

from pathlib import Path

from persea.evaluate.records import COMPLETE, RunStore
from persea.evaluate.scorecard import build_scorecard

from tests.cli_helpers import run_cli
from tests.evaluate.conftest import write_project

TASKS = Path(__file__).parent / "lmeval_tasks"


def test_local_lmeval_tasks_run_offline_into_records(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    project = write_project(tmp_path / "p")
    code, out, err = run_cli(capsys, monkeypatch, "eval", "--project", str(project), "--only",
                             "--model", "q=qwen3-toy", "--suite", "lmeval:persea_toy_add",
                             "--suite", "lmeval:persea_toy_choice", "--include-path",
                             str(TASKS))
    assert code == 0, err[-2000:]
    store = RunStore(project / "evals")
    runs = {r.suite: r for r in store.runs()}
    assert set(runs) == {"lmeval:persea_toy_add", "lmeval:persea_toy_choice"}
    gen = runs["lmeval:persea_toy_add"]
    assert gen.status == COMPLETE and gen.n_items == 6 and gen.model == "q"
    assert gen.suite_version.startswith("lm-eval-0.4.")
    items = store.read_items(gen.run_id)
    assert sorted(i["id"] for i in items) == [f"persea_toy_add:{k}" for k in range(6)]
    # exact match recomputed from what the model answered (the harness strips nothing
    # for exact_match by default)
    by_hand = sum(i["output"] == i["target"] for i in items) / 6
    assert gen.scores["persea_toy_add/exact_match"] == {"mean": by_hand, "n": 6}
    assert {i["target"] for i in items} >= {"42", "350"}

    choice = runs["lmeval:persea_toy_choice"]
    assert choice.scores["persea_toy_choice/acc"]["n"] == 6
    values = [i["outcomes"]["persea_toy_choice/acc"] for i in store.read_items(choice.run_id)]
    assert set(values) <= {0.0, 1.0}

    card = build_scorecard(store, ["q"])
    assert "persea_toy_add/exact_match" in card.metrics
    assert "persea_toy_choice/acc" in card.metrics

    # asked again: the complete runs are reused, not redone
    code, _, _ = run_cli(capsys, monkeypatch, "eval", "--project", str(project), "--only",
                         "--model", "q=qwen3-toy", "--suite", "lmeval:persea_toy_add",
                         "--include-path", str(TASKS))
    assert code == 0 and len(store.runs()) == 2


def test_an_endpoint_answers_generation_tasks_and_names_what_it_cannot(
        tmp_path, stub_endpoint, capsys, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    url = stub_endpoint({"What is 12 + 30?": "42", "What is 7 + 8?": "15"})
    project = write_project(tmp_path / "p")
    args = ["eval", "--project", str(project), "--only", "--endpoint", f"ep={url}",
            "--include-path", str(TASKS)]
    code, _, err = run_cli(capsys, monkeypatch, *args, "--suite", "lmeval:persea_toy_add")
    assert code == 0, err[-2000:]
    (run,) = RunStore(project / "evals").runs()
    assert run.scores["persea_toy_add/exact_match"] == {"mean": 2 / 6, "n": 6}
    code, _, err = run_cli(capsys, monkeypatch, *args, "--suite", "lmeval:persea_toy_choice")
    assert code == 2 and "log-probabilities" in err and "'ep'" in err
