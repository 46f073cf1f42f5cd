"""One request's way through the gateway, before and after the model: the money path.

    authenticate -> refuse what the plan does not allow (logprobs) -> find the backend (404)
    -> check_model (403) -> count the prompt with the model's tokenizer -> bound max_tokens
    -> rate limits (429 + Retry-After) -> reserve the worst case (402) -> [generate]
    -> settle with the exact counts  |  release when the backend failed (nothing charged)

The reserve's commit and the model run side by side (`admit(..., overlap=True)`, what the
HTTP handlers ask for): the reserve is queued on the writer and the model starts at once;
the answer (a whole one, or a stream's first chunk) is withheld until the reserve is
durable. Refused (402), the model's work is cancelled and thrown away, unbilled, and the
caller gets the 402 as before. So a lone request waits for max(commit, model), not their
sum, and no answer ever goes out without a durable hold behind it. An org refused in the
last `OVERLAP_PAUSE_S` seconds is not given that head start: its requests wait for the
commit first, so a caller past its budget cannot keep the models busy for free.

Every decision to charge or release is taken here: `admit` reserves, `complete` and `stream`
run the model and settle or release on every way out (a stream whose caller went away is
charged for what it produced); the HTTP routes only translate the wire to these calls and
their results back.

`Accounts` is synchronous (SQLAlchemy). Reads run on a small thread pool; every write goes
through one group-commit writer (`persea.accounts.writer`): the reserves, settles and releases
queued at one moment share one transaction and one commit, each with its own conditional
statement and its own answer. A whole (non-streamed) answer is sent before its usage record
is written (`settle_soon`): the counts are exact by then and the reservation already covers
them, so that settle is queued *lazily*, to ride along with the next reserve's commit. A
stream whose caller went away queues its settle without awaiting it (`settle_now`: the
stream's task is being cancelled, and an await could be skipped); shutdown applies it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import AsyncIterator

import sqlalchemy as sa

from persea.accounts import Accounts, AccountsError, Caller, Reservation
from persea.accounts.types import random_hex
from persea.accounts.leases import LeaseBook, NoLease
from persea.route.breaker import MemoryBreaker
from persea.route.policy import Route, Router
from persea.serve.backends.base import (Backend, BackendError, Piece, Prepared, Prompt,
                                        Reported, Result, Sampling)
from persea.serve.errors import ApiError, bad_request, refusal
from persea.serve.limits import Ask, Limiter, retry_after_header
from persea.serve.metrics import Metrics
from persea.serve.sampling import bound_max_tokens, sampling_for
from persea.serve.wire import AnyRequest, refuse_unsupported
from persea.accounts.writer import DEFAULT_LAZY_DELAY, GroupWriter, WalCheckpointer, \
    WriterClosed

log = logging.getLogger("persea.serve")

INLINE_TOKENIZE_CHARS = 8192  # longer prompts are tokenized off the event loop
OVERLAP_PAUSE_S = 10.0  # after a 402, an org's requests wait for their reserve's commit
# With budget leases no reserve commits for a settle to ride along with: settles gather this
# long instead, and the writer merges those of one lease into a few statements
# (docs/billing.md, "Settles of one lease, merged").
LEASED_SETTLE_DELAY_S = 0.05


def api_error(err: AccountsError) -> ApiError:
    return refusal(err.kind, err.message, code=err.code)


@dataclass
class Candidate:
    """One model that may answer a request, with the prompt made ready for it."""

    model: str
    backend: Backend
    prepared: Prepared
    sampling: Sampling


@dataclass
class Admission:
    """A request that passed every check and holds a reservation: it must end in exactly one
    of `settle` or `release`. `model`, `backend`, `prepared` and `sampling` are those of the
    model trying (then: that answered); a routed request has several `candidates`."""

    request_id: str
    caller: Caller
    model: str
    backend: Backend
    prepared: Prepared
    sampling: Sampling
    reservation: Reservation | None  # None while `pending`
    tpm: Ask | None
    done: bool = False
    pending: asyncio.Future | None = None  # the reserve, still committing (overlap)
    route: Route | None = None
    candidates: list[Candidate] = field(default_factory=list)
    attempts: int = 0  # models tried so far, the one trying now included
    skipped: list[str] = field(default_factory=list)  # their breaker was open
    started: float = 0.0  # router clock at admission: the route's deadline counts from it

    def use(self, c: Candidate) -> None:
        self.model, self.backend, self.prepared, self.sampling = (c.model, c.backend,
                                                                  c.prepared, c.sampling)


@dataclass(frozen=True)
class Charged:
    """The last item of a finished stream: what it was charged (after the settle)."""

    prompt_tokens: int
    completion_tokens: int


class _Tally:
    """Tokens produced so far: what a stream is charged, also when it is cut short."""

    def __init__(self, adm: Admission):
        self.prompt = adm.prepared.prompt_tokens
        self.completion = 0
        self.reported: Reported | None = None

    def add(self, item) -> bool:
        if isinstance(item, Reported):
            self.reported = item
            return False
        self.completion += item.tokens
        return True

    def counts(self) -> tuple[int, int]:
        if self.reported is not None:
            return self.reported.prompt_tokens, self.reported.completion_tokens
        return self.prompt, self.completion


def backend_refusal(err: BackendError) -> ApiError:
    return refusal(err.kind, f"{err.message}; you were not charged", code="backend_error",
                   reason="backend_error")


def _messages(prompt: Prompt) -> list[dict[str, str]]:
    """What a routing policy sees of a prompt: chat messages (a plain prompt is one user
    message)."""
    if prompt.kind == "text":
        return [{"role": "user", "content": prompt.text}]
    return [{"role": r, "content": c} for r, c in prompt.messages]


class Gateway:
    def __init__(self, accounts: Accounts, backends: dict[str, Backend], limiter: Limiter,
                 metrics: Metrics, *, db_threads: int = 8, router: Router | None = None,
                 overlap: bool = True, leases: LeaseBook | None = None):
        self.accounts = accounts
        self.overlap = overlap  # may the model start while the reserve commits
        # budget leases (persea.accounts.leases): reserves in memory out of a durable chunk
        self.leases = leases
        self._lease_opening: dict[str, asyncio.Future] = {}  # org -> lease being opened
        self._no_lease_until: dict[str, float] = {}  # org -> no lease fitted; retry after
        self._refused_at: dict[str, float] = {}  # org -> when it was last refused (402)
        self.backends = backends
        self.limiter = limiter
        self.metrics = metrics
        self.router = router or Router({}, MemoryBreaker())
        # Reads are few (authentication misses, readiness, admin): a small pool. Together
        # with the writers they stay within SQLAlchemy's default 15 pooled connections.
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="persea-db")
        # SQLite has one writer at a time (and colliding writers sleep in growing steps):
        # one writer thread. On PostgreSQL a few, so one batch gathers while another commits.
        sqlite = accounts.engine.dialect.name == "sqlite"
        self.writer = GroupWriter(lambda: self.accounts.engine,
                                  workers=1 if sqlite else db_threads,
                                  refusals=(AccountsError,),
                                  lazy_delay=LEASED_SETTLE_DELAY_S if leases is not None
                                  else DEFAULT_LAZY_DELAY)
        file_db = sqlite and accounts.engine.url.database not in (None, "", ":memory:")
        self._checkpointer = WalCheckpointer(accounts.engine) if file_db else None
        self._settling: set[asyncio.Task] = set()
        self._queued: set[object] = set()  # settles queued without a task (settle_soon)

    async def db(self, fn, *args, write: bool = False):
        """Run a synchronous Accounts call on a pool (`write`: alone on the writer, between
        batches); its refusals become API errors."""
        if write:
            return await self._answer(self.writer.call(fn, *args))
        return await self._answer(
            asyncio.get_running_loop().run_in_executor(self._pool, fn, *args))

    async def write(self, make_op, *args, key: str, urgent: bool = True, **kwargs):
        """Build an Accounts op (`make_op(*args, **kwargs)`: bad arguments are refused here)
        and await it through the group-commit writer; `key` orders locks inside a batch (the
        org)."""
        try:
            op = make_op(*args, **kwargs)
        except AccountsError as err:
            raise api_error(err) from None
        return await self._answer(self.writer.run(op, urgent=urgent, key=key))

    @staticmethod
    async def _answer(awaitable):
        try:
            return await awaitable
        except AccountsError as err:
            raise api_error(err) from None
        except (sa.exc.DBAPIError, WriterClosed) as err:  # by type only: text may hold the URL
            log.error("accounts database failed: %s",
                      type(getattr(err, "orig", None) or err).__name__)
            raise ApiError(503, "the accounts database is not answering; nothing was charged, "
                           "retry later", code="service_unavailable") from None

    @property
    def settling(self) -> int:
        """Settles queued or running, not yet written (tests wait for 0)."""
        return len(self._settling) + len(self._queued)

    async def drain(self) -> None:
        """Wait for every settle still running (at shutdown, so no usage is lost)."""
        while self._settling or self._queued:
            if self._settling:
                await asyncio.gather(*list(self._settling), return_exceptions=True)
            else:
                await asyncio.sleep(0.005)  # the writer answers them within its delay

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.writer.close()  # applies what is still queued (lazy settles) first
        if self._checkpointer is not None:
            self._checkpointer.close()

    # -- before the model -------------------------------------------------------------
    async def authenticate(self, authorization: str | None) -> Caller:
        key = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                key = value.strip()
        if key is None:
            raise ApiError(401, "no API key given: send the header `Authorization: Bearer "
                           "psk-...`", code="invalid_api_key")
        try:  # a cached key needs no thread: the hop cost more than the lookup
            cached = self.accounts.cached_caller(key)
        except AccountsError as err:
            raise api_error(err) from None
        if cached is not None:
            return cached
        return await self.db(self.accounts.authenticate, key)

    def backend_for(self, caller: Caller, model: str) -> Backend:
        backend = self.backends.get(model)
        if backend is None:
            raise ApiError(404, f"the model {model!r} does not exist; GET /v1/models lists "
                           "yours", code="model_not_found", param="model")
        try:
            self.accounts.check_model(caller, model)  # in memory: the plan is on the caller
        except AccountsError as err:
            raise api_error(err) from None
        return backend

    def route_models(self, caller: Caller, route: str, names: list[str]) -> list[str]:
        """Those of `names` this caller may be answered by through `route`: its plan sells
        them and its key allows them (a route is open to whoever may use one of its
        models); 403 when none is left."""
        allowed = []
        for name in names:
            try:
                self.accounts.check_model(caller, name)
            except AccountsError:
                continue
            allowed.append(name)
        if not allowed:
            raise ApiError(403, f"no model of route {route!r} is available on your plan or "
                           "key", code="model_not_allowed", param="model")
        return allowed

    def may_use_route(self, caller: Caller, route: str) -> bool:
        try:
            self.route_models(caller, route, self.router.models(route))
        except ApiError:
            return False
        return True

    async def _prepare(self, backend: Backend, prompt: Prompt) -> Prepared:
        size = len(prompt.text) + sum(len(c) for _, c in prompt.messages)
        if size > INLINE_TOKENIZE_CHARS:  # a long prompt would hold up every other request
            return await asyncio.to_thread(backend.prepare, prompt)
        return backend.prepare(prompt)

    async def _candidates(self, caller: Caller, req: AnyRequest, prompt: Prompt,
                          prompt_param: str) -> tuple[Route | None, list[Candidate]]:
        route = None if req.model in self.backends else self.router.get(req.model)
        if route is None:
            backend = self.backend_for(caller, req.model)
            if not backend.ready:
                raise ApiError(503, f"model {req.model} is still loading",
                               code="model_not_ready")
            prepared = await self._prepare(backend, prompt)
            max_tokens = bound_max_tokens(req, prepared, prompt_param)
            return None, [Candidate(req.model, backend, prepared,
                                    sampling_for(caller, req, max_tokens))]
        names = self.route_models(caller, route.name,
                                  self.router.order(route.name, _messages(prompt)))
        out: list[Candidate] = []
        refused: ApiError | None = None
        for name in names:
            backend = self.backends[name]
            if not backend.ready:
                continue
            prepared = await self._prepare(backend, prompt)
            try:  # a model whose context cannot hold this request is not a candidate
                max_tokens = bound_max_tokens(req, prepared, prompt_param)
            except ApiError as err:
                refused = refused or err
                continue
            out.append(Candidate(name, backend, prepared, sampling_for(caller, req, max_tokens)))
        if not out:
            raise refused or ApiError(503, f"no model of route {route.name!r} is loaded yet",
                                      code="model_not_ready")
        return route, out

    async def admit(self, caller: Caller, req: AnyRequest, prompt: Prompt,
                    prompt_param: str, id_prefix: str, *, overlap: bool = False) -> Admission:
        """Every check, then the reservation. `overlap`: return as soon as the reserve is
        queued (the admission is `pending`); `complete` and `stream` then withhold the
        answer until it is durable, and refuse (402) if it is refused."""
        unsupported = refuse_unsupported(req)
        if unsupported:
            raise bad_request(unsupported[1], unsupported[0], "unsupported")
        route, candidates = await self._candidates(caller, req, prompt, prompt_param)
        first = candidates[0]
        n = first.sampling.n
        tpm = await self._limit(caller, max(c.prepared.prompt_tokens + c.sampling.max_tokens * n
                                            for c in candidates))
        request_id = f"{id_prefix}-{random_hex(12)}"
        instead = [(c.model, c.prepared.prompt_tokens, c.sampling.max_tokens * n)
                   for c in candidates[1:]]
        if self.leases is not None:
            try:
                leased = await self._lease_reserve(caller, first, n, request_id, instead)
            except AccountsError as err:
                if tpm is not None:
                    await self.limiter.refund(tpm)
                raise api_error(err) from None
            if leased is not None:  # held in memory, out of a durable lease: no commit
                return Admission(request_id, caller, first.model, first.backend,
                                 first.prepared, first.sampling, leased, tpm, route=route,
                                 candidates=candidates, started=self.router.clock())
        try:
            op = self.accounts.reserve_op(caller, first.model, first.prepared.prompt_tokens,
                                          first.sampling.max_tokens * n, request_id,
                                          instead=instead)
        except AccountsError as err:
            if tpm is not None:
                await self.limiter.refund(tpm)
            raise api_error(err) from None
        adm = Admission(request_id, caller, first.model, first.backend, first.prepared,
                        first.sampling, None, tpm, route=route, candidates=candidates,
                        started=self.router.clock())
        try:
            adm.pending = asyncio.wrap_future(self.writer.submit(op, key=caller.org_id))
        except WriterClosed:
            adm.pending = asyncio.get_running_loop().create_future()
            adm.pending.set_exception(WriterClosed("the accounts writer is closed"))
        if not (overlap and self.overlap and self._may_overlap(caller.org_id)):
            await self._confirm(adm)
        return adm

    async def _lease_reserve(self, caller: Caller, first: Candidate, n: int,
                             request_id: str, instead: list) -> Reservation | None:
        """A reservation out of this process's budget lease for the organisation, opening
        one when there is none (requests arriving meanwhile wait for the same one); None
        when no lease fits: the caller then reserves per request, after this process's
        own lease room has gone back to the budget (so that a 402 is exact but for other
        processes' leases)."""
        org = caller.org_id
        args = (caller, first.model, first.prepared.prompt_tokens,
                first.sampling.max_tokens * n, request_id)
        held, amount = self.leases.take(*args, instead=instead)
        if held is not None:
            return held
        self._give_back(self.leases.due(org))
        size = self.leases.chunk(amount, org)
        if size is None or self._no_lease_until.get(org, 0.0) > time.monotonic():
            await self._give_back_now(org)
            return None
        opening = self._lease_opening.get(org)
        if opening is None:
            try:
                op = self.leases.open_op(caller, first.model, size)
                opening = asyncio.wrap_future(self.writer.submit(op, key=org))
            except WriterClosed:
                return None
            self._lease_opening[org] = opening
            opening.add_done_callback(lambda done: self._lease_opened(org, done))
        try:
            await asyncio.shield(opening)
        except Exception:  # noqa: BLE001 - no lease fits (or it failed): per request
            await self._give_back_now(org)
            return None
        held, _ = self.leases.take(*args, instead=instead)
        return held

    def _lease_opened(self, org: str, done: asyncio.Future) -> None:
        if self._lease_opening.get(org) is done:
            del self._lease_opening[org]
        if done.cancelled():
            return
        err = done.exception()
        if err is None:
            self._give_back(self.leases.add(done.result()))
        elif isinstance(err, NoLease):
            if self.leases.refused(org):  # a grown lease: one of the base size may fit
                return
            if len(self._no_lease_until) > 100_000:
                self._no_lease_until.clear()
            self._no_lease_until[org] = time.monotonic() + self.leases.seconds
        else:
            log.error("opening a budget lease failed: %s", type(err).__name__)

    def _give_back(self, items) -> list:
        """Queue the lease room in `items` to go back to the budget (lazily); the futures."""
        futures = []
        for lease, amount in items:
            try:
                futures.append(self.writer.submit(self.leases.shrink_op(lease, amount),
                                                  urgent=False, key=lease.org_id))
            except WriterClosed:  # shutting down: the lease expires and reconcile frees it
                break
        return futures

    async def _give_back_now(self, org: str) -> None:
        """This process's open lease for `org`, given back before an exact reserve."""
        futures = self._give_back(self.leases.due(org, everything=True))
        if futures:
            await asyncio.gather(*(asyncio.wrap_future(f) for f in futures),
                                 return_exceptions=True)

    def retire_leases(self, everything: bool = False) -> None:
        """Give back the room of leases past their time (every one: at shutdown)."""
        if self.leases is not None:
            self._give_back(self.leases.due(everything=everything))

    def _settle_op(self, reservation: Reservation, *args, **kwargs):
        if reservation.lease is not None and self.leases is not None:
            return self.leases.settle_op(reservation, *args, **kwargs)
        return self.accounts.settle_op(reservation, *args, **kwargs)

    def _may_overlap(self, org_id: str) -> bool:
        refused = self._refused_at.get(org_id)
        return refused is None or time.monotonic() - refused > OVERLAP_PAUSE_S

    async def _confirm(self, adm: Admission) -> None:
        """Wait until the reserve is durable; refused, the admission is closed (nothing is
        held, nothing will be settled or released), its tokens go back to the rate limit
        and the refusal is raised."""
        if adm.pending is None:
            return
        try:
            reservation = await self._answer(asyncio.shield(adm.pending))
        except ApiError as err:
            adm.pending = None
            adm.done = True
            if err.status == 402:
                if len(self._refused_at) > 100_000:
                    self._refused_at.clear()
                self._refused_at[adm.caller.org_id] = time.monotonic()
            if adm.tpm is not None:  # refused: it will use none of the tokens it took
                await self.limiter.refund(adm.tpm)
            raise
        adm.reservation, adm.pending = reservation, None

    async def _reservation(self, adm: Admission) -> Reservation | None:
        """The reservation, once durable; None when it was refused (nothing held)."""
        if adm.pending is not None:
            try:
                adm.reservation = await asyncio.shield(adm.pending)
            except Exception:  # noqa: BLE001 - refused or failed: nothing is held
                return None
            adm.pending = None
        return adm.reservation

    async def _while_reserving(self, adm: Admission, work):
        """The model's `work`, with a reserve still committing beside it: refused, the work
        is cancelled at once and the refusal raised; else the work's result (the answer is
        withheld by the caller until `_confirm`)."""
        if adm.pending is None:
            return await work
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait([task, adm.pending], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            raise
        if not task.done() and adm.pending.done() and adm.pending.exception() is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self._confirm(adm)  # raises the refusal
        return await task

    async def _limit(self, caller: Caller, tokens: int) -> Ask | None:
        plan = caller.plan
        asks = []
        if plan.rpm is not None:
            asks.append(Ask(f"org:{caller.org_id}:rpm", plan.rpm, 1))
        tpm = Ask(f"org:{caller.org_id}:tpm", plan.tpm, tokens) if plan.tpm is not None \
            else None
        if tpm is not None:
            asks.append(tpm)
        if not asks:
            return None
        try:
            wait = await self.limiter.acquire(asks)
        except Exception as err:  # noqa: BLE001 - fail closed: no limit known, no request
            log.error("rate limiter failed: %s", type(err).__name__)
            raise ApiError(503, "the rate limiter is not answering; retry later",
                           code="service_unavailable") from None
        if wait == float("inf"):
            raise ApiError(429, f"this request needs up to {tokens} tokens but your plan allows "
                           f"{plan.tpm} per minute; lower max_tokens or shorten the prompt",
                           code="request_too_large", headers={"Retry-After": "60"})
        if wait > 0:
            raise ApiError(429, f"rate limit of your plan reached ({plan.rpm or 'unlimited'} "
                           f"requests and {plan.tpm or 'unlimited'} tokens per minute); retry "
                           f"in {wait:.1f} s", code="rate_limit_exceeded",
                           headers={"Retry-After": retry_after_header(wait)})
        return tpm

    # -- the model ----------------------------------------------------------------------
    # A request that names a model goes to it once. A routed one tries its candidates in
    # order: a model whose breaker is open is skipped (not an attempt); a retryable failure
    # (no answer, a timeout, a 5xx, a 429) passes to the next, until one answers, the
    # route's `max_attempts` have been made or its deadline has passed. The reservation
    # covers the dearest candidate; the one that answers is charged, at its own price;
    # failed attempts cost nothing. A stream falls over only before its first token.

    async def _tries(self, adm: Admission) -> AsyncIterator[tuple[Candidate, float | None]]:
        """The candidates to try, in order, each with its time limit (None: the backend's
        own); `adm` is switched to each as it is yielded."""
        route = adm.route
        if route is None:
            adm.use(adm.candidates[0])
            adm.attempts = 1
            yield adm.candidates[0], None
            return
        for c in adm.candidates:
            if adm.attempts >= route.max_attempts:
                return
            left = route.deadline_s - (self.router.clock() - adm.started)
            if left <= 0:
                return
            if not await self.router.breaker.allow(c.model):
                adm.skipped.append(c.model)
                continue
            adm.use(c)
            adm.attempts += 1
            yield c, min(left, route.attempt_timeout_s or left)

    @staticmethod
    async def _timed(awaitable, limit: float | None, model: str):
        if limit is None:
            return await awaitable
        try:
            async with asyncio.timeout(limit):  # in this task: a stream goes on in it
                return await awaitable
        except TimeoutError:
            raise BackendError(f"{model} did not answer within {limit:g} s") from None

    async def _outcome(self, adm: Admission, error: BackendError | None,
                       seconds: float = 0.0) -> None:
        """A routed attempt's outcome, for the model's breaker, latency and metrics. A model
        that refused the request itself (a 4xx other than 429) did answer: its breaker
        counts that as alive."""
        if adm.route is None:
            return
        self.metrics.route_attempts.labels(adm.route.name, adm.model,
                                           "answered" if error is None else "failed").inc()
        if error is None:
            self.router.latency.observe(adm.model, seconds)
        else:
            self.metrics.backend_errors.labels(adm.model).inc()
        await self.router.breaker.record(adm.model, error is None or not error.retryable)

    def _exhausted(self, adm: Admission, failure: BackendError | None) -> ApiError:
        name = adm.route.name
        if failure is None:
            return ApiError(503, f"no model of route {name!r} is available now (circuit open: "
                            f"{', '.join(adm.skipped)}); you were not charged, retry later",
                            code="service_unavailable", reason="route_unavailable")
        return ApiError(502, f"route {name!r}: {adm.attempts} attempt(s) failed, the last "
                        f"with: {failure.message}; you were not charged",
                        code="backend_error", reason="backend_error")

    async def _failed(self, adm: Admission, err: BackendError) -> None:
        """One model's failure: on a route it counts against that model's breaker and, when
        retryable, returns so that the next model is tried; otherwise the hold is released
        and the refusal raised."""
        if adm.route is not None:
            await self._outcome(adm, err)
            if err.retryable:
                return
        await self.release(adm, error=adm.route is None)
        raise backend_refusal(err) from None

    async def complete(self, adm: Admission) -> Result:
        """The whole answer; settled (lazily) with its exact counts, or released when every
        model tried fails or the caller goes away before it is given."""
        failure: BackendError | None = None
        async for c, limit in self._tries(adm):
            self.metrics.child(self.metrics.in_flight, c.model).inc()
            started = time.perf_counter()
            try:
                result = await self._timed(
                    self._while_reserving(adm, c.backend.complete(c.prepared, c.sampling)),
                    limit, c.model)
                await self._confirm(adm)  # nothing is answered before the hold is durable
            except BackendError as err:
                await self._failed(adm, err)
                failure = err
                continue
            except BaseException:
                await self.release(adm)  # cancelled (caller gone) or a bug: nothing delivered
                raise
            finally:
                self.metrics.child(self.metrics.in_flight, c.model).dec()
            await self._outcome(adm, None, time.perf_counter() - started)
            self.settle_soon(adm, result.prompt_tokens, result.completion_tokens)
            return result
        await self.release(adm, error=False)
        raise self._exhausted(adm, failure)

    @staticmethod
    async def _first_token(pieces: AsyncIterator[Piece | Reported]) -> list:
        """Items of a stream up to its first piece (or its end)."""
        items = []
        async for item in pieces:
            items.append(item)
            if isinstance(item, Piece):
                break
        return items

    async def stream(self, adm: Admission) -> AsyncIterator[Piece | Charged]:
        """The answer piece by piece, then `Charged` once settled with the exact counts.
        A backend failure releases the reservation and raises the refusal (ApiError); a
        stream closed early (the caller went away) is charged for what it produced."""
        failure: BackendError | None = None
        pieces = None
        first: list = []
        async for c, limit in self._tries(adm):
            pieces = c.backend.stream(c.prepared, c.sampling)
            started = time.perf_counter()
            try:
                first = await self._timed(self._while_reserving(
                    adm, self._first_token(pieces)), limit, c.model)
                await self._confirm(adm)  # no chunk goes out before the hold is durable
            except BackendError as err:
                await pieces.aclose()
                pieces = None
                await self._failed(adm, err)
                failure = err
                continue
            except BaseException:
                # the caller went away (or a bug) before the first token: charged for the
                # prompt, as any stream cut short is for what it produced
                if not adm.done:
                    self.settle_now(adm, adm.prepared.prompt_tokens, 0)
                await pieces.aclose()
                raise
            await self._outcome(adm, None, time.perf_counter() - started)
            break
        if pieces is None:
            await self.release(adm, error=False)
            raise self._exhausted(adm, failure)
        tally = _Tally(adm)
        self.metrics.child(self.metrics.in_flight, adm.model).inc()
        finished = False
        try:
            try:
                for item in first:
                    if tally.add(item):
                        yield item
                async for item in pieces:
                    if tally.add(item):
                        yield item
            except BackendError as err:  # after the first token: no other model can take over
                if adm.route is not None:
                    await self.router.breaker.record(adm.model, False)
                await self.release(adm)
                raise backend_refusal(err) from None
            finished = True
            prompt_tokens, completion_tokens = tally.counts()
            await self.settle(adm, prompt_tokens, completion_tokens)
            yield Charged(prompt_tokens, completion_tokens)
        finally:
            self.metrics.child(self.metrics.in_flight, adm.model).dec()
            if not finished and not adm.done:
                # The caller went away (or the task is torn down): charge what was produced.
                self.settle_now(adm, *tally.counts())
            await pieces.aclose()

    # -- after the model --------------------------------------------------------------
    def settle_soon(self, adm: Admission, prompt_tokens: int, completion_tokens: int) -> None:
        """Settle without holding up the answer: the exact counts are known, so the caller
        gets its response while the usage record is written (the reservation already holds
        the worst case, so the budget can never be passed in between). The settle is lazy:
        it shares the commit of the next reserve, or commits on its own a few ms later.
        Shutdown waits for these (`drain`, then the writer's close); a crash in between
        leaves the reservation for `reconcile`."""
        if adm.done:
            return
        if adm.pending is not None:  # the reserve is still committing: settle after it
            self._settle_in_background(
                self.settle(adm, prompt_tokens, completion_tokens, urgent=False))
            return
        adm.done = True
        self._queue_settle(adm, prompt_tokens, completion_tokens)

    def _settle_in_background(self, work) -> None:
        """Run the coroutine `work` as a task of its own, which `drain` waits for."""
        task = asyncio.get_running_loop().create_task(work)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def settle(self, adm: Admission, prompt_tokens: int, completion_tokens: int, *,
                     urgent: bool = True) -> None:
        if adm.done:
            return
        adm.done = True
        if await self._reservation(adm) is None:
            return  # refused: nothing was answered, nothing is held
        try:
            await self.write(self._settle_op, adm.reservation, prompt_tokens,
                             completion_tokens, key=adm.caller.org_id, urgent=urgent,
                             **self._answered(adm))
        except Exception as err:  # noqa: BLE001 - the answer is given; reconcile frees it
            log.error("settling %s failed: %s", adm.request_id, type(err).__name__)
            return
        await self._after(adm, prompt_tokens, completion_tokens)

    def settle_now(self, adm: Admission, prompt_tokens: int, completion_tokens: int) -> None:
        """Settle for a stream being torn down (its task is cancelled, so nothing may be
        awaited): queued on the writer at once, lazily; the writer applies it even if this
        task is gone, and shutdown applies whatever is still queued."""
        if adm.done:
            return
        adm.done = True
        if adm.pending is not None:  # the reserve is still committing: settle after it
            self._settle_in_background(
                self._settle_when_held(adm, prompt_tokens, completion_tokens))
            return
        self._queue_settle(adm, prompt_tokens, completion_tokens)

    async def _settle_when_held(self, adm: Admission, prompt_tokens: int,
                                completion_tokens: int) -> None:
        if await self._reservation(adm) is not None:
            self._queue_settle(adm, prompt_tokens, completion_tokens)

    def _queue_settle(self, adm: Admission, prompt_tokens: int,
                      completion_tokens: int) -> None:
        """Queue the settle of a held reservation on the writer, lazily, and return: what
        follows its commit (the metrics, a token refund) runs as a callback on the loop
        (`_written`). No task, no coroutine and no asyncio future per request: under load
        these were a measurable part of the event loop's work (docs/benchmarks.md).
        `drain` waits for these as for the settles running as tasks."""
        try:
            future = self.writer.submit(
                self._settle_op(adm.reservation, prompt_tokens, completion_tokens,
                                **self._answered(adm)),
                urgent=False, key=adm.caller.org_id)
        except Exception as err:  # noqa: BLE001 - not queued; reconcile frees it
            log.error("settling %s failed: %s", adm.request_id, type(err).__name__)
            return
        loop = asyncio.get_running_loop()
        self._queued.add(future)

        def written(done) -> None:  # on the writer's thread
            try:
                loop.call_soon_threadsafe(self._written, adm, done, prompt_tokens,
                                          completion_tokens)
            except RuntimeError:  # the loop is closed: nothing left to count
                self._queued.discard(done)

        future.add_done_callback(written)

    def _written(self, adm: Admission, future, prompt_tokens: int,
                 completion_tokens: int) -> None:
        """After a queued settle's commit (on the loop): the metrics and the token refund."""
        self._queued.discard(future)
        err = future.exception()
        if err is not None:  # the answer is given; reconcile frees the reservation
            log.error("settling %s failed: %s", adm.request_id, type(err).__name__)
            return
        self.metrics.charged(adm.model, prompt_tokens, completion_tokens)
        if adm.tpm is not None and adm.tpm.cost > prompt_tokens + completion_tokens:
            self._settle_in_background(self._refund(adm, prompt_tokens, completion_tokens))

    @staticmethod
    def _answered(adm: Admission) -> dict:
        """What the usage record says of who answered: the model, the route, the attempts."""
        if adm.route is None:
            return {}
        return {"model": adm.model, "route": adm.route.name, "attempts": adm.attempts}

    async def release(self, adm: Admission, error: bool = True) -> None:
        """Give the reservation back: nothing is charged. `error`: count it as a backend
        error of the model trying (a routed attempt's failure is counted when it fails)."""
        if adm.done:
            return
        adm.done = True
        if error:
            self.metrics.backend_errors.labels(adm.model).inc()
        if await self._reservation(adm) is None:
            return  # refused: nothing to give back
        if adm.reservation.lease is not None and self.leases is not None:
            back = self.leases.release(adm.reservation)  # to the lease's room, in memory
            if back is not None:  # the lease is retired: to the budget
                self._give_back([back])
            return
        try:
            await self.write(self.accounts.release_op, adm.reservation,
                             key=adm.caller.org_id)
        except Exception as err:  # noqa: BLE001 - reconcile gives it back later
            log.error("releasing %s failed: %s", adm.request_id, type(err).__name__)

    async def _after(self, adm: Admission, prompt_tokens: int, completion_tokens: int) -> None:
        self.metrics.charged(adm.model, prompt_tokens, completion_tokens)
        if adm.tpm is not None:
            await self._refund(adm, prompt_tokens, completion_tokens)

    async def _refund(self, adm: Admission, prompt_tokens: int, completion_tokens: int):
        unused = adm.tpm.cost - prompt_tokens - completion_tokens
        if unused > 0:
            try:
                await self.limiter.refund(Ask(adm.tpm.key, adm.tpm.limit, unused))
            except Exception as err:  # noqa: BLE001 - a lost refund only limits sooner
                log.warning("token refund failed: %s", type(err).__name__)
