"""The student's shape fields: key/value heads."""

import pytest
from pydantic import ValidationError

from persea.distill.student import build_student_model, train_student_tokenizer
from persea.project import StudentSpec


def _tok():
    return train_student_tokenizer(["What is 1 + 2?", "3", "user\n", "assistant\n"], 300)


@pytest.mark.parametrize("kv, expected", [(None, 2), (4, 4), (1, 1)])
def test_kv_heads_sets_the_key_value_heads_and_defaults_to_half(kv, expected):
    model = build_student_model(_tok(), 32, 1, 4, 64, seed=0, kv_heads=kv)
    assert model.config.num_key_value_heads == expected
    assert model.model.layers[0].self_attn.k_proj.out_features == expected * 8


def test_kv_heads_must_divide_heads():
    with pytest.raises(ValidationError, match="not a multiple of kv_heads"):
        StudentSpec(heads=4, kv_heads=3, hidden_size=32)


def test_record_names_kv_heads_only_when_set_so_older_runs_still_resume():
    assert "kv_heads" not in StudentSpec(heads=4).record()
    assert StudentSpec(heads=4, kv_heads=4).record()["kv_heads"] == 4


def test_split_compounds_needs_the_words_tokenizer():
    with pytest.raises(ValidationError, match="goes with `tokenizer: words` only"):
        StudentSpec(tokenizer="bpe", split_compounds=True)
    assert StudentSpec(tokenizer="words", split_compounds=True).record()["split_compounds"]
    assert "split_compounds" not in StudentSpec(tokenizer="words").record()
