"""Examples built from a real harvest: labels, aligned teacher signal, chunks."""

from __future__ import annotations

import numpy as np

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
