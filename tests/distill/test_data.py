"""Examples built from a real harvest: labels, aligned teacher signal, chunks."""

from __future__ import annotations

import numpy as np
import pytest

from persea.cache.reader import open_harvest, read_responses
from persea.distill.data import build_examples
from persea.distill.student import harvest_corpus, train_student_tokenizer
from persea.project import load_project


def test_examples_carry_aligned_teacher_signal(harvested):
    proj = load_project(harvested)
    harvest = open_harvest(proj.resolve("cache/harvest"), "d", ["alpha", "beta"])
    tok = train_student_tokenizer(harvest_corpus(harvest), 350)
    examples = build_examples(harvest, tok)
    responses = read_responses(harvest, "alpha")
    assert len(examples) == 2 * len(responses)
    for e, r in zip(examples, responses):
        assert e.teacher == "alpha" and e.prompt_index == r.prompt_index
        prompt = harvest.prompts[r.prompt_index]["prompt"]
        assert tok.decode(e.input_ids[:e.n_prompt]).count(prompt) == 1
        body = tok.decode(e.input_ids[e.n_prompt:], skip_special_tokens=True)
        assert body == r.text
        assert e.kd_ids.shape == e.kd_logp.shape == (len(e.kd_pos), 8)
        assert np.all(e.kd_pos < e.n_response)
        real = e.kd_ids[e.kd_ids >= 0]
        assert np.all(real < len(tok))
        carried = np.where(e.kd_ids >= 0, np.exp(e.kd_logp), 0).sum(-1)
        assert np.all(carried <= 1 + 1e-5)
        # chunks partition the student's response tokens they cover, in order
        starts, ends = e.chunk_ranges[:, 0], e.chunk_ranges[:, 1]
        assert np.all(starts < ends) and np.all(starts[1:] >= ends[:-1])
        assert np.all(e.chunk_teacher_logp <= 0)
    # the first response token always pairs (both start at character 0)
    assert all(e.kd_pos[0] == 0 for e in examples if len(e.kd_pos))



@pytest.fixture(scope="module")
def toy_harvest(tmp_path_factory):
    """One prompt per skill answered by two built-in teachers whose answers are words."""
    import yaml

    from persea.harvest import HarvestJob, run_harvest

    d = tmp_path_factory.mktemp("words") / "p"
    d.mkdir()
    teachers = ["gemma3-toy", "qwen3-toy"]
    (d / "persea.yaml").write_text(yaml.safe_dump({
        "name": "w", "teachers": [{"name": n, "builtin": n} for n in teachers],
        "prompts": {"toyworld": {"per_skill": 1}},
        "harvest": {"shard_size": 6, "batch_size": 6, "max_new_tokens": 16, "top_k": 8,
                    "backend": "transformers"}}))
    run_harvest(HarvestJob.of(load_project(d)))
    return open_harvest(d / "cache" / "harvest", "w", teachers), teachers


def test_a_words_student_gets_no_target_on_a_whole_word_it_did_not_write(toy_harvest,
                                                                         monkeypatch):
    """With a words student, a teacher candidate may land on a whole-word student id only at
    a position where the student's own token is that word; elsewhere its mass is unmatched."""
    from persea.align import context_bound
    from persea.distill import data
    from persea.distill.transfer import transfer_stats

    harvest, teachers = toy_harvest
    tok = train_student_tokenizer(harvest_corpus(harvest), 2000, kind="words",
                                  min_word_count=2)
    bound = context_bound(tok)
    assert bound.any()  # the prompts' and answers' words are whole-word tokens

    def on_words(examples):
        """Carried candidates on whole-word ids: (where the student wrote another token,
        where it wrote that word)."""
        off = on = 0
        for e in examples:
            actual = e.input_ids[e.n_prompt + e.kd_pos][:, None]
            hit = (e.kd_ids >= 0) & bound[np.clip(e.kd_ids, 0, None)]
            off += int((hit & (e.kd_ids != actual)).sum())
            on += int((hit & (e.kd_ids == actual)).sum())
        return off, on

    examples = build_examples(harvest, tok)
    off, on = on_words(examples)
    assert off == 0 and on > 0
    # carried by text alone, the same harvest puts mass on words the student did not write
    monkeypatch.setattr(data, "context_bound", lambda t: np.zeros(len(t), bool))
    plain = build_examples(harvest, tok)
    plain_off, plain_on = on_words(plain)
    assert plain_off > 0 and plain_on == on
    for e, p in zip(examples, plain, strict=True):
        assert np.array_equal(e.kd_pos, p.kd_pos) and np.array_equal(e.kd_logp, p.kd_logp)
        kept = e.kd_ids >= 0
        assert np.array_equal(e.kd_ids[kept], p.kd_ids[kept])
        moved = (p.kd_ids >= 0) & ~kept
        assert np.all(bound[p.kd_ids[moved]])  # only whole-word targets were taken away
    # the moved mass shows in what each teacher transferred
    weights, reasons = np.ones(len(examples)), [None] * len(examples)
    new = transfer_stats(examples, weights, reasons, teachers)
    old = transfer_stats(plain, weights, reasons, teachers)
    assert any(a.carried_mass < b.carried_mass for a, b in zip(new, old))
    for a, b in zip(new, old):
        assert a.carried_mass <= b.carried_mass
        assert a.carried_mass + a.unmatched_mass == pytest.approx(
            b.carried_mass + b.unmatched_mass, abs=1e-5)


def test_a_bpe_student_gets_the_same_targets_as_by_text_alone(toy_harvest, monkeypatch):
    from persea.align import context_bound
    from persea.distill import data

    harvest, _ = toy_harvest
    tok = train_student_tokenizer(harvest_corpus(harvest), 350)
    assert not context_bound(tok).any()
    examples = build_examples(harvest, tok)
    monkeypatch.setattr(data, "context_bound", lambda t: np.zeros(len(t), bool))
    plain = build_examples(harvest, tok)
    assert sum(int((e.kd_ids >= 0).sum()) for e in examples) > 0
    for e, p in zip(examples, plain, strict=True):
        for field in ("kd_pos", "kd_ids", "kd_logp", "kd_tail", "kd_conf"):
            assert np.array_equal(getattr(e, field), getattr(p, field)), field
