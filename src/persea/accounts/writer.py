"""Group commit for the gateway's account writes: many callers, one transaction, one commit.

Every reserve, settle and release is a small function of a connection (`Accounts.*_op`).
Callers hand them to `GroupWriter.submit`; a writer thread takes every op queued at that
moment and applies them in ONE transaction, then commits once (one fsync on SQLite, one WAL
flush on PostgreSQL) and only then resolves each caller's future. So:

- each op keeps its own conditional statement and its own answer: a reserve that would pass
  the budget is refused alone while the others in the batch are held; nothing is read and
  then written back, so two writers, or two gateways, can never together pass a budget;
- durability is unchanged: a caller hears "reserved" or "settled" only after the commit that
  holds its op;
- a refusal costs the others nothing: an op that raises one of `refusals` (the gateway's:
  AccountsError) has, by the ops' contract, written nothing, and the batch goes on. No
  savepoint per op: SQLAlchemy's SAVEPOINT + RELEASE took a third of the writer's time;
- anything else (a bug in an op, a database error, a failed commit) rolls the batch back
  and applies every op again alone, in its own transaction, so one bad op fails only its
  own caller, and the thread lives on to serve the next batch;
- an op alone that fails on a *transient* database error (PostgreSQL's deadlock_detected or
  serialization_failure, SQLite's "database is locked") is applied again, up to
  `retries` times with a growing pause: its transaction was rolled back, so nothing of it
  was written, and the second try usually passes. A lost connection is not retried (the
  commit's fate is unknown there, and the caller hears the error).

There is no timer on the critical path: an *urgent* op (someone awaits it: a reserve) starts
a batch at once with whatever else is queued. A *lazy* op (nobody waits: the settle written
after the answer was sent) waits up to `lazy_delay` for an urgent op to ride along with, so
under sequential load a request's settle shares the next request's commit instead of costing
a commit of its own.

Ops that carry a `merge_group` (the settles of one budget lease) are applied together when
a batch holds several of the same group: `fn.apply_many(conn, fns)` gives each its answer
with a few statements for all of them instead of a few for each, as if they had run one
after the other. Alone, or when their batch is applied op by op, each is an ordinary op.

An op that must run in its own transaction (admin writes, reconcile) goes through
`submit_call`: the writer runs it alone, between batches, so on SQLite it never competes for
the write lock with a batch (colliding SQLite writers sleep in growing steps).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

import sqlalchemy as sa

log = logging.getLogger("persea.serve")

DEFAULT_LAZY_DELAY = 0.005  # seconds a settle may wait to share a commit (off the answer's path)
DEFAULT_MAX_BATCH = 256
DEFAULT_RETRIES = 4  # tries again of an op alone after a transient error
RETRY_PAUSE = 0.005  # seconds before the first try again, doubling each time
# SQLSTATEs after which the same transaction, tried again, can pass (PostgreSQL)
TRANSIENT_SQLSTATES = {"40P01", "40001"}  # deadlock_detected, serialization_failure


@dataclass
class _Op:
    fn: Callable[..., Any]
    future: Future
    urgent: bool
    key: str  # lock order inside a batch (the org): batches take balance rows in one order
    alone: bool = False  # runs outside any batch, in its own transaction (fn takes no conn)
    queued_at: float = field(default_factory=time.monotonic)


class WriterClosed(RuntimeError):
    """An op was submitted after `close`."""


class GroupWriter:
    """`workers` threads applying queued ops to `engine` in batches (SQLite: 1, it takes
    one writer at a time; PostgreSQL: a few, so one batch gathers while another commits).
    `engine` may be a function that returns the engine, looked up for every batch (the
    gateway passes its Accounts' current engine)."""

    def __init__(self, engine: sa.Engine | Callable[[], sa.Engine], *, workers: int = 1,
                 refusals: tuple[type[Exception], ...] = (),
                 lazy_delay: float = DEFAULT_LAZY_DELAY, max_batch: int = DEFAULT_MAX_BATCH,
                 retries: int = DEFAULT_RETRIES, start: bool = True):
        self.engine = engine
        self.retries = retries
        self.retried = 0  # ops applied again after a transient error
        self.refusals = refusals
        self.lazy_delay = lazy_delay
        self.max_batch = max_batch
        self.batches = 0  # committed (or attempted) batches, for tests and diagnostics
        self.ops = 0
        self.merged = 0  # ops applied together with others of their merge group
        self._queue: list[_Op] = []
        self._urgent = 0  # urgent ops in the queue
        self._cond = threading.Condition()
        self._closing = False
        self._threads = [threading.Thread(target=self._loop, name=f"persea-db-write-{i}",
                                          daemon=True) for i in range(workers)]
        if start:
            self.start()

    # -- the callers' side ------------------------------------------------------------

    def start(self) -> None:
        """Start the threads (a writer made with `start=False` gathers ops until then: tests
        use it to build one batch on purpose)."""
        for t in self._threads:
            if not t.is_alive():
                t.start()

    def submit(self, fn: Callable[[sa.Connection], Any], *, urgent: bool = True,
               key: str = "") -> Future:
        """Queue `fn(conn)` for the next batch; its future holds what it returned or
        raised, set after the batch's commit."""
        return self._put(_Op(fn, Future(), urgent, key))

    def submit_call(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Queue `fn(*args)` to run alone on a writer thread, outside any batch (it opens
        its own transaction)."""
        return self._put(_Op(lambda: fn(*args), Future(), True, "", alone=True))

    async def run(self, fn: Callable[[sa.Connection], Any], *, urgent: bool = True,
                  key: str = "") -> Any:
        return await asyncio.wrap_future(self.submit(fn, urgent=urgent, key=key))

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.wrap_future(self.submit_call(fn, *args))

    def close(self, timeout: float | None = 30.0) -> None:
        """Apply everything still queued (lazy ops at once), then stop the threads."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout)
        with self._cond:  # never started: nothing will run these
            left, self._queue = self._queue, []
        for op in left:
            op.future.set_exception(WriterClosed("the accounts writer was closed"))

    def _put(self, op: _Op) -> Future:
        with self._cond:
            if self._closing:
                raise WriterClosed("the accounts writer is closed")
            self._queue.append(op)
            if op.urgent:
                self._urgent += 1
            # A lazy op behind another one changes nothing a waiting writer looks at (the
            # first op's deadline): no wake-up, which cost a futex call per settle.
            if op.urgent or len(self._queue) == 1 or len(self._queue) >= self.max_batch:
                self._cond.notify()
        return op.future

    # -- the writer threads -----------------------------------------------------------

    def _take(self) -> list[_Op] | None:
        """The next batch: everything queued (up to max_batch, and up to the next op that
        runs alone); None when closed and empty. Lazy-only queues wait for company."""
        with self._cond:
            while True:
                if not self._queue:
                    if self._closing:
                        return None
                    self._cond.wait()
                    continue
                if self._urgent or self._closing or len(self._queue) >= self.max_batch:
                    break
                wait = self._queue[0].queued_at + self.lazy_delay - time.monotonic()
                if wait <= 0:
                    break
                self._cond.wait(wait)
            if self._queue[0].alone:
                batch = [self._queue.pop(0)]
            else:
                end = 0
                while end < len(self._queue) and end < self.max_batch \
                        and not self._queue[end].alone:
                    end += 1
                batch, self._queue = self._queue[:end], self._queue[end:]
            self._urgent -= sum(op.urgent for op in batch)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                if batch[0].alone:
                    _resolve(batch[0], *_call(batch[0].fn))
                else:
                    self._apply(batch)
            except BaseException as err:  # noqa: BLE001 - never let the thread die
                log.error("accounts writer: a batch failed unexpectedly: %s",
                          type(err).__name__)
                for op in batch:
                    if not op.future.done():
                        op.future.set_exception(err)

    def _apply(self, batch: list[_Op], attempt: int = 0) -> None:
        """One transaction for the batch, one commit; when anything but a refusal goes
        wrong, each op again alone (and an op alone again after a transient error)."""
        batch.sort(key=lambda op: op.key)  # same lock order in every batch
        self.batches += 1
        self.ops += len(batch)
        try:
            engine = self.engine() if callable(self.engine) else self.engine
            with engine.begin() as conn:
                outcomes = self._apply_in(conn, batch)
        except Exception as err:  # noqa: BLE001 - nothing of this batch was committed
            if len(batch) == 1 and attempt < self.retries and _transient(err):
                self.retried += 1
                log.info("accounts writer: %s; trying the op again", _sqlstate(err) or
                         type(err).__name__)
                time.sleep(RETRY_PAUSE * 2 ** attempt)
                self._apply(batch, attempt + 1)
                return
            if len(batch) == 1 or _connection_lost(err):
                for op in batch:
                    _resolve(op, False, err)
                return
            log.warning("accounts writer: a batch of %d failed (%s); applying each alone",
                        len(batch), type(err).__name__)
            for op in batch:
                self._apply([op])
            return
        for op, (ok, value) in zip(batch, outcomes):
            _resolve(op, ok, value)

    def _apply_in(self, conn: sa.Connection, batch: list[_Op]) -> list[tuple[bool, Any]]:
        """Each op's outcome, applied in `conn`; ops of one merge group go together, where
        the first of them stands. A refusal inside a merged group is not one op's answer:
        it fails the batch, which is then applied op by op."""
        groups: dict[Any, list[int]] = {}
        for i, op in enumerate(batch):
            group = getattr(op.fn, "merge_group", None)
            if group is not None:
                groups.setdefault(group, []).append(i)
        outcomes: list[tuple[bool, Any] | None] = [None] * len(batch)
        for i, op in enumerate(batch):
            if outcomes[i] is not None:
                continue
            members = groups.get(getattr(op.fn, "merge_group", None), ())
            if len(members) > 1:
                results = op.fn.apply_many(conn, [batch[j].fn for j in members])
                for j, value in zip(members, results, strict=True):
                    outcomes[j] = (True, value)
                self.merged += len(members)
                continue
            try:
                outcomes[i] = (True, op.fn(conn))
            except self.refusals as err:  # wrote nothing: this op's answer
                outcomes[i] = (False, err)
        return outcomes


def _call(fn: Callable[[], Any]) -> tuple[bool, Any]:
    try:
        return True, fn()
    except Exception as err:  # noqa: BLE001 - the caller's answer
        return False, err


def _resolve(op: _Op, ok: bool, value: Any) -> None:
    if op.future.done():
        return
    if ok:
        op.future.set_result(value)
    else:
        op.future.set_exception(value)


def _sqlstate(err: Exception) -> str | None:
    orig = getattr(err, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def _transient(err: Exception) -> bool:
    """A database error after which the same transaction, applied again, may pass."""
    if not isinstance(err, sa.exc.DBAPIError) or err.connection_invalidated:
        return False
    if _sqlstate(err) in TRANSIENT_SQLSTATES:
        return True
    return isinstance(err, sa.exc.OperationalError) and "database is locked" in str(err.orig)


def _connection_lost(err: Exception) -> bool:
    """The database went away: applying ops one by one would only fail each slowly."""
    return isinstance(err, sa.exc.DBAPIError) and bool(err.connection_invalidated)


class WalCheckpointer:
    """Moves SQLite's WAL checkpoints off the commit path.

    By default the commit that pushes the WAL past 1000 pages also copies it back into the
    database file and syncs it: one request in a few hundred waits 10-25 ms for that (it was
    the whole p99 of a `synchronous=normal` gateway). Here connections made from now on
    have `wal_autocheckpoint=0`, and a thread runs a PASSIVE checkpoint every `interval`
    seconds on a connection of its own: it copies what no reader still needs and never
    blocks a writer, so commits only ever append to the WAL. Durability is unchanged: a
    commit is durable once in the WAL (FULL syncs it at each commit)."""

    def __init__(self, engine: sa.Engine, interval: float = 1.0):
        self.engine = engine
        self.interval = interval
        self.checkpoints = 0
        self._stop = threading.Event()
        sa.event.listen(engine, "connect", _no_autocheckpoint)
        engine.dispose(close=False)  # pooled connections predate the listener: new ones
        self._thread = threading.Thread(target=self._loop, name="persea-db-checkpoint",
                                        daemon=True)
        self._thread.start()

    def checkpoint(self) -> None:
        raw = self.engine.raw_connection()  # autocommit (persea.db): no BEGIN around it
        try:
            raw.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        finally:
            raw.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.checkpoint()
            except Exception as err:  # noqa: BLE001 - the next one tries again
                log.warning("WAL checkpoint failed: %s", type(err).__name__)

    def close(self) -> None:
        """Stop the thread after one last checkpoint (what a commit would have done)."""
        self._stop.set()
        self._thread.join(10)
        try:
            self.checkpoint()
        except Exception as err:  # noqa: BLE001
            log.warning("WAL checkpoint failed: %s", type(err).__name__)
        sa.event.remove(self.engine, "connect", _no_autocheckpoint)


def _no_autocheckpoint(dbapi_conn, _record) -> None:
    dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")

