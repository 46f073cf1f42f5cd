"""Tenants, keys, plans and budgets at request time: what the HTTP gateway calls.

One request goes: `authenticate(raw_key)` -> `check_model` -> `reserve` (the worst-case cost,
prompt plus `max_tokens`, held against the org's monthly budget in one atomic UPDATE) ->
generation -> `settle` (exactly one usage record, the exact cost charged, the rest given
back) or `release` (the backend failed: nothing charged). `reconcile()` at gateway start
gives back what a killed gateway left held. Admin operations (create org, plan, key; revoke)
are `accounts.admin`, an `AccountAdmin` (persea.accounts.admin); each writes an audit row.

All methods are synchronous and thread-safe; call them from a thread pool in async code.
`reserve_op`, `settle_op` and `release_op` build the same writes as functions of a
connection, for the gateway's group-commit writer (`persea.accounts.writer`), which applies
many of them in one transaction; their SQL is built once in `persea.accounts.ledger`.
"""

from __future__ import annotations

import hmac
import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Callable, Sequence, TypeVar

import sqlalchemy as sa

from persea.accounts import ledger
from persea.accounts.admin import AccountAdmin
from persea.accounts.money import Price, money_json, month_of
from persea.accounts.types import (AccountsError, BudgetExhausted, Caller, InvalidKey,
                                   ModelNotAllowed, PlanTerms, Reservation, UsageRecord,
                                   hash_key, load_plan, new_id, utcnow)
from persea.db import READ_ONLY, make_engine
from persea.db.schema import api_keys, balances, orgs, plans, reservations
from persea.errors import Kind

T = TypeVar("T")
MAX_TOKENS = 2**31 - 1  # per request and kind; usage columns are 32-bit INTEGER

__all__ = ["Accounts", "AccountsError", "BudgetExhausted", "Caller", "InvalidKey",
           "ModelNotAllowed", "PlanTerms", "Price", "Reservation", "UsageRecord"]


class Accounts:
    """The accounts database at `url` (already migrated: `persea.db.upgrade(url)`).

    `clock` returns the current aware UTC time (tests move it); reservations expire after
    `reservation_ttl`; `authenticate` caches a key for `cache_seconds` (revoking or changing
    anything through this object clears the cache at once; a change made by another process
    is seen within `cache_seconds`). Plans, organisations and keys are managed through
    `admin` (persea.accounts.admin.AccountAdmin), on the same database."""

    def __init__(self, url: str | sa.Engine, *, clock: Callable[[], datetime] = utcnow,
                 reservation_ttl: timedelta = timedelta(minutes=15),
                 cache_seconds: float = 5.0, actor: str = "system"):
        self.engine = url if isinstance(url, sa.Engine) else make_engine(url)
        self.clock = clock
        self.reservation_ttl = reservation_ttl
        self.cache_seconds = cache_seconds
        self.actor = actor
        self._cache: dict[str, tuple[float, Caller, datetime | None]] = {}
        self._cache_lock = threading.Lock()
        self.admin = AccountAdmin(self.engine, clock=lambda: self.clock(), actor=actor,
                                  changed=self._forget_cached)

    def close(self) -> None:
        self.engine.dispose()

    def _forget_cached(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    # -- authentication -----------------------------------------------------------------

    def authenticate(self, raw_key: str | None) -> Caller:
        """The caller a raw API key belongs to; InvalidKey when missing, unknown, revoked or
        expired. The stored hash is compared in constant time."""
        if not raw_key:
            raise InvalidKey("no API key given: send `Authorization: Bearer psk-...`")
        digest = hash_key(raw_key)
        now = self.clock()
        cached = self._cached(digest, now)
        if cached is not None:
            return cached
        query = (sa.select(api_keys, orgs.c.name.label("org_name"), orgs.c.plan_id)
                 .join(orgs, orgs.c.id == api_keys.c.org_id)
                 .where(api_keys.c.key_hash == digest))
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            row = conn.execute(query).first()
            if row is None or not hmac.compare_digest(row.key_hash, digest):
                raise InvalidKey("unknown API key")
            if row.revoked_at is not None:
                raise InvalidKey("this API key has been revoked")
            if row.expires_at is not None and row.expires_at <= now:
                raise InvalidKey("this API key has expired")
            plan = load_plan(conn, row.plan_id)
        allowed = frozenset(row.allowed_models) if row.allowed_models is not None else None
        caller = Caller(row.org_id, row.org_name, row.id, allowed, plan)
        with self._cache_lock:
            self._cache[digest] = (time.monotonic(), caller, row.expires_at)
        return caller

    def cached_caller(self, raw_key: str | None) -> Caller | None:
        """`authenticate` when the key is in the cache (no database: callers on an event
        loop use it before sending a miss to a thread); None on a miss. A cached key that
        has expired raises InvalidKey as `authenticate` does."""
        if not raw_key:
            return None
        return self._cached(hash_key(raw_key), self.clock())

    def _cached(self, digest: str, now: datetime) -> Caller | None:
        with self._cache_lock:
            hit = self._cache.get(digest)
        if hit is not None and time.monotonic() - hit[0] < self.cache_seconds:
            if hit[2] is not None and hit[2] <= now:
                raise InvalidKey("this API key has expired")
            return hit[1]
        return None

    def check_model(self, caller: Caller, model: str) -> Price:
        """The price of `model` for this caller; ModelNotAllowed when the plan does not sell
        it or the key is limited to other models."""
        price = caller.plan.prices.get(model)
        if price is None:
            raise ModelNotAllowed(f"model {model!r} is not available on your plan")
        if caller.allowed_models is not None and model not in caller.allowed_models:
            raise ModelNotAllowed(f"this API key may not use model {model!r}")
        return price

    def models_for(self, caller: Caller) -> list[str]:
        """The models this caller may use, sorted (for GET /v1/models)."""
        return sorted(m for m in caller.plan.prices
                      if caller.allowed_models is None or m in caller.allowed_models)

    # -- money for one request ----------------------------------------------------------

    def reserve(self, caller: Caller, model: str, prompt_tokens: int, max_tokens: int,
                request_id: str) -> Reservation:
        """Hold the worst-case cost (prompt_tokens of input, max_tokens of output) against
        this month's budget in one conditional UPDATE; BudgetExhausted when it does not fit.
        The budget is read from the database inside that UPDATE, so a plan change counts at
        once and concurrent requests can never together pass it."""
        return self._alone(self.reserve_op(caller, model, prompt_tokens, max_tokens,
                                           request_id))

    def settle(self, reservation: Reservation, prompt_tokens: int,
               completion_tokens: int) -> UsageRecord:
        """Record the finished request once (idempotency key: its request_id), charge its
        exact cost at the prices fixed when it was reserved, and give back the rest of what
        was held. Settling again returns the first record and charges nothing more. A
        reservation already expired by `reconcile` is still charged (the work was done)."""
        return self._alone(self.settle_op(reservation, prompt_tokens, completion_tokens))

    def release(self, reservation: Reservation) -> None:
        """The backend failed: give back everything held, record nothing. Harmless when the
        reservation is already settled, released or expired."""
        return self._alone(self.release_op(reservation))

    def _alone(self, op: Callable[[sa.Connection], T]) -> T:
        with self.engine.begin() as conn:
            return op(conn)

    # -- the same, as ops for a group commit (persea.accounts.writer) --------------------
    # Each checks its arguments at once (a bad one raises here, before anything is queued)
    # and returns a function of a connection that does the whole write inside whatever
    # transaction it is given: alone above, or in a batch with many others. The contract
    # the writer relies on: an op either does its whole write, or raises AccountsError
    # having left nothing behind (refusals are found before writing, or undone in the
    # same transaction), and never raises a database error for a refusal (conflicts are
    # ON CONFLICT DO NOTHING). None of them reads a value to write it back: every change is
    # a conditional UPDATE or an INSERT the database checks, so batches and replicas can
    # run side by side.

    def reserve_op(self, caller: Caller, model: str, prompt_tokens: int, max_tokens: int,
                   request_id: str, *, instead: Sequence[tuple[str, int, int]] = ()
                   ) -> Callable[[sa.Connection], Reservation]:
        """`reserve` as an op (see above). `instead` lists other models that may answer in
        place of `model` (a route's fallbacks), each with its own prompt and maximum output
        token counts (tokenizers and contexts differ): the hold covers the dearest of them
        all, and `settle_op(..., model=...)` charges the one that answered at the price
        fixed now."""
        amount, prices = self.quote(caller, model, prompt_tokens, max_tokens, request_id,
                                    instead=instead)
        price = prices[model]

        def op(conn: sa.Connection) -> Reservation:
            now = self.clock()
            month = month_of(now)
            reservation = Reservation(new_id("res"), request_id, caller.org_id,
                                      caller.key_id, model, amount,
                                      now + self.reservation_ttl, prices)
            hold = {"b_org": caller.org_id, "b_month": month, "amount": amount}
            held = conn.execute(ledger.HOLD, hold).rowcount
            if held != 1:  # over budget, or the month's first request: no row yet (made
                _ensure_balance(conn, caller.org_id, month)  # here, or by a racing replica)
                held = conn.execute(ledger.HOLD, hold).rowcount
            if held != 1:
                left = _left_this_month(conn, caller.org_id, month)
                raise BudgetExhausted(
                    f"this request could cost up to {money_json(amount)} and "
                    f"{money_json(left)} is left of this month's budget; lower max_tokens, "
                    "or raise the budget")
            made = conn.execute(ledger.insert_reservation(conn), dict(
                id=reservation.id, request_id=request_id, org_id=caller.org_id,
                key_id=caller.key_id, model=model, month=month, amount=amount,
                input_per_mtok=price.input_per_mtok, output_per_mtok=price.output_per_mtok,
                state="held", created_at=now, expires_at=reservation.expires_at)).first()
            if made is None:  # undo the hold in this same transaction: a refusal leaves no trace
                conn.execute(ledger.UNHOLD, hold)
                raise AccountsError(f"request id {request_id!r} was already used",
                                    Kind.CONFLICT, "duplicate_request_id")
            return reservation

        return op

    def quote(self, caller: Caller, model: str, prompt_tokens: int, max_tokens: int,
              request_id: str, *, instead: Sequence[tuple[str, int, int]] = ()
              ) -> tuple[Decimal, dict[str, Price]]:
        """What a reserve would hold (the worst case of the dearest model that may answer)
        and each model's price, with every argument checked; nothing is written."""
        price = self.check_model(caller, model)
        _check_tokens(prompt_tokens, max_tokens)
        if not isinstance(request_id, str) or not 0 < len(request_id) <= 200:
            raise AccountsError("request id: expected 1 to 200 characters")
        prices = {model: price}
        amount = sum(price.cost(prompt_tokens, max_tokens), Decimal(0))
        for other, other_prompt, other_max in instead:
            _check_tokens(other_prompt, other_max)
            prices[other] = other_price = self.check_model(caller, other)
            amount = max(amount, sum(other_price.cost(other_prompt, other_max), Decimal(0)))
        return amount, prices

    def settle_op(self, reservation: Reservation, prompt_tokens: int,
                  completion_tokens: int, *, model: str | None = None,
                  route: str | None = None, attempts: int = 1, whole_hold: bool = False
                  ) -> Callable[[sa.Connection], UsageRecord]:
        """`settle` as an op (see above). `model`: the model that answered, one of those the
        reservation was made for (default: its first); it is charged at the price fixed
        when reserving. `route` and `attempts` are recorded as they are: models that failed
        before `model` answered cost nothing. For a reservation carved out of a budget
        lease (persea.accounts.leases) the cost is taken off the lease; `whole_hold`: the
        whole hold is (the lease is retired, so the rest of the hold goes back to the
        budget instead of to the lease's room in memory)."""
        _check_tokens(prompt_tokens, completion_tokens)
        if model is not None and model != reservation.model \
                and model not in reservation.prices:
            raise AccountsError(f"model {model!r} was not reserved for request "
                                f"{reservation.request_id!r}", Kind.INTERNAL, "internal")
        if not isinstance(attempts, int) or not 1 <= attempts <= 1000:
            raise AccountsError("attempts: expected a whole number from 1 to 1000")
        answered = model if model is not None and model != reservation.model else None
        price = reservation.prices[answered] if answered is not None else None

        if reservation.lease is not None:
            return _LeasedSettle(self, reservation, prompt_tokens, completion_tokens,
                                 answered, route, attempts, whole_hold)

        def op(conn: sa.Connection) -> UsageRecord:
            return self._settle_in(conn, reservation, prompt_tokens, completion_tokens,
                                   answered, price, route, attempts)

        return op

    def _settle_in(self, conn: sa.Connection, reservation: Reservation, prompt_tokens: int,
                   completion_tokens: int, answered: str | None = None,
                   answered_price: Price | None = None, route: str | None = None,
                   attempts: int = 1) -> UsageRecord:
        row = conn.execute(ledger.LOCK_RESERVATION, {"b_id": reservation.id}).first()
        if row is None:  # purged long after it was settled, or never made
            done = _usage_by_request(conn, reservation.request_id, missing_ok=True)
            if done is None:
                raise AccountsError(f"no reservation {reservation.id}", Kind.NOT_FOUND,
                                    "reservation_not_found")
            return done
        if row.state == "settled":
            return _usage_by_request(conn, row.request_id)
        if row.state == "released":
            raise AccountsError(f"reservation {row.id} was released; nothing to settle",
                                Kind.CONFLICT, "reservation_released")
        price = answered_price or Price(row.input_per_mtok, row.output_per_mtok)
        record, new = self._record_usage(conn, row, answered or row.model, row.month, price,
                                         prompt_tokens, completion_tokens, route, attempts)
        if not new:  # another process recorded this request first: theirs is the one
            return record
        conn.execute(ledger.MOVE_RESERVATION,
                     {"b_id": row.id, "b_state": row.state, "state": "settled"})
        conn.execute(ledger.CHARGE, {"b_org": row.org_id, "b_month": row.month,
                                     "cost": record.cost,
                                     "held": row.amount if row.state == "held" else Decimal(0)})
        return record

    def _record_usage(self, conn: sa.Connection, of, model: str, month: str, price: Price,
                      prompt_tokens: int, completion_tokens: int, route: str | None,
                      attempts: int) -> tuple[UsageRecord, bool]:
        """Write the usage record of the request `of` (anything with request_id, org_id and
        key_id: a reservation or its row) at `price`, unless its request id was recorded
        before; (the record, True) when written now, (the earlier record, False) if not."""
        input_cost, output_cost = price.cost(prompt_tokens, completion_tokens)
        record = UsageRecord(new_id("use"), of.request_id, of.org_id, of.key_id, model, month,
                             prompt_tokens, completion_tokens, input_cost, output_cost,
                             input_cost + output_cost, self.clock(), route, attempts)
        recorded = conn.execute(ledger.insert_usage(conn), dict(
            **record.__dict__, input_per_mtok=price.input_per_mtok,
            output_per_mtok=price.output_per_mtok)).first()
        if recorded is None:
            return _usage_by_request(conn, of.request_id), False
        return record, True

    def _settle_leased(self, conn: sa.Connection, reservation: Reservation,
                       prompt_tokens: int, completion_tokens: int, answered: str | None,
                       route: str | None, attempts: int, whole_hold: bool) -> UsageRecord:
        """Settle a request carved out of a lease: one usage record (its request id is the
        idempotency key, as for any request), the cost charged, and as much taken off the
        lease's held amount (never more than the lease still holds)."""
        model = answered or reservation.model
        price = reservation.prices[model]
        conn.execute(ledger.LOCK_BALANCE, {"b_org": reservation.org_id,
                                           "b_month": reservation.month})  # lock order
        lease = conn.execute(ledger.LOCK_RESERVATION, {"b_id": reservation.lease}).first()
        record, new = self._record_usage(conn, reservation, model, reservation.month, price,
                                         prompt_tokens, completion_tokens, route, attempts)
        if not new:  # settled before (a retry): the first record stands
            return record
        give = Decimal(0)
        if lease is not None and lease.state == "held":
            spend = max(record.cost, reservation.amount) if whole_hold else record.cost
            give = min(spend, lease.amount)
            conn.execute(ledger.SPEND_LEASE, {"b_id": lease.id, "amount": give})
            if whole_hold and give == lease.amount:  # a retired lease fully spent: closed
                conn.execute(ledger.MOVE_RESERVATION,
                             {"b_id": lease.id, "b_state": "held", "state": "settled"})
        conn.execute(ledger.CHARGE, {"b_org": reservation.org_id, "b_month": reservation.month,
                                     "cost": record.cost, "held": give})
        return record

    def _settle_leased_many(self, conn: sa.Connection, settles: list["_LeasedSettle"]
                            ) -> list[UsageRecord]:
        """`_settle_leased` for several requests of one lease in one go, with the same
        outcome as one after the other in this order: the balance and the lease are locked
        once, the usage records are inserted in one statement (a request id recorded before
        keeps its first record, as alone), and the lease and the balance are each updated
        once with the sums. The writer merges a batch's settles of one lease this way
        (persea.accounts.writer): most of a settle's cost was its five statements."""
        first = settles[0].reservation
        conn.execute(ledger.LOCK_BALANCE, {"b_org": first.org_id, "b_month": first.month})
        lease = conn.execute(ledger.LOCK_RESERVATION, {"b_id": first.lease}).first()
        now = self.clock()
        records, params = [], []
        for one in settles:
            r = one.reservation
            model = one.answered or r.model
            price = r.prices[model]
            input_cost, output_cost = price.cost(one.prompt_tokens, one.completion_tokens)
            record = UsageRecord(new_id("use"), r.request_id, r.org_id, r.key_id, model,
                                 r.month, one.prompt_tokens, one.completion_tokens,
                                 input_cost, output_cost, input_cost + output_cost, now,
                                 one.route, one.attempts)
            records.append(record)
            params.append(dict(**record.__dict__, input_per_mtok=price.input_per_mtok,
                               output_per_mtok=price.output_per_mtok))
        new = {row.id for row in conn.execute(ledger.insert_usage(conn), params)}
        held = lease is not None and lease.state == "held"
        left = lease.amount if held else Decimal(0)
        cost = given = Decimal(0)
        out = []
        for one, record in zip(settles, records):
            if record.id not in new:  # settled before (a retry): the first record stands
                out.append(_usage_by_request(conn, record.request_id))
                continue
            out.append(record)
            cost += record.cost
            if held:
                spend = max(record.cost, one.reservation.amount) if one.whole_hold \
                    else record.cost
                give = min(spend, left)
                left -= give
                given += give
                if one.whole_hold and left == 0:  # a retired lease fully spent: closed
                    held = False
        if lease is not None and lease.state == "held" and len(new):
            conn.execute(ledger.SPEND_LEASE, {"b_id": lease.id, "amount": given})
            if not held:
                conn.execute(ledger.MOVE_RESERVATION,
                             {"b_id": lease.id, "b_state": "held", "state": "settled"})
        if new:
            conn.execute(ledger.CHARGE, {"b_org": first.org_id, "b_month": first.month,
                                         "cost": cost, "held": given})
        return out

    def release_op(self, reservation: Reservation) -> Callable[[sa.Connection], None]:
        """`release` as an op (see above)."""

        def op(conn: sa.Connection) -> None:
            for state in ("held", "expired"):
                done = conn.execute(ledger.MOVE_RESERVATION, {
                    "b_id": reservation.id, "b_state": state, "state": "released"}).rowcount
                if done and state == "held":
                    _unhold(conn, reservation.org_id, reservation.id)
                if done:
                    return

        return op

    def reconcile(self) -> int:
        """Give back every reservation held past its `expires_at` (a gateway killed
        mid-request never settles); returns how many. Called at gateway start."""
        now = self.clock()
        count = 0
        with self.engine.begin() as conn:
            expired = conn.execute(sa.select(reservations.c.id, reservations.c.org_id).where(
                reservations.c.state == "held", reservations.c.expires_at <= now)).all()
            for res_id, org_id in expired:
                if conn.execute(reservations.update()
                                .where(reservations.c.id == res_id,
                                       reservations.c.state == "held")
                                .values(state="expired")).rowcount:
                    _unhold(conn, org_id, res_id)
                    count += 1
        return count

    def purge_reservations(self, older_than: timedelta = timedelta(days=30)) -> int:
        """Delete closed reservations (settled, released, expired) that expired more than
        `older_than` ago, so the table stays small; returns how many. Held ones are never
        touched, and usage records keep everything an invoice needs."""
        cutoff = self.clock() - older_than
        with self.engine.begin() as conn:
            return conn.execute(reservations.delete().where(
                reservations.c.state != "held", reservations.c.expires_at < cutoff)).rowcount

    def balance(self, org_id: str, month: str | None = None) -> tuple[Decimal, Decimal]:
        """(spent, reserved) of an org in a month (default: this month)."""
        month = month or month_of(self.clock())
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            row = conn.execute(sa.select(balances.c.spent, balances.c.reserved).where(
                balances.c.org_id == org_id, balances.c.month == month)).first()
        return (row.spent, row.reserved) if row else (Decimal(0), Decimal(0))


def _check_tokens(*counts: int) -> None:
    """Token counts are whole numbers from 0 to MAX_TOKENS (what an INTEGER column holds)."""
    if any(not isinstance(c, int) or not 0 <= c <= MAX_TOKENS for c in counts):
        raise AccountsError(f"token counts must be whole numbers from 0 to {MAX_TOKENS:,}")


def _insert(conn: sa.Connection, table: sa.Table):
    """An INSERT that can say ON CONFLICT DO NOTHING (both dialects have one)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def _ensure_balance(conn: sa.Connection, org_id: str, month: str) -> None:
    """Create the org's balance row for `month` unless it is there (racing creators agree)."""
    conn.execute(_insert(conn, balances).values(org_id=org_id, month=month, spent=Decimal(0),
                                                reserved=Decimal(0)).on_conflict_do_nothing())


def _left_this_month(conn: sa.Connection, org_id: str, month: str) -> Decimal:
    budget = conn.execute(sa.select(plans.c.monthly_budget).join(
        orgs, orgs.c.plan_id == plans.c.id).where(orgs.c.id == org_id)).scalar_one()
    row = conn.execute(sa.select(balances.c.spent, balances.c.reserved).where(
        balances.c.org_id == org_id, balances.c.month == month)).one()
    return max(Decimal(0), budget - row.spent - row.reserved)


def _unhold(conn: sa.Connection, org_id: str, res_id: str) -> None:
    """Give back the money a reservation held in its month's balance row."""
    row = conn.execute(sa.select(reservations.c.amount, reservations.c.month)
                       .where(reservations.c.id == res_id)).one()
    conn.execute(ledger.UNHOLD, {"b_org": org_id, "b_month": row.month, "amount": row.amount})


class _LeasedSettle:
    """The op that settles one request carved out of a budget lease. Alone it is
    `Accounts._settle_leased`; the group-commit writer applies the settles of one lease in
    a batch together (`merge_group`, `apply_many`: `Accounts._settle_leased_many`)."""

    __slots__ = ("accounts", "reservation", "prompt_tokens", "completion_tokens",
                 "answered", "route", "attempts", "whole_hold", "merge_group")

    def __init__(self, accounts: Accounts, reservation: Reservation, prompt_tokens: int,
                 completion_tokens: int, answered: str | None, route: str | None,
                 attempts: int, whole_hold: bool):
        self.accounts = accounts
        self.reservation = reservation
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.answered = answered
        self.route = route
        self.attempts = attempts
        self.whole_hold = whole_hold
        self.merge_group = ("settle-leased", id(accounts), reservation.lease)

    def __call__(self, conn: sa.Connection) -> UsageRecord:
        return self.accounts._settle_leased(
            conn, self.reservation, self.prompt_tokens, self.completion_tokens,
            self.answered, self.route, self.attempts, self.whole_hold)

    @staticmethod
    def apply_many(conn: sa.Connection, ops: list["_LeasedSettle"]) -> list[UsageRecord]:
        return ops[0].accounts._settle_leased_many(conn, ops)


def _usage_by_request(conn: sa.Connection, request_id: str,
                      missing_ok: bool = False) -> UsageRecord | None:
    row = conn.execute(ledger.USAGE_BY_REQUEST, {"b_request": request_id}).first()
    if row is None and missing_ok:
        return None
    if row is None:  # pragma: no cover - a settled reservation always has its record
        raise AccountsError(f"no usage record for request {request_id!r}", Kind.INTERNAL,
                            "internal")
    return UsageRecord(row.id, row.request_id, row.org_id, row.key_id, row.model, row.month,
                       row.prompt_tokens, row.completion_tokens, row.input_cost,
                       row.output_cost, row.cost, row.created_at, row.route, row.attempts)
