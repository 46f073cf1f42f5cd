"""Content fingerprints: a cache records which exact teacher and tokenizer produced it."""

from __future__ import annotations

import hashlib
from pathlib import Path

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint_digests(digests: dict[str, str]) -> str:
    """The fingerprint of files given as {name: SHA-256 hex of the content} (what
    `fingerprint_files` computes from the files; sealed weights are checked in memory)."""
    h = hashlib.sha256()
    for name in sorted(digests):
        h.update(name.encode() + b"\x00" + digests[name].encode() + b"\n")
    return h.hexdigest()


def fingerprint_files(paths: list[Path]) -> str:
    """SHA-256 over the names and contents of the given files, in name order."""
    return fingerprint_digests({p.name: sha256_file(p) for p in paths})


def is_fingerprinted(name: str) -> bool:
    """Whether a model directory's file counts in its fingerprint (weights and config)."""
    return Path(name).suffix in _WEIGHT_SUFFIXES or name == "config.json"


def fingerprint_model_dir(directory: Path) -> str:
    files = [p for p in directory.iterdir() if p.is_file() and is_fingerprinted(p.name)]
    return fingerprint_files(files)


def fingerprint_tokenizer(tokenizer) -> str:
    """SHA-256 of the tokenizer's canonical serialisation and chat template."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:  # a slow tokenizer: fall back to its vocabulary
        h.update(repr(sorted(tokenizer.get_vocab().items())).encode())
    h.update(b"\x00" + (getattr(tokenizer, "chat_template", None) or "").encode())
    return h.hexdigest()


def fingerprint_text(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()
