"""A black-box teacher behind an OpenAI-compatible endpoint (`EndpointModel`), asked through
the real `openai` client, against the stub in openai_stub.py on a loopback port."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest

from persea.errors import PerseaError
from persea.models import LanguageModel
from persea.models.sources import load_teacher
from persea.models.remote import EndpointModel
from persea.project import TeacherSpec

from .openai_stub import CANNED, CANNED_TEXT, StubConfig, alternatives, serve
from .spans_check import assert_well_formed

KEY_ENV = "PERSEA_TEST_STUB_KEY"
# "Caf" "\xc3" "\xa9" " au" " lait" "!": both halves of "é" get its span
CANNED_SPANS = [(0, 3), (3, 4), (3, 4), (4, 7), (7, 12), (12, 13)]


@pytest.fixture(scope="module")
def stub():
    config = StubConfig(api_key="sk-stub")
    with serve(config) as url:
        yield config, url


@pytest.fixture
def url(stub, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-stub")
    return stub[1]


@pytest.fixture
def requests(stub):
    stub[0].requests.clear()
    return stub[0].requests


def teacher(url: str, model: str = "canned", **kwargs) -> EndpointModel:
    return EndpointModel("remote", url, model, api_key_env=KEY_ENV, timeout=10,
                         max_retries=kwargs.pop("max_retries", 0), **kwargs)


def test_generate_reads_tokens_spans_and_logprobs(url, requests):
    model = teacher(url)

    (tr,) = model.generate(["Say it in French."], max_new_tokens=16, top_k=5)

    assert tr.text == CANNED_TEXT == "Café au lait!"
    assert len(tr) == len(CANNED) == 6
    assert tr.spans == CANNED_SPANS
    assert_well_formed(tr.text, tr.spans)
    assert tr.logprobs == [t.logprob for t in CANNED]
    assert [tr.vocab[i] for i in tr.token_ids] == [t.token for t in CANNED]
    assert len(set(tr.vocab)) == len(tr.vocab)  # each string once
    (body,) = requests
    assert body["model"] == "canned" and body["max_tokens"] == 16
    assert body["messages"] == [{"role": "user", "content": "Say it in French."}]
    assert body["temperature"] == 0 and body["logprobs"] is True and body["top_logprobs"] == 5


def test_topk_rows_are_sorted_and_padded_with_minus_inf(url):
    (tr,) = teacher(url).generate(["hi"], max_new_tokens=16, top_k=5)

    assert tr.topk_ids.shape == tr.topk_logprobs.shape == (6, 5)
    assert tr.topk_ids.dtype == np.int64 and tr.topk_logprobs.dtype == np.float32
    for pos, tok in enumerate(CANNED):
        want = alternatives(pos, tok)[:5]  # best first, though the stub sends worst first
        n = len(want)
        assert [tr.vocab[i] for i in tr.topk_ids[pos, :n]] == [s for s, _ in want]
        np.testing.assert_allclose(tr.topk_logprobs[pos, :n], [lp for _, lp in want], rtol=1e-6)
        assert np.all(tr.topk_logprobs[pos, len(want):] == -np.inf)
        assert np.all(tr.topk_ids[pos, len(want):] == 0)
    for row in tr.topk_logprobs:
        assert list(row) == sorted(row, reverse=True)
    np.testing.assert_allclose(tr.topk_logprobs[:, 0], tr.logprobs)
    # the split byte has only 3 alternatives, "!" only one
    assert np.isfinite(tr.topk_logprobs).sum(axis=1).tolist() == [5, 3, 5, 5, 5, 1]


def test_top_k_is_capped_at_twenty(url, requests):
    (tr,) = teacher(url).generate(["hi"], max_new_tokens=16, top_k=32)

    assert requests[-1]["top_logprobs"] == 20
    assert tr.topk_ids.shape == tr.topk_logprobs.shape == (6, 20)
    assert np.isfinite(tr.topk_logprobs).sum(axis=1).tolist() == [20, 3, 20, 20, 20, 1]
    assert all(math.isinf(x) for x in tr.topk_logprobs[1, 3:])


def test_without_top_k_no_alternatives_are_asked(url, requests):
    (tr,) = teacher(url).generate(["hi"], max_new_tokens=16)

    assert requests[-1].get("top_logprobs") is None
    assert tr.topk_ids.shape == (0, 0) and tr.topk_logprobs.shape == (0, 0)
    assert tr.spans == CANNED_SPANS and len(tr.logprobs) == 6


def test_a_response_cut_inside_a_character(url, requests):
    (tr,) = teacher(url).generate(["hi"], max_new_tokens=2, top_k=3)

    assert requests[-1]["max_tokens"] == 2
    assert tr.text == "Caf\ufffd"
    assert tr.spans == [(0, 3), (3, 4)]
    assert tr.topk_ids.shape == (2, 3)


def test_one_trace_per_prompt(url, requests):
    traces = teacher(url).generate(["a", "b", "c"], max_new_tokens=16, top_k=2)

    assert [r["messages"][0]["content"] for r in requests] == ["a", "b", "c"]
    assert len(traces) == 3 and all(t.text == CANNED_TEXT for t in traces)


def test_an_endpoint_without_logprobs_gives_text_only(url):
    (tr,) = teacher(url, model="plain").generate(["hi"], max_new_tokens=16, top_k=5)

    assert tr.text == CANNED_TEXT
    assert len(tr) == 0 and tr.token_ids == [] and tr.spans == [] and tr.logprobs == []
    assert tr.vocab == []
    assert tr.topk_ids.shape == (0, 0) and tr.topk_logprobs.shape == (0, 0)


# -- failures ---------------------------------------------------------------------------

def test_an_unknown_model_is_a_persea_error(url):
    with pytest.raises(PerseaError) as err:
        teacher(url, model="bad-model").generate(["hi"], max_new_tokens=4)
    msg = str(err.value)
    assert "teacher 'remote'" in msg and url in msg and "400" in msg
    assert "The model `bad-model` does not exist" in msg


def test_a_wrong_api_key_is_a_persea_error(url, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    with pytest.raises(PerseaError) as err:
        teacher(url).generate(["hi"], max_new_tokens=4)
    msg = str(err.value)
    assert "teacher 'remote'" in msg and "401" in msg and "Incorrect API key" in msg


def test_an_unreachable_endpoint_is_a_persea_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(PerseaError) as err:
        teacher(url, max_retries=1).generate(["hi"], max_new_tokens=4)
    msg = str(err.value)
    assert "teacher 'remote'" in msg and "cannot reach" in msg and url in msg


def test_score_and_tokenize_are_refused_with_a_reason(url):
    model = teacher(url)
    with pytest.raises(PerseaError, match="teacher 'remote'.*log-probabilities of the prompt"):
        model.score(["hi"], ["there"])
    with pytest.raises(PerseaError, match="teacher 'remote'.*no tokenizer"):
        model.tokenize("hi")


# -- identity and loading ---------------------------------------------------------------

def test_identity(url):
    model = teacher(url)
    assert isinstance(model, LanguageModel)
    assert model.vocab_size is None
    assert model.fingerprint == teacher(url + "/").fingerprint  # a trailing slash is no change
    assert model.fingerprint != teacher(url, model="other").fingerprint
    assert model.tokenizer_fingerprint != model.fingerprint


def test_load_teacher_builds_an_endpoint_model(url):
    spec = TeacherSpec(name="api", endpoint=url, model="canned", api_key_env=KEY_ENV)

    model = load_teacher(spec)

    assert isinstance(model, EndpointModel) and model.name == "api"
    (tr,) = model.generate(["hi"], max_new_tokens=16, top_k=3)
    assert tr.text == CANNED_TEXT and tr.spans == CANNED_SPANS
