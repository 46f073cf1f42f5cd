"""Models behind one protocol: local Hugging Face directories, hub ids, GGUF files and
OpenAI-compatible endpoints all answer `generate`, `score` and `tokenize` with `Trace`s.

Loaders live in `persea.models.sources` (it imports torch and transformers), so that the
light modules here (the protocol, fingerprints, chat templates, the built-in registry) stay
cheap to import."""

from persea.models.protocol import LanguageModel, Trace

__all__ = ["LanguageModel", "Trace"]
