"""GGUF files are checked before transformers reads them: a missing, foreign or cut file gets
one clear line naming the teacher."""

from __future__ import annotations

import numpy as np
import pytest

from persea.errors import PerseaError
from persea.models.sources import load_gguf
from persea.models.gguf_file import check_gguf


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory):
    """A real, valid GGUF: an architecture field, a count field and two small tensors."""
    from gguf import GGUFWriter

    path = tmp_path_factory.mktemp("gguf") / "small.gguf"
    writer = GGUFWriter(path, "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.arange(64 * 8, dtype=np.float32).reshape(64, 8))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_valid_gguf_passes_the_check(small_gguf):
    info = check_gguf(small_gguf, "teacher 'g'")
    assert info == {"architecture": "llama", "tensors": 2, "bytes": small_gguf.stat().st_size}


def test_a_missing_gguf(tmp_path):
    path = tmp_path / "nope.gguf"
    with pytest.raises(PerseaError) as err:
        load_gguf("gemma", path)
    msg = str(err.value)
    assert "teacher 'gemma'" in msg and "not found" in msg and str(path) in msg


@pytest.mark.parametrize("content", [b"PK\x03\x04 a zip, not a model", b"GG", b""],
                         ids=["zip", "two-bytes", "empty"])
def test_a_file_that_is_not_gguf(tmp_path, content):
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(PerseaError) as err:
        load_gguf("gemma", path)
    msg = str(err.value)
    assert "teacher 'gemma'" in msg and "is not a GGUF file" in msg and str(path) in msg


@pytest.mark.parametrize("keep", [-1, -40, 0.5, 100, 40, 8],
                         ids=["last-byte", "in-last-tensor", "half", "in-metadata",
                              "in-header", "magic-and-version"])
def test_a_truncated_gguf(small_gguf, tmp_path, keep):
    data = small_gguf.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:n])
    assert cut.stat().st_size < len(data)
    with pytest.raises(PerseaError) as err:
        load_gguf("gemma", cut)
    msg = str(err.value)
    assert "teacher 'gemma'" in msg and "truncated" in msg and str(cut) in msg


def test_a_valid_gguf_that_transformers_cannot_load(small_gguf):
    """Well-formed, but no tokenizer and no real model inside: transformers' own failure
    becomes a PerseaError too."""
    with pytest.raises(PerseaError) as err:
        load_gguf("fake", small_gguf)
    msg = str(err.value)
    assert "teacher 'fake'" in msg and "transformers cannot load GGUF" in msg
    assert str(small_gguf) in msg and "\n" not in msg
