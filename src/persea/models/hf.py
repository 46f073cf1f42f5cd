"""A transformers causal LM (from a directory, a hub id or a GGUF file) behind the protocol."""

from __future__ import annotations

import numpy as np
import torch
from transformers import GenerationConfig

from persea.align.tokens import special_ids as special_token_ids
from persea.models.offsets import spans_from_ids
from persea.models.fingerprint import fingerprint_tokenizer
from persea.models.protocol import Trace

SCORE_BATCH = 16  # sequences per forward pass when scoring


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists as one left-padded batch and its attention mask, as batched generation
    wants them (every row's last real token in the last column)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


class HFModel:
    """Wraps a loaded `PreTrainedModel` and its fast tokenizer.

    Prompts are user messages: when the tokenizer has a chat template they are wrapped in it
    (the response then ends at the template's end-of-turn token); a base model without one
    continues the raw prompt.
    """

    def __init__(self, name: str, model, tokenizer, fingerprint: str,
                 use_chat_template: bool = True, device: str | None = None):
        self.name = name
        self.model = model.eval()
        self.tokenizer = tokenizer
        self._fingerprint = fingerprint
        self._tok_fingerprint = fingerprint_tokenizer(tokenizer)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.use_chat_template = use_chat_template and bool(tokenizer.chat_template)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.special_ids = special_token_ids(tokenizer)
        self.stop_ids = self._stop_ids()
        # Plain greedy decoding: the checkpoint's own processors (a repetition penalty, ...)
        # would make the chosen token differ from the top-1 of the distribution we record,
        # and transformers fills unset fields of a passed config from the checkpoint's.
        self.model.generation_config = GenerationConfig(
            do_sample=False, eos_token_id=sorted(self.stop_ids) or None,
            pad_token_id=tokenizer.pad_token_id)

    # -- identity ---------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def tokenizer_fingerprint(self) -> str:
        return self._tok_fingerprint

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    def _stop_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else ([eos] if eos is not None else []))
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    # -- text helpers -----------------------------------------------------------------
    def format_prompt(self, prompt: str) -> list[int]:
        if self.use_chat_template:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True,
                tokenize=False)
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.tokenizer(prompt, add_special_tokens=True)["input_ids"]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True,
                                     clean_up_tokenization_spaces=False)

    def tokenize(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(s) for s in enc["offset_mapping"]]

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = left_pad(seqs, self.tokenizer.pad_token_id)
        return ids.to(self.device), mask.to(self.device)

    def _right_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, :len(s)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _trace(self, ids: list[int], logprobs: torch.Tensor, top_k: int) -> Trace:
        """`logprobs` is [len(ids), vocab]: the distribution each id was drawn from."""
        text, spans = spans_from_ids(self._decode, ids, self.special_ids)
        idx = torch.tensor(ids, dtype=torch.long, device=logprobs.device)
        chosen = logprobs.gather(1, idx[:, None])[:, 0] if len(ids) else logprobs[:0, 0]
        trace = Trace(text=text, token_ids=ids, spans=spans, logprobs=chosen.float().tolist())
        if top_k:
            k = min(top_k, logprobs.shape[-1])
            vals, inds = logprobs.topk(k, dim=-1)
            trace.topk_ids = inds.cpu().numpy().astype(np.int64)
            trace.topk_logprobs = vals.float().cpu().numpy()
        return trace

    # -- the protocol ------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: list[str], max_new_tokens: int, top_k: int = 0) -> list[Trace]:
        if not prompts:
            return []
        input_ids, mask = self._left_pad([self.format_prompt(p) for p in prompts])
        out = self.model.generate(
            input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
            output_logits=True, return_dict_in_generate=True)
        steps = torch.stack(out.logits, dim=1).float().log_softmax(-1)  # [B, T, V]
        new = out.sequences[:, input_ids.shape[1]:].tolist()
        traces = []
        for b, seq in enumerate(new):
            n = len(seq)
            for t, tok in enumerate(seq):
                if tok in self.stop_ids:
                    n = t + 1
                    break
            traces.append(self._trace(seq[:n], steps[b, :n], top_k))
        return traces

    @torch.inference_mode()
    def score(self, prompts: list[str], continuations: list[str], top_k: int = 0) -> list[Trace]:
        """Teacher forcing, `SCORE_BATCH` sequences per forward pass, right-padded: with a
        causal mask the padding after a sequence changes none of its positions, so the
        results equal one-at-a-time scoring up to float rounding."""
        pairs = [(self.format_prompt(p), self.tokenizer(c, add_special_tokens=False)["input_ids"])
                 for p, c in zip(prompts, continuations, strict=True)]
        traces = []
        for b in range(0, len(pairs), SCORE_BATCH):
            chunk = pairs[b:b + SCORE_BATCH]
            ids, mask = self._right_pad([p + c for p, c in chunk])
            logprobs = self.model(input_ids=ids, attention_mask=mask).logits.float() \
                .log_softmax(-1)
            for row, (p, c) in enumerate(chunk):
                traces.append(self._trace(c, logprobs[row, len(p) - 1:len(p) + len(c) - 1],
                                          top_k))
        return traces
