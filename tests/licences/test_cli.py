"""`persea licences` before any harvest, and `persea harvest` refusing what the licence
policy refuses: one line, nothing written."""

from __future__ import annotations

import pytest
import yaml

from persea.errors import PerseaError
from persea.harvest import HarvestJob, run_harvest
from persea.init_template import EXAMPLE_PROJECT
from persea.licences.policy import LicenceRefused
from persea.project import load_project

from tests.cli_helpers import run_cli


def _project(directory, teachers, **extra):
    directory.mkdir(parents=True, exist_ok=True)
    data = {"name": "lic", "teachers": teachers, "prompts": {"toyworld": {"per_skill": 2}},
            "harvest": {"shard_size": 4, "batch_size": 4, "max_new_tokens": 4, "top_k": 4},
            **extra}
    (directory / "persea.yaml").write_text(yaml.safe_dump(data))
    return directory


def _files(directory) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def test_the_example_project_passes_with_the_toy_teachers_licence(tmp_path, capsys,
                                                                  monkeypatch):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "persea.yaml").write_text(EXAMPLE_PROJECT.format(name="demo"))
    code, out, err = run_cli(capsys, monkeypatch, "licences", "-p", str(tmp_path / "demo"))
    assert code == 0, err
    rows = [line for line in out.splitlines() if "built-in model" in line]
    assert len(rows) == 3
    for toy in ("qwen3-toy", "gemma3-toy", "gptoss-toy"):
        (row,) = [r for r in rows if f"│ {toy} " in r]
        assert "Apache-2.0" in row and "│ allow " in row and "│ none" in row
    assert "apache.org/licenses/LICENSE-2.0" in out


def test_the_table_shows_each_decision_and_a_refusal_exits_1(tmp_path, capsys, monkeypatch):
    reason = "signed data licence with the provider, 2026-02"
    project = _project(tmp_path / "p", [
        {"name": "toy", "builtin": "qwen3-toy"},
        {"name": "g3", "builtin": "gemma3-toy", "license": "gemma"},
        {"name": "q3b", "builtin": "qwen3-toy", "license": "qwen-research"},
        {"name": "l31", "builtin": "qwen3-toy", "license": "llama3.1"},
        {"name": "gpt", "endpoint": "https://api.openai.com/v1", "model": "m",
         "license_override": {"reason": reason}},
        {"name": "gem", "endpoint": "https://generativelanguage.googleapis.com/v1beta/openai/",
         "model": "m"}])
    code, out, err = run_cli(capsys, monkeypatch, "licences", "-p", str(project))
    assert code == 1, err
    row = {name: next(line for line in out.splitlines() if line.startswith(f"│ {name} "))
           for name in ("toy", "g3", "q3b", "l31", "gpt", "gem")}
    assert "│ allow " in row["toy"]
    assert "allow-with-obligations" in row["g3"] and "gemma" in row["g3"]
    assert "│ refuse " in row["q3b"] and "refused: a non-commercial licence" in row["q3b"]
    assert "refuse at seal" in row["l31"]  # served as `student`
    assert "allow (override)" in row["gpt"] and "endpoint host api.openai.com" in row["gpt"]
    assert "│ refuse " in row["gem"] and "Gemini API Additional Terms" in row["gem"]
    assert reason in out and "Gemma is provided under and subject to" in out
    assert "https://ai.google.dev/gemma/terms" in out
    assert "refused: q3b, l31, gem" in " ".join(out.split())
    assert not (project / "cache").exists()

    # a research project may use the research licence; a Llama-named student settles l31
    data = yaml.safe_load((project / "persea.yaml").read_text())
    data["teachers"] = [t for t in data["teachers"] if t["name"] != "gem"]
    data["licences"] = {"commercial": False}
    data["serve"] = {"models": [{"name": "Llama-lic", "student": True}]}
    (project / "persea.yaml").write_text(yaml.safe_dump(data))
    code, out, err = run_cli(capsys, monkeypatch, "licences", "-p", str(project))
    assert code == 0, err
    assert "refuse" not in out.replace("refused: the terms", "")


def test_an_undeclared_licence_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    project = _project(tmp_path / "p", [
        {"name": "toy", "builtin": "qwen3-toy"},
        {"name": "local", "endpoint": "http://127.0.0.1:9/v1", "model": "m"}])
    code, out, err = run_cli(capsys, monkeypatch, "licences", "-p", str(project))
    assert code == 2 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "teacher 'local' declares no licence: add `license: <SPDX id or licence name>`" \
        in lines[0] and "persea.yaml" in lines[0]


def test_harvest_refuses_before_writing_anything(tmp_path, tiny_model_dir, capsys,
                                                 monkeypatch):
    teachers = [{"name": "alpha", "path": str(tiny_model_dir)},
                {"name": "claude", "endpoint": "https://api.anthropic.com/v1", "model": "m"}]
    project = _project(tmp_path / "p", teachers)
    with pytest.raises(LicenceRefused, match="harvest refused by the licence policy: teacher "
                                             "'claude' \\(Anthropic Commercial Terms"):
        run_harvest(HarvestJob.of(load_project(project)))
    assert _files(project) == ["persea.yaml"]
    code, out, err = run_cli(capsys, monkeypatch, "harvest", "-p", str(project))
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].endswith("nothing written"), err
    assert _files(project) == ["persea.yaml"]

    teachers[1] = {"name": "bare", "path": str(tmp_path / "bare")}
    (tmp_path / "bare").mkdir()
    _project(project, teachers)
    with pytest.raises(PerseaError, match="teacher 'bare' declares no licence") as e:
        run_harvest(HarvestJob.of(load_project(project)))
    assert e.value.exit_code == 2
    assert _files(project) == ["persea.yaml"]

    # the research licence in a research project: the same harvest goes ahead
    teachers[1] = {"name": "bare", "path": str(tiny_model_dir), "license": "qwen-research"}
    _project(project, teachers, licences={"commercial": False})
    result = run_harvest(HarvestJob.of(load_project(project)))
    assert result is not None and [t.name for t in result.teachers] == ["alpha", "bare"]
