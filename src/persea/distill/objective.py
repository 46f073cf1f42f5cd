"""The training objective: ground-truth cross-entropy mixed with the chosen logit losses.

    L = ce * CE(student, teacher tokens) + kd_weight * KD + alm_weight * ALM

Pure knowledge distillation on small students is known to collapse into repetition, so the
cross-entropy term stays on by default (`ce: 1.0`). Each term is a weighted mean over its
own positions; the weights come from the multi-teacher policy (persea.distill.weighting).
"""

from __future__ import annotations

import torch

from persea.distill import losses
from persea.distill.batch import Batch


def compute_loss(model, batch: Batch, spec) -> tuple[torch.Tensor, dict[str, float]]:
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    logits = out.logits.float()  # [B, L, V]
    parts: dict[str, torch.Tensor] = {}
    valid = batch.labels >= 0
    nll = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), batch.labels.clamp(min=0), reduction="none")  # [B, L]
    w = batch.label_weight * valid
    total = torch.zeros((), device=logits.device)
    if spec.ce > 0:
        parts["ce"] = (nll * w).sum() / w.sum().clamp(min=1e-8)
        total = total + spec.ce * parts["ce"]
    if spec.kd != "none" and spec.kd_weight > 0 and len(batch.kd_row):
        z = logits[batch.kd_row, batch.kd_pos]  # [M, V]
        if spec.kd == "topk":
            parts["kd"] = losses.topk_kd(z, batch.kd_ids, batch.kd_logp, batch.kd_tail,
                                         spec.divergence, spec.temperature, spec.beta,
                                         mask=batch.kd_weight)
        else:
            parts["kd"] = losses.cross_tokenizer_kd(
                z, batch.kd_ids, batch.kd_logp, batch.kd_tail, spec.temperature,
                spec.uld_weight, mask=batch.kd_weight)
        total = total + spec.kd_weight * parts["kd"]
    if spec.alm_weight > 0 and len(batch.chunk_of):
        token_lp = -nll[batch.chunk_row, batch.chunk_pos]
        student_chunk = torch.zeros(len(batch.chunk_teacher_logp), device=logits.device)
        student_chunk = student_chunk.index_add(0, batch.chunk_of, token_lp)
        parts["alm"] = losses.approx_likelihood_matching(
            batch.chunk_teacher_logp, student_chunk, spec.temperature, mask=batch.chunk_weight)
        total = total + spec.alm_weight * parts["alm"]
    return total, {k: float(v.detach()) for k, v in parts.items()}
