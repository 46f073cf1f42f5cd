"""Loading teachers from their sources, and every way a person can get that wrong: each must
end in one `PerseaError` that names the teacher and the problem."""

from __future__ import annotations

import shutil
import socket

import pytest

import persea.models.hub
import persea.models.sources
from persea.errors import PerseaError
from persea.models.sources import load_hf_dir, load_hub, load_teacher
from persea.models.hf import HFModel
from persea.project import LoadedProject, TeacherSpec, parse_project

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PERSEA_OFFLINE")


def closed_port() -> int:
    """A loopback port that nothing listens on (it was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


# -- local directories ------------------------------------------------------------------

def test_load_hf_dir_on_a_missing_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(PerseaError) as err:
        load_hf_dir("ghost", missing)
    msg = _one_line(err)
    assert "teacher 'ghost'" in msg and "does not exist" in msg and str(missing) in msg


def test_load_hf_dir_without_config_json(tmp_path):
    with pytest.raises(PerseaError) as err:
        load_hf_dir("empty", tmp_path)
    msg = _one_line(err)
    assert "teacher 'empty'" in msg and "no config.json" in msg and str(tmp_path) in msg


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing"])
def test_load_hf_dir_with_damaged_weights(tiny_model_dir, tmp_path, damage):
    copy = tmp_path / "damaged"
    shutil.copytree(tiny_model_dir, copy)
    weights = copy / "model.safetensors"
    if damage == "truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        weights.write_bytes(b"not safetensors at all")
    else:
        weights.unlink()
    with pytest.raises(PerseaError) as err:
        load_hf_dir("broken", copy)
    msg = _one_line(err)
    assert "teacher 'broken'" in msg and "cannot load model" in msg and str(copy) in msg


def test_load_hf_dir_with_a_config_that_is_not_json(tiny_model_dir, tmp_path):
    copy = tmp_path / "badjson"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "config.json").write_text("{not json")
    with pytest.raises(PerseaError) as err:
        load_hf_dir("badjson", copy)
    msg = _one_line(err)
    assert "teacher 'badjson'" in msg and "config" in msg and "JSON" in msg


# -- hub ids ----------------------------------------------------------------------------

@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """HF_HOME in a fresh folder, so that no real cache can hold the model. huggingface_hub
    reads its cache path when imported, so the path it already holds is moved too."""
    import huggingface_hub.constants as hf_constants

    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(home / "hub"))
    return home


@pytest.fixture
def reach_calls(monkeypatch):
    """Records every reachability check (through the real one) by either name it has."""
    calls: list[str] = []
    real = persea.models.hub.reachable

    def recording(url, *args, **kwargs):
        calls.append(url)
        return real(url, *args, **kwargs)

    monkeypatch.setattr(persea.models.hub, "reachable", recording)
    monkeypatch.setattr(persea.models.sources, "reachable", recording)
    return calls


@pytest.mark.parametrize("flag", OFFLINE_VARS)
def test_load_hub_offline_fails_at_once(monkeypatch, empty_hub_cache, reach_calls, flag):
    for var in OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(flag, "1")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")

    with pytest.raises(PerseaError) as err:
        load_hub("qwen", "persea-tests/not-cached")

    msg = _one_line(err)
    assert "teacher 'qwen'" in msg and "'persea-tests/not-cached'" in msg
    assert "not in the local cache" in msg and f"{flag} is set" in msg
    assert reach_calls == []  # the flag settles it: no connection is even tried


def test_load_hub_with_an_unreachable_hub(monkeypatch, empty_hub_cache, reach_calls):
    for var in OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)

    with pytest.raises(PerseaError) as err:
        load_hub("qwen", "persea-tests/not-cached")

    msg = _one_line(err)
    assert "teacher 'qwen'" in msg and "'persea-tests/not-cached'" in msg
    assert f"{endpoint} cannot be reached" in msg
    assert reach_calls == [endpoint]


def test_load_hub_reads_a_cached_model(tiny_model_dir, tmp_path, monkeypatch, reach_calls):
    """A hub id found in the local cache loads without the network being asked."""
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hub"
    snapshot = cache / "models--persea-tests--tiny" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_model_dir, snapshot)
    (cache / "models--persea-tests--tiny" / "refs").mkdir()
    (cache / "models--persea-tests--tiny" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))

    model = load_hub("cached", "persea-tests/tiny")

    assert isinstance(model, HFModel) and model.name == "cached"
    assert model.vocab_size == len(model.tokenizer)
    assert reach_calls == []
    assert load_hub("again", "persea-tests/tiny").fingerprint == model.fingerprint


# -- load_teacher ------------------------------------------------------------------------

def test_load_teacher_with_an_unknown_builtin():
    from persea.toyworld.builtin import BUILTIN_TEACHERS

    with pytest.raises(PerseaError) as err:
        load_teacher(TeacherSpec(name="toy", builtin="nope"))
    msg = _one_line(err)
    assert "teacher 'toy'" in msg and "unknown builtin 'nope'" in msg
    assert all(name in msg for name in BUILTIN_TEACHERS)


def test_load_teacher_resolves_a_path_from_the_project(tiny_model_dir, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny").symlink_to(tiny_model_dir, target_is_directory=True)
    spec = parse_project({"name": "p", "teachers": [
        {"name": "local", "path": "models/tiny"}, {"name": "gone", "path": "models/gone"}]})
    project = LoadedProject(spec, tmp_path, tmp_path / "persea.yaml")

    model = load_teacher(spec.teachers[0], project)
    assert isinstance(model, HFModel) and model.name == "local"

    with pytest.raises(PerseaError) as err:
        load_teacher(spec.teachers[1], project)
    msg = _one_line(err)
    assert "teacher 'gone'" in msg and str(tmp_path / "models" / "gone") in msg
