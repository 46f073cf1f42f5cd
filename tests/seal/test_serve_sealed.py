"""Serving from a sealed directory: the model is built in memory only (no file written
anywhere, temporary directories included), answers as the original does, and every kind
of tampering stops it with one line naming the file and what failed; nothing is served."""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile

import pytest
import torch

from persea.cli.serve import ServeOptions, build_backends
from persea.errors import PerseaError
from persea.models.sources import load_hf_dir
from persea.seal import layout
from persea.seal.keyring import Keyring, generate_keyring
from persea.seal.memory import load_sealed_model
from persea.seal.seal import seal_student
from persea.seal.stream import HEADER_SIZE, TAG_SIZE

from tests.cli_helpers import run_cli

SEG = 4096


@pytest.fixture
def sealed(gated_project, keyring, tmp_path):
    return seal_student(gated_project, tmp_path / "sealed", keyring, segment_size=SEG).out


def _student(project):
    return project.root / "runs" / "student" / "student"


# -- the no-plaintext guarantee ----------------------------------------------------------
_WRITES: list | None = None  # while a list: every write-like event of this process


def _audit(event, args):
    if _WRITES is None:
        return
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if writing:
            _WRITES.append((event, path))
    elif event in ("os.mkdir", "os.rename", "os.link", "os.symlink", "os.truncate",
                   "shutil.copyfile", "tempfile.mkstemp", "tempfile.mkdtemp", "os.chmod"):
        _WRITES.append((event, args[0] if args else None))


sys.addaudithook(_audit)


def _listing(*roots) -> set[str]:
    out = set()
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            out |= {os.path.join(dirpath, n) for n in dirnames + filenames}
    return out


def test_the_model_is_decrypted_into_memory_only(sealed, keyring, tmp_path, monkeypatch):
    global _WRITES
    # the process's temporary directory and working directory are made private to this
    # test, so a listing sees every file that appears in them, in the sealed and key
    # directories and the project; the audit hook sees every write Python makes anywhere
    private_tmp, cwd = tmp_path / "tmp", tmp_path / "cwd"
    private_tmp.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    monkeypatch.chdir(cwd)
    assert tempfile.gettempdir() == str(private_tmp)
    before = _listing(tmp_path)
    assert str(sealed / layout.SEAL_JSON) in before

    def refuse(*a, **k):
        raise AssertionError("a temporary file was asked for while unsealing")

    for fn in ("mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryFile",
               "SpooledTemporaryFile", "TemporaryDirectory"):
        monkeypatch.setattr(tempfile, fn, refuse)
    _WRITES = []
    try:
        model = load_sealed_model("mine", sealed, keyring)
        ids = model.format_prompt("What is 2 plus 3?")
        generated = model.model.generate(torch.tensor([ids]), max_new_tokens=6,
                                         do_sample=False)
    finally:
        writes, _WRITES = _WRITES, None
    assert writes == []
    assert _listing(tmp_path) == before
    # and it is the sealed model: the original's weights and answers, bit for bit
    original = load_hf_dir("orig", _student_of(sealed))
    assert model.fingerprint == original.fingerprint
    for (k, a), (k2, b) in zip(original.model.state_dict().items(),
                               model.model.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert original.format_prompt("What is 2 plus 3?") == ids
    assert torch.equal(original.model.generate(torch.tensor([ids]), max_new_tokens=6,
                                               do_sample=False), generated)
    assert model.stop_ids == original.stop_ids
    assert model.tokenizer.chat_template == original.tokenizer.chat_template


def _student_of(sealed):
    return sealed.parent / "p" / "runs" / "student" / "student"


def test_serve_takes_a_sealed_directory(sealed, keyring, tmp_path):
    backends = build_backends(ServeOptions(models=[f"mine={sealed}"],
                                           keyring=str(keyring.directory)))
    record = json.loads((sealed / layout.SEAL_JSON).read_text())
    assert backends["mine"].hf.fingerprint == record["model"]["fingerprint"]
    assert not list((_student_of(sealed)).glob("release-log.jsonl"))  # no gate lookup


# -- tampering: one line naming the file and what failed; nothing served --------------------
def _segments(path):
    raw = path.read_bytes()
    body = raw[HEADER_SIZE:]
    step = SEG + TAG_SIZE
    return raw[:HEADER_SIZE], [body[i:i + step] for i in range(0, len(body), step)]


def _rewrite(path, change):
    header, segs = _segments(path)
    path.write_bytes(change(header, segs))


def _flip(header, segs):
    seg = bytearray(segs[2])
    seg[100] ^= 0x10
    return header + b"".join(segs[:2] + [bytes(seg)] + segs[3:])


CASES = {
    "flipped byte": (lambda h, s: _flip(h, s), "segment 2 of {n} fails authentication"),
    "missing chunk": (lambda h, s: h + b"".join(s[:1] + s[2:]),
                      "segment 1 of {m} is segment 2 of the sealed stream: segments "
                      "reordered, missing or repeated"),
    "reordered chunks": (lambda h, s: h + b"".join([s[0], s[2], s[1]] + s[3:]),
                         "segment 1 of {n} is segment 2 of the sealed stream"),
    "truncated": (lambda h, s: h + b"".join(s[:3]),
                  "truncated: segment 2 is the last one in the file but was not the last "
                  "one sealed"),
    "appended": (lambda h, s: h + b"".join(s) + s[0],
                 "segment {last} of {p} fails authentication"),
}


def _serve(sealed, keyring_dir, environ=None):
    return build_backends(ServeOptions(models=[f"mine={sealed}"], keyring=str(keyring_dir)))


@pytest.mark.parametrize("case", list(CASES))
def test_a_tampered_stream_is_refused(sealed, keyring, case):
    weights = sealed / "weights-0.enc"
    n = len(_segments(weights)[1])
    assert n >= 4
    change, expected = CASES[case]
    _rewrite(weights, change)
    with pytest.raises(PerseaError) as err:
        _serve(sealed, keyring.directory)
    line = err.value.message
    assert "\n" not in line
    assert line.startswith(f"--model mine={sealed}: bad signature: {weights} changed after "
                           "signing: ")
    assert expected.format(n=n, m=n - 1, last=n - 1, p=n + 1) in line
    assert line.endswith("; nothing served")


def test_a_wrong_key_is_refused(sealed, keyring, monkeypatch):
    monkeypatch.setenv("PERSEA_SEAL_KEY", base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(PerseaError) as err:
        _serve(sealed, keyring.directory)
    assert f"{sealed / layout.SEAL_JSON}: wrong key: sealed under key " \
        f"{keyring.kek().key_id}, the keyring holds local:" in err.value.message


def test_a_wrong_key_with_the_same_id_fails_the_unwrap(sealed, keyring):
    record = sealed / layout.SEAL_JSON
    from persea.seal.keyring import LocalKey
    from persea.seal.signature import sign_directory

    other = LocalKey(os.urandom(32), "other")
    data = json.loads(record.read_text())
    data["data_key"]["wrapped"] = base64.b64encode(other.wrap(os.urandom(32))).decode()
    record.write_text(json.dumps(data))
    sign_directory(sealed, keyring.signing_key_path())  # an insider re-signs it
    with pytest.raises(PerseaError, match=r"seal.json: wrong key or damaged wrapped data key: "
                                          r"the key from .*kek.key does not unwrap it"):
        _serve(sealed, keyring.directory)


def test_a_bad_signature_is_refused(sealed, keyring, tmp_path):
    other = generate_keyring(tmp_path / "other")
    (keyring.directory / "signing.pub").write_bytes(other["signing.pub"].read_bytes())
    with pytest.raises(PerseaError, match=rf"{sealed / 'model.sig'}: bad signature: signed "
                                          "by another key"):
        _serve(sealed, keyring.directory)


def test_a_changed_record_fails_the_signature(sealed, keyring):
    record = sealed / layout.SEAL_JSON
    record.write_text(record.read_text().replace('"segment_size": 4096',
                                                 '"segment_size": 8192'))
    with pytest.raises(PerseaError, match=rf"bad signature: {record} changed after signing"):
        _serve(sealed, keyring.directory)


def test_a_tampered_stream_is_still_caught_without_the_signature(sealed, keyring):
    """Behind the signature, the AEAD stands on its own (an insider with the signing key)."""
    from persea.seal.signature import sign_directory
    from persea.seal.unseal import unseal

    weights = sealed / "weights-0.enc"
    _rewrite(weights, lambda h, s: h + b"".join([s[0], s[2], s[1]] + s[3:]))
    sign_directory(sealed, keyring.signing_key_path())
    with pytest.raises(PerseaError, match=rf"{weights}: segment 1 of \d+ is segment 2"):
        unseal(sealed, keyring)


def test_the_cli_prints_one_line_and_serves_nothing(sealed, keyring, capsys, monkeypatch,
                                                   tmp_path):
    _rewrite(sealed / "weights-0.enc", _flip)
    monkeypatch.delenv("PERSEA_SEAL_KEY", raising=False)
    started = []
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(a))
    code, out, err = run_cli(capsys, monkeypatch, "serve", "--db",
                             f"sqlite:///{tmp_path / 'g.db'}", "--model", f"mine={sealed}",
                             "--keyring", str(keyring.directory))
    assert code == 2 and started == []
    assert err.count("\n") == 1 and "weights-0.enc changed after signing" in err
    assert "nothing served" in err
