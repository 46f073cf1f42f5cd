"""Teacher generation on vLLM, for harvests on a GPU.

Used by `persea harvest` when `harvest.backend` is `vllm`, or `auto` with vLLM installed and
a CUDA device present. It returns the same `Trace`s as the transformers path: vLLM gives the
sampled token's log-probability and the top-k alternatives per position (`logprobs=k`).
Not exercised by the test suite (no GPU there); see docs/harvest.md for scaling out.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from persea.align.tokens import special_ids as special_token_ids
from persea.errors import PerseaError
from persea.models.builtin import builtin_models
from persea.models.fingerprint import fingerprint_model_dir, fingerprint_text, fingerprint_tokenizer
from persea.models.offsets import spans_from_ids
from persea.models.protocol import Trace


def vllm_available() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


class VLLMModel:
    def __init__(self, name: str, location: str, fingerprint: str, chat_template: bool = True):
        from vllm import LLM

        self.name = name
        self.llm = LLM(model=location, seed=0, enforce_eager=False)
        self.tokenizer = self.llm.get_tokenizer()
        self._fingerprint = fingerprint
        self.use_chat_template = chat_template and bool(self.tokenizer.chat_template)
        self.special_ids = special_token_ids(self.tokenizer)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def tokenizer_fingerprint(self) -> str:
        return fingerprint_tokenizer(self.tokenizer)

    @property
    def vocab_size(self) -> int:
        return int(self.llm.llm_engine.model_config.get_vocab_size())

    def _prompt(self, prompt: str) -> str:
        if self.use_chat_template:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True,
                tokenize=False)
        return prompt

    def generate(self, prompts: list[str], max_new_tokens: int, top_k: int = 0) -> list[Trace]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens,
                                logprobs=top_k or 1)
        outputs = self.llm.generate([self._prompt(p) for p in prompts], params)
        traces = []
        for out in outputs:
            comp = out.outputs[0]
            ids = list(comp.token_ids)
            decode = lambda xs: self.tokenizer.decode(xs, skip_special_tokens=True)  # noqa: E731
            text, spans = spans_from_ids(decode, ids, self.special_ids)
            chosen, tk_ids, tk_lps = [], [], []
            for tok, pos in zip(ids, comp.logprobs):
                chosen.append(float(pos[tok].logprob))
                best = sorted(pos.items(), key=lambda kv: -kv[1].logprob)[:top_k]
                tk_ids.append([t for t, _ in best] + [0] * (top_k - len(best)))
                tk_lps.append([lp.logprob for _, lp in best] + [-np.inf] * (top_k - len(best)))
            tr = Trace(text=text, token_ids=ids, spans=spans, logprobs=chosen)
            if top_k:
                tr.topk_ids = np.asarray(tk_ids, np.int64).reshape(len(ids), top_k)
                tr.topk_logprobs = np.asarray(tk_lps, np.float32).reshape(len(ids), top_k)
            traces.append(tr)
        return traces

    def score(self, prompts, continuations, top_k: int = 0):
        raise PerseaError(f"teacher {self.name!r}: scoring runs on the transformers backend; "
                          "set harvest.backend: transformers")

    def tokenize(self, text: str):
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(s) for s in enc["offset_mapping"]]


def load_vllm(spec, paths=None) -> VLLMModel:
    if importlib.util.find_spec("vllm") is None:
        raise PerseaError(f"teacher {spec.name!r}: harvest.backend is vllm but vLLM is not "
                          "installed (pip install vllm, on a machine with a GPU)")
    if spec.builtin is not None:
        path = builtin_models()[spec.builtin].path
        return VLLMModel(spec.name, str(path), fingerprint_model_dir(path), spec.chat_template)
    if spec.path is not None:
        path = paths.resolve(spec.path) if paths is not None else Path(spec.path)
        return VLLMModel(spec.name, str(path), fingerprint_model_dir(path), spec.chat_template)
    return VLLMModel(spec.name, spec.hub, fingerprint_text("hub", spec.hub, str(spec.revision)),
                     spec.chat_template)
