"""The release gate: a policy that must pass, one that must fail (exit 1), bad policies
(exit 2), the gate record bound to the weights, and require_release with and without force."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from persea.errors import PerseaError
from persea.evaluate.records import RunStore
from persea.evaluate.release import require_release
from persea.models.fingerprint import fingerprint_model_dir

from tests.cli_helpers import run_cli
from tests.evaluate.conftest import add_run, write_project

TEACHERS = [{"name": "qwen3-toy", "builtin": "qwen3-toy"},
            {"name": "gemma3-toy", "builtin": "gemma3-toy"}]
STRONG = {"addition": [1] * 18 + [0] * 2, "kb": [1] * 17 + [0] * 3}   # 0.90, 0.85
WEAK = {"addition": [1] * 6 + [0] * 14, "kb": [0] * 20}                # 0.30, 0.00
CLOSE = {"addition": [1] * 17 + [0] * 3, "kb": [1] * 17 + [0] * 3}     # 0.85, 0.85
KB_EXPERT = {"addition": [0] * 20, "kb": [1] * 20}                     # 0.00, 1.00


def _policy(**extra):
    rules = [{"beat": "qwen3-toy"},
             {"within_best_teacher": 20, "metrics": ["toyworld/addition", "toyworld/kb"]},
             {"floor": 0.5, "metrics": ["toyworld/addition", "toyworld/kb"]}]
    return {"candidate": "student", "core_metrics": ["toyworld/overall"], "rules": rules,
            **extra}


def _project(tmp_path, tiny_model_dir, rival, policy=None):
    project = write_project(tmp_path / "p", student_from=tiny_model_dir, teachers=TEACHERS,
                            release=policy or _policy())
    student = project / "runs" / "student" / "student"
    store = RunStore(project / "evals")
    add_run(store, "student", STRONG, fingerprint=fingerprint_model_dir(student))
    add_run(store, "qwen3-toy", rival)
    add_run(store, "gemma3-toy", KB_EXPERT)
    return project, student


def test_a_gate_that_must_pass_records_its_verdict(tmp_path, tiny_model_dir, capsys,
                                                   monkeypatch):
    project, student = _project(tmp_path, tiny_model_dir, WEAK)
    code, out, err = run_cli(capsys, monkeypatch, "gate", "--project", str(project))
    assert code == 0, out + err
    assert [ln.split()[0] for ln in out.splitlines() if ln.startswith(("PASS ", "FAIL "))] \
        == ["PASS"] * 3
    assert "0.875 vs 0.150: difference +0.725" in out  # overall: 35/40 vs 6/40
    assert "0.850 vs best teacher gemma3-toy 1.000 (allowed down to 0.800)" in out
    (gate_file,) = (project / "gates").glob("*.json")
    gate = json.loads(gate_file.read_text())
    assert gate["verdict"] == "passed"
    assert gate["fingerprint"] == fingerprint_model_dir(student)
    assert json.loads((student / "release-gate.json").read_text())["id"] == gate["id"]

    release = require_release(project, student, force=False, reason=None, who=None)
    assert release["forced"] is False and release["gate_id"] == gate["id"]
    from persea.db import make_engine
    from persea.db.schema import gate_records, release_records

    engine = make_engine(f"sqlite:///{project / 'persea.db'}")
    with engine.connect() as conn:
        assert conn.execute(sa.select(gate_records.c.verdict)).scalars().all() == ["passed"]
        assert conn.execute(sa.select(release_records.c.forced)).scalars().all() == [False]
    engine.dispose()


def test_a_gate_that_must_fail_exits_1_with_the_numbers(tmp_path, tiny_model_dir, capsys,
                                                        monkeypatch):
    project, student = _project(tmp_path, tiny_model_dir, CLOSE)
    code, out, _ = run_cli(capsys, monkeypatch, "gate", "--project", str(project))
    assert code == 1
    assert "FAIL beat qwen3-toy" in out
    assert "0.875 vs 0.850: difference +0.025" in out and "(not above 0)" in out
    assert "FAILED" in out
    (gate_file,) = (project / "gates").glob("*.json")
    assert json.loads(gate_file.read_text())["verdict"] == "failed"

    with pytest.raises(PerseaError, match="newest gate failed"):
        require_release(project, student, force=False, reason=None, who=None)
    with pytest.raises(PerseaError, match="needs --reason"):
        require_release(project, student, force=True, reason=None, who=None)
    forced = require_release(project, student, force=True, reason="demo for the board",
                             who="ada")
    assert forced["forced"] is True and forced["who"] == "ada"
    (saved,) = (project / "releases").glob("*.json")
    assert json.loads(saved.read_text())["reason"] == "demo for the board"
    from persea.db import make_engine
    from persea.db.schema import release_records

    engine = make_engine(f"sqlite:///{project / 'persea.db'}")
    with engine.connect() as conn:
        row = conn.execute(sa.select(release_records)).one()
    engine.dispose()
    assert (row.forced, row.who, row.reason) == (True, "ada", "demo for the board")


def test_a_gate_binds_to_the_weights(tmp_path, tiny_model_dir, capsys, monkeypatch):
    project, student = _project(tmp_path, tiny_model_dir, WEAK)
    assert run_cli(capsys, monkeypatch, "gate", "--project", str(project))[0] == 0
    config = json.loads((student / "config.json").read_text())
    config["note"] = "other weights"
    (student / "config.json").write_text(json.dumps(config))  # a new checkpoint
    with pytest.raises(PerseaError, match="no release gate was run on these weights"):
        require_release(project, student, force=False, reason=None, who=None)
    # and its old scores no longer count for the gate either
    code, _, err = run_cli(capsys, monkeypatch, "gate", "--project", str(project))
    assert code == 2 and "no complete evaluation run of its current weights" in err


def test_without_a_project_the_copy_in_the_model_directory_counts(tmp_path, tiny_model_dir,
                                                                    capsys, monkeypatch):
    project, student = _project(tmp_path, tiny_model_dir, WEAK)
    assert run_cli(capsys, monkeypatch, "gate", "--project", str(project))[0] == 0
    monkeypatch.setenv("PERSEA_DB", f"sqlite:///{tmp_path / 'serve.db'}")
    assert require_release(None, student, False, None, None)["forced"] is False
    other = tmp_path / "ungated"
    import shutil

    shutil.copytree(tiny_model_dir, other)
    with pytest.raises(PerseaError, match="not released"):
        require_release(None, other, False, None, None)
    forced = require_release(None, other, True, "load test", None)
    assert forced["who"]  # the OS user when --forced-by is not given
    assert json.loads((other / "release-log.jsonl").read_text())["reason"] == "load test"


@pytest.mark.parametrize("policy, named", [
    (_policy(core_metrics=["toyworld/nosuch"]), "'toyworld/nosuch'"),
    ({"rules": [{"beat": "nobody"}]}, "'nobody'"),
    ({"rules": [{"floor": 0.1, "metrics": ["mmlu/acc"]}]}, "'mmlu/acc'"),
    ({"rules": [{"floor": 0.1, "metrics": "skills"}]}, "'toyworld/reverse'"),
])
def test_a_bad_policy_is_exit_2_naming_it(tmp_path, tiny_model_dir, capsys, monkeypatch,
                                          policy, named):
    project, _ = _project(tmp_path, tiny_model_dir, WEAK, policy=policy)
    code, out, err = run_cli(capsys, monkeypatch, "gate", "--project", str(project))
    assert code == 2
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert named in line and "Traceback" not in err


def test_no_policy_is_exit_2(tmp_path, capsys, monkeypatch):
    project = write_project(tmp_path / "p")
    code, _, err = run_cli(capsys, monkeypatch, "gate", "--project", str(project))
    assert code == 2 and "no `release:` section" in err


def test_the_example_project_has_a_policy_over_its_own_teachers(tmp_path, capsys,
                                                                  monkeypatch):
    from persea.project import load_project

    assert run_cli(capsys, monkeypatch, "init", str(tmp_path / "demo"))[0] == 0
    project = load_project(tmp_path / "demo")
    rel = project.spec.release
    teachers = {t.name for t in project.spec.teachers}
    assert rel.candidate == "student" and rel.core_metrics == ["toyworld/overall"]
    assert {r.beat for r in rel.rules if r.kind == "beat"} == teachers
