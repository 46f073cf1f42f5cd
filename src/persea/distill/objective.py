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


# One more forward pass costs about as much as this many padded positions on a small
# student (measured on two cores: a step of 1 row is ~12 ms, a position ~0.08 ms).
_PASS_COST = 128


def length_groups(lengths: list[int], max_groups: int = 4, pass_cost: int = _PASS_COST
                  ) -> list[list[int]]:
    """Rows grouped by length so that the padded positions plus `pass_cost` per group are
    fewest: each group is then run at its own longest length. Groups are runs of the
    distinct lengths in increasing order (splitting rows of one length never helps), cut by
    dynamic programming into at most `max_groups`; rows keep their index order within a
    group, so the grouping is a pure function of the lengths."""
    values = sorted(set(lengths))
    count = [sum(1 for n in lengths if n == v) for v in values]
    m = len(values)
    inf = float("inf")
    # best[g][j]: least cost of the j shortest lengths in g groups; cut[g][j]: its last cut
    best = [[inf] * (m + 1) for _ in range(max_groups + 1)]
    cut = [[0] * (m + 1) for _ in range(max_groups + 1)]
    best[0][0] = 0
    for g in range(1, max_groups + 1):
        for j in range(1, m + 1):
            rows = 0
            for i in range(j - 1, -1, -1):  # the group holds lengths i .. j-1
                rows += count[i]
                cost = best[g - 1][i] + rows * values[j - 1] + pass_cost
                if cost < best[g][j]:
                    best[g][j], cut[g][j] = cost, i
    g = min(range(1, max_groups + 1), key=lambda k: (best[k][m], k))
    groups, j = [], m
    while g > 0:
        i = cut[g][j]
        keep = set(values[i:j])
        groups.append([r for r, n in enumerate(lengths) if n in keep])
        j, g = i, g - 1
    return groups[::-1]


def _logits_at(model, batch: Batch, need: torch.Tensor) -> torch.Tensor:
    """The student's logits `[N, V]` at the positions where `need` `[B, L]` is true, in
    row-major order.

    For the families above two savings apply, neither of which changes the result beyond
    float rounding: the prompt positions of a batch (about half its tokens) get no
    vocabulary projection, and rows of similar length run together at their own length
    (`length_groups`; rows are right-padded and attention is causal, so a row's positions
    never depend on the padding), instead of every row at the longest row's length: in the
    example project a batch is about 40% padding otherwise."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) in _HEAD_ONLY_WHERE_NEEDED \
            and hasattr(model, "get_decoder") and not hasattr(model, "module"):
        decoder, head = model.get_decoder(), model.get_output_embeddings()
        lengths = batch.attention_mask.sum(1).tolist()
        parts, where = [], []
        for rows in length_groups(lengths, pass_cost=_PASS_COST):
            width = max(lengths[r] for r in rows)
            idx = torch.tensor(rows, device=need.device)
            hidden = decoder(input_ids=batch.input_ids[idx, :width],
                             attention_mask=batch.attention_mask[idx, :width]).last_hidden_state
            sub = need[idx, :width]
            parts.append(hidden[sub])
            # flat row-major index in the whole batch of each needed position kept here
            pos = torch.nonzero(sub)
            where.append(idx[pos[:, 0]] * need.shape[1] + pos[:, 1])
        flat = torch.cat(where)
        order = torch.argsort(flat)  # back to the row-major order of `need`
        return head(torch.cat(parts)[order]).float()
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
