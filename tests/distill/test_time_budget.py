"""`distill.time_budget`: a run bounded by training seconds rather than by steps."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml

from persea.distill.run import run_distill
from persea.distill.trainer import checkpoints, lr_factor
from persea.project import load_project


def _set_budget(project, seconds):
    data = yaml.safe_load((project / "persea.yaml").read_text())
    data["distill"]["time_budget"] = seconds
    (project / "persea.yaml").write_text(yaml.safe_dump(data))


def _loss_rows(run_dir):
    with open(run_dir / "loss.csv", newline="") as f:
        return [(r["step"], r["loss"], r["lr"]) for r in csv.DictReader(f)]


def test_the_schedule_decays_with_the_share_of_the_budget_spent():
    # warm-up is by steps whatever the budget
    assert lr_factor(0, 10, 100, spent_share=0.9) == pytest.approx(0.1)
    # past warm-up the cosine follows whichever is further along
    assert lr_factor(10, 10, 100, spent_share=0.0) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100, spent_share=0.5) == pytest.approx(0.55)
    assert lr_factor(10, 10, 100, spent_share=1.0) == pytest.approx(0.1)
    assert lr_factor(55, 10, 100, spent_share=0.1) == pytest.approx(0.55)  # steps lead


def test_a_spent_budget_stops_the_run_with_a_checkpoint_and_a_rerun_trains_nothing(
        project_copy):
    _set_budget(project_copy, 1e-9)  # spent by the first step
    result = run_distill(load_project(project_copy))
    assert result.summary["steps"] == 1
    assert result.summary["seconds"] > 0
    assert [r[0] for r in _loss_rows(result.run_dir)] == ["1"]
    last = checkpoints(result.run_dir)[-1]
    assert last.name == "step-0000001"
    state = torch.load(last / "trainer.pt", weights_only=False)
    assert state["spent"] > 0
    assert (result.student_dir / "model.safetensors").is_file()
    record = json.loads((result.run_dir / "run.json").read_text())
    assert record["distill"]["time_budget"] == 1e-9

    again = run_distill(load_project(project_copy))
    assert again.summary["resumed_from"] == 1 and again.summary["steps"] == 1
    assert [r[0] for r in _loss_rows(again.run_dir)] == ["1"]


def test_a_budget_never_reached_trains_exactly_as_a_run_without_one(project_copy, harvested,
                                                                   tmp_path):
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(harvested, plain)
    ref = run_distill(load_project(plain))
    _set_budget(project_copy, 1e6)
    budgeted = run_distill(load_project(project_copy))
    assert budgeted.summary["steps"] == ref.summary["steps"] == 10
    assert _loss_rows(budgeted.run_dir) == _loss_rows(ref.run_dir)
    record = json.loads((ref.run_dir / "run.json").read_text())
    assert "time_budget" not in record["distill"]  # runs made before the option still resume
