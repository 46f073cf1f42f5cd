"""The one error type that reaches a person, and the kinds of refusal a stage can give.

A `PerseaError` carries a message meant to be read as one line: what is wrong, where, and
what was expected. The CLI prints it in red and exits non-zero; it never shows a traceback.

A domain error (an account refusal, a backend failure) says what *kind* of refusal it is,
never how a protocol spells it: the HTTP gateway maps kinds to statuses in one table
(`persea.serve.errors.KINDS`).
"""

from enum import StrEnum


class Kind(StrEnum):
    INVALID = "invalid"  # the request's own values are wrong
    UNAUTHENTICATED = "unauthenticated"  # no key, or one that is unknown, revoked, expired
    BUDGET_EXHAUSTED = "budget_exhausted"  # the month's budget cannot cover it
    FORBIDDEN = "forbidden"  # the caller may not do this (a model, logprobs)
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"  # clashes with what exists (a used request id, a released hold)
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"  # our fault: a bug
    UPSTREAM_FAILED = "upstream_failed"  # a model backend failed: ours, or a server behind us
    UNAVAILABLE = "unavailable"  # not answering now (loading, a database down); retry


class PerseaError(Exception):
    """An error caused by input (a file, a flag, a model path), explained for a person."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message
