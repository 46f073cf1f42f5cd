"""The value types and errors of accounts, shared by the request path and admin.

`persea.accounts` re-exports them: that is where the gateway imports them from.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Mapping

import sqlalchemy as sa

from persea.accounts.money import Price
from persea.db.schema import plan_prices, plans
from persea.db.types import Money
from persea.errors import Kind

KEY_PREFIX = "psk-"


@dataclass(frozen=True)
class PlanTerms:
    name: str
    prices: Mapping[str, Price]  # model -> price; a model not listed is not sold on the plan
    rpm: int | None  # requests per minute, None = unlimited
    tpm: int | None  # tokens per minute (prompt + max_tokens reserved), None = unlimited
    monthly_budget: Decimal | None  # None = unlimited
    allow_logprobs: bool
    max_top_logprobs: int  # cap when allowed


@dataclass(frozen=True)
class Caller:
    org_id: str
    org_name: str
    key_id: str
    allowed_models: frozenset[str] | None  # None = every model the plan prices
    plan: PlanTerms


@dataclass(frozen=True)
class Reservation:
    id: str
    request_id: str
    org_id: str
    key_id: str
    model: str
    amount: Decimal
    expires_at: datetime
    # every model that may answer instead of `model` (a route's), at the price fixed when
    # this was reserved; `amount` covers the dearest of them
    prices: Mapping[str, Price] = field(default_factory=dict)
    # set when it was carved, in memory, out of a budget lease (persea.accounts.leases):
    # the lease's reservation id and month; such a reservation has no row of its own
    lease: str | None = None
    month: str | None = None


@dataclass(frozen=True)
class UsageRecord:
    id: str
    request_id: str
    org_id: str
    key_id: str
    model: str
    month: str  # YYYY-MM, UTC: the month whose budget and invoice it counts in
    prompt_tokens: int
    completion_tokens: int
    input_cost: Decimal
    output_cost: Decimal
    cost: Decimal
    created_at: datetime
    route: str | None = None  # the route asked for; None: the caller named the model
    attempts: int = 1  # models tried, the answering one included (failed ones cost nothing)


class AccountsError(Exception):
    """A refusal: its `kind` says what sort (the gateway maps kinds to HTTP statuses), its
    `code` names it precisely, and `message` is safe to show a client (never a secret)."""

    kind = Kind.INVALID
    code = "invalid_request"

    def __init__(self, message: str, kind: Kind | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind
        if code is not None:
            self.code = code


class InvalidKey(AccountsError):
    kind, code = Kind.UNAUTHENTICATED, "invalid_api_key"


class ModelNotAllowed(AccountsError):
    kind, code = Kind.FORBIDDEN, "model_not_allowed"


class BudgetExhausted(AccountsError):
    kind, code = Kind.BUDGET_EXHAUSTED, "insufficient_quota"


def hash_key(raw_key: str) -> str:
    """The stored form of an API key: SHA-256, hex. Keys carry 256 random bits, so a plain
    fast hash is enough (there is nothing to brute-force)."""
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


class _RandomBytes:
    """Bytes from the operating system's CSPRNG, drawn 4 KiB at a time and handed out once
    each. Every request takes three ids (request, reservation, usage record); a system call
    for each released the GIL three times on the event loop's thread, and under load each
    release let the accounts writer thread take the GIL for up to a switch interval (the
    gateway's profile put 4% of its samples there). Thread-safe; a forked child drops its
    parent's bytes so that the two never hand out the same ones."""

    def __init__(self, size: int = 4096):
        self._size = size
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()  # a fork may copy it held
        self._pool = b""
        self._at = 0

    def hex(self, n: int) -> str:
        with self._lock:
            if self._at + n > len(self._pool):
                self._pool, self._at = os.urandom(max(self._size, n)), 0
            chunk = self._pool[self._at:self._at + n]
            self._at += n
        return chunk.hex()


random_hex = _RandomBytes().hex  # random_hex(n): 2n hex digits, as secrets.token_hex(n)


def new_id(kind: str) -> str:
    return f"{kind}_{random_hex(10)}"


def money(value: Decimal) -> sa.BindParameter:
    """A bound money value: typed, so SQLite gets integer units even inside arithmetic."""
    return sa.literal(value, Money())


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def load_plan(conn: sa.Connection, plan_id: str) -> PlanTerms:
    row = conn.execute(sa.select(plans).where(plans.c.id == plan_id)).one()
    prices = {p.model: Price(p.input_per_mtok, p.output_per_mtok) for p in conn.execute(
        sa.select(plan_prices).where(plan_prices.c.plan_id == plan_id)
        .order_by(plan_prices.c.model))}
    return PlanTerms(row.name, prices, row.rpm, row.tpm, row.monthly_budget,
                     row.allow_logprobs, row.max_top_logprobs)
