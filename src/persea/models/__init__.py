"""Models behind one protocol: local Hugging Face directories, hub ids, GGUF files and
OpenAI-compatible endpoints all answer `generate`, `score` and `tokenize` with `Trace`s."""

from persea.models.protocol import LanguageModel, Trace
from persea.models.sources import load_gguf, load_hf_dir, load_hub, load_teacher

__all__ = ["LanguageModel", "Trace", "load_gguf", "load_hf_dir", "load_hub", "load_teacher"]
