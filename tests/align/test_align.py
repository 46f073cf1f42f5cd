"""Alignment across the three built-in tokenizers: coverage, pairing and carried mass."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from persea.align import aligned_starts, boundaries, carry_topk, chunks, token_bytes, vocab_map
from persea.toyworld.builtin import BUILTIN_TEACHERS

NAMES = list(BUILTIN_TEACHERS)


@pytest.fixture(scope="module")
def toks():
    return {n: AutoTokenizer.from_pretrained(t.path) for n, t in BUILTIN_TEACHERS.items()}


def spans_of(tok, text):
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return enc["input_ids"], [tuple(s) for s in enc["offset_mapping"]]


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1,
               max_size=40) | st.from_regex(r"[a-z ,0-9]{1,30}", fullmatch=True)


@settings(max_examples=40, deadline=None)
@given(text=TEXT, pair=st.sampled_from([(a, b) for a in NAMES for b in NAMES if a != b]))
def test_chunks_cover_the_text_once_and_every_token_once(toks, text, pair):
    t_ids, t_spans = spans_of(toks[pair[0]], text)
    s_ids, s_spans = spans_of(toks[pair[1]], text)
    if not t_spans or not s_spans:
        return
    cs = chunks(t_spans, s_spans)
    assert cs[0].start == 0 and cs[0].t0 == 0 and cs[0].s0 == 0
    for a, b in zip(cs, cs[1:]):
        assert a.end == b.start and a.t1 == b.t0 and a.s1 == b.s0  # no gap, no overlap
    assert cs[-1].t1 == len(t_spans) and cs[-1].s1 == len(s_spans)
    covered_to = max(e for _, e in t_spans)
    assert max(c.end for c in cs) == covered_to == max(e for _, e in s_spans)
    for c in cs:  # each chunk's tokens stay inside it on both sides
        assert all(c.start <= s and e <= c.end for s, e in t_spans[c.t0:c.t1])
        assert all(c.start <= s and e <= c.end for s, e in s_spans[c.s0:c.s1])


@settings(max_examples=40, deadline=None)
@given(text=TEXT, pair=st.sampled_from([(a, b) for a in NAMES for b in NAMES]))
def test_aligned_pairs_start_at_the_same_clean_boundary(toks, text, pair):
    _, t_spans = spans_of(toks[pair[0]], text)
    _, s_spans = spans_of(toks[pair[1]], text)
    pairs = aligned_starts(t_spans, s_spans)
    for i, j in pairs:
        assert t_spans[i][0] == s_spans[j][0]
        assert all(e <= t_spans[i][0] for _, e in t_spans[:i])
        assert all(e <= s_spans[j][0] for _, e in s_spans[:j])
    if pair[0] == pair[1] and t_spans:
        assert pairs[0] == (0, 0)


def test_multibyte_character_split_in_bytes_is_not_a_boundary(toks):
    text = "a日b"
    _, spans = spans_of(toks["qwen3-toy"], text)  # 日 is three byte tokens, all spanning (1, 2)
    assert spans.count((1, 2)) >= 2
    b = boundaries(spans)
    assert 1 in b and 2 in b
    assert sorted(b) == [0, 1, 2, 3]


def test_digits_one_by_one_against_grouped():
    one_by_one = [(0, 1), (1, 2), (2, 3), (3, 4)]  # "1234" as 1|2|3|4
    grouped = [(0, 2), (2, 4)]  # as 12|34
    assert aligned_starts(one_by_one, grouped) == [(0, 0), (2, 1)]
    cs = chunks(one_by_one, grouped)
    assert [(c.start, c.end, c.t0, c.t1, c.s0, c.s1) for c in cs] == [(0, 2, 0, 2, 0, 1),
                                                                       (2, 4, 2, 4, 1, 2)]


def test_end_of_turn_tokens_pair_up():
    teacher = [(0, 2), (2, 3), (3, 3)]  # "abc" + end of turn
    student = [(0, 1), (1, 3), (3, 3)]
    assert (2, 2) in aligned_starts(teacher, student)
    assert chunks(teacher, student)[-1].t0 == 2 and chunks(teacher, student)[-1].s0 == 2


def test_token_bytes_undo_each_tokenizers_markers(toks):
    for name, tok in toks.items():
        tb = token_bytes(tok)
        assert len(tb) == len(tok)
        text = "Sort these words: kalo, tamas"
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert b"".join(tb[i] for i in ids) == text.encode(), name
        eot = tok.convert_tokens_to_ids(tok.eos_token)
        assert tb[eot] is None


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), pair=st.sampled_from([(a, b) for a in NAMES for b in NAMES]))
def test_carried_probabilities_sum_to_at_most_one(toks, seed, pair):
    t, s = toks[pair[0]], toks[pair[1]]
    mapping = np.array(vocab_map(token_bytes(t), token_bytes(s)))
    rng = np.random.default_rng(seed)
    k = 16
    logits = rng.normal(0, 2, size=(8, len(t)))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ids = np.argsort(-logp, axis=-1)[:, :k]
    top = np.take_along_axis(logp, ids, -1)
    sid, slp = carry_topk(ids, top, mapping)
    carried = np.where(sid >= 0, np.exp(slp), 0).sum(-1)
    assert np.all(carried <= np.exp(top).sum(-1) + 1e-6)
    assert np.all(carried <= 1 + 1e-6)
    for row in sid:  # each student id at most once per row
        real = row[row >= 0]
        assert len(real) == len(set(real.tolist()))
        assert np.all(real < len(s))


def test_duplicate_text_candidates_merge():
    mapping = np.array([5, 5, -1])  # teacher ids 0 and 1 have the same text
    ids, lp = carry_topk(np.array([[0, 1, 2]]), np.log(np.array([[0.3, 0.2, 0.1]])), mapping)
    assert ids.tolist() == [[5, -1, -1]]
    assert np.isclose(np.exp(lp[0, 0]), 0.5) and lp[0, 1] == -np.inf
    assert np.isclose(np.exp(lp[0, 2]), 0.1)  # unmatched keeps its mass, for ULD


# A words-level student (whole known words are one token, only where no letter follows) and
# a teacher whose BPE writes " gofe" as " go" + "fe".
WORDS_CORPUS = ["we go to gofe, go on"] * 5


def _gofe_teacher():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for piece in ("go", "fe", "\u0120go"):
        vocab[piece] = len(vocab)
    tok = Tokenizer(models.BPE(vocab, [("g", "o"), ("f", "e"), ("\u0120", "go")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def _student(kind):
    from persea.distill.tokenizer import train_bpe, train_words_and_chars, wrap
    from persea.models.templates import COMPACT

    if kind == "words":
        return wrap(train_words_and_chars(WORDS_CORPUS, COMPACT, 2000, 4), COMPACT)
    return wrap(train_bpe(WORDS_CORPUS * 20, COMPACT, 300), COMPACT)


def test_context_bound_marks_whole_words_of_a_words_tokenizer_only():
    from persea.align import context_bound

    words = _student("words")
    bound = context_bound(words)
    assert bound.shape == (len(words),)
    vocab = words.get_vocab()
    for piece in ("go", "\u0120go", "gofe", "\u0120gofe", "we", "\u0120on"):
        assert bound[vocab[piece]], piece
    for piece in ("g", "o", "\u0120", ","):  # single characters stand anywhere
        assert not bound[vocab[piece]], piece
    assert not bound[words.eos_token_id]
    # the ids found are exactly the word tokens: each known word with and without its space
    assert sorted(words.convert_ids_to_tokens(np.flatnonzero(bound).tolist())) == sorted(
        p for w in ("go", "gofe", "on", "to", "we") for p in (w, "\u0120" + w))
    # byte-level BPE: a token followed by a letter is still emitted
    assert not context_bound(_student("bpe")).any()
    assert not context_bound(_gofe_teacher()).any()


def test_the_builtin_tokenizers_have_no_context_bound_ids(toks):
    from persea.align import context_bound

    for name, tok in toks.items():  # byte-level BPE and Unigram, usable as base students
        assert not context_bound(tok).any(), name


def _carry_gofe(student, bound):
    """The teacher's top-3 at each shared boundary of " gofe, go.", carried onto `student`."""
    teacher = _gofe_teacher()
    text = " gofe, go."
    t_ids, t_spans = spans_of(teacher, text)
    s_ids, s_spans = spans_of(student, text)
    assert teacher.convert_ids_to_tokens(t_ids) == ["\u0120go", "fe", ",", "\u0120go", "."]
    pairs = aligned_starts(t_spans, s_spans)
    ti = np.array([i for i, _ in pairs])
    sj = np.array([j for _, j in pairs])
    # the teacher's candidates at every one of its tokens: " go", ",", "."
    tv = teacher.get_vocab()
    cand = np.tile([tv["\u0120go"], tv[","], tv["."]], (len(t_ids), 1))
    logp = np.log(np.tile([0.6, 0.25, 0.1], (len(t_ids), 1)))
    mapping = np.array(vocab_map(token_bytes(teacher), token_bytes(student)))
    ids, lp = carry_topk(cand[ti], logp[ti], mapping, np.array(s_ids)[sj], bound)
    return [tuple(t_spans[i]) for i in ti], np.array(s_ids)[sj], ids, lp


def test_a_teachers_word_start_is_not_carried_onto_a_students_whole_word():
    from persea.align import context_bound

    student = _student("words")
    go, gofe, comma = (student.convert_tokens_to_ids(p) for p in ("\u0120go", "\u0120gofe", ","))
    starts, actual, ids, lp = _carry_gofe(student, context_bound(student))
    assert starts == [(0, 3), (5, 6), (6, 9), (9, 10)]  # shared boundaries 0, 5, 6, 9
    assert actual[0] == gofe and actual[2] == go
    dot = student.convert_tokens_to_ids(".")
    # at the start of " gofe": the teacher's " go" has no student token (unmatched, its mass
    # kept for the unmatched term); "," and "." still land on the student's
    assert ids[0].tolist() == [-1, comma, dot]
    assert np.allclose(np.exp(lp[0]), [0.6, 0.25, 0.1])
    # at the standalone " go" the student's whole word is what the teacher means
    assert ids[2].tolist() == [go, comma, dot]
    # where the student wrote "," or ".", a " go" of the teacher is unmatched as well
    assert ids[1].tolist() == [-1, comma, dot] and ids[3].tolist() == [-1, comma, dot]
    # without the check the carry put the teacher's 0.6 on the student's " go" everywhere
    _, _, plain, plain_lp = _carry_gofe(student, None)
    assert plain[:, 0].tolist() == [go] * 4 and np.array_equal(plain[:, 1:], ids[:, 1:])
    assert np.array_equal(plain_lp, lp)  # the check moves no probability, only its target


def test_a_bpe_student_is_carried_as_before():
    from persea.align import context_bound

    student = _student("bpe")
    bound = context_bound(student)
    _, _, ids, lp = _carry_gofe(student, bound)
    _, _, plain_ids, plain_lp = _carry_gofe(student, None)
    assert np.array_equal(ids, plain_ids) and np.array_equal(lp, plain_lp)
    assert (ids >= 0).any()  # the comparison is about carried candidates, not nothing
