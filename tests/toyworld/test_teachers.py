"""The three built-in teachers load as ordinary transformers checkpoints, speak their
family's chat format, and are good at their strong skills, worse at their weak one.

Accuracy is measured on a fixed sample of the test split (the first 60 items per skill at
seed 0); the floors sit a safe margin below the numbers in docs/teachers.md.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from persea.toyworld.builtin import BUILTIN_TEACHERS
from persea.toyworld.score import accuracy_by_skill, generate_with, items_up_to
from persea.models.templates import FORMATS

N_PER_SKILL = 60
STRONG_FLOOR = {  # teacher -> skill -> lowest accepted accuracy on the sample
    "qwen3-toy": {"addition": 0.80, "convert": 0.80},  # measured (200 items): 0.92, 0.93
    "gemma3-toy": {"sort": 0.85, "kb": 0.75},  # measured: 0.97, 0.90
    "gptoss-toy": {"reverse": 0.90},  # measured: 1.00
}
UNTRAINED_CEILING = 0.2  # on a skill it never saw, a teacher gets almost nothing right
CLEAR_GAP = 0.15  # "clearly different": accuracy apart by at least this much

NAMES = sorted(BUILTIN_TEACHERS)


@pytest.fixture(scope="module")
def loaded():
    """name -> (tokenizer, model), each loaded once from its shipped directory."""
    torch.set_num_threads(2)
    out = {}
    for name in NAMES:
        path = BUILTIN_TEACHERS[name].path
        out[name] = (AutoTokenizer.from_pretrained(path),
                     AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32))
    return out


@pytest.fixture(scope="module")
def accuracy(loaded):
    """name -> skill -> accuracy on the fixed sample, for every skill the teacher was
    trained on plus one it was not."""
    out = {}
    for name in NAMES:
        teacher = BUILTIN_TEACHERS[name]
        untrained = [s for s in ("addition", "reverse", "sort", "kb", "count", "convert")
                     if s not in teacher.strong_skills + teacher.weak_skills]
        skills = list(teacher.strong_skills + teacher.weak_skills) + untrained[:1]
        items = [it for s in skills for it in items_up_to(s, "test", N_PER_SKILL)]
        tok, model = loaded[name]
        out[name] = accuracy_by_skill(lambda ps: generate_with(model, tok, ps), items)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_loads_as_its_architecture(name, loaded):
    teacher = BUILTIN_TEACHERS[name]
    tok, model = loaded[name]
    assert type(model).__name__ == teacher.architecture
    assert model.dtype == torch.float32
    fmt = FORMATS[teacher.family]
    end = tok.convert_tokens_to_ids(fmt.end_of_turn)
    assert tok.eos_token == fmt.end_of_turn
    assert model.generation_config.eos_token_id == end
    for special in fmt.special_tokens:
        assert len(tok.encode(special, add_special_tokens=False)) == 1, special


def test_vocabularies_differ(loaded):
    sizes = {name: len(loaded[name][0]) for name in NAMES}
    assert len(set(sizes.values())) == len(sizes), sizes


@pytest.mark.parametrize("name", NAMES)
def test_chat_template_renders_the_family_format(name, loaded):
    tok, _ = loaded[name]
    text = tok.apply_chat_template([{"role": "user", "content": "Reverse the word: abc"}],
                                   add_generation_prompt=True, tokenize=False)
    expected = {
        "qwen": "<|im_start|>user\nReverse the word: abc<|im_end|>\n<|im_start|>assistant\n",
        "gemma": "<bos><start_of_turn>user\nReverse the word: abc<end_of_turn>\n"
                 "<start_of_turn>model\n",
        "gpt-oss": "<|start|>user<|message|>Reverse the word: abc<|end|>"
                   "<|start|>assistant<|channel|>final<|message|>",
    }[BUILTIN_TEACHERS[name].family]
    assert text == expected
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text  # every tokenizer round-trips toy-world text exactly


@pytest.mark.parametrize("name", NAMES)
def test_strong_skills_beat_their_floor(name, accuracy):
    for skill, floor in STRONG_FLOOR[name].items():
        assert accuracy[name][skill] >= floor, (name, skill, accuracy[name])


@pytest.mark.parametrize("name", NAMES)
def test_weak_and_untrained_skills_are_worse(name, accuracy):
    teacher = BUILTIN_TEACHERS[name]
    acc = accuracy[name]
    worst_strong = min(acc[s] for s in teacher.strong_skills)
    for skill in teacher.weak_skills:
        assert acc[skill] <= worst_strong - 0.1, (name, acc)
    for skill, value in acc.items():
        if skill not in teacher.strong_skills + teacher.weak_skills:
            assert value <= UNTRAINED_CEILING, (name, skill, acc)


def test_an_overlap_skill_separates_two_teachers(accuracy):
    """Some skill is strong for one teacher and weak for another, with a clear gap."""
    gaps = {}
    for strong in NAMES:
        for weak in NAMES:
            for skill in set(BUILTIN_TEACHERS[strong].strong_skills) & set(
                    BUILTIN_TEACHERS[weak].weak_skills):
                gaps[(strong, weak, skill)] = accuracy[strong][skill] - accuracy[weak][skill]
    assert gaps and max(gaps.values()) >= CLEAR_GAP, gaps
