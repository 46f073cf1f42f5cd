"""Training examples for one student from a harvest cache, whatever the tokenizers.

Each (prompt, teacher response) becomes one student sequence: the prompt in the student's
chat template, the response text re-tokenised by the student, and the student's end of turn
when the teacher's response ended. Beside it, what the logit losses need, already aligned:

- at every response position where teacher and student start at the same character
  boundary (`persea.align.aligned_starts`), the teacher's top-k carried onto student ids by
  exact text (`carry_topk`; unmatched candidates keep their mass with id -1) and its tail;
- for every chunk between shared boundaries (`persea.align.chunks`), the teacher's summed
  log-probability, and the student tokens that cover the same text (for ALM).

Looking teacher signal up by prompt index and character position, never by batch position,
keeps it attached to the right text however the data is shuffled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from persea.align import aligned_starts, carry_topk, chunks, token_bytes, vocab_map
from persea.distill.cache import Harvest, read_responses
from persea.distill.student import check_encodes


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


def build_examples(harvest: Harvest, student_tok, teachers: list[str] | None = None
                   ) -> list[Example]:
    """Examples for every response of the given teachers (default: all in the cache)."""
    from persea.toyworld import SKILLS

    student_bytes = token_bytes(student_tok)
    eot = student_tok.eos_token_id
    prompt_ids = {}
    examples: list[Example] = []
    for name in teachers or list(harvest.teachers):
        t = harvest.teachers[name]
        white_box_map = None
        responses = read_responses(harvest, name)
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
            if t.bytes_of_ids is None:
                mapping = _mapping(harvest, name, student_tok, student_bytes, r.vocab)
            else:
                if white_box_map is None:
                    white_box_map = _mapping(harvest, name, student_tok, student_bytes, None)
                mapping = white_box_map
            pairs = aligned_starts(r.spans, s_spans)
            ti = np.array([i for i, _ in pairs], np.int64)
            sj = np.array([j for _, j in pairs], np.int64)
            k = r.topk_ids.shape[1] if r.topk_ids.ndim == 2 else 0
            if len(ti) and k:
                kd_ids, kd_logp = carry_topk(r.topk_ids[ti], r.topk_logp[ti], mapping)
                kd_tail = r.tail[ti]
                kd_conf = np.exp(r.logprob[ti]).astype(np.float32)
            else:
                kd_ids = np.zeros((0, max(k, 1)), np.int64)
                kd_logp = np.zeros((0, max(k, 1)), np.float32)
                kd_tail = np.zeros(0, np.float32)
                kd_conf = np.zeros(0, np.float32)
                sj = np.zeros(0, np.int64)
            cs = [c for c in chunks(r.spans, s_spans) if c.t1 > c.t0 and c.s1 > c.s0]
            skill = rec.get("skill")
            correct = None
            if rec.get("answer") is not None and skill in SKILLS:
                correct = SKILLS[skill].check(rec["answer"], r.text)
            examples.append(Example(
                prompt_index=r.prompt_index, teacher=name, skill=skill, correct=correct,
                input_ids=np.asarray(p_ids + s_ids, np.int64), n_prompt=len(p_ids),
                kd_pos=sj, kd_ids=kd_ids, kd_logp=kd_logp, kd_tail=kd_tail,
                kd_conf=kd_conf,
                chunk_ranges=np.array([(c.s0, c.s1) for c in cs], np.int64).reshape(-1, 2),
                chunk_teacher_logp=np.array([float(r.logprob[c.t0:c.t1].sum()) for c in cs],
                                            np.float32),
                token_conf=r.logprob.astype(np.float32)))
    return examples
