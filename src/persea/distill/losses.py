"""Distillation losses, each a pure function of tensors.

Notation: a position is one next-token prediction. `z` are student logits `[N, V]`, `T` a
temperature. The teacher is known only through what the harvest kept: its top-k ids and
log-probabilities `[N, k]`, and the exact probability `tail` outside those k (`[N]`).

**The mass outside the top-k.** Teacher and student are compared on one shared support: the
k stored candidates plus one "rest" bucket. The teacher's rest is its stored tail; the
student's rest is its own probability of every other token (exact, a log-sum-exp over the
vocabulary minus the k ids). Both are then proper distributions over the same k+1
outcomes, so no distribution is renormalised over a support the other does not share.
Temperature is applied to these k+1 buckets (the rest treated as one outcome).

Every loss returns a scalar: the mean over positions where `mask` is true. docs/distill.md
has the formulas again, with when to use which.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_NEG = -1e30


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def cross_entropy(z: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Sequence-level distillation / SFT: `-log softmax(z)[target]`, mean over positions.

    Works for any teacher, black-box included: the targets are the tokens of the teacher's
    response re-tokenised by the student."""
    nll = F.cross_entropy(z.float(), targets.clamp(min=0), reduction="none")
    return _masked_mean(nll, mask if mask is not None else targets >= 0)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """`log(1 - exp(x))` for x <= 0, computed stably (Mächler, 2012)."""
    x = x.clamp(max=-1e-12)
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def bucket_logprobs(logp_topk: torch.Tensor, log_tail: torch.Tensor, T: float
                    ) -> torch.Tensor:
    """Log-probabilities over k+1 buckets (k candidates, then the rest) at temperature T:
    `softmax([logp_1 .. logp_k, log tail] / T)`. Absent entries (-inf) stay at zero mass."""
    logits = torch.cat([logp_topk, log_tail[:, None]], dim=-1).float()
    logits = torch.where(torch.isfinite(logits), logits, torch.full_like(logits, _NEG))
    return (logits / T).log_softmax(-1)


def student_buckets(z: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor, T: float
                    ) -> torch.Tensor:
    """The student's k+1 bucket log-probabilities at temperature T for candidate `ids`
    (`[N, k]`, `valid` marks real ones): its probability of each candidate, and of all
    other tokens together, from its full distribution."""
    logq = (z.float() / T).log_softmax(-1)
    picked = logq.gather(1, ids.clamp(min=0))
    picked = torch.where(valid, picked, torch.full_like(picked, _NEG))
    # rest = 1 - sum of valid candidates (duplicates would double count: callers dedupe)
    covered = torch.logsumexp(picked, dim=-1)
    rest = log1mexp(covered)
    return torch.cat([picked, rest[:, None]], dim=-1)


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row over the last axis; 0 log 0 = 0."""
    p = logp.exp()
    return torch.where(p > 0, p * (logp - logq), torch.zeros_like(p)).sum(-1)


def divergence(logp: torch.Tensor, logq: torch.Tensor, kind: str, beta: float = 0.5
               ) -> torch.Tensor:
    """Per-row divergence between teacher buckets `p` and student buckets `q`:

    - `forward`: KL(p || q) = sum p (log p - log q)   (mode covering)
    - `reverse`: KL(q || p) = sum q (log q - log p)   (mode seeking)
    - `jsd`: generalised Jensen-Shannon with weight beta (Agarwal et al., 2024, GKD):
      M = beta p + (1 - beta) q;  JSD_beta = beta KL(p || M) + (1 - beta) KL(q || M).
      beta -> 0 behaves like forward KL, beta -> 1 like reverse KL (up to scale).
    """
    if kind == "forward":
        return _kl(logp, logq)
    if kind == "reverse":
        return _kl(logq, logp)
    if kind == "jsd":
        if not 0.0 < beta < 1.0:
            raise ValueError(f"jsd needs 0 < beta < 1, got {beta}")
        logm = torch.logsumexp(torch.stack([logp + torch.log(torch.tensor(beta)),
                                            logq + torch.log(torch.tensor(1 - beta))]), dim=0)
        return beta * _kl(logp, logm) + (1 - beta) * _kl(logq, logm)
    raise ValueError(f"unknown divergence {kind!r}; expected forward, reverse or jsd")


def topk_kd(z: torch.Tensor, topk_ids: torch.Tensor, topk_logp: torch.Tensor,
            tail: torch.Tensor, kind: str = "forward", T: float = 1.0, beta: float = 0.5,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Same-tokenizer logit distillation on the stored top-k.

        L = T^2 * mean_n D(p_n, q_n)

    with p the teacher's and q the student's k+1 buckets (see the module docstring) and D
    the divergence `kind`. The T^2 factor keeps gradient size comparable across T
    (Hinton et al., 2015)."""
    valid = torch.isfinite(topk_logp)
    log_tail = torch.log(tail.float().clamp(min=1e-30))
    logp = bucket_logprobs(topk_logp, log_tail, T)
    logq = student_buckets(z, topk_ids, valid, T)
    return (T * T) * _masked_mean(divergence(logp, logq, kind, beta), mask)


def sorted_l1(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The ULD distance (Boizard et al., 2024): sort each probability vector in decreasing
    order, pad the shorter with zeros, sum |p_(i) - q_(i)|. For distributions on the real
    line of ranks this is the 1-Wasserstein distance; it needs no shared vocabulary."""
    n = max(p.shape[-1], q.shape[-1])
    p = F.pad(p, (0, n - p.shape[-1]))
    q = F.pad(q, (0, n - q.shape[-1]))
    ps = p.sort(dim=-1, descending=True).values
    qs = q.sort(dim=-1, descending=True).values
    return (ps - qs).abs().sum(-1)


def cross_tokenizer_kd(z: torch.Tensor, mapped_ids: torch.Tensor, topk_logp: torch.Tensor,
                       tail: torch.Tensor, T: float = 1.0, uld_weight: float = 1.0,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-tokenizer logit distillation at aligned positions: exact matches plus ULD.

    `mapped_ids[n, c]` is the student id whose text equals teacher candidate c, or -1. With
    M the matched candidates and U the unmatched ones:

    - on the support M + {rest}: KL(p || q), the teacher's rest being everything outside M
      (its unmatched candidates and its tail), the student's rest likewise its probability
      outside M: both sides sum to one on the same outcomes;
    - on what does not match: sorted_l1(p_U, q_R), the teacher's |U| unmatched candidate
      probabilities against the student's |U| largest probabilities outside M, as raw
      masses (neither side is renormalised), as in ULD. Only |U| ranks are compared: past
      them the teacher's mass is its tail, whose spread over tokens is unknown. With every
      candidate matched the term vanishes and the loss is `topk_kd`'s forward KL;

        L = T^2 * mean_n [ KL_M(p || q) + uld_weight * sorted_l1(p_U, q_R) ]

    Candidates are expected deduplicated (one teacher candidate per student id).
    """
    matched = (mapped_ids >= 0) & torch.isfinite(topk_logp)
    # the teacher at temperature: its k candidates and its tail bucket tempered jointly
    logp_cand = bucket_logprobs(topk_logp, torch.log(tail.float().clamp(min=1e-30)), T)[:, :-1]
    p_m = torch.where(matched, logp_cand, torch.full_like(logp_cand, _NEG))
    teacher = torch.cat([p_m, log1mexp(torch.logsumexp(p_m, -1))[:, None]], -1)
    student = student_buckets(z, mapped_ids, matched, T)
    kl = _kl(teacher, student)

    p_u = torch.where(matched | ~torch.isfinite(topk_logp), torch.zeros_like(logp_cand),
                      logp_cand.exp())
    logq = (z.float() / T).log_softmax(-1)
    excluded = torch.zeros_like(logq, dtype=torch.bool)
    excluded.scatter_(1, mapped_ids.clamp(min=0), matched)
    q_rest = torch.where(excluded, torch.zeros_like(logq), logq.exp())
    k = topk_logp.shape[-1]
    q_top = q_rest.topk(min(k, q_rest.shape[-1]), dim=-1).values
    n_unmatched = (p_u > 0).sum(-1, keepdim=True)
    ranks = torch.arange(q_top.shape[-1], device=q_top.device)[None, :]
    q_top = torch.where(ranks < n_unmatched, q_top, torch.zeros_like(q_top))
    uld = sorted_l1(p_u, q_top)
    return (T * T) * _masked_mean(kl + uld_weight * uld, mask)


def binary_kl(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """KL(Bernoulli(a) || Bernoulli(b)) = a log(a/b) + (1-a) log((1-a)/(1-b))."""
    a = a.clamp(eps, 1 - eps)
    b = b.clamp(eps, 1 - eps)
    return a * (a.log() - b.log()) + (1 - a) * ((1 - a).log() - (1 - b).log())


def approx_likelihood_matching(teacher_chunk_logp: torch.Tensor,
                               student_chunk_logp: torch.Tensor, T: float = 1.0,
                               mask: torch.Tensor | None = None) -> torch.Tensor:
    """Approximate likelihood matching over aligned chunks (Minixhofer et al., 2025).

    A chunk is text between two boundaries shared by both tokenizations; its log-likelihood
    under a model is the sum of the log-probabilities of that model's tokens in it, so the
    two are comparable even though the tokens are not. Each chunk is read as a binary event
    with probability a = exp(log p_T(chunk) / T) for the teacher and b likewise for the
    student, and the loss is the binary KL divergence:

        L = mean_chunks KL(Bern(a) || Bern(b))

    It needs only the chosen tokens' log-probabilities, so it works with any teacher that
    reports them, whatever its vocabulary."""
    a = (teacher_chunk_logp.float() / T).exp()
    b = (student_chunk_logp.float() / T).exp()
    return _masked_mean(binary_kl(a, b), mask)
