"""The gateway's app factory: FastAPI with the OpenAI routes, operations and admin.

`create_app` wires what it is given (an `Accounts`, the backends by served model name, a rate
limiter, a `Router` with the routes and their breakers) and owns their lifecycle: at startup
it starts the backends and calls `accounts.reconcile()` (a gateway killed mid-request left
reservations held); at shutdown it closes them. No route serves model files, and FastAPI's interactive docs are off: the
gateway's surface is the OpenAI API, `/healthz`, `/readyz`, `/metrics` and `/admin`.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.responses import Response

from persea.errors import PerseaError
from persea.accounts import Accounts, AccountsError
from persea.accounts.leases import LeaseBook
from persea.route.policy import Router
from persea.serve.backends.base import Backend
from persea.serve.errors import ApiError, EdgeMiddleware, error_response, \
    install_error_handlers
from persea.serve.gateway import Gateway, api_error
from persea.serve.limits import Limiter, MemoryLimiter
from persea.serve.metrics import Metrics
from persea.serve.routes import admin, ops
from persea.serve.routes import openai as openai_routes

log = logging.getLogger("persea.serve")

DEFAULT_BODY_LIMIT = 1 << 20  # 1 MiB: far above any prompt the context can hold
ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/healthz", "/readyz",
          "/metrics"}


def _route_label(path: str) -> str:
    """A bounded label: known routes as they are, the rest by family."""
    if path in ROUTES:
        return path
    if path.startswith("/admin/"):
        return "/admin"
    if path.startswith("/v1/models/"):
        return "/v1/models/{model}"
    return "other"


class GatewayApp(FastAPI):
    """FastAPI, with the generation endpoints (`POST /v1/chat/completions` and
    `POST /v1/completions`) taken straight to their handlers.

    Those two carry nearly every request, and the framework's path to them (its middleware
    stack, route matching by pattern, the dependency solver and per-layer exception
    wrappers) costs more than their own checks do. Here the edge (`EdgeMiddleware`: body
    limit, the guard against tracebacks, metrics) wraps the handler directly, and an
    exception is answered by the same handlers that FastAPI uses for the other routes
    (`answer`), so the wire, the errors and the metrics are the same either way; the tests
    of every refusal run through this path. Everything else (other methods on these paths
    included) goes through FastAPI as before."""

    direct: dict = {}  # path -> handler(request) -> Response, for POST
    answer = None  # (exception) -> Response | None: the app's error handlers
    edge = None  # the edge around the direct path

    def go_direct(self, direct: dict, answer, edge) -> None:
        self.direct, self.answer, self.edge = direct, answer, edge

    async def __call__(self, scope, receive, send) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"] in self.direct):
            scope["app"] = self
            await self.edge(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def _direct(self, scope, receive, send) -> None:
        request = Request(scope, receive)
        try:
            response = await self.direct[scope["path"]](request)
        except Exception as exc:  # noqa: BLE001 - answered as FastAPI would, or raised on
            response = self.answer(exc)
            if response is None:
                raise
        await response(scope, receive, send)


async def _retire_leases(gateway: Gateway) -> None:
    """Give back the room of budget leases past their time, also for organisations that
    stopped sending requests."""
    while True:
        await asyncio.sleep(gateway.leases.seconds)
        gateway.retire_leases()


def create_app(accounts: Accounts, backends: dict[str, Backend], *,
               limiter: Limiter | None = None, admin_token: str | None = None,
               body_limit: int = DEFAULT_BODY_LIMIT, db_threads: int = 8,
               reconcile: bool = True, router: Router | None = None,
               overlap: bool = True, lease_requests: int = 0) -> FastAPI:
    """`overlap`: let the model start while the reservation commits (the answer still waits
    for it: persea.serve.gateway); False waits for the commit first. `lease_requests`:
    reserve in memory out of budget leases of that many requests (persea.accounts.leases);
    0: every request commits its own reserve."""
    metrics = Metrics()
    limiter = limiter or MemoryLimiter()
    leases = LeaseBook(accounts, requests=lease_requests) if lease_requests > 0 else None
    gateway = Gateway(accounts, backends, limiter, metrics, db_threads=db_threads,
                      router=router, overlap=overlap, leases=leases)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for backend in backends.values():
            await backend.start()
        if reconcile:
            try:
                freed = await gateway.db(accounts.reconcile, write=True)
            except Exception as err:  # noqa: BLE001 - by type: the text may hold the URL
                log.error("reconcile at start failed (%s); /readyz shows whether the "
                          "database answers", type(err).__name__)
            else:
                if freed:
                    log.warning("released %d reservations left by an earlier gateway", freed)
        retiring = asyncio.create_task(_retire_leases(gateway)) if leases else None
        try:
            yield
        finally:
            if retiring is not None:
                retiring.cancel()
            await gateway.drain()
            gateway.retire_leases(everything=True)  # the writer applies these as it closes
            for backend in backends.values():
                await backend.aclose()
            await limiter.aclose()
            await gateway.router.aclose()
            gateway.close()

    app = GatewayApp(title="persea gateway", lifespan=lifespan, docs_url=None, redoc_url=None,
                     openapi_url=None)
    app.state.gateway = gateway
    app.state.admin_token = admin_token
    install_error_handlers(app)

    def answer(exc: Exception) -> Response | None:
        """The answer to an exception a handler raised (None: not one of ours)."""
        if isinstance(exc, AccountsError):
            exc = api_error(exc)
        elif isinstance(exc, PerseaError):
            exc = ApiError(400, exc.message)
        elif not isinstance(exc, ApiError):
            return None
        if exc.status < 500:
            metrics.rejections.labels(exc.reason).inc()
        return error_response(exc)

    async def handler(request: Request, exc: Exception) -> Response:
        return answer(exc)

    for kind in (ApiError, AccountsError, PerseaError):
        app.add_exception_handler(kind, handler)

    app.include_router(openai_routes.router)
    app.include_router(ops.router)
    app.include_router(admin.router)

    def observe(path: str, status: int, seconds: float) -> None:
        metrics.observe(_route_label(path), status, seconds)

    app.add_middleware(EdgeMiddleware, body_limit=body_limit, observe=observe)
    app.go_direct({"/v1/chat/completions": openai_routes.chat_completions,
                   "/v1/completions": openai_routes.completions}, answer,
                  EdgeMiddleware(app._direct, body_limit=body_limit, observe=observe))
    return app

