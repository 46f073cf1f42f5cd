"""Fixtures of the model-layer tests: the tiny Qwen3 from tests/conftest.py, loaded."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny(tiny_model_dir):
    """The tiny untrained Qwen3 behind the protocol (`HFModel`), with its ChatML template."""
    from persea.models.sources import load_hf_dir

    return load_hf_dir("tiny", tiny_model_dir)
