"""A GGUF teacher is converted once into a cache directory keyed by the file's SHA-256.

transformers cannot read the tiny GGUF these tests write (it has no tokenizer), so its GGUF
loader is stood in for by loading the tiny test model; everything else is the real path:
the header check, the hash, the conversion, the atomic rename and `from_pretrained`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from persea.models import sources
from persea.models.gguf_cache import DONE, cache_root


def _write_gguf(path, fill: float):
    from gguf import GGUFWriter

    writer = GGUFWriter(path, "llama")
    writer.add_block_count(1)
    writer.add_tensor("output_norm.weight", np.full(8, fill, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def gguf_loads(monkeypatch, tmp_path, tiny_model_dir):
    """Counts the GGUF loads; the cache lives in tmp_path."""
    monkeypatch.setenv("PERSEA_GGUF_CACHE", str(tmp_path / "cache"))
    real, calls = sources._load_transformers, []

    def load(location, **kwargs):
        if "gguf_file" in kwargs:
            calls.append(kwargs["gguf_file"])
            return real(str(tiny_model_dir), local_files_only=True)
        return real(location, **kwargs)

    monkeypatch.setattr(sources, "_load_transformers", load)
    return calls


def _logits(model):
    with torch.inference_mode():
        return model.model(input_ids=torch.tensor([[1, 2, 3]])).logits


def test_second_load_reads_the_cache_not_the_gguf(tmp_path, gguf_loads, tiny_model_dir):
    path = _write_gguf(tmp_path / "m.gguf", 1.0)
    first = sources.load_gguf("g", path)
    assert gguf_loads == ["m.gguf"]
    entries = [p for p in cache_root().iterdir()]
    assert len(entries) == 1 and (entries[0] / DONE).is_file()
    assert not list(cache_root().glob(".*"))  # no temporary left
    second = sources.load_gguf("g", path)
    assert gguf_loads == ["m.gguf"]  # not loaded from GGUF again
    assert second.fingerprint == first.fingerprint
    reference = sources.load_hf_dir("ref", tiny_model_dir)
    assert torch.equal(_logits(second), _logits(reference))


def test_a_changed_file_is_converted_again(tmp_path, gguf_loads):
    path = _write_gguf(tmp_path / "m.gguf", 1.0)
    a = sources.load_gguf("g", path)
    _write_gguf(path, 2.0)
    b = sources.load_gguf("g", path)
    assert gguf_loads == ["m.gguf", "m.gguf"]
    assert a.fingerprint != b.fingerprint
    assert len(list(cache_root().iterdir())) == 2


@pytest.mark.parametrize("leftover", ["temporary", "final-without-marker"])
def test_a_half_written_conversion_is_ignored_and_redone(tmp_path, gguf_loads, leftover):
    path = _write_gguf(tmp_path / "m.gguf", 1.0)
    sources.load_gguf("g", path)
    (entry,) = list(cache_root().iterdir())
    if leftover == "temporary":  # killed before the rename: only a temporary is there
        half = cache_root() / f".{entry.name}.tmp-99999"
        entry.rename(half)
    else:  # a final name without the completion record (say, a partial copy)
        (entry / DONE).unlink()
    (entry if entry.exists() else half).joinpath("model.safetensors").write_bytes(b"cut")
    model = sources.load_gguf("g", path)
    assert gguf_loads == ["m.gguf", "m.gguf"]
    assert (entry / DONE).is_file()
    assert model.generate(["hi"], max_new_tokens=2)
