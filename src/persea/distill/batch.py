"""Turning examples into padded tensors for one training step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    labels: torch.Tensor  # [B, L]: the token predicted at each position, -100 elsewhere
    label_weight: torch.Tensor  # [B, L]: the example's weight at its response positions
    kd_row: torch.Tensor  # [M] batch row of each logit-KD position
    kd_pos: torch.Tensor  # [M] position in the row whose logits predict it
    kd_ids: torch.Tensor  # [M, k]
    kd_logp: torch.Tensor  # [M, k]
    kd_tail: torch.Tensor  # [M]
    kd_weight: torch.Tensor  # [M]
    chunk_of: torch.Tensor  # [P] chunk index of each (row, position) below
    chunk_row: torch.Tensor  # [P]
    chunk_pos: torch.Tensor  # [P]
    chunk_teacher_logp: torch.Tensor  # [C]
    chunk_weight: torch.Tensor  # [C]
    tokens: int  # real tokens in the batch

    def to(self, device) -> "Batch":
        return Batch(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                        for k, v in self.__dict__.items()})


def collate(examples, weights: np.ndarray, pad_id: int, token_confidence: bool = False
            ) -> Batch:
    B = len(examples)
    L = max(len(e.input_ids) for e in examples)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.long)
    labels = torch.full((B, L), -100, dtype=torch.long)
    lw = torch.zeros((B, L), dtype=torch.float32)
    kd_row, kd_pos, kd_ids, kd_logp, kd_tail, kd_w = [], [], [], [], [], []
    ch_of, ch_row, ch_pos, ch_t, ch_w = [], [], [], [], []
    n_chunks = 0
    for b, (e, w) in enumerate(zip(examples, weights)):
        n = len(e.input_ids)
        ids[b, :n] = torch.from_numpy(e.input_ids)
        mask[b, :n] = 1
        start = e.n_prompt - 1  # position predicting response token 0
        labels[b, start:n - 1] = torch.from_numpy(e.input_ids[e.n_prompt:])
        lw[b, start:n - 1] = float(w)
        if len(e.kd_pos):
            kd_row.append(np.full(len(e.kd_pos), b))
            kd_pos.append(start + e.kd_pos)
            kd_ids.append(e.kd_ids)
            kd_logp.append(e.kd_logp)
            kd_tail.append(e.kd_tail)
            tw = np.full(len(e.kd_pos), float(w), np.float32)
            if token_confidence:
                tw = tw * e.kd_conf
            kd_w.append(tw)
        for (s0, s1), t_lp in zip(e.chunk_ranges, e.chunk_teacher_logp):
            for j in range(s0, s1):
                ch_of.append(n_chunks)
                ch_row.append(b)
                ch_pos.append(start + j)
            ch_t.append(t_lp)
            ch_w.append(float(w))
            n_chunks += 1
    k = max((x.shape[1] for x in kd_ids), default=1)

    def cat(parts, dtype, shape_tail=()):
        if not parts:
            return torch.zeros((0, *shape_tail), dtype=dtype)
        return torch.from_numpy(np.concatenate(parts)).to(dtype)

    return Batch(
        input_ids=ids, attention_mask=mask, labels=labels, label_weight=lw,
        kd_row=cat(kd_row, torch.long), kd_pos=cat(kd_pos, torch.long),
        kd_ids=cat(kd_ids, torch.long, (k,)), kd_logp=cat(kd_logp, torch.float32, (k,)),
        kd_tail=cat(kd_tail, torch.float32), kd_weight=cat(kd_w, torch.float32),
        chunk_of=torch.tensor(ch_of, dtype=torch.long),
        chunk_row=torch.tensor(ch_row, dtype=torch.long),
        chunk_pos=torch.tensor(ch_pos, dtype=torch.long),
        chunk_teacher_logp=torch.tensor(ch_t, dtype=torch.float32),
        chunk_weight=torch.tensor(ch_w, dtype=torch.float32),
        tokens=int(mask.sum()))
