"""`persea seal`: only a released student is sealed; what a sealed directory holds; the
keys it needs and the ones it refuses, each in one line with nothing written."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest
import yaml

from persea.errors import PerseaError
from persea.models.fingerprint import fingerprint_model_dir
from persea.project import load_project
from persea.seal import layout
from persea.seal.keyring import Keyring, LocalKey, generate_keyring, kek_from_file
from persea.seal.seal import seal_student
from persea.seal.unseal import unseal

from tests.cli_helpers import run_cli

SEG = 4096  # several segments even for the tiny student


def _student(project):
    return project.root / "runs" / "student" / "student"


def test_a_gated_student_is_sealed_and_opens_again(gated_project, keyring, tmp_path):
    out = tmp_path / "sealed"
    result = seal_student(gated_project, out, keyring, segment_size=SEG)
    student = _student(gated_project)
    assert result.release["kind"] == "gate"
    assert result.fingerprint == fingerprint_model_dir(student)
    assert sorted(p.name for p in out.iterdir()) == sorted([
        layout.BOM, layout.CARD, layout.FILES_STREAM, layout.NOTICE, layout.SIGNATURE,
        layout.SEAL_JSON, "weights-0.enc"])
    assert not list(tmp_path.glob(".sealed.sealing-*"))  # the work directory is gone
    record = json.loads((out / layout.SEAL_JSON).read_text())
    assert record["release"]["gate_id"] == result.release["gate_id"]
    assert record["data_key"]["kek_id"] == keyring.kek().key_id
    weights = (student / "model.safetensors").read_bytes()
    sealed = (out / "weights-0.enc").read_bytes()
    assert len(sealed) > len(weights)
    # no tensor name, shape or plaintext slice is visible in any sealed file
    header_len = int.from_bytes(weights[:8], "little")
    header = weights[8:8 + header_len]
    for p in out.iterdir():
        blob = p.read_bytes()
        assert b"embed_tokens" not in blob and b"begin_of_text" not in blob
        assert header[:64] not in blob and weights[-4096:-2048] not in blob

    opened = unseal(out, keyring)
    assert bytes(opened.weights["model.safetensors"]) == weights
    names = {p.name for p in student.iterdir() if p.name not in layout.NOT_SEALED} - {
        "model.safetensors"}
    assert set(opened.files) == names
    for n in names:
        assert opened.files[n] == (student / n).read_bytes()


def test_an_ungated_student_is_refused_and_nothing_written(failed_project, keyring,
                                                           tmp_path):
    out = tmp_path / "sealed"
    with pytest.raises(PerseaError, match="is not released: its newest gate failed"):
        seal_student(failed_project, out, keyring)
    assert not out.exists() and not list(tmp_path.glob(".sealed*"))
    assert not (failed_project.root / "releases").exists()


def test_a_forced_release_is_recorded_then_counts(failed_project, keyring, tmp_path):
    with pytest.raises(PerseaError, match="needs --reason"):
        seal_student(failed_project, tmp_path / "a", keyring, force=True)
    assert not (tmp_path / "a").exists()
    first = seal_student(failed_project, tmp_path / "a", keyring, force=True,
                         reason="board demo", who="ada", segment_size=SEG)
    assert first.release["kind"] == "forced" and first.release["who"] == "ada"
    (rec,) = (failed_project.root / "releases").glob("*.json")
    assert json.loads(rec.read_text())["forced"] is True
    # the recorded forced release is enough from now on, for these weights only
    again = seal_student(failed_project, tmp_path / "b", keyring, segment_size=SEG)
    assert again.release["release_id"] == first.release["release_id"]
    config = _student(failed_project) / "config.json"
    config.write_text(config.read_text().replace('"hidden_act"', '"note": 1, "hidden_act"'))
    with pytest.raises(PerseaError, match="no release gate was run on these weights"):
        seal_student(failed_project, tmp_path / "c", keyring)


@pytest.mark.parametrize("teacher, status, expected", [
    ({"name": "vendor", "path": "vendor"}, 2,
     "teacher 'vendor' declares no licence: add `license: <SPDX id or licence name>`"),
    ({"name": "meta", "builtin": "qwen3-toy", "license": "llama3.3"}, 1,
     "teacher 'meta' (llama3.3): the model must be served under a name that begins with "
     "'Llama'; serve.models names the student 'student'"),
    ({"name": "claude", "endpoint": "https://api.anthropic.com/v1", "model": "c"}, 1,
     "teacher 'claude' (Anthropic Commercial Terms of Service): the terms forbid"),
    ({"name": "q3b", "builtin": "qwen3-toy", "license": "other"}, 1,
     "no built-in rule for licence 'other'"),
])
def test_a_licence_the_policy_refuses_stops_the_seal_with_nothing_written(
        failed_project, keyring, tmp_path, teacher, status, expected):
    (failed_project.root / "vendor").mkdir()
    (failed_project.root / "vendor" / "README.md").write_text("# no front matter\n")
    data = yaml.safe_load(failed_project.file.read_text())
    data["teachers"].append(teacher)
    failed_project.file.write_text(yaml.safe_dump(data))
    project = load_project(failed_project.file)
    out = tmp_path / "sealed"
    with pytest.raises(PerseaError) as err:
        seal_student(project, out, keyring, force=True, reason="demo", who="ada")
    assert err.value.exit_code == status
    assert expected in err.value.message and "\n" not in err.value.message
    assert err.value.message.endswith("nothing written")
    assert not out.exists() and not list(tmp_path.glob(".sealed*"))
    assert not (project.root / "releases").exists()  # not even the forced release


def test_weights_changed_after_the_gate_are_refused(gated_project, keyring, tmp_path):
    weights = _student(gated_project) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(PerseaError, match="no release gate was run on these weights"):
        seal_student(gated_project, tmp_path / "sealed", keyring)


def test_an_existing_output_is_never_overwritten(gated_project, keyring, tmp_path):
    out = tmp_path / "sealed"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(PerseaError, match="already exists and is not empty"):
        seal_student(gated_project, out, keyring)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_key_files_of_the_wrong_size_or_mode_are_refused(tmp_path):
    good = tmp_path / "k1"
    good.write_bytes(os.urandom(32))
    good.chmod(0o600)
    assert isinstance(kek_from_file(good), LocalKey)
    good.chmod(0o640)
    with pytest.raises(PerseaError, match=r"permissions 0640 let others than its owner "
                                          r"read the key-encryption key; run `chmod 600"):
        kek_from_file(good)
    short = tmp_path / "k2"
    short.write_bytes(os.urandom(31))
    short.chmod(0o600)
    with pytest.raises(PerseaError, match="holds 31 bytes; a key-encryption key is exactly "
                                          "32 random bytes"):
        kek_from_file(short)
    with pytest.raises(PerseaError, match="no key-encryption key there"):
        kek_from_file(tmp_path / "absent")


def test_the_key_from_the_environment(gated_project, keyring, tmp_path):
    key = os.urandom(32)
    env = {"PERSEA_SEAL_KEY": base64.b64encode(key).decode()}
    ring = Keyring.of(keyring.directory, environ=env)  # the variable wins over kek.key
    out = tmp_path / "sealed"
    seal_student(gated_project, out, ring, segment_size=SEG)
    assert unseal(out, ring).fingerprint == fingerprint_model_dir(_student(gated_project))
    record = json.loads((out / layout.SEAL_JSON).read_text())
    assert record["data_key"]["kek_id"] == LocalKey(key, "x").key_id != keyring.kek().key_id
    for bad, why in [("not base64!", "not base64"),
                     (base64.b64encode(key[:16]).decode(), "decodes to 16 bytes")]:
        with pytest.raises(PerseaError, match=why):
            Keyring.of(None, environ={"PERSEA_SEAL_KEY": bad}).kek()
    with pytest.raises(PerseaError, match="no key-encryption key: pass --keyring"):
        Keyring.of(None, environ={}).kek()


def test_keygen_writes_owner_only_keys_and_never_overwrites(tmp_path):
    paths = generate_keyring(tmp_path / "ring")
    for name in ("kek.key", "signing.key"):
        assert stat.S_IMODE(paths[name].stat().st_mode) == 0o600
    assert len(paths["kek.key"].read_bytes()) == 32
    assert b"BEGIN PUBLIC KEY" in paths["signing.pub"].read_bytes()
    before = paths["kek.key"].read_bytes()
    with pytest.raises(PerseaError, match="already exists; a keyring is never overwritten"):
        generate_keyring(tmp_path / "ring")
    assert paths["kek.key"].read_bytes() == before


def test_the_cli_says_one_line_and_writes_nothing(failed_project, tmp_path, capsys,
                                                  monkeypatch):
    monkeypatch.delenv("PERSEA_SEAL_KEY", raising=False)
    monkeypatch.delenv("PERSEA_KEYRING", raising=False)
    root = str(failed_project.root)
    code, _, err = run_cli(capsys, monkeypatch, "seal", "-p", root)
    assert code == 2 and err.count("\n") == 1 and "no key-encryption key" in err
    code, _, _ = run_cli(capsys, monkeypatch, "keygen", str(tmp_path / "keys"))
    assert code == 0
    code, _, err = run_cli(capsys, monkeypatch, "seal", "-p", root, "--keyring",
                           str(tmp_path / "keys"))
    assert code == 2 and err.count("\n") == 1 and "is not released" in err
    assert not (failed_project.root / "sealed").exists()
    code, out, err = run_cli(capsys, monkeypatch, "seal", "-p", root, "--keyring",
                             str(tmp_path / "keys"), "--force-release", "--reason", "demo")
    assert code == 0, err
    assert "sealed " in out and "forced release" in out
    assert (failed_project.root / "sealed" / layout.SEAL_JSON).is_file()
