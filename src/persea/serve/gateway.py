"""One request's way through the gateway, before and after the model: the money path.

    authenticate -> refuse what the plan does not allow (logprobs) -> find the backend (404)
    -> check_model (403) -> count the prompt with the model's tokenizer -> bound max_tokens
    -> rate limits (429 + Retry-After) -> reserve the worst case (402) -> [generate]
    -> settle with the exact counts  |  release when the backend failed (nothing charged)

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
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import AsyncIterator

import sqlalchemy as sa

from persea.accounts import Accounts, AccountsError, Caller, Reservation
from persea.serve.backends.base import (Backend, BackendError, Piece, Prepared, Prompt,
                                        Reported, Result, Sampling)
from persea.serve.errors import ApiError, bad_request, refusal
from persea.serve.limits import Ask, Limiter, retry_after_header
from persea.serve.metrics import Metrics
from persea.serve.sampling import bound_max_tokens, sampling_for
from persea.serve.wire import AnyRequest, refuse_unsupported
from persea.accounts.writer import GroupWriter, WalCheckpointer, WriterClosed

log = logging.getLogger("persea.serve")

INLINE_TOKENIZE_CHARS = 8192  # longer prompts are tokenized off the event loop


def api_error(err: AccountsError) -> ApiError:
    return refusal(err.kind, err.message, code=err.code)


@dataclass
class Admission:
    """A request that passed every check and holds a reservation: it must end in exactly one
    of `settle` or `release`."""

    request_id: str
    caller: Caller
    model: str
    backend: Backend
    prepared: Prepared
    sampling: Sampling
    reservation: Reservation
    tpm: Ask | None
    done: bool = False


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


class Gateway:
    def __init__(self, accounts: Accounts, backends: dict[str, Backend], limiter: Limiter,
                 metrics: Metrics, *, db_threads: int = 8):
        self.accounts = accounts
        self.backends = backends
        self.limiter = limiter
        self.metrics = metrics
        # Reads are few (authentication misses, readiness, admin): a small pool. Together
        # with the writers they stay within SQLAlchemy's default 15 pooled connections.
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="persea-db")
        # SQLite has one writer at a time (and colliding writers sleep in growing steps):
        # one writer thread. On PostgreSQL a few, so one batch gathers while another commits.
        sqlite = accounts.engine.dialect.name == "sqlite"
        self.writer = GroupWriter(lambda: self.accounts.engine,
                                  workers=1 if sqlite else db_threads,
                                  refusals=(AccountsError,))
        file_db = sqlite and accounts.engine.url.database not in (None, "", ":memory:")
        self._checkpointer = WalCheckpointer(accounts.engine) if file_db else None
        self._settling: set[asyncio.Task] = set()

    async def db(self, fn, *args, write: bool = False):
        """Run a synchronous Accounts call on a pool (`write`: alone on the writer, between
        batches); its refusals become API errors."""
        if write:
            return await self._answer(self.writer.call(fn, *args))
        return await self._answer(
            asyncio.get_running_loop().run_in_executor(self._pool, fn, *args))

    async def write(self, make_op, *args, key: str, urgent: bool = True):
        """Build an Accounts op (`make_op(*args)`: bad arguments are refused here) and await
        it through the group-commit writer; `key` orders locks inside a batch (the org)."""
        try:
            op = make_op(*args)
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

    async def drain(self) -> None:
        """Wait for every settle still running (at shutdown, so no usage is lost)."""
        while self._settling:
            await asyncio.gather(*list(self._settling), return_exceptions=True)

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

    async def admit(self, caller: Caller, req: AnyRequest, prompt: Prompt,
                    prompt_param: str, id_prefix: str) -> Admission:
        unsupported = refuse_unsupported(req)
        if unsupported:
            raise bad_request(unsupported[1], unsupported[0], "unsupported")
        backend = self.backend_for(caller, req.model)
        if not backend.ready:
            raise ApiError(503, f"model {req.model} is still loading", code="model_not_ready")
        size = len(prompt.text) + sum(len(c) for _, c in prompt.messages)
        if size > INLINE_TOKENIZE_CHARS:  # a long prompt would hold up every other request
            prepared = await asyncio.to_thread(backend.prepare, prompt)
        else:
            prepared = backend.prepare(prompt)
        max_tokens = bound_max_tokens(req, prepared, prompt_param)
        sampling = sampling_for(caller, req, max_tokens)
        worst = max_tokens * sampling.n
        tpm = await self._limit(caller, prepared.prompt_tokens + worst)
        request_id = f"{id_prefix}-{secrets.token_hex(12)}"
        try:
            reservation = await self.write(self.accounts.reserve_op, caller, req.model,
                                           prepared.prompt_tokens, worst, request_id,
                                           key=caller.org_id)
        except ApiError:
            if tpm is not None:  # refused (402): it will use none of the tokens it took
                await self.limiter.refund(tpm)
            raise
        return Admission(request_id, caller, req.model, backend, prepared, sampling,
                         reservation, tpm)

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
    async def complete(self, adm: Admission) -> Result:
        """The whole answer; settled (lazily) with its exact counts, or released when the
        backend fails or the caller goes away before it is given."""
        self.metrics.in_flight.labels(adm.model).inc()
        try:
            result = await adm.backend.complete(adm.prepared, adm.sampling)
        except BackendError as err:
            await self.release(adm)
            raise backend_refusal(err) from None
        except BaseException:
            await self.release(adm)  # cancelled (caller gone) or a bug: nothing was delivered
            raise
        finally:
            self.metrics.in_flight.labels(adm.model).dec()
        self.settle_soon(adm, result.prompt_tokens, result.completion_tokens)
        return result

    async def stream(self, adm: Admission) -> AsyncIterator[Piece | Charged]:
        """The answer piece by piece, then `Charged` once settled with the exact counts.
        A backend failure releases the reservation and raises the refusal (ApiError); a
        stream closed early (the caller went away) is charged for what it produced."""
        tally = _Tally(adm)
        self.metrics.in_flight.labels(adm.model).inc()
        finished = False
        try:
            try:
                async for item in adm.backend.stream(adm.prepared, adm.sampling):
                    if tally.add(item):
                        yield item
            except BackendError as err:
                await self.release(adm)
                raise backend_refusal(err) from None
            finished = True
            prompt_tokens, completion_tokens = tally.counts()
            await self.settle(adm, prompt_tokens, completion_tokens)
            yield Charged(prompt_tokens, completion_tokens)
        finally:
            self.metrics.in_flight.labels(adm.model).dec()
            if not finished and not adm.done:
                # The caller went away (or the task is torn down): charge what was produced.
                self.settle_now(adm, *tally.counts())

    # -- after the model --------------------------------------------------------------
    def settle_soon(self, adm: Admission, prompt_tokens: int, completion_tokens: int) -> None:
        """Settle without holding up the answer: the exact counts are known, so the caller
        gets its response while the usage record is written (the reservation already holds
        the worst case, so the budget can never be passed in between). The settle is lazy:
        it shares the commit of the next reserve, or commits on its own a few ms later.
        Shutdown waits for these (`drain`, then the writer's close); a crash in between
        leaves the reservation for `reconcile`."""
        task = asyncio.get_running_loop().create_task(
            self.settle(adm, prompt_tokens, completion_tokens, urgent=False))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def settle(self, adm: Admission, prompt_tokens: int, completion_tokens: int, *,
                     urgent: bool = True) -> None:
        if adm.done:
            return
        adm.done = True
        try:
            await self.write(self.accounts.settle_op, adm.reservation, prompt_tokens,
                             completion_tokens, key=adm.caller.org_id, urgent=urgent)
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
        try:
            future = self.writer.submit(
                self.accounts.settle_op(adm.reservation, prompt_tokens, completion_tokens),
                urgent=False, key=adm.caller.org_id)
        except Exception as err:  # noqa: BLE001
            log.error("settling %s failed: %s", adm.request_id, type(err).__name__)
            return
        # A task of its own (this one is being torn down) waits for the commit; `drain`
        # waits for it like for any other settle.
        task = asyncio.get_running_loop().create_task(self._settled_later(
            adm, asyncio.wrap_future(future), prompt_tokens, completion_tokens))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settled_later(self, adm: Admission, written, prompt_tokens: int,
                             completion_tokens: int) -> None:
        try:
            await written
        except Exception as err:  # noqa: BLE001 - reconcile frees it
            log.error("settling %s failed: %s", adm.request_id, type(err).__name__)
            return
        await self._after(adm, prompt_tokens, completion_tokens)

    async def release(self, adm: Admission) -> None:
        if adm.done:
            return
        adm.done = True
        self.metrics.backend_errors.labels(adm.model).inc()
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
