"""A transformers model behind the protocol (`HFModel`), loaded with `load_hf_dir`."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from persea.models import LanguageModel, Trace
from persea.models.sources import load_hf_dir

from .spans_check import assert_well_formed

PROMPTS = ["hi", "what is 12 + 30? héllo wörld", "日本 ✓",
           "a longer prompt, so that the batch is ragged and needs padding: " * 3]
MAX_NEW = 12
TOP_K = 6


@pytest.fixture(scope="module")
def batched(tiny):
    return tiny.generate(PROMPTS, max_new_tokens=MAX_NEW, top_k=TOP_K)


def _forward_logprobs(model, ids: list[int]) -> torch.Tensor:
    """[len(ids), vocab] log-probabilities of one plain forward pass: row t predicts t+1."""
    with torch.inference_mode():
        logits = model.model(input_ids=torch.tensor([ids], device=model.device)).logits[0]
    return logits.float().log_softmax(-1).cpu()


def test_the_model_answers_the_protocol(tiny):
    assert isinstance(tiny, LanguageModel)
    assert tiny.name == "tiny"
    assert tiny.vocab_size == len(tiny.tokenizer)


def test_generate_returns_one_trace_per_prompt(tiny, batched):
    assert len(batched) == len(PROMPTS)
    for tr in batched:
        assert isinstance(tr, Trace)
        assert 0 < len(tr) <= MAX_NEW
        assert len(tr.spans) == len(tr.logprobs) == len(tr.token_ids)
        assert tr.text == tiny.tokenizer.decode(tr.token_ids, skip_special_tokens=True)
        assert_well_formed(tr.text, tr.spans)
    assert tiny.generate([], max_new_tokens=MAX_NEW) == []


def test_batched_generation_equals_one_prompt_at_a_time(tiny, batched):
    for prompt, tr in zip(PROMPTS, batched, strict=True):
        (alone,) = tiny.generate([prompt], max_new_tokens=MAX_NEW, top_k=TOP_K)
        assert alone.token_ids == tr.token_ids
        np.testing.assert_allclose(alone.logprobs, tr.logprobs, atol=1e-4)
        np.testing.assert_allclose(alone.topk_logprobs, tr.topk_logprobs, atol=1e-4)


def test_topk_is_sorted_and_holds_the_greedy_choice(batched):
    for tr in batched:
        n = len(tr)
        assert tr.topk_ids.shape == tr.topk_logprobs.shape == (n, TOP_K)
        assert tr.topk_ids.dtype == np.int64 and tr.topk_logprobs.dtype == np.float32
        assert np.all(np.diff(tr.topk_logprobs, axis=1) <= 0)
        assert all(len(set(row)) == TOP_K for row in tr.topk_ids.tolist())
        # greedy: the chosen token is the top-1, and its logprob is the one in `logprobs`
        np.testing.assert_array_equal(tr.topk_ids[:, 0], tr.token_ids)
        np.testing.assert_allclose(tr.topk_logprobs[:, 0], tr.logprobs, atol=1e-5)
        assert np.all(np.exp(tr.topk_logprobs).sum(axis=1) <= 1 + 1e-5)
        assert np.all(tr.topk_logprobs <= 0)


def test_generated_logprobs_match_a_forward_pass(tiny, batched):
    for prompt, tr in zip(PROMPTS, batched, strict=True):
        p = tiny.format_prompt(prompt)
        lp = _forward_logprobs(tiny, p + tr.token_ids)
        want = [lp[len(p) - 1 + t, tok].item() for t, tok in enumerate(tr.token_ids)]
        np.testing.assert_allclose(tr.logprobs, want, atol=1e-4)


def test_generation_without_top_k_has_empty_topk(tiny, batched):
    (tr,) = tiny.generate(PROMPTS[:1], max_new_tokens=MAX_NEW)
    assert tr.token_ids == batched[0].token_ids
    assert tr.topk_ids.shape == (0, 0) and tr.topk_logprobs.shape == (0, 0)


def test_generation_stops_at_a_stop_token(tiny_model_dir, batched):
    """A response ends at (and keeps) its stop token; the others in the batch go on."""
    a, b = batched[0], batched[1]
    found = next(((k, t) for k, t in enumerate(a.token_ids)
                  if k >= 2 and t not in a.token_ids[:k] and t not in b.token_ids), None)
    assert found, "no token of the first response is new at its place and absent from the second"
    k, stop = found
    model = load_hf_dir("tiny", tiny_model_dir)
    model.stop_ids = model.stop_ids | {stop}

    short, full = model.generate(PROMPTS[:2], max_new_tokens=MAX_NEW, top_k=TOP_K)

    assert short.token_ids == a.token_ids[:k + 1]
    np.testing.assert_allclose(short.logprobs, a.logprobs[:k + 1], atol=1e-4)
    assert short.topk_logprobs.shape == (k + 1, TOP_K)
    assert full.token_ids == b.token_ids


def test_prompts_are_wrapped_in_the_chat_template(tiny, tiny_model_dir):
    tok = tiny.tokenizer
    assert tok.decode(tiny.format_prompt("hi")) == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")

    raw = load_hf_dir("raw", tiny_model_dir, chat_template=False)
    assert raw.format_prompt("hi") == tok("hi", add_special_tokens=True)["input_ids"]
    assert tok.decode(raw.format_prompt("hi")) == "hi"


def test_score_matches_a_forward_pass(tiny):
    prompts = ["what is 12 + 30?", "hi"]
    conts = [" 42, héllo 日本 ✓", "ok"]

    traces = tiny.score(prompts, conts, top_k=TOP_K)

    assert len(traces) == 2
    for prompt, cont, tr in zip(prompts, conts, traces, strict=True):
        p = tiny.format_prompt(prompt)
        c = tiny.tokenizer(cont, add_special_tokens=False)["input_ids"]
        lp = _forward_logprobs(tiny, p + c)
        assert tr.token_ids == c
        assert tr.text == cont
        assert_well_formed(cont, tr.spans)
        want = [lp[len(p) - 1 + t, tok].item() for t, tok in enumerate(c)]
        np.testing.assert_allclose(tr.logprobs, want, atol=1e-5)
        assert tr.topk_ids.shape == (len(c), TOP_K)
        np.testing.assert_allclose(
            tr.topk_logprobs, lp[len(p) - 1: len(p) - 1 + len(c)].topk(TOP_K).values, atol=1e-5)
        assert np.all(tr.topk_logprobs[:, 0] >= np.array(tr.logprobs) - 1e-6)


def test_tokenize_offsets_slice_the_text_into_its_tokens(tiny):
    text = "Hello world, 12 + 30 = 42.\n  Bye!"

    ids, offsets = tiny.tokenize(text)

    assert ids == tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(offsets) == len(ids) > 1
    assert [text[s:e] for s, e in offsets] == [tiny.tokenizer.decode([i]) for i in ids]
    assert "".join(text[s:e] for s, e in offsets) == text


# -- fingerprints -----------------------------------------------------------------------

def test_fingerprints_are_stable_across_loads(tiny, tiny_model_dir):
    again = load_hf_dir("same", tiny_model_dir)
    assert again.fingerprint == tiny.fingerprint
    assert again.tokenizer_fingerprint == tiny.tokenizer_fingerprint
    for fp in (tiny.fingerprint, tiny.tokenizer_fingerprint):
        assert len(fp) == 64 and int(fp, 16) >= 0


def test_other_weights_change_the_fingerprint_not_the_tokenizers(tiny, tiny_model_dir, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    torch.manual_seed(1)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(other)).save_pretrained(
        tmp_path / "seed1")
    shutil.copy(tmp_path / "seed1" / "model.safetensors", other / "model.safetensors")

    model = load_hf_dir("other", other)

    assert model.fingerprint != tiny.fingerprint
    assert model.tokenizer_fingerprint == tiny.tokenizer_fingerprint


def test_a_new_chat_template_changes_the_tokenizer_fingerprint(tiny, tiny_model_dir, tmp_path):
    other = tmp_path / "retemplated"
    shutil.copytree(tiny_model_dir, other)
    template = other / "chat_template.jinja"
    assert template.is_file()
    template.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n"
                        "{% endfor %}")

    model = load_hf_dir("retemplated", other)

    assert model.tokenizer.chat_template != tiny.tokenizer.chat_template
    assert model.tokenizer_fingerprint != tiny.tokenizer_fingerprint
    assert model.fingerprint == tiny.fingerprint  # the weights did not change


def test_checkpoint_processors_do_not_skew_the_recorded_choice(tiny_model_dir, tmp_path):
    """A checkpoint whose generation config penalises repeats would pick tokens that are not
    the top-1 of the distribution we record; generation ignores its processors."""
    from transformers import GenerationConfig

    shutil.copytree(tiny_model_dir, tmp_path / "m")
    cfg = GenerationConfig.from_pretrained(tmp_path / "m")
    cfg.repetition_penalty = 50.0
    cfg.save_pretrained(tmp_path / "m")
    model = load_hf_dir("penalised", tmp_path / "m")
    assert GenerationConfig.from_pretrained(tmp_path / "m").repetition_penalty == 50.0
    for tr in model.generate(["What is 1 + 1?", "Sort these words: b, a"], 16, top_k=4):
        assert tr.topk_ids[:, 0].tolist() == tr.token_ids
