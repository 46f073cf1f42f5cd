"""Budget leases: a gateway process holds a durable chunk of an organisation's budget and
reserves requests out of it in memory, so a lone request's answer waits for no commit.

Without a lease, every request's reserve is one conditional UPDATE that must be durable
before its answer goes out (persea.accounts.service): with `synchronous=FULL` that commit is
most of what the gateway adds to a request. With leases:

- **Opening** a lease is the same conditional UPDATE, for `requests` times the request's
  worst case, and only while `headroom` times that still fits in the budget; the lease is a
  row of `reservations` (request id `lease-...`) whose `amount` is what it holds. It is
  durable before anything is reserved out of it.
- **Growing**: a lease that runs out of room while it still serves makes the organisation's
  next one twice as large, up to `grow` times (`LeaseBook`); one retired with little in
  flight makes it smaller again.
- **Reserving** out of a lease is a subtraction from its room in memory (`LeaseBook.take`).
  Every lease's room, plus the worst cases of the requests in flight on it, plus the costs
  of settles not yet committed, never exceeds what its row holds, so the budget's
  invariant (spent + reserved <= budget, across processes) is the database's as before.
- **Settling** writes the usage record as before (the request id is its idempotency key)
  and takes the exact cost off the lease's row and the balance's `reserved`, in one
  transaction; the rest of the request's hold goes back to the room in memory.
- **Retiring**: a lease serves requests for `seconds` after it opened (a lowered budget or a
  new month counts for new leases at once, for an open one within `seconds`); then its
  room is given back to the budget (`shrink_op`) and requests still in flight on it give
  back their own rest when they settle. A lease spent down to nothing is closed.
- **Exact refusals**: a request the lease cannot cover, when no new lease fits, first gives
  the process's own room back, then takes the ordinary per-request reserve, so its 402 is
  exact except for what other processes' leases hold (at most one lease per organisation
  per process, each at most 1/`headroom` of the room there was when it opened).

What a crash costs: a killed process's leases stay held until they expire
(`seconds` + the reservation TTL) and `Accounts.reconcile` gives back what they still hold;
requests answered and not yet settled are not billed (as without leases). Nothing is ever
charged twice or over the budget.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Callable, Sequence

import sqlalchemy as sa

from persea.accounts import ledger
from persea.accounts.money import MAX_AMOUNT, month_of
from persea.accounts.service import Accounts, _ensure_balance
from persea.accounts.types import AccountsError, Caller, Reservation, new_id

DEFAULT_REQUESTS = 64  # a lease holds this many times the worst case of the request opening it
DEFAULT_SECONDS = 2.0  # a lease serves new requests this long after it opened
DEFAULT_HEADROOM = 4  # a lease opens only while this many times it fits in the budget
DEFAULT_GROW = 16  # an organisation's leases grow up to this many times `requests`


class NoLease(AccountsError):
    """A lease did not fit (the budget is near its end): reserve per request instead."""


@dataclass
class Lease:
    id: str
    org_id: str
    month: str
    opened: float  # monotonic seconds
    expires_at: datetime  # when reconcile may give back what the row still holds
    room: Decimal  # what new requests may still take, in memory
    inflight: int = 0
    retired: bool = False
    capacity: int = 0  # requests it was sized for (the book's `requests` x its growth)
    peak: int = 0  # the most requests in flight on it at once
    dry: bool = False  # it ran out of room while still serving


class LeaseBook:
    """One process's budget leases, at most one open per organisation. Thread-safe.

    A lease's size follows the organisation's load: it holds `requests` times a request's
    worst case, times a growth factor per organisation that doubles (up to `grow`) each
    time a lease runs out of room while it still serves, halves when a lease retires
    having had fewer than a quarter of its capacity in flight at once, and falls back to 1
    when a grown lease does not fit (`refused`). Under a steady load of more concurrent
    requests than `requests`, leases of the base size would run dry and be replaced many
    times a second, each time with a commit that the requests arriving meanwhile wait for;
    grown, one lease serves its whole `seconds`. The bounds stay those of any lease: it
    opens only while `headroom` times its size fits in the budget."""

    def __init__(self, accounts: Accounts, *, requests: int = DEFAULT_REQUESTS,
                 seconds: float = DEFAULT_SECONDS, headroom: int = DEFAULT_HEADROOM,
                 grow: int = DEFAULT_GROW, clock: Callable[[], float] = time.monotonic):
        if requests < 1 or seconds <= 0 or headroom < 1 or grow < 1:
            raise ValueError("leases: requests, headroom and grow must be at least 1, "
                             "seconds > 0")
        self.accounts = accounts
        self.requests = requests
        self.seconds = seconds
        self.headroom = headroom
        self.grow = grow
        self.clock = clock
        self._growth: dict[str, int] = {}  # org -> what its next lease's size is scaled by
        self._open: dict[str, Lease] = {}  # org -> the lease requests are taken from
        self._all: dict[str, Lease] = {}  # lease id -> lease, open or retired with requests
        self._lock = threading.Lock()
        self.opened = 0  # leases opened, for tests and diagnostics
        self.taken = 0  # requests reserved out of a lease

    # -- the request path ---------------------------------------------------------------

    def take(self, caller: Caller, model: str, prompt_tokens: int, max_tokens: int,
             request_id: str, *, instead: Sequence[tuple[str, int, int]] = ()
             ) -> tuple[Reservation | None, Decimal]:
        """A reservation out of the organisation's open lease, in memory, and the request's
        worst case; the reservation is None when there is no open lease or too little room
        (then open one, or reserve per request). Bad arguments raise AccountsError, as
        `Accounts.reserve_op` does."""
        amount, prices = self.accounts.quote(caller, model, prompt_tokens, max_tokens,
                                             request_id, instead=instead)
        month = month_of(self.accounts.clock())
        with self._lock:
            lease = self._open.get(caller.org_id)
            if lease is None or not self._usable(lease, month):
                return None, amount
            if lease.room < amount:
                if not lease.dry:  # run dry while serving: the next lease is larger
                    lease.dry = True
                    growth = self._growth.get(lease.org_id, 1)
                    self._growth[lease.org_id] = min(growth * 2, self.grow)
                return None, amount
            lease.room -= amount
            lease.inflight += 1
            lease.peak = max(lease.peak, lease.inflight)
            self.taken += 1
        return Reservation(new_id("res"), request_id, caller.org_id, caller.key_id, model,
                           amount, lease.expires_at, prices, lease=lease.id,
                           month=lease.month), amount

    def _usable(self, lease: Lease, month: str) -> bool:
        return (not lease.retired and lease.month == month
                and self.clock() - lease.opened < self.seconds)

    def chunk(self, amount: Decimal, org_id: str | None = None) -> Decimal | None:
        """The size of a lease opened for a request whose worst case is `amount` (for
        `org_id`: grown to its load); None when no lease is worth it (a free request) or it
        would be too large to hold."""
        size = amount * self._capacity(org_id)
        if amount <= 0 or size * self.headroom > MAX_AMOUNT:
            return None
        return size

    def _capacity(self, org_id: str | None) -> int:
        return self.requests * self._growth.get(org_id, 1) if org_id else self.requests

    def growth(self, org_id: str) -> int:
        """What the organisation's next lease is scaled by (1: `requests` worst cases)."""
        return self._growth.get(org_id, 1)

    def refused(self, org_id: str) -> bool:
        """A lease for the organisation did not fit: True when it was a grown one (its
        growth falls back to 1, so a lease of the base size may be tried at once), False
        when even the base size does not fit."""
        with self._lock:
            grown = self._growth.pop(org_id, 1) > 1
        return grown

    def open_op(self, caller: Caller, model: str, size: Decimal
                ) -> Callable[[sa.Connection], Lease]:
        """An op (persea.accounts.writer) that holds a lease of `size` for the caller's
        organisation, only while `headroom` times it fits in this month's budget; NoLease
        when it does not (nothing written). `add` the lease once the op has committed."""
        price = self.accounts.check_model(caller, model)
        accounts = self.accounts
        capacity = self._capacity(caller.org_id)

        def op(conn: sa.Connection) -> Lease:
            now = accounts.clock()
            month = month_of(now)
            hold = {"b_org": caller.org_id, "b_month": month, "amount": size,
                    "need": size * self.headroom}
            held = conn.execute(ledger.HOLD_LEASE, hold).rowcount
            if held != 1:
                _ensure_balance(conn, caller.org_id, month)
                held = conn.execute(ledger.HOLD_LEASE, hold).rowcount
            if held != 1:
                raise NoLease("no budget lease fits; reserving per request")
            lease_id = new_id("res")
            expires_at = now + accounts.reservation_ttl + timedelta(seconds=self.seconds)
            conn.execute(ledger.insert_reservation(conn), dict(
                id=lease_id, request_id=f"lease-{lease_id}", org_id=caller.org_id,
                key_id=caller.key_id, model=model, month=month, amount=size,
                input_per_mtok=price.input_per_mtok, output_per_mtok=price.output_per_mtok,
                state="held", created_at=now, expires_at=expires_at))
            return Lease(lease_id, caller.org_id, month, self.clock(), expires_at, size,
                         capacity=capacity)

        return op

    def add(self, lease: Lease) -> list[tuple[Lease, Decimal]]:
        """Make a committed lease the organisation's open one. Returns what must be given
        back (`shrink_op`): the room of the lease it replaces."""
        with self._lock:
            self.opened += 1
            old = self._open.get(lease.org_id)
            self._open[lease.org_id] = lease
            self._all[lease.id] = lease
            return self._retire_locked(old) if old is not None else []

    def settle_op(self, reservation: Reservation, prompt_tokens: int,
                  completion_tokens: int, **kwargs) -> Callable[[sa.Connection], object]:
        """`Accounts.settle_op` for a reservation out of a lease: the rest of its hold goes
        back to the lease's room at once (its cost stays held until the settle commits), or,
        when the lease is retired, to the budget with the settle."""
        model = kwargs.get("model") or reservation.model
        with self._lock:
            lease = self._all.get(reservation.lease)
            live = lease is not None and not lease.retired
        op = self.accounts.settle_op(reservation, prompt_tokens, completion_tokens,
                                     whole_hold=not live, **kwargs)
        price = reservation.prices.get(model)
        with self._lock:
            if lease is not None:
                lease.inflight -= 1
                if live and not lease.retired and price is not None:
                    lease.room += reservation.amount - sum(
                        price.cost(prompt_tokens, completion_tokens), Decimal(0))
                self._forget_locked(lease)
        return op

    def release(self, reservation: Reservation) -> tuple[Lease, Decimal] | None:
        """The request failed: its hold goes back to the lease's room, in memory; when the
        lease is retired, returns (lease, amount) to give back with `shrink_op`."""
        with self._lock:
            lease = self._all.get(reservation.lease)
            if lease is None:
                return None
            lease.inflight -= 1
            self._forget_locked(lease)
            if not lease.retired:
                lease.room += reservation.amount
                return None
            return lease, reservation.amount

    # -- retiring ---------------------------------------------------------------------

    def due(self, org_id: str | None = None, *, everything: bool = False
            ) -> list[tuple[Lease, Decimal]]:
        """Retire open leases past their `seconds` or month (of `org_id`, or of every
        organisation; `everything`: all of them, at shutdown or before an exact reserve)
        and return what each must give back with `shrink_op`."""
        month = month_of(self.accounts.clock())
        out: list[tuple[Lease, Decimal]] = []
        with self._lock:
            if org_id is None:
                leases = list(self._open.values())
            else:
                leases = [self._open[org_id]] if org_id in self._open else []
            for lease in leases:
                if everything or not self._usable(lease, month):
                    if not everything and not lease.dry and lease.peak * 4 < lease.capacity:
                        growth = self._growth.get(lease.org_id, 1)  # larger than needed
                        if growth > 1:
                            self._growth[lease.org_id] = growth // 2
                    out += self._retire_locked(lease)
        return out

    def _retire_locked(self, lease: Lease) -> list[tuple[Lease, Decimal]]:
        lease.retired = True
        room, lease.room = lease.room, Decimal(0)
        if self._open.get(lease.org_id) is lease:
            del self._open[lease.org_id]
        self._forget_locked(lease)
        return [(lease, room)] if room > 0 or lease.inflight == 0 else []

    def _forget_locked(self, lease: Lease) -> None:
        if lease.retired and lease.inflight <= 0:
            self._all.pop(lease.id, None)

    def shrink_op(self, lease: Lease, amount: Decimal) -> Callable[[sa.Connection], None]:
        """An op that gives `amount` of a lease back to the budget (never more than its row
        still holds) and closes the lease when it then holds nothing and is retired with no
        request in flight."""
        closing = lease.retired and lease.inflight <= 0

        def op(conn: sa.Connection) -> None:
            conn.execute(ledger.LOCK_BALANCE, {"b_org": lease.org_id,  # lock order: the
                                               "b_month": lease.month})  # balance first
            row = conn.execute(ledger.LOCK_RESERVATION, {"b_id": lease.id}).first()
            if row is None or row.state != "held":
                return  # expired (reconcile gave back what it held) or closed
            give = min(amount, row.amount)
            if give > 0:
                conn.execute(ledger.SPEND_LEASE, {"b_id": lease.id, "amount": give})
                conn.execute(ledger.UNHOLD, {"b_org": lease.org_id, "b_month": lease.month,
                                             "amount": give})
            if closing and give == row.amount:
                conn.execute(ledger.MOVE_RESERVATION,
                             {"b_id": lease.id, "b_state": "held", "state": "settled"})

        return op

    def holding(self) -> int:
        """Leases still known to this process (open, or retired with requests in flight)."""
        with self._lock:
            return len(self._all)


__all__ = ["Lease", "LeaseBook", "NoLease"]
