"""Checking a GGUF file before transformers sees it, so a bad file gets a clear message.

transformers reads GGUF through the `gguf` package (`gguf_file=`) and dequantises it to
float32; a truncated download would otherwise fail deep inside with an opaque error.
"""

from __future__ import annotations

from pathlib import Path

from persea.errors import PerseaError

GGUF_MAGIC = b"GGUF"


def check_gguf(path: Path, where: str) -> dict:
    """Validate the header and that every tensor lies inside the file; return its metadata
    (architecture, tensor count, bytes)."""
    if not path.is_file():
        raise PerseaError(f"{where}: GGUF file not found: {path}")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise PerseaError(f"{where}: cannot read GGUF file {path}: {err.strerror}") from None
    if magic != GGUF_MAGIC:
        raise PerseaError(f"{where}: {path} is not a GGUF file (its first bytes are "
                          f"{magic!r}, expected {GGUF_MAGIC!r})")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as err:  # the reader raises ValueError/IndexError/... on damage
        raise PerseaError(f"{where}: GGUF file {path} is damaged or truncated "
                          f"({type(err).__name__}: {err})") from None
    size = path.stat().st_size
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        raise PerseaError(f"{where}: GGUF file {path} is truncated: its tensors need "
                          f"{end} bytes but the file has {size}")
    arch_field = reader.fields.get("general.architecture")
    arch = None
    if arch_field is not None:
        arch = bytes(arch_field.parts[arch_field.data[0]]).decode(errors="replace")
    return {"architecture": arch, "tensors": len(reader.tensors), "bytes": size}
