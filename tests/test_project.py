"""persea.yaml: the example validates; each mistake is one line naming field and value."""

from __future__ import annotations

import pytest
import yaml

from persea.errors import PerseaError
from persea.init_template import EXAMPLE_PROJECT
from persea.project import load_project, parse_project

BASE = {"name": "p", "teachers": [{"name": "a", "builtin": "qwen3-toy"}]}


def test_example_project_is_valid():
    spec = parse_project(yaml.safe_load(EXAMPLE_PROJECT.format(name="demo")))
    assert [t.name for t in spec.teachers] == ["qwen3-toy", "gemma3-toy", "gptoss-toy"]
    assert spec.harvest.top_k == 32


@pytest.mark.parametrize("data, expected", [
    ({**BASE, "teacherz": []}, "teacherz: unknown field"),
    ({**BASE, "harvest": {"top_k": 0}}, "harvest.top_k: Input should be greater than or equal to 1 (found: 0)"),
    ({**BASE, "harvest": {"top_k": "many"}}, "harvest.top_k: Input should be a valid integer"),
    ({**BASE, "teachers": [{"name": "a", "builtin": "x", "path": "y"}]},
     "teachers[0]: give exactly one source of builtin, path, hub, gguf, endpoint; found builtin, path"),
    ({**BASE, "teachers": [{"name": "a", "endpoint": "http://127.0.0.1:1/v1"}]},
     "an endpoint teacher needs `model:`"),
    ({**BASE, "teachers": [{"name": "a", "builtin": "x"}, {"name": "a", "builtin": "y"}]},
     "teacher names must be unique; repeated: a"),
    ({**BASE, "teachers": [{"name": "a", "bulitin": "x"}]}, "teachers[0].bulitin: unknown field"),
    ({"teachers": BASE["teachers"]}, "name: Field required"),
    ({**BASE, "prompts": {"toyworld": {}, "file": "x.jsonl"}}, "give exactly one of `toyworld:` or `file:`"),
])
def test_mistakes_name_the_field(data, expected):
    with pytest.raises(PerseaError) as e:
        parse_project(data, "persea.yaml")
    assert expected in e.value.message
    assert "\n" not in e.value.message
    assert e.value.message.startswith("persea.yaml: ")


def test_load_project_errors(tmp_path):
    with pytest.raises(PerseaError, match="no project file at"):
        load_project(tmp_path)
    (tmp_path / "persea.yaml").write_text("name: [unclosed\n")
    with pytest.raises(PerseaError, match=r"not valid YAML at line \d+, column \d+"):
        load_project(tmp_path)
    (tmp_path / "persea.yaml").write_text("- a list\n")
    with pytest.raises(PerseaError, match="expected a mapping"):
        load_project(tmp_path)


def test_relative_paths_resolve_from_project_dir(tmp_path):
    (tmp_path / "persea.yaml").write_text(yaml.safe_dump(
        {"name": "p", "teachers": [{"name": "a", "path": "models/a"}]}))
    proj = load_project(tmp_path / "persea.yaml")
    assert proj.resolve("models/a") == tmp_path.resolve() / "models/a"


def test_project_seed_is_the_default_seed_of_the_student():
    base = {"name": "p", "teachers": [{"name": "q", "builtin": "qwen3-toy"}]}
    assert parse_project({**base, "seed": 2}).distill.seed == 2
    assert parse_project({**base, "seed": 2, "distill": {"steps": 5}}).distill.seed == 2
    assert parse_project({**base, "seed": 2, "distill": {"seed": 7}}).distill.seed == 7
    assert parse_project(base).distill.seed == 0
