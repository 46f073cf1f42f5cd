"""A library refusal carries a kind; the gateway's one table turns it into a status and type."""

from __future__ import annotations

import pytest

from persea.accounts import AccountsError, BudgetExhausted, InvalidKey, ModelNotAllowed
from persea.errors import Kind
from persea.serve.backends.base import BackendError
from persea.serve.errors import KINDS, refusal


def test_every_kind_has_a_status_and_a_type():
    assert set(KINDS) == set(Kind)
    assert all(400 <= status < 600 and type_ for status, type_ in KINDS.values())


@pytest.mark.parametrize("error, status, type_, code", [
    (AccountsError("bad"), 400, "invalid_request_error", "invalid_request"),
    (InvalidKey("unknown API key"), 401, "authentication_error", "invalid_api_key"),
    (BudgetExhausted("over"), 402, "insufficient_quota", "insufficient_quota"),
    (ModelNotAllowed("no"), 403, "permission_error", "model_not_allowed"),
    (AccountsError("gone", Kind.NOT_FOUND, "reservation_not_found"), 404, "not_found_error",
     "reservation_not_found"),
    (AccountsError("used", Kind.CONFLICT, "duplicate_request_id"), 409,
     "invalid_request_error", "duplicate_request_id"),
])
def test_account_refusals_answer_as_before(error, status, type_, code):
    err = refusal(error.kind, error.message, code=error.code)
    assert (err.status, err.type, err.code, err.message) == (status, type_, code, error.message)


def test_backend_failures_are_502_from_upstream_and_500_from_our_own_model():
    assert KINDS[BackendError("upstream down").kind] == (502, "server_error")
    assert KINDS[BackendError("model failed", Kind.INTERNAL).kind] == (500, "server_error")
