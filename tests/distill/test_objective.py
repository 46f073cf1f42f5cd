"""The objective computes the vocabulary projection only where a loss reads it: the loss and
its gradients must be those of the full forward pass."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from persea.project import LossSpec
from persea.distill import objective
from persea.distill.batch import collate


def _example(rng, n, n_prompt, vocab, k=4):
    ids = rng.integers(3, vocab, size=n)
    kd_pos = np.arange(0, n - n_prompt, 2)
    return SimpleNamespace(
        input_ids=ids, n_prompt=n_prompt, kd_pos=kd_pos,
        kd_ids=rng.integers(3, vocab, size=(len(kd_pos), k)),
        kd_logp=np.log(np.full((len(kd_pos), k), 0.2, np.float32)),
        kd_tail=np.full(len(kd_pos), 0.2, np.float32), kd_conf=np.ones(len(kd_pos), np.float32),
        chunk_ranges=[(0, 2), (2, n - n_prompt)], chunk_teacher_logp=[-1.5, -3.0])


def _grads(model, batch, spec):
    model.zero_grad()
    loss, parts = objective.compute_loss(model, batch, spec)
    loss.backward()
    return loss.detach(), parts, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("kd", ["none", "topk", "xtok"])
def test_head_at_needed_positions_equals_the_full_forward(monkeypatch, kd):
    torch.manual_seed(0)
    vocab = 50
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64))
    rng = np.random.default_rng(0)
    examples = [_example(rng, n, p, vocab) for n, p in [(12, 5), (9, 4), (15, 8)]]
    batch = collate(examples, np.array([1.0, 0.5, 2.0]), pad_id=0)
    spec = LossSpec(ce=1.0, kd=kd, kd_weight=0.7, alm_weight=0.3)

    monkeypatch.setattr(objective, "_PASS_COST", 1)  # so that the rows run in groups
    assert len(objective.length_groups(batch.attention_mask.sum(1).tolist(), pass_cost=1)) > 1
    fast = _grads(model, batch, spec)
    monkeypatch.setattr(objective, "_HEAD_ONLY_WHERE_NEEDED", set())
    full = _grads(model, batch, spec)

    assert set(fast[1]) == set(full[1]) and "ce" in fast[1] and "alm" in fast[1]
    assert ("kd" in fast[1]) == (kd != "none")
    torch.testing.assert_close(fast[0], full[0], rtol=1e-5, atol=1e-6)
    for name, g in full[2].items():
        torch.testing.assert_close(fast[2][name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_length_groups_cover_every_row_once_and_cut_where_padding_costs_most():
    lengths = [30, 12, 12, 31, 12, 13, 30, 12]
    groups = objective.length_groups(lengths, max_groups=4, pass_cost=10)
    assert sorted(r for g in groups for r in g) == list(range(len(lengths)))
    assert groups == [[1, 2, 4, 5, 7], [0, 3, 6]]  # short rows apart from the long ones
    # one pass is cheaper when a pass costs more than the padding it saves
    assert objective.length_groups(lengths, pass_cost=1000) == [list(range(len(lengths)))]
    assert objective.length_groups([5, 5, 5]) == [[0, 1, 2]]
