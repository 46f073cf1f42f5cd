"""A GGUF teacher is dequantised once: the float32 model goes to a local directory keyed by
the file's SHA-256, and later loads read that directory with `from_pretrained`.

The directory is `$PERSEA_GGUF_CACHE/<sha256>/` when that variable is set, else
`$XDG_CACHE_HOME/persea/gguf/<sha256>/` (`~/.cache/persea/gguf/<sha256>/`). It is written
into a temporary sibling and renamed into place, with `persea-gguf.json` written last, so a
directory under its final name with that file is whole; anything else (a conversion killed
half way) is ignored, removed and done again. A changed file has another hash, so it is
converted again; old entries stay until deleted.

`save_pretrained` refuses a model loaded from GGUF, so the conversion copies its weights
into a model built from the same configuration (without the GGUF quantisation record) and
saves that.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from persea.models.fingerprint import sha256_file

DONE = "persea-gguf.json"


def cache_root() -> Path:
    if os.environ.get("PERSEA_GGUF_CACHE"):
        return Path(os.environ["PERSEA_GGUF_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "persea" / "gguf"


def _complete(directory: Path, sha: str) -> bool:
    try:
        return json.loads((directory / DONE).read_text(encoding="utf-8"))["sha256"] == sha
    except (OSError, ValueError, KeyError):
        return False


def save_converted(model, tokenizer, directory: Path) -> None:
    """Write a GGUF-loaded model and its tokenizer as a plain float32 model directory."""
    import torch  # heavy: only when converting
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        config = type(config).from_dict(
            {k: v for k, v in config.to_dict().items() if k != "quantization_config"})
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    plain.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))


def converted_dir(path: Path, load_gguf) -> Path:
    """The cached float32 directory for the GGUF file at `path`, converting it first (with
    `load_gguf() -> (model, tokenizer)`) when there is none."""
    sha = sha256_file(path)
    root = cache_root()
    final = root / sha
    if _complete(final, sha):
        return final
    model, tokenizer = load_gguf()
    shutil.rmtree(final, ignore_errors=True)  # half there: not ours to trust
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{sha}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_converted(model, tokenizer, tmp)
    (tmp / DONE).write_text(json.dumps({"sha256": sha, "file": path.name}) + "\n",
                            encoding="utf-8")
    try:
        tmp.rename(final)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        if not _complete(final, sha):
            raise
    return final
