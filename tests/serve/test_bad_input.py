"""Bad input is one clear refusal naming the field: loosely typed request fields (sent by the
real openai client to a real gateway), and money out of the range the database holds (the
admin API and the CLI)."""

from __future__ import annotations

import httpx
import openai
import pytest

from persea.accounts.money import MAX_AMOUNT
from persea.db.types import MONEY_CEILING
from tests.cli_helpers import run_cli
from tests.serve.gateway_env import ADMIN_TOKEN, env, toy_model  # noqa: F401 - fixtures

CHAT = [{"role": "user", "content": "hi"}]


@pytest.fixture
def client(env):
    return openai.OpenAI(base_url=env.v1, api_key=env.keys["lp"], max_retries=0)


def _refused(call, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    err = caught.value
    assert err.status_code == 400 and err.type == "invalid_request_error", err.body
    assert err.param == param and param in err.message, err.body


# Every numeric and boolean field of both request models, with a value of the wrong JSON
# type that a lax parser would coerce.
CHAT_WRONG = [
    ("n", "2"), ("n", 2.0), ("n", True), ("max_tokens", "5"), ("max_tokens", 5.0),
    ("max_completion_tokens", "5"), ("max_completion_tokens", False),
    ("temperature", "1"), ("temperature", True), ("top_p", "0.5"), ("top_p", False),
    ("seed", "7"), ("seed", 1.5), ("seed", True), ("stream", "true"), ("stream", 1),
    ("logprobs", 1), ("logprobs", "true"), ("top_logprobs", False), ("top_logprobs", "2"),
    ("top_logprobs", 1.0), ("stream_options", {"include_usage": "yes"}),
    ("logit_bias", {"1": "5"}),
]
COMPLETION_WRONG = [
    ("best_of", False), ("best_of", "1"), ("echo", 0), ("echo", "false"), ("logprobs", True),
    ("logprobs", "1"), ("logprobs", 1.0), ("n", "2"), ("max_tokens", True), ("seed", "7"),
    ("temperature", "0"), ("top_p", True), ("stream", "false"),
]


@pytest.mark.parametrize("field, value", CHAT_WRONG)
def test_chat_fields_are_strictly_typed(client, field, value):
    param = "stream_options.include_usage" if field == "stream_options" else \
        "logit_bias.1" if field == "logit_bias" else field
    _refused(lambda: client.chat.completions.create(
        model="toy", messages=CHAT, max_tokens=2, extra_body={field: value}), param)


@pytest.mark.parametrize("field, value", COMPLETION_WRONG)
def test_completion_fields_are_strictly_typed(client, field, value):
    _refused(lambda: client.completions.create(model="toy", prompt="hi", max_tokens=2,
                                               extra_body={field: value}), field)


def test_what_openai_accepts_still_passes(client):
    r = client.chat.completions.create(model="toy", messages=CHAT, max_tokens=2, n=2,
                                       temperature=1, top_p=1, seed=-3, logprobs=True,
                                       top_logprobs=0, stream=False)
    assert len(r.choices) == 2 and r.usage.completion_tokens > 0
    r = client.completions.create(model="toy", prompt="hi", max_tokens=2, temperature=0,
                                  logprobs=0, echo=False)
    assert r.usage.completion_tokens > 0


def test_nan_temperature_is_refused(env):
    body = b'{"model": "toy", "messages": [{"role": "user", "content": "hi"}], ' \
           b'"temperature": NaN}'
    r = env.post("/v1/chat/completions", body)
    assert r.status_code in (400,) and r.json()["error"]["code"] in ("invalid_value",
                                                                     "invalid_json")


# -- money out of range ------------------------------------------------------------------


def test_the_money_range_fits_the_database():
    assert 0 < MAX_AMOUNT < MONEY_CEILING


def _admin(env, body) -> httpx.Response:
    return httpx.post(env.url + "/admin/plans", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})


PRICE = {"input_per_mtok": "1", "output_per_mtok": "2"}


@pytest.mark.parametrize("change, param", [
    ({"prices": {"toy": {**PRICE, "input_per_mtok": "1e100"}}}, "prices.toy.input_per_mtok"),
    ({"prices": {"toy": {**PRICE, "output_per_mtok": "99999999999"}}},
     "prices.toy.output_per_mtok"),
    ({"monthly_budget": "99999999999"}, "monthly_budget"),
    ({"monthly_budget": "1e100"}, "monthly_budget"),
    ({"monthly_budget": "-1"}, "monthly_budget"),
    ({"rpm": 10**30}, "rpm"),
    ({"tpm": 2**31}, "tpm"),
])
def test_admin_api_refuses_money_out_of_range_with_400(env, change, param):
    body = {"name": "big", "prices": {"toy": PRICE}, **change}
    r = _admin(env, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["param"] == param
    assert param in err["message"] and "Traceback" not in err["message"]
    assert str(2**31 - 1 if param in ("rpm", "tpm") else MAX_AMOUNT) in err["message"]


def test_admin_api_accepts_the_top_of_the_range(env):
    r = _admin(env, {"name": "top", "prices": {"toy": {"input_per_mtok": str(MAX_AMOUNT),
                                                       "output_per_mtok": "0"}},
                     "monthly_budget": str(MAX_AMOUNT), "rpm": 2**31 - 1})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("args, field", [
    (["plans", "create", "x", "--price", "m=1e100/1"], "price 'm=1e100/1' input"),
    (["plans", "create", "x", "--price", "m=1/99999999999"], "price 'm=1/99999999999' output"),
    (["plans", "create", "x", "--price", "m=1/1", "--budget", "99999999999"], "--budget"),
    (["plans", "create", "x", "--price", "m=1/1", "--budget", "1e100"], "--budget"),
    (["plans", "create", "x", "--price", "m=1/1", "--rpm", str(10**30)], "rpm"),
    (["plans", "update", "pro", "--budget", "99999999999"], "--budget"),
    (["plans", "update", "pro", "--price", "small=1e100/1"], "price 'small=1e100/1' input"),
])
def test_cli_money_out_of_range_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, args,
                                                       field):
    db = ["--db", f"sqlite:///{tmp_path / 'p.db'}"]
    assert run_cli(capsys, monkeypatch, "plans", "create", "pro", "--price", "small=1/2",
                   *db)[0] == 0
    code, out, err = run_cli(capsys, monkeypatch, *args, *db)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert field in lines[0] and str(2**31 - 1 if field == "rpm" else MAX_AMOUNT) in lines[0]
    assert "Traceback" not in out + err
