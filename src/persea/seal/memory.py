"""A sealed model, built in memory: signature checked, key unwrapped, weights decrypted,
and the transformers model and tokenizer made from the decrypted bytes, with no file
written anywhere (no temporary directory either).

`load_sealed_model` is what `persea serve` calls for a sealed directory: the config comes
from its JSON, the weights are tensors viewing the decrypted buffer (persea.seal.tensors),
the model is `from_pretrained(None, config=..., state_dict=...)`, and the tokenizer is
built from `tokenizer.json`'s text with the settings of `tokenizer_config.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import CONFIG_MAPPING, MODEL_FOR_CAUSAL_LM_MAPPING, GenerationConfig, \
    PreTrainedTokenizerFast

from persea.errors import PerseaError
from persea.models.hf import HFModel
from persea.seal.keyring import Keyring
from persea.seal.tensors import tensors_from_buffer
from persea.seal.unseal import Unsealed, unseal

# tokenizer_config.json keys that name how to load, not what the tokenizer is
_LOADING_KEYS = ("backend", "tokenizer_class", "auto_map", "tokenizer_file", "name_or_path")


def _json(u: Unsealed, name: str) -> dict | None:
    if name not in u.files:
        return None
    try:
        return json.loads(u.files[name])
    except ValueError:
        raise PerseaError(f"{u.directory}: the sealed {name} is not JSON") from None


def build_model(u: Unsealed):
    config = _json(u, "config.json")
    if config is None or config.get("model_type") not in CONFIG_MAPPING:
        raise PerseaError(f"{u.directory}: the sealed config.json names no model type "
                          "transformers knows")
    cfg = CONFIG_MAPPING[config["model_type"]].from_dict(config)
    cls = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(cfg), None)
    if cls is None:
        raise PerseaError(f"{u.directory}: {config['model_type']} has no causal-LM class")
    state: dict[str, torch.Tensor] = {}
    for name, buf in u.weights.items():
        try:
            state.update(tensors_from_buffer(buf))
        except (ValueError, KeyError, TypeError) as err:
            raise PerseaError(f"{u.directory}: the sealed {name} is not safetensors "
                              f"({err})") from None
    model = cls.from_pretrained(None, config=cfg, state_dict=state, dtype=torch.float32)
    generation = _json(u, "generation_config.json")
    if generation is not None:
        model.generation_config = GenerationConfig.from_dict(generation)
    return model


def build_tokenizer(u: Unsealed) -> PreTrainedTokenizerFast:
    if "tokenizer.json" not in u.files:
        raise PerseaError(f"{u.directory}: no tokenizer.json was sealed (serving from memory "
                          "needs a fast tokenizer)")
    settings = {**(_json(u, "special_tokens_map.json") or {}),
                **(_json(u, "tokenizer_config.json") or {})}
    kwargs = {k: v for k, v in settings.items() if k not in _LOADING_KEYS}
    backend = Tokenizer.from_str(u.files["tokenizer.json"].decode("utf-8"))
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
    if "chat_template.jinja" in u.files:
        tok.chat_template = u.files["chat_template.jinja"].decode("utf-8")
    return tok


def load_sealed_model(name: str, directory: Path, keyring: Keyring) -> HFModel:
    """The sealed model at `directory` as an HFModel, decrypted into memory only; every
    failure (signature, key, a tampered stream) is a PerseaError of one line."""
    u = unseal(Path(directory).expanduser(), keyring)
    return HFModel(name, build_model(u), build_tokenizer(u), u.fingerprint)
