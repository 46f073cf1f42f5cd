"""On-policy distillation across tokenizers and teachers: the student answers, the teachers
grade every token of its answer.

One on-policy step (Agarwal et al., 2024, "On-policy distillation of language models", GKD;
the same recipe that Thinking Machines describe as on-policy distillation):

1. draw prompts (the harvest's, or fresh ones from the prompt source), seeded by the step;
2. the student samples an answer to each at `temperature`, in its own tokenizer;
3. every white-box teacher scores the student's answer by teacher forcing (one batched
   forward pass, its top-k at each of its own tokens), its end-of-turn token included when
   the student stopped;
4. each teacher's top-k is carried onto the student's tokens through the same alignment the
   harvest cache uses (shared character boundaries, identical token text, a student id
   bound to what follows it taken only where it is the student's own token; persea.align);
   several teachers combine per position (`select`: the most confident; `average`; or
   `best`: only the teacher with the best dev accuracy on the prompt's skill scores);
5. the loss at each aligned student position is a divergence between the teacher's and the
   student's distributions over the teacher's candidates plus one bucket for the rest
   (persea.distill.losses.topk_kd), by default the reverse KL, which is mode seeking:

       L = mean_n KL(q_n || p_n) = mean_n sum_c q_n(c) (log q_n(c) - log p_n(c))

   with q the student and p the teacher at position n. With `target: sampled` the two
   outcomes are instead "the token the student wrote" and "anything else", the teacher's
   probability of that token's text being the product over the teacher tokens that cover
   it exactly (`sampled_signal`): a comparison that needs no shared vocabulary at all,
   where `topk` can only carry candidates whose text is a whole student token.

The skill's checker, where the prompt has one, weights the student's samples: an answer the
checker accepts counts `accepted_weight` (the teacher has little to correct there), one it
rejects counts 1. `lmbda` of the steps are on-policy, chosen by a seeded draw per step, the
rest train on the cached harvest as before, so a resumed run repeats the same steps. No
step before `start` (a fraction of the run) is on-policy: sampling from an untrained
student grades noise, and the published recipes start from a student that has had
supervised training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from persea.align import aligned_starts, carry_topk, context_bound, token_bytes, vocab_map
from persea.align.spans import boundaries
from persea.distill import combine as combining
from persea.distill.batch import Batch, collate
from persea.distill.data import Example
from persea.errors import PerseaError
from persea.models.hf import left_pad


@dataclass
class PromptRecord:
    prompt: str
    skill: str | None = None
    answer: str | None = None


@dataclass
class Scorer:
    """A white-box teacher ready to score student text: its model (the persea.models
    protocol), the map from its ids to the student's, and its end-of-turn text."""

    name: str
    model: object
    mapping: np.ndarray
    end_text: str | None


def is_on_policy_step(step: int, lmbda: float, seed: int, first: int = 0) -> bool:
    """Whether step `step` is on-policy: never before step `first`, then a seeded draw, so
    every run agrees."""
    if lmbda <= 0 or step < first:
        return False
    if lmbda >= 1:
        return True
    return bool(np.random.default_rng([seed, step, 7]).random() < lmbda)


def make_scorers(teachers: dict[str, object], student_tok) -> tuple[list[Scorer], list[str]]:
    """Scorers for the teachers that can score given text; the names of those that cannot
    (black-box endpoints that return no prompt log-probabilities)."""
    student_bytes = token_bytes(student_tok)
    scorers, skipped = [], []
    for name, model in teachers.items():
        tok = getattr(model, "tokenizer", None)
        if tok is None:
            skipped.append(name)
            continue
        eot = tok.eos_token_id
        specials = {eot: student_tok.eos_token_id} if eot is not None else {}
        mapping = np.asarray(vocab_map(token_bytes(tok), student_bytes, specials), np.int64)
        scorers.append(Scorer(name, model, mapping, tok.eos_token if eot is not None else None))
    return scorers, skipped


def aligned_signal(name: str, trace, student_spans: list[tuple[int, int]],
                   mapping: np.ndarray, student_ids: list[int] | None = None,
                   bound: np.ndarray | None = None) -> combining.Signal:
    """A teacher's scored trace as a signal on the student's tokens: positions whose start
    both tokenizations share, the top-k carried onto student ids, and candidates without a
    student id folded into the tail (the loss compares distributions over student ids).
    With `student_ids` (the student's tokens) and `bound` (`persea.align.context_bound` of
    its tokenizer), a candidate lands on a context-bound id only where that id is the
    student's own token, and goes to the tail elsewhere."""
    pairs = aligned_starts(trace.spans, student_spans)
    ti = np.array([i for i, _ in pairs], np.int64)
    sj = np.array([j for _, j in pairs], np.int64)
    k = trace.topk_ids.shape[1] if trace.topk_ids.ndim == 2 else 0
    if not len(ti) or not k:
        return combining.Signal(name, np.zeros(0, np.int64), np.zeros((0, 1), np.int64),
                                np.full((0, 1), -np.inf, np.float32), np.zeros(0, np.float32),
                                np.zeros(0, np.float32))
    actual = np.asarray(student_ids, np.int64)[sj] if student_ids is not None else None
    ids, logp = carry_topk(trace.topk_ids[ti], trace.topk_logprobs[ti], mapping, actual, bound)
    p = np.where(np.isfinite(logp), np.exp(logp.astype(np.float64)), 0.0)
    unmatched = np.where(ids < 0, p, 0.0).sum(1)
    tail = np.clip(1.0 - p.sum(1), 0.0, 1.0) + unmatched
    logp = np.where(ids >= 0, logp, -np.inf).astype(np.float32)
    conf = np.exp(np.asarray(trace.logprobs, np.float64)[ti]).astype(np.float32)
    return combining.Signal(name, sj, ids, logp, np.clip(tail, 0.0, 1.0).astype(np.float32),
                            conf)


def sampled_signal(name: str, trace, student_spans: list[tuple[int, int]],
                   student_ids: list[int]) -> combining.Signal:
    """The teacher's probability of each token the student wrote, as a two-outcome target
    ("this token" or anything else) at that position.

    A student token covering text `[a, b)` that starts and ends on the teacher's token
    boundaries is a chain of whole teacher tokens, so the teacher's probability of that
    text is the product of theirs: `log p_T = sum of their log-probabilities`, exact
    whatever the two vocabularies (an end-of-turn token matches the teacher's). Tokens whose
    ends fall inside a teacher token get no target."""
    tb = boundaries(trace.spans)
    lp = np.asarray(trace.logprobs, np.float64)
    pos, logp = [], []
    for j, (a, b) in enumerate(student_spans):
        first, last = tb.get(a), tb.get(b) if b > a else None
        if first is None or first >= len(trace.spans):
            continue
        if b == a:  # an end-of-turn token: the teacher's own must sit at the same place
            if trace.spans[first] != (a, a):
                continue
            value = lp[first]
        elif last is None or last <= first:
            continue
        else:
            value = lp[first:last].sum()
        pos.append(j)
        logp.append(value)
    n = len(pos)
    logp_arr = np.asarray(logp, np.float64).reshape(n, 1)
    p = np.exp(logp_arr[:, 0])
    return combining.Signal(
        name, np.asarray(pos, np.int64),
        np.asarray([student_ids[j] for j in pos], np.int64).reshape(n, 1),
        logp_arr.astype(np.float32), np.clip(1.0 - p, 0.0, 1.0).astype(np.float32),
        p.astype(np.float32))


class OnPolicy:
    """Builds on-policy batches: student samples, teacher scores, aligned targets."""

    def __init__(self, student_tok, scorers: list[Scorer], prompts: list[PromptRecord],
                 spec, check=None, dev_scores: dict | None = None):
        if not scorers:
            raise PerseaError("on-policy distillation needs a teacher that can score the "
                              "student's text (a model with its own tokenizer)")
        if not prompts:
            raise PerseaError("on-policy distillation has no prompts to draw from")
        self.tok = student_tok
        self.scorers = scorers
        self.prompts = prompts
        self.spec = spec
        self.check = check  # (skill, answer, text) -> bool | None
        self.dev_scores = dev_scores or {}
        self.bound = context_bound(student_tok)
        self._prompt_ids: dict[int, list[int]] = {}

    # -- pieces ------------------------------------------------------------------------
    def _prompt_ids_of(self, index: int) -> list[int]:
        if index not in self._prompt_ids:
            text = self.tok.apply_chat_template(
                [{"role": "user", "content": self.prompts[index].prompt}],
                add_generation_prompt=True, tokenize=False)
            self._prompt_ids[index] = self.tok(text, add_special_tokens=False)["input_ids"]
        return self._prompt_ids[index]

    def draw(self, step: int, size: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng([seed, step, 11])
        return rng.integers(0, len(self.prompts), size=size)

    @torch.no_grad()
    def sample(self, model, indices: np.ndarray, step: int, seed: int) -> list[tuple[str, bool]]:
        """The student's answers (text, stopped at its end-of-turn) to the prompts."""
        pad = self.tok.pad_token_id
        ids, mask = left_pad([self._prompt_ids_of(int(i)) for i in indices], pad)
        width = ids.shape[1]
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        torch.manual_seed(int(np.random.default_rng([seed, step, 13]).integers(2**31)))
        sampled = self.spec.temperature > 0
        out = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device),
            max_new_tokens=self.spec.max_new_tokens, do_sample=sampled,
            temperature=self.spec.temperature if sampled else None, top_k=0 if sampled else None,
            top_p=1.0 if sampled else None,
            eos_token_id=self.tok.eos_token_id, pad_token_id=pad)
        if was_training:
            model.train()
        answers = []
        for row in out[:, width:].tolist():
            stopped = self.tok.eos_token_id in row
            if stopped:
                row = row[:row.index(self.tok.eos_token_id)]
            text = self.tok.decode(row, skip_special_tokens=True,
                                   clean_up_tokenization_spaces=False)
            answers.append((text, stopped))
        return answers

    def _scorers_for(self, skill: str | None) -> list[Scorer]:
        if self.spec.combine != "best":
            return self.scorers
        scores = self.dev_scores.get(skill or "") or {}
        known = [s for s in self.scorers if s.name in scores]
        if not known:
            return self.scorers
        best = max(scores[s.name] for s in known)
        return [s for s in known if scores[s.name] >= best]

    # -- one batch ---------------------------------------------------------------------
    def batch(self, model, step: int, size: int, seed: int) -> tuple[Batch, dict]:
        indices = self.draw(step, size, seed)
        answers = self.sample(model, indices, step, seed)
        recs = [self.prompts[int(i)] for i in indices]
        # the text each teacher scores: the answer, plus its end of turn if the student ended
        signals: list[list[combining.Signal]] = [[] for _ in recs]
        encs = []
        for text, stopped in answers:
            enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
            s_ids = list(enc["input_ids"])
            s_spans = [tuple(x) for x in enc["offset_mapping"]]
            if stopped:
                s_ids.append(self.tok.eos_token_id)
                s_spans.append((len(text), len(text)))
            encs.append((s_ids, s_spans))
        for scorer in self.scorers:
            rows = [r for r, rec in enumerate(recs)
                    if any(s is scorer for s in self._scorers_for(rec.skill))]
            if not rows:
                continue
            conts = [answers[r][0] + (scorer.end_text or "" if answers[r][1] else "")
                     for r in rows]
            traces = scorer.model.score([recs[r].prompt for r in rows], conts,
                                        top_k=self.spec.top_k)
            for r, trace in zip(rows, traces):
                if self.spec.target == "sampled":
                    signals[r].append(sampled_signal(scorer.name, trace, encs[r][1],
                                                     encs[r][0]))
                else:
                    signals[r].append(aligned_signal(scorer.name, trace, encs[r][1],
                                                     scorer.mapping, encs[r][0], self.bound))
        examples, weights = [], []
        accepted = 0
        positions = 0
        for r, rec in enumerate(recs):
            sigs = [s for s in signals[r] if len(s.pos)]
            if not sigs:
                continue
            how = "select" if self.spec.combine in ("select", "best") else "average"
            sig = sigs[0] if len(sigs) == 1 else combining.combine(
                sigs, how, combining.teacher_weights([s.teacher for s in sigs], rec.skill,
                                                     self.dev_scores))
            p_ids = self._prompt_ids_of(int(indices[r]))
            s_ids = encs[r][0]
            correct = self.check(rec.skill, rec.answer, answers[r][0]) if self.check else None
            accepted += bool(correct)
            positions += len(sig.pos)
            examples.append(Example(
                prompt_index=int(indices[r]), teacher=sig.teacher, skill=rec.skill,
                correct=correct, input_ids=np.asarray(p_ids + s_ids, np.int64),
                n_prompt=len(p_ids), kd_pos=sig.pos, kd_ids=sig.ids, kd_logp=sig.logp,
                kd_tail=sig.tail, kd_conf=sig.conf,
                chunk_ranges=np.zeros((0, 2), np.int64),
                chunk_teacher_logp=np.zeros(0, np.float32)))
            weights.append(self.spec.accepted_weight if correct else 1.0)
        if not examples:  # nothing aligned at all: an empty answer everywhere, say
            examples.append(Example(
                prompt_index=int(indices[0]), teacher="", skill=recs[0].skill, correct=None,
                input_ids=np.asarray(self._prompt_ids_of(int(indices[0])), np.int64),
                n_prompt=len(self._prompt_ids_of(int(indices[0]))),
                kd_pos=np.zeros(0, np.int64), kd_ids=np.zeros((0, 1), np.int64),
                kd_logp=np.zeros((0, 1), np.float32), kd_tail=np.zeros(0, np.float32),
                kd_conf=np.zeros(0, np.float32), chunk_ranges=np.zeros((0, 2), np.int64),
                chunk_teacher_logp=np.zeros(0, np.float32)))
            weights.append(0.0)
        width = max(e.kd_ids.shape[1] for e in examples)
        for e in examples:
            e.kd_ids, e.kd_logp = combining.pad(e.kd_ids, e.kd_logp, width)
        stats = {"samples": len(answers), "accepted": accepted, "positions": positions}
        return collate(examples, np.asarray(weights), self.tok.pad_token_id), stats
