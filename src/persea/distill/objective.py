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


# Decoder-only families whose logits are exactly `lm_head(last hidden state)`: for them the
# vocabulary projection runs only at the positions a loss reads (others, e.g. Gemma with its
# logit soft-capping, or a model wrapped for several processes, take the full forward).
_HEAD_ONLY_WHERE_NEEDED = {"llama", "mistral", "qwen2", "qwen3"}


def _logits_at(model, batch: Batch, need: torch.Tensor) -> torch.Tensor:
    """The student's logits `[N, V]` at the positions where `need` `[B, L]` is true, in
    row-major order. The prompt positions of a batch (about half its tokens) need none, and
    the projection onto the vocabulary is a quarter of a small student's arithmetic."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) in _HEAD_ONLY_WHERE_NEEDED \
            and hasattr(model, "get_decoder") and not hasattr(model, "module"):
        hidden = model.get_decoder()(input_ids=batch.input_ids,
                                     attention_mask=batch.attention_mask).last_hidden_state
        return model.get_output_embeddings()(hidden[need]).float()
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    return out.logits[need].float()


def compute_loss(model, batch: Batch, spec) -> tuple[torch.Tensor, dict[str, float]]:
    valid = batch.labels >= 0
    need = valid.clone()
    use_kd = spec.kd != "none" and spec.kd_weight > 0 and len(batch.kd_row) > 0
    if use_kd:
        need[batch.kd_row, batch.kd_pos] = True
    if spec.alm_weight > 0 and len(batch.chunk_of):
        need[batch.chunk_row, batch.chunk_pos] = True
    logits = _logits_at(model, batch, need)  # [N, V]: the needed positions, row-major
    # row of each needed (b, l) in `logits`; -1 where not needed
    where = torch.full(need.shape, -1, dtype=torch.long, device=logits.device)
    where[need] = torch.arange(logits.shape[0], device=logits.device)
    parts: dict[str, torch.Tensor] = {}
    nll = torch.zeros(need.shape, device=logits.device)
    nll[need] = torch.nn.functional.cross_entropy(
        logits, batch.labels[need].clamp(min=0), reduction="none")  # [B, L], 0 where unused
    w = batch.label_weight * valid
    total = torch.zeros((), device=logits.device)
    if spec.ce > 0:
        parts["ce"] = (nll * w).sum() / w.sum().clamp(min=1e-8)
        total = total + spec.ce * parts["ce"]
    if use_kd:
        z = logits[where[batch.kd_row, batch.kd_pos]]  # [M, V]
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
