"""The gateway as the official `openai` client sees it: a real uvicorn on loopback, the
built-in toy model (batched) and an upstream stub, every answer metered in the database."""

from __future__ import annotations

import concurrent.futures
from decimal import Decimal

import openai
import pytest

from tests.serve.gateway_env import PRICE, env, toy_model  # noqa: F401 - fixtures
from persea.serve.stub_upstream import REPLY

CHAT = [{"role": "user", "content": "What is 12 plus 30?"}]
RAMBLE = "Once upon a time"  # the toy model continues this for 100+ tokens at temperature 0


@pytest.fixture
def client(env):
    return openai.OpenAI(base_url=env.v1, api_key=env.keys["acme"], max_retries=0)


def _cost(prompt: int, completion: int) -> Decimal:
    return sum(PRICE.cost(prompt, completion), Decimal(0))


def test_models_lists_what_the_plan_sells(env, client):
    assert sorted(m.id for m in client.models.list()) == ["stub", "toy"]
    only = openai.OpenAI(base_url=env.v1, api_key=env.keys["toyonly"], max_retries=0)
    assert [m.id for m in only.models.list()] == ["toy"]


def test_chat_completion_has_usage_and_is_metered_exactly(env, client):
    r = client.chat.completions.create(model="toy", messages=CHAT, temperature=0,
                                       max_tokens=20)
    assert r.object == "chat.completion" and r.model == "toy"
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    u = r.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens and u.completion_tokens > 0
    assert u.prompt_tokens == len(env.toy.prompt_ids(_chat_prompt()))  # the model's count
    rec = env.usage(r.id)
    assert (rec.prompt_tokens, rec.completion_tokens) == (u.prompt_tokens, u.completion_tokens)
    assert rec.cost == _cost(u.prompt_tokens, u.completion_tokens)
    raw = client.chat.completions.with_raw_response.create(model="toy", messages=CHAT,
                                                          max_tokens=4)
    assert raw.headers["x-request-id"] == raw.parse().id  # the usage record's key


def _chat_prompt():
    from persea.serve.backends.base import Prompt

    return Prompt("chat", tuple((m["role"], m["content"]) for m in CHAT))


def test_stream_matches_the_whole_answer_and_ends_with_usage(env, client):
    whole = client.chat.completions.create(model="toy", messages=CHAT, temperature=0,
                                           max_tokens=20)
    chunks = list(client.chat.completions.create(
        model="toy", messages=CHAT, temperature=0, max_tokens=20, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == \
        whole.choices[0].finish_reason
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    rec = env.usage(last.id)
    assert (rec.prompt_tokens, rec.completion_tokens) == (last.usage.prompt_tokens,
                                                          last.usage.completion_tokens)


def test_stream_without_include_usage_has_no_usage_chunk_but_is_metered(env, client):
    chunks = list(client.chat.completions.create(model="toy", messages=CHAT, max_tokens=8,
                                                 stream=True, seed=1))
    assert all(c.choices and c.usage is None for c in chunks)
    assert env.usage(chunks[0].id).completion_tokens >= 1


def test_n_choices_are_separate_rows_and_usage_adds_them(env, client):
    r = client.chat.completions.create(model="toy", messages=CHAT, n=3, max_tokens=12,
                                       temperature=1.5, seed=5)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert r.usage.completion_tokens == env.usage(r.id).completion_tokens
    assert r.usage.completion_tokens >= 3


def test_n_choices_stream_side_by_side(env, client):
    chunks = list(client.chat.completions.create(
        model="toy", messages=CHAT, n=2, max_tokens=10, temperature=1.0, seed=11,
        stream=True, stream_options={"include_usage": True}))
    texts = {0: "", 1: ""}
    finished = set()
    for c in chunks[:-1]:
        for ch in c.choices:
            texts[ch.index] += ch.delta.content or ""
            if ch.finish_reason:
                finished.add(ch.index)
    assert finished == {0, 1}
    whole = client.chat.completions.create(model="toy", messages=CHAT, n=2, max_tokens=10,
                                           temperature=1.0, seed=11)
    assert [texts[0], texts[1]] == [c.message.content for c in whole.choices]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_max_tokens_and_max_completion_tokens_bound_the_answer(env, client):
    r = client.completions.create(model="toy", prompt=RAMBLE, max_tokens=7, temperature=0)
    assert r.usage.completion_tokens == 7 and r.choices[0].finish_reason == "length"
    r = client.chat.completions.create(model="toy", messages=[{"role": "user",
                                                               "content": RAMBLE}],
                                       max_completion_tokens=5, temperature=1.0, seed=3)
    assert r.usage.completion_tokens <= 5


def test_stop_sequence_cuts_the_answer(env, client):
    full = client.completions.create(model="toy", prompt=RAMBLE, max_tokens=40, temperature=0)
    text = full.choices[0].text
    stop = text[5:8]
    assert stop and stop in text
    cut = client.completions.create(model="toy", prompt=RAMBLE, max_tokens=40, temperature=0,
                                    stop=[stop])
    assert cut.choices[0].text == text[:text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < full.usage.completion_tokens
    streamed = client.completions.create(model="toy", prompt=RAMBLE, max_tokens=40,
                                         temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == cut.choices[0].text


def test_seed_makes_sampling_repeatable(env, client):
    def ask(seed):
        return client.completions.create(model="toy", prompt=RAMBLE, max_tokens=30,
                                         temperature=1.2, top_p=0.95, seed=seed
                                         ).choices[0].text

    a, b = ask(1234), ask(1234)
    assert a == b
    assert len({ask(s) for s in (1, 2, 3, 4)} | {a}) > 1  # sampling does vary by seed


def test_concurrent_requests_share_generate_calls(env):
    calls, rows = env.toy.generate_calls, env.toy.rows_generated

    def one(i):
        c = openai.OpenAI(base_url=env.v1, api_key=env.keys["acme"], max_retries=0)
        return c.completions.create(model="toy", prompt=f"{RAMBLE} {i}", max_tokens=16,
                                    temperature=0)

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(12)))
    assert all(1 <= r.usage.completion_tokens <= 16 for r in results)
    calls = env.toy.generate_calls - calls
    assert env.toy.rows_generated - rows == 12
    assert calls < 12 and max(list(env.toy.recent_batches)[-calls:]) > 1


def test_upstream_backend_answers_whole_and_streamed(env, client):
    n_before = len(env.stub.requests)
    r = client.chat.completions.create(model="stub", messages=CHAT, max_tokens=3, seed=9,
                                       stop=["zz"], temperature=0.5)
    assert r.choices[0].message.content == "Hello from the"
    assert r.choices[0].finish_reason == "length"
    sent = env.stub.requests[n_before]
    assert sent["model"] == "stub-model"  # the upstream's own name
    assert (sent["max_tokens"], sent["seed"], sent["stop"], sent["temperature"]) == \
        (3, 9, ["zz"], 0.5)
    assert env.usage(r.id).completion_tokens == r.usage.completion_tokens == 3
    chunks = list(client.chat.completions.create(
        model="stub", messages=CHAT, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert chunks[-1].usage.completion_tokens == len(REPLY.split())
    assert env.usage(chunks[-1].id).completion_tokens == len(REPLY.split())
    comp = client.completions.create(model="stub", prompt="hi there", max_tokens=2)
    assert comp.choices[0].text == "Hello from" and comp.usage.completion_tokens == 2


def test_upstream_failure_is_a_502_and_costs_nothing(env, client):
    before = env.balance("acme")
    records = env.usage_count()
    env.stub.fail_next = 1
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="stub", messages=CHAT)
    assert err.value.status_code == 502
    assert err.value.body["code"] == "backend_error"
    assert env.balance("acme") == before  # reserved and given back
    assert env.usage_count() == records


def test_upstream_failure_on_a_stream_is_a_502_before_any_chunk(env, client):
    before = env.balance("acme")
    records = env.usage_count()
    env.stub.fail_next = 1
    with pytest.raises(openai.InternalServerError) as err:
        list(client.chat.completions.create(model="stub", messages=CHAT, stream=True))
    assert err.value.status_code == 502
    assert env.balance("acme") == before and env.usage_count() == records


def test_a_gateway_can_be_another_gateways_upstream(env, tmp_path):
    """persea in front of persea: what one answers, the other parses, meters and streams."""
    import sqlalchemy as sa

    from persea.db import upgrade
    from persea.db.schema import usage_records
    from persea.accounts import Accounts
    from persea.serve.app import create_app
    from persea.serve.backends.upstream import UpstreamBackend
    from tests.serve.gateway_env import PRICE
    from persea.serve.stub_upstream import LiveServer

    url = f"sqlite:///{tmp_path / 'front.db'}"
    upgrade(url)
    front = Accounts(url)
    front.admin.create_plan("p", {"relayed": PRICE})
    front.admin.create_org("o", "p")
    key = front.admin.create_key("o").raw_key
    relay = UpstreamBackend("relayed", env.v1, upstream_model="toy", api_key=env.keys["acme"])
    with LiveServer(create_app(front, {"relayed": relay})) as server:
        c = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
        whole = c.chat.completions.create(model="relayed", messages=CHAT, temperature=0,
                                          max_tokens=12)
        direct = openai.OpenAI(base_url=env.v1, api_key=env.keys["acme"], max_retries=0)
        same = direct.chat.completions.create(model="toy", messages=CHAT, temperature=0,
                                              max_tokens=12)
        assert whole.choices[0].message.content == same.choices[0].message.content
        assert whole.usage == same.usage  # the back gateway's exact counts, passed on
        chunks = list(c.chat.completions.create(
            model="relayed", messages=CHAT, temperature=0, max_tokens=12, stream=True,
            stream_options={"include_usage": True}))
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text == same.choices[0].message.content
        assert chunks[-1].usage == same.usage
    with front.engine.connect() as conn:  # the server's shutdown waited for its settles
        counts = conn.execute(sa.select(usage_records.c.completion_tokens)).scalars().all()
    assert counts == [same.usage.completion_tokens] * 2
    front.close()
