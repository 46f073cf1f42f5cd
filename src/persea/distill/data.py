"""Training examples for one student from a harvest cache, whatever the tokenizers.

Each (prompt, teacher response) becomes one student sequence: the prompt in the student's
chat template, the response text re-tokenised by the student, and the student's end of turn
when the teacher's response ended. Beside it, what the logit losses need, already aligned:

- at every response position where teacher and student start at the same character
  boundary (`persea.align.aligned_starts`), the teacher's top-k carried onto student ids by
  exact text (`carry_topk`; unmatched candidates keep their mass with id -1) and its tail.
  A student id that its tokenizer emits only before a non-letter (a whole word of the
  words tokenizer, `persea.align.context_bound`) takes a candidate only where it is the
  student's own token;
- for every chunk between shared boundaries (`persea.align.chunks`), the teacher's summed
  log-probability, and the student tokens that cover the same text (for ALM).

With `loss.combine: average` or `select`, the logit targets of a response come from every
teacher that scored its text (the harvest's cross scores), each aligned to the student's
tokens on its own, and combined per position by persea.distill.combine.

Looking teacher signal up by prompt index and character position, never by batch position,
keeps it attached to the right text however the data is shuffled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from persea.align import aligned_starts, carry_topk, chunks, context_bound, token_bytes, \
    vocab_map
from persea.cache.reader import Harvest, read_responses, read_scores
from persea.distill import combine as combining
from persea.distill.student import check_encodes
from persea.skills import get_world


@dataclass
class Example:
    prompt_index: int
    teacher: str
    skill: str | None
    correct: bool | None  # the skill's checker on this response; None where none applies
    input_ids: np.ndarray  # prompt + response (+ end of turn)
    n_prompt: int  # response token j is predicted at position n_prompt + j - 1
    kd_pos: np.ndarray  # [m] response-token indices with teacher signal
    kd_ids: np.ndarray  # [m, k] student ids, -1 where the candidate has no student match
    kd_logp: np.ndarray  # [m, k]
    kd_tail: np.ndarray  # [m]
    kd_conf: np.ndarray  # [m] the teacher's probability of the token it wrote there
    chunk_ranges: np.ndarray  # [c, 2] student response-token ranges of aligned chunks
    chunk_teacher_logp: np.ndarray  # [c]
    token_conf: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def n_response(self) -> int:
        return len(self.input_ids) - self.n_prompt

    @property
    def mean_logprob(self) -> float:
        """Mean chosen-token log-probability of the teacher: its confidence in the answer."""
        return float(np.mean(self.token_conf)) if len(self.token_conf) else 0.0


def _mapping(harvest: Harvest, teacher: str, student_tok, student_bytes, row_vocab):
    t = harvest.teachers[teacher]
    if t.bytes_of_ids is None:  # black box: ids index the row's own token strings
        source = [s.encode() for s in row_vocab or []]
        return np.asarray(vocab_map(source, student_bytes), np.int64)
    specials = {t.end_of_turn: student_tok.eos_token_id} if t.end_of_turn is not None else {}
    return np.asarray(vocab_map(t.bytes_of_ids, student_bytes, specials), np.int64)


def _align(name: str, r, s_ids, s_spans, mapping, bound) -> combining.Signal:
    """Teacher `name`'s signal on response `r`, at the student positions it aligns with
    (`s_ids`, `s_spans`: the student's tokens of the response; `bound`: its context-bound
    ids)."""
    pairs = aligned_starts(r.spans, s_spans)
    ti = np.array([i for i, _ in pairs], np.int64)
    sj = np.array([j for _, j in pairs], np.int64)
    k = r.topk_ids.shape[1] if r.topk_ids.ndim == 2 else 0
    if len(ti) and k:
        kd_ids, kd_logp = carry_topk(r.topk_ids[ti], r.topk_logp[ti], mapping,
                                     np.asarray(s_ids, np.int64)[sj], bound)
        return combining.Signal(name, sj, kd_ids, kd_logp, r.tail[ti],
                                np.exp(r.logprob[ti]).astype(np.float32))
    return combining.Signal(name, np.zeros(0, np.int64), np.zeros((0, max(k, 1)), np.int64),
                            np.zeros((0, max(k, 1)), np.float32), np.zeros(0, np.float32),
                            np.zeros(0, np.float32))


def build_examples(harvest: Harvest, student_tok, teachers: list[str] | None = None,
                   combine: str = "sum", dev_scores: dict | None = None) -> list[Example]:
    """Examples for every response of the given teachers (default: all in the cache).

    `combine="sum"`: each example carries its author's signal only (teachers combine by
    summing their losses). `"average"` / `"select"`: each example's logit targets combine
    every given teacher's signal on that text (persea.distill.combine), with `dev_scores`
    (per skill, per teacher) as the average's weights when given."""
    skills = get_world().skills
    student_bytes = token_bytes(student_tok)
    bound = context_bound(student_tok)
    eot = student_tok.eos_token_id
    prompt_ids = {}
    examples: list[Example] = []
    names = teachers or list(harvest.teachers)
    maps: dict[str, np.ndarray] = {}

    def mapping_of(teacher: str, row_vocab) -> np.ndarray:
        if harvest.teachers[teacher].bytes_of_ids is None:
            return _mapping(harvest, teacher, student_tok, student_bytes, row_vocab)
        if teacher not in maps:
            maps[teacher] = _mapping(harvest, teacher, student_tok, student_bytes, None)
        return maps[teacher]

    for name in names:
        t = harvest.teachers[name]
        responses = read_responses(harvest, name)
        # scorer -> its traces on this author's responses, by prompt index (with the
        # harvest's skill routing an author answered only some prompts)
        scored = {s: {o.prompt_index: o for o in read_scores(harvest, s, name)} for s in names
                  if combine != "sum" and (s, name) in harvest.score_sets}
        check_encodes(student_tok, [r.text for r in responses[:200]], f"teacher {name!r}")
        for r in responses:
            rec = harvest.prompts[r.prompt_index]
            if r.prompt_index not in prompt_ids:
                text = student_tok.apply_chat_template(
                    [{"role": "user", "content": rec["prompt"]}], add_generation_prompt=True,
                    tokenize=False)
                prompt_ids[r.prompt_index] = student_tok(text, add_special_tokens=False)[
                    "input_ids"]
            p_ids = prompt_ids[r.prompt_index]
            enc = student_tok(r.text, add_special_tokens=False, return_offsets_mapping=True)
            s_ids = list(enc["input_ids"])
            s_spans = [tuple(x) for x in enc["offset_mapping"]]
            ended = t.end_of_turn is not None and len(r.token_ids) and \
                int(r.token_ids[-1]) == t.end_of_turn
            if ended:
                s_ids.append(eot)
                s_spans.append((len(r.text), len(r.text)))
            sig = _align(name, r, s_ids, s_spans, mapping_of(name, r.vocab), bound)
            skill = rec.get("skill")
            if combine != "sum":
                # a scorer's row counts only where it scored exactly this text
                others = [(s, rows[r.prompt_index]) for s, rows in scored.items()
                          if r.prompt_index in rows and rows[r.prompt_index].text == r.text]
                sigs = [sig] + [_align(s, o, s_ids, s_spans, mapping_of(s, o.vocab), bound)
                                for s, o in others]
                sig = combining.combine(sigs, combine, combining.teacher_weights(
                    [x.teacher for x in sigs], skill, dev_scores))
            cs = [c for c in chunks(r.spans, s_spans) if c.t1 > c.t0 and c.s1 > c.s0]
            correct = None
            if rec.get("answer") is not None and skill in skills:
                correct = skills[skill].check(rec["answer"], r.text)
            examples.append(Example(
                prompt_index=r.prompt_index, teacher=name, skill=skill, correct=correct,
                input_ids=np.asarray(p_ids + s_ids, np.int64), n_prompt=len(p_ids),
                kd_pos=sig.pos, kd_ids=sig.ids, kd_logp=sig.logp, kd_tail=sig.tail,
                kd_conf=sig.conf,
                chunk_ranges=np.array([(c.s0, c.s1) for c in cs], np.int64).reshape(-1, 2),
                chunk_teacher_logp=np.array([float(r.logprob[c.t0:c.t1].sum()) for c in cs],
                                            np.float32),
                token_conf=r.logprob.astype(np.float32)))
    if combine != "sum":  # combined rows differ in width; a batch needs one
        width = max((e.kd_ids.shape[1] for e in examples), default=1)
        for e in examples:
            e.kd_ids, e.kd_logp = combining.pad(e.kd_ids, e.kd_logp, width)
    return examples
