"""Opening a sealed directory: the key unwrapped, every stream decrypted into memory.

Nothing decrypted is ever written anywhere: each stream is read segment by segment straight
into one buffer (persea.seal.stream). Every failure is one line that names the file and
what failed: a wrong key, a stream whose segments were altered, reordered, removed or
appended to, weights that are not the ones sealed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from persea.errors import PerseaError
from persea.models.fingerprint import fingerprint_digests, is_fingerprinted
from persea.seal import layout
from persea.seal.keyring import Keyring, UnwrapError
from persea.seal.signature import SignatureMismatch, verify_directory
from persea.seal.stream import StreamError, decrypt_file

_STREAM_NAME = re.compile(r"^weights-\d+\.enc$")


@dataclass
class Unsealed:
    directory: Path
    record: dict  # seal.json
    files: dict[str, bytes]  # config, tokenizer, ...
    weights: dict[str, bytearray]  # safetensors files, as decrypted

    @property
    def fingerprint(self) -> str:
        return self.record["model"]["fingerprint"]


def read_record(directory: Path) -> dict:
    path = directory / layout.SEAL_JSON
    if not path.is_file():
        raise PerseaError(f"{directory}: not a sealed directory (no {layout.SEAL_JSON}); "
                          "`persea seal` writes one")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise PerseaError(f"{path}: not valid JSON") from None
    if not isinstance(record, dict) or record.get("format") != layout.FORMAT:
        raise PerseaError(f"{path}: not a {layout.FORMAT} record")
    return record


def is_sealed(directory: Path) -> bool:
    return (Path(directory) / layout.SEAL_JSON).is_file()


def unwrap_data_key(directory: Path, record: dict, keyring: Keyring) -> bytes:
    where = directory / layout.SEAL_JSON
    kek = keyring.kek()
    try:
        wrapped = base64.b64decode(record["data_key"]["wrapped"], validate=True)
        sealed_under = record["data_key"]["kek_id"]
    except (KeyError, TypeError, binascii.Error):
        raise PerseaError(f"{where}: the wrapped data key is missing or damaged") from None
    if sealed_under != kek.key_id:
        raise PerseaError(f"{where}: wrong key: sealed under key {sealed_under}, the "
                          f"keyring holds {kek.key_id}")
    try:
        return kek.unwrap(wrapped)
    except UnwrapError as err:
        raise PerseaError(f"{where}: wrong key or damaged wrapped data key: {err}") from None


def _decrypt(directory: Path, stream: str, data_key: bytes, record: dict) -> bytearray:
    path = directory / stream
    if not path.is_file():
        raise PerseaError(f"{path}: missing (a sealed stream that seal.json lists)")
    try:
        return decrypt_file(path, data_key, layout.stream_aad(record["id"], stream),
                            int(record["encryption"]["segment_size"]),
                            int(record["encryption"]["streams"][stream]))
    except StreamError as err:
        raise PerseaError(f"{path}: {err.reason}") from None


def _what_happened(directory: Path, record: dict, keyring: Keyring,
                   changed: list[str]) -> str | None:
    """For a stream that no longer matches its signature: what its segments say happened
    (reordered, cut, appended, altered), when the key can tell; None otherwise."""
    streams = record.get("encryption", {}).get("streams", {})
    try:
        data_key = unwrap_data_key(directory, record, keyring)
        for name in changed:
            if isinstance(streams, dict) and name in streams:
                try:
                    _decrypt(directory, name, data_key, record)
                except PerseaError as err:
                    return err.message.removeprefix(f"{directory / name}: ")
    except (PerseaError, KeyError, TypeError, ValueError):
        return None
    return None


def unseal(directory: Path, keyring: Keyring, check_signature: bool = True) -> Unsealed:
    """Decrypt a sealed directory into memory. The signature is checked first, with the
    keyring's public key, before any key is unwrapped; a stream that fails it is then
    decrypted (into memory, and thrown away) only to say what was done to it."""
    directory = Path(directory).expanduser()
    record = read_record(directory)
    if check_signature:
        try:
            verify_directory(directory, keyring.public_key_path())
        except SignatureMismatch as err:
            detail = _what_happened(directory, record, keyring, err.changed)
            raise PerseaError(err.message + (f": {detail}" if detail else "")) from None
    data_key = unwrap_data_key(directory, record, keyring)
    listed = record.get("encryption", {}).get("streams", {})
    if not isinstance(listed, dict) or layout.FILES_STREAM not in listed:
        raise PerseaError(f"{directory / layout.SEAL_JSON}: lists no {layout.FILES_STREAM}")
    raw = _decrypt(directory, layout.FILES_STREAM, data_key, record)
    try:
        bundle = json.loads(bytes(raw))
        files = {n: base64.b64decode(b) for n, b in bundle["files"].items()}
        weights_meta = bundle["weights"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise PerseaError(f"{directory / layout.FILES_STREAM}: decrypts, but is not a file "
                          "bundle of this format") from None
    weights: dict[str, bytearray] = {}
    digests = {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}
    for name, meta in weights_meta.items():
        stream = meta["stream"]
        if not _STREAM_NAME.match(stream) or stream not in listed:
            raise PerseaError(f"{directory / layout.FILES_STREAM}: names a stream {stream!r} "
                              "that seal.json does not list")
        buf = _decrypt(directory, stream, data_key, record)
        digest = hashlib.sha256(buf).hexdigest()
        if digest != meta["sha256"]:
            raise PerseaError(f"{directory / stream}: decrypts to other bytes than the "
                              f"{name} that was sealed (SHA-256 {digest[:12]}, sealed "
                              f"{meta['sha256'][:12]})")
        weights[name] = buf
        digests[name] = digest
    fingerprint = fingerprint_digests({n: d for n, d in digests.items() if is_fingerprinted(n)})
    if fingerprint != record["model"]["fingerprint"]:
        raise PerseaError(f"{directory / layout.SEAL_JSON}: the decrypted weights have "
                          f"fingerprint {fingerprint[:12]}, not the sealed "
                          f"{record['model']['fingerprint'][:12]}")
    return Unsealed(directory, record, files, weights)
