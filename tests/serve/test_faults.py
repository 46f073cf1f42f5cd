"""One request's failure stays its own: sampling is safe for every value the wire accepts,
and a request that still breaks its batch fails alone, with a 502 `backend_error`, while its
batch neighbours (other organisations' requests included) get their answers."""

from __future__ import annotations

import asyncio
import concurrent.futures

import openai
import pytest
import torch

from persea.serve.backends.base import BackendError, Prompt, Sampling
from persea.serve.backends.builtin import BuiltinBackend, draw
from persea.serve.errors import KINDS
from tests.serve.gateway_env import env, toy_model  # noqa: F401 - fixtures

CHAT = [{"role": "user", "content": "What is 12 plus 30?"}]
POISON_SEED = 666  # the request a fault is injected into
ERROR_FIELDS = {"message", "type", "param", "code"}


def _client(env, org: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=env.v1, api_key=env.keys[org], max_retries=0)


def _outcome(call):
    """("ok", answer) or (status, error body); anything else (a 500) fails the test."""
    try:
        return "ok", call()
    except openai.APIStatusError as err:
        return err.status_code, err.body


def _answered(r) -> bool:
    c = r.choices[0]
    return c.finish_reason in ("stop", "length") and r.usage.completion_tokens > 0


# -- through the gateway ---------------------------------------------------------------------


def test_degenerate_temperature_and_top_p_never_fail_another_orgs_requests(env):
    a, b = _client(env, "acme"), _client(env, "toyonly")
    degenerate = [{"temperature": 1e-45, "top_p": 1e-300}, {"temperature": 1e-45},
                  {"top_p": 1e-300}, {"temperature": 1e-40, "top_p": 5e-324}]

    def from_a(extra):
        return _outcome(lambda: a.chat.completions.create(model="toy", messages=CHAT,
                                                          max_tokens=8, **extra))

    def from_b(i):
        return b.chat.completions.create(model="toy", messages=CHAT, max_tokens=8, seed=i,
                                         temperature=0.8)

    with concurrent.futures.ThreadPoolExecutor(len(degenerate) + 7) as pool:
        from_as = [pool.submit(from_a, extra) for extra in degenerate]
        from_bs = [pool.submit(from_b, i) for i in range(7)]
        answers = [f.result() for f in from_bs]  # a failed B request raises here
        outcomes = [f.result() for f in from_as]
    assert all(_answered(r) for r in answers)
    for status, body in outcomes:
        if status == "ok":
            assert _answered(body)
        else:
            assert (400 <= status < 500 or status == 502) and set(body) == ERROR_FIELDS


def test_a_vanishing_temperature_or_top_p_is_the_greedy_answer(env):
    client = _client(env, "acme")

    def text(**extra) -> str:
        return client.chat.completions.create(model="toy", messages=CHAT, max_tokens=12,
                                              **extra).choices[0].message.content

    greedy = text(temperature=0)
    assert text(temperature=1e-45) == greedy
    assert text(temperature=1.0, top_p=1e-300, seed=3) == greedy  # keeps the top token only


def test_a_request_that_breaks_its_batch_fails_alone_with_502(env, monkeypatch):
    """A fault in the batched `generate` whenever one request is in it: that request gets a
    502 `backend_error`, everyone else (run again on their own) their answer."""
    _poison_generate(monkeypatch, env.toy.hf.model)
    monkeypatch.setattr(env.toy, "window", 0.5)  # gather the concurrent requests into a batch
    a, b = _client(env, "acme"), _client(env, "toyonly")
    spent_before = env.balance("acme")

    def from_b(i):
        return b.chat.completions.create(model="toy", messages=CHAT, max_tokens=6, seed=i)

    with concurrent.futures.ThreadPoolExecutor(7) as pool:
        poisoned = pool.submit(_outcome, lambda: a.chat.completions.create(
            model="toy", messages=CHAT, max_tokens=6, seed=POISON_SEED))
        answers = [f.result() for f in [pool.submit(from_b, i) for i in range(6)]]
        status, body = poisoned.result()
    assert all(_answered(r) for r in answers)
    assert status == 502 and set(body) == ERROR_FIELDS and body["code"] == "backend_error"
    assert "not charged" in body["message"] and env.balance("acme") == spent_before


# -- the backend on its own: batching made certain by a long window -------------------------


def _poison_generate(monkeypatch, model) -> list[int]:
    """`model.generate` raises whenever a row of the poisoned request is in the batch;
    returns the row counts of the batches the poison was in."""
    real = model.generate
    seen: list[int] = []

    def generate(*args, **kwargs):
        rows = kwargs["logits_processor"][0].rows
        if any(r.s.seed == POISON_SEED for r in rows):
            seen.append(len(rows))
            raise RuntimeError("injected fault")
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", generate)
    return seen


def _run_together(backend: BuiltinBackend, seeds: list[int]) -> list:
    """Every request submitted at once (so within one batching window); their outcomes."""
    prepared = backend.prepare(Prompt("text", text="Once upon a time"))

    async def main():
        try:
            return await asyncio.gather(*[backend.complete(prepared, Sampling(
                max_tokens=6, temperature=0.8, seed=s)) for s in seeds],
                return_exceptions=True)
        finally:
            await backend.aclose()

    return asyncio.run(main())


def test_batch_fault_is_retried_one_by_one(toy_model, monkeypatch):
    backend = BuiltinBackend("t", toy_model, batch_window_ms=1000, torch_threads=1)
    seen = _poison_generate(monkeypatch, toy_model.model)
    results = _run_together(backend, [1, 2, POISON_SEED, 3])
    assert seen == [4, 1]  # in the batch of four, then alone
    assert isinstance(results[2], BackendError) and KINDS[results[2].kind][0] == 502
    for r in results[:2] + results[3:]:
        assert not isinstance(r, BaseException) and r.completion_tokens > 0
    assert list(backend.recent_batches) == [4, 1, 1, 1, 1]


def test_a_row_whose_draw_fails_ends_alone_without_a_retry(toy_model, monkeypatch):
    real = draw

    def flaky(logits, s, gen):
        if s.seed == POISON_SEED:
            raise ValueError("injected fault")
        return real(logits, s, gen)

    monkeypatch.setattr("persea.serve.backends.builtin.draw", flaky)
    backend = BuiltinBackend("t", toy_model, batch_window_ms=1000, torch_threads=1)
    results = _run_together(backend, [1, POISON_SEED, 2])
    assert isinstance(results[1], BackendError) and KINDS[results[1].kind][0] == 502
    assert all(r.completion_tokens > 0 for r in (results[0], results[2]))
    assert backend.generate_calls == 1


# -- sampling itself -----------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, 5e-324, 1e-45, 1e-40, 1e-6, 1e-5, 0.5, 2.0])
@pytest.mark.parametrize("top_p", [5e-324, 1e-300, 1e-8, 0.5, 1.0])
def test_draw_is_safe_for_every_accepted_value(temperature, top_p):
    logits = torch.randn(50, generator=torch.Generator().manual_seed(0)) * 30
    gen = torch.Generator().manual_seed(1)
    token = draw(logits, Sampling(max_tokens=1, temperature=temperature, top_p=top_p), gen)
    assert 0 <= token < 50
    if temperature < 1e-5 or top_p <= 1e-8:
        assert token == int(logits.argmax())


def test_draw_tames_nan_and_inf_logits():
    gen = torch.Generator().manual_seed(0)
    s = Sampling(max_tokens=1, temperature=1.0, top_p=0.9)
    nan = torch.tensor([float("nan"), 1.0, float("-inf"), 2.0])
    assert draw(nan, s, gen) in (1, 3)
    assert draw(torch.tensor([0.0, float("inf"), 1.0]), s, gen) == 1
    with pytest.raises(ValueError, match="no finite logit"):
        draw(torch.full((4,), float("nan")), s, gen)
