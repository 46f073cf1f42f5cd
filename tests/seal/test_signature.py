"""The signature over a sealed directory: OpenSSF Model Signing, checked by the library and
by its own `model_signing verify` command; every change to a signed file is named."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from persea.errors import PerseaError
from persea.seal import layout
from persea.seal.keyring import generate_keyring
from persea.seal.seal import seal_student
from persea.seal.signature import sign_directory, verify_directory


@pytest.fixture
def sealed(gated_project, keyring, tmp_path):
    return seal_student(gated_project, tmp_path / "sealed", keyring, segment_size=4096).out


def test_the_bundle_is_an_in_toto_statement_of_every_file(sealed, keyring):
    import base64

    bundle = json.loads((sealed / layout.SIGNATURE).read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"].startswith("https://model_signing/")
    signed = {r["name"] for r in statement["predicate"]["resources"]}
    assert signed == {p.name for p in sealed.iterdir()} - {layout.SIGNATURE}
    verify_directory(sealed, keyring.public_key_path())


def test_model_signing_verify_accepts_it(sealed, keyring):
    cmd = [sys.executable, "-m", "model_signing", "verify", "key", str(sealed),
           "--signature", str(sealed / layout.SIGNATURE),
           "--public_key", str(keyring.public_key_path())]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Verification succeeded" in done.stdout
    (sealed / layout.SEAL_JSON).write_text((sealed / layout.SEAL_JSON).read_text() + " ")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "seal.json" in done.stderr


def test_another_key_is_refused(sealed, tmp_path):
    other = generate_keyring(tmp_path / "other")
    with pytest.raises(PerseaError, match=r"model.sig: bad signature: signed by another key"):
        verify_directory(sealed, other["signing.pub"])


def test_changed_added_and_removed_files_are_named(sealed, keyring):
    pub = keyring.public_key_path()
    record = sealed / layout.SEAL_JSON
    record.write_text(record.read_text().replace('"student"', '"student2"'))
    with pytest.raises(PerseaError, match=rf"bad signature: {record} changed after signing"):
        verify_directory(sealed, pub)
    (sealed / "extra.bin").write_bytes(b"x")
    (sealed / layout.FILES_STREAM).unlink()
    with pytest.raises(PerseaError) as err:
        verify_directory(sealed, pub)
    assert f"{sealed / layout.FILES_STREAM} missing" in err.value.message
    assert f"{sealed / 'extra.bin'} not signed" in err.value.message


def test_a_damaged_or_missing_bundle(sealed, keyring):
    sig = sealed / layout.SIGNATURE
    bundle = json.loads(sig.read_text())
    envelope = bundle["dsseEnvelope"]
    envelope["signatures"][0]["sig"] = envelope["signatures"][0]["sig"][::-1]
    sig.write_text(json.dumps(bundle))
    with pytest.raises(PerseaError, match=r"model.sig: bad signature"):
        verify_directory(sealed, keyring.public_key_path())
    sig.write_text("{not json")
    with pytest.raises(PerseaError, match=r"model.sig: bad signature: not a readable"):
        verify_directory(sealed, keyring.public_key_path())
    sig.unlink()
    with pytest.raises(PerseaError, match=r"model.sig: missing"):
        verify_directory(sealed, keyring.public_key_path())


def test_signing_any_directory_round_trips(tmp_path, keyring):
    d = tmp_path / "m"
    d.mkdir()
    (d / "a.txt").write_text("a")
    sign_directory(d, keyring.signing_key_path())
    verify_directory(d, keyring.public_key_path())
    (d / "a.txt").write_text("b")
    with pytest.raises(PerseaError, match="a.txt changed after signing"):
        verify_directory(d, keyring.public_key_path())
