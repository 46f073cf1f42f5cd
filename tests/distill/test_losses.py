"""Each loss against a value computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from persea.distill import losses as L


def logits(*probs):
    return torch.log(torch.tensor([probs], dtype=torch.float32))


def test_cross_entropy_by_hand():
    z = logits(0.25, 0.75)
    assert L.cross_entropy(z, torch.tensor([1])).item() == pytest.approx(-math.log(0.75), abs=1e-6)
    # a masked-out position (target -1) does not count
    z2 = torch.cat([z, logits(0.5, 0.5)])
    assert L.cross_entropy(z2, torch.tensor([1, -1])).item() == pytest.approx(-math.log(0.75),
                                                                               abs=1e-6)


# teacher: top-2 ids [0, 1] with p = .6, .3 and tail .1; student: q = .5, .3, .2
Z = logits(0.5, 0.3, 0.2)
IDS = torch.tensor([[0, 1]])
LP = torch.log(torch.tensor([[0.6, 0.3]]))
TAIL = torch.tensor([0.1])


def test_forward_kl_by_hand():
    # .6 ln(.6/.5) + .3 ln(.3/.3) + .1 ln(.1/.2) = 0.1093929 - 0.0693147
    assert L.topk_kd(Z, IDS, LP, TAIL, "forward").item() == pytest.approx(0.0400782, abs=1e-6)


def test_reverse_kl_by_hand():
    # .5 ln(.5/.6) + .2 ln(.2/.1) = -0.0911608 + 0.1386294
    assert L.topk_kd(Z, IDS, LP, TAIL, "reverse").item() == pytest.approx(0.0474686, abs=1e-6)


def test_generalised_jsd_by_hand():
    # M = (.55, .3, .15); KL(p||M) = .6 ln(.6/.55) + .1 ln(.1/.15) = 0.0116601
    # KL(q||M) = .5 ln(.5/.55) + .2 ln(.2/.15) = 0.0098813; JSD_.5 = (0.0116601 + 0.0098813)/2
    assert L.topk_kd(Z, IDS, LP, TAIL, "jsd", beta=0.5).item() == pytest.approx(0.0107707,
                                                                                abs=1e-6)


def test_temperature_by_hand():
    T = 2.0
    p = [x ** (1 / T) for x in (0.6, 0.3, 0.1)]
    p = [x / sum(p) for x in p]
    q = [x ** (1 / T) for x in (0.5, 0.3, 0.2)]
    q = [x / sum(q) for x in q]  # the student's rest bucket is its token 2
    expected = T * T * sum(a * math.log(a / b) for a, b in zip(p, q))
    assert L.topk_kd(Z, IDS, LP, TAIL, "forward", T=T).item() == pytest.approx(expected, abs=1e-6)


def test_kd_is_zero_when_the_student_matches_and_absent_entries_are_ignored():
    ids = torch.tensor([[0, 1, 2]])
    lp = torch.tensor([[math.log(0.5), math.log(0.3), -math.inf]])  # third: absent
    tail = torch.tensor([0.2])
    z = logits(0.5, 0.3, 0.2).requires_grad_(True)
    loss = L.topk_kd(z, ids, lp, tail, "forward")
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert torch.isfinite(z.grad).all()


def test_sorted_l1_by_hand():
    p = torch.tensor([[0.7, 0.2, 0.1]])
    q = torch.tensor([[0.1, 0.6, 0.3]])  # sorted: .6 .3 .1 -> |.1| + |-.1| + 0
    assert L.sorted_l1(p, q).item() == pytest.approx(0.2, abs=1e-6)
    assert L.sorted_l1(torch.tensor([[1.0]]), torch.tensor([[0.5, 0.5]])).item() == \
        pytest.approx(1.0, abs=1e-6)


def test_cross_tokenizer_kd_by_hand():
    # student q = .4 .3 .2 .1; teacher candidates p = .5 .2 .1 (tail .2) mapped to 2, -, 0
    z = logits(0.4, 0.3, 0.2, 0.1)
    mapped = torch.tensor([[2, -1, 0]])
    lp = torch.log(torch.tensor([[0.5, 0.2, 0.1]]))
    tail = torch.tensor([0.2])
    # matched support {s2, s0, rest}: teacher (.5, .1, .4), student (.2, .4, .4)
    kl = 0.5 * math.log(0.5 / 0.2) + 0.1 * math.log(0.1 / 0.4)
    # unmatched: teacher [.2] vs the student's largest one outside {2, 0}: [.3] -> .1
    uld = 0.1
    got = L.cross_tokenizer_kd(z, mapped, lp, tail, uld_weight=1.0)
    assert got.item() == pytest.approx(kl + uld, abs=1e-5)
    got_half = L.cross_tokenizer_kd(z, mapped, lp, tail, uld_weight=0.5)
    assert got_half.item() == pytest.approx(kl + 0.5 * uld, abs=1e-5)


def test_alm_by_hand():
    # a = .5, b = .25: .5 ln(.5/.25) + .5 ln(.5/.75)
    got = L.approx_likelihood_matching(torch.tensor([math.log(0.5)]),
                                       torch.tensor([math.log(0.25)]))
    assert got.item() == pytest.approx(0.1438410, abs=1e-6)
    same = L.approx_likelihood_matching(torch.tensor([-1.3, -0.2]), torch.tensor([-1.3, -0.2]))
    assert same.item() == pytest.approx(0.0, abs=1e-6)


def test_unknown_divergence_and_bad_beta_are_errors():
    with pytest.raises(ValueError, match="unknown divergence"):
        L.topk_kd(Z, IDS, LP, TAIL, "wasserstein")
    with pytest.raises(ValueError, match="0 < beta < 1"):
        L.topk_kd(Z, IDS, LP, TAIL, "jsd", beta=1.0)


def test_cross_tokenizer_kd_with_everything_matched_is_topk_forward_kl():
    z = logits(0.5, 0.3, 0.2)
    same = L.cross_tokenizer_kd(z, IDS, LP, TAIL, T=1.5)
    assert same.item() == pytest.approx(L.topk_kd(z, IDS, LP, TAIL, "forward", T=1.5).item(),
                                        abs=1e-6)
