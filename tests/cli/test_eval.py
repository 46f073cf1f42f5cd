"""`persea eval` on a project: the student and the teachers by default, endpoints and extra
models by name; bad input is one red line and exit status 2."""

from __future__ import annotations

import pytest

from persea.evaluate.records import COMPLETE, INCOMPLETE, RunStore
from persea.evaluate.suites import ToyworldSuite

from tests.cli_helpers import run_cli


def test_default_eval_runs_student_and_every_teacher(project_dir, capsys, monkeypatch):
    code, out, err = run_cli(capsys, monkeypatch, "eval", "--project", str(project_dir))
    assert code == 0, err
    runs = RunStore(project_dir / "evals").latest_complete()
    assert set(runs) == {("student", "toyworld"), ("qwen3-toy", "toyworld")}
    teacher = runs[("qwen3-toy", "toyworld")]
    assert teacher.n_items == 18 and teacher.source == "builtin:qwen3-toy"
    assert runs[("student", "toyworld")].source.endswith("runs/student/student")
    assert (project_dir / "persea.db").is_file()  # mirrored into the project database
    assert "qwen3-toy" in out and "student" in out
    assert f"records: {(project_dir / 'evals').resolve()} (one folder per run" in out


def test_endpoint_is_evaluated_like_any_model(project_dir, stub_endpoint, capsys,
                                              monkeypatch):
    suite = ToyworldSuite(per_skill=3, max_new_tokens=8)
    url = stub_endpoint({it.prompt: it.target for it in suite.items()})
    code, _, err = run_cli(capsys, monkeypatch, "eval", "--project", str(project_dir),
                           "--endpoint", f"oracle={url}", "--only")
    assert code == 0, err
    (run,) = RunStore(project_dir / "evals").runs()
    assert (run.model, run.source, run.status) == ("oracle", url, COMPLETE)
    assert run.scores["toyworld/overall"] == {"mean": 1.0, "n": 18}


def test_endpoint_that_times_out_is_named_and_the_run_is_not_a_result(
        project_dir, stub_endpoint, capsys, monkeypatch):
    url = stub_endpoint({}, delay=3.0)
    code, out, err = run_cli(capsys, monkeypatch, "eval", "--project", str(project_dir),
                             "--endpoint", f"slow={url}", "--only", "--timeout", "0.3")
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith("error:") and url in line and "0.3 s" in line
    assert "Traceback" not in err
    (run,) = RunStore(project_dir / "evals").runs()
    assert run.status == INCOMPLETE


@pytest.mark.parametrize("args, named", [
    (["--suite", "nosuch"], "'nosuch'"),
    (["--suite", "lmeval:no_such_task", "--include-path", "."], "'no_such_task'"),
    (["--model", "x=./not-there", "--only"], "./not-there"),
])
def test_bad_input_is_one_red_line_naming_it(project_dir, capsys, monkeypatch, args, named):
    monkeypatch.chdir(project_dir)
    code, _, err = run_cli(capsys, monkeypatch, "eval", "--project", str(project_dir), *args)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and named in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("args, named", [
    (["--per-skill", "-1"], "--per-skill"), (["--per-skill", "0"], "--per-skill"),
    (["--timeout", "0"], "--timeout"), (["--timeout", "-5"], "--timeout"),
    (["--limit", "0"], "--limit"), (["--batch-size", "0"], "--batch-size"),
])
def test_non_positive_counts_are_refused_at_the_flag(project_dir, capsys, monkeypatch, args,
                                                     named):
    code, _, err = run_cli(capsys, monkeypatch, "eval", "--project", str(project_dir), *args)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and named in lines[0], err
    assert "Traceback" not in err
    assert RunStore(project_dir / "evals").runs() == []
