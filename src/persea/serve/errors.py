"""Every error the gateway answers, in the OpenAI shape, and nothing else.

`{"error": {"message", "type", "param", "code"}}` with the right status: the openai client
turns it into its own exception classes, so a caller sees `AuthenticationError`,
`RateLimitError`, ... as it would against OpenAI. Messages are written for the caller and
never carry a traceback, a key or a database URL: an unexpected exception is logged by type
only and answered with a fixed 500 message.

The library's refusals (`AccountsError`, `BackendError`) carry a `Kind`, not a status; `KINDS`
below is the one place a kind becomes an HTTP status and an OpenAI error type.
"""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from persea.errors import Kind
from persea.serve.wire import ErrorBody, ErrorResponse

log = logging.getLogger("persea.serve")

# kind -> (HTTP status, OpenAI error type)
KINDS: dict[Kind, tuple[int, str]] = {
    Kind.INVALID: (400, "invalid_request_error"),
    Kind.UNAUTHENTICATED: (401, "authentication_error"),
    Kind.BUDGET_EXHAUSTED: (402, "insufficient_quota"),
    Kind.FORBIDDEN: (403, "permission_error"),
    Kind.NOT_FOUND: (404, "not_found_error"),
    Kind.CONFLICT: (409, "invalid_request_error"),
    Kind.TOO_LARGE: (413, "invalid_request_error"),
    Kind.RATE_LIMITED: (429, "rate_limit_error"),
    Kind.INTERNAL: (500, "server_error"),
    Kind.UPSTREAM_FAILED: (502, "server_error"),
    Kind.UNAVAILABLE: (503, "server_error"),
}
# an error the gateway raises by status (a 405 from routing, say) gets the same type
_TYPES = {status: type_ for status, type_ in KINDS.values()}


class ApiError(Exception):
    """An error to answer in the OpenAI shape; `message` is shown to the caller as is."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 param: str | None = None, type: str | None = None,
                 headers: dict[str, str] | None = None, reason: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type or _TYPES.get(status, "invalid_request_error")
        self.headers = headers or {}
        self.reason = reason or code or self.type  # label for the rejections metric


def refusal(kind: Kind, message: str, *, code: str | None = None,
            reason: str | None = None) -> ApiError:
    """A library refusal of `kind` as the API answers it."""
    status, type_ = KINDS[kind]
    return ApiError(status, message, code=code, type=type_, reason=reason)


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None,
               type: str | None = None) -> bytes:
    return ErrorResponse(error=ErrorBody(
        message=message, type=type or _TYPES.get(status, "invalid_request_error"),
        param=param, code=code)).model_dump_json().encode()


def error_response(err: ApiError) -> Response:
    return Response(error_body(err.status, err.message, code=err.code, param=err.param,
                               type=err.type),
                    status_code=err.status, headers=err.headers, media_type="application/json")


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, code=code, param=param)


def _param(loc: tuple) -> str | None:
    """("body", "messages", 0, "role") -> "messages[0].role"."""
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p in ("str", "list[str]", "list[TextPart]", "function-after[_stop(), union]"):
            continue  # pydantic's union-branch labels say nothing to a caller
        else:
            out += ("." if out else "") + str(p)
    return out or None


def validation_error(exc) -> ApiError:
    """A validation failure (FastAPI's 422, or pydantic's own `ValidationError`) becomes a
    400 that names the first offending field and why."""
    errors = exc.errors()
    if not errors:
        return bad_request("the request is not valid")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return bad_request("the request body is not valid JSON", code="invalid_json")
    param = _param(tuple(first.get("loc", ())))
    kind = first.get("type", "")
    if kind == "missing":
        return bad_request(f"missing required field: {param}", param, code="missing_required")
    msg = first.get("msg", "invalid value").removeprefix("Value error, ")
    if kind in ("model_attributes_type", "model_type") and not param:
        return bad_request("the request body must be a JSON object", code="invalid_json")
    return bad_request(f"invalid value for {param}: {msg}" if param else msg, param)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if isinstance(exc.__cause__, BodyTooLarge):  # FastAPI wraps errors while reading
            return Response(_too_large(request.scope["persea.body_limit"]), status_code=413,
                            media_type="application/json")
        status = exc.status_code
        message = {404: f"no route {request.method} {request.url.path}",
                   405: f"method {request.method} is not allowed on {request.url.path}"
                   }.get(status, str(exc.detail))
        return error_response(ApiError(status, message, code="not_found" if status == 404
                                       else None))


class BodyTooLarge(Exception):
    pass


def _too_large(limit: int) -> bytes:
    return error_body(413, f"request body is larger than {limit} bytes",
                      code="request_too_large")


class EdgeMiddleware:
    """The outermost layer: a body-size limit, a last guard against tracebacks, and the
    one place each request's status and duration are observed (for metrics).

    A declared Content-Length over `body_limit` is refused with 413 before anything reads the
    body; a chunked body is counted as it arrives and refused once it passes the limit. Any
    exception that escapes the app is logged by its type only (its text may hold a secret)
    and answered with a fixed 500 in the OpenAI shape, so no traceback reaches a log or a
    caller.
    """

    def __init__(self, app, body_limit: int, observe=None):
        self.app = app
        self.limit = body_limit
        self.observe = observe  # observe(path, status, seconds) once the answer is sent

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500
        try:
            status = await self._call(scope, receive, send)
        finally:
            if self.observe is not None:
                self.observe(scope["path"], status, time.perf_counter() - start)

    async def _call(self, scope, receive, send) -> int:
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.limit:
                    await self._send(send, 413, _too_large(self.limit))
                    return 413
                break
        scope["persea.body_limit"] = self.limit
        seen = 0
        started = False
        status = 500

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge()
            return message

        async def tracked_send(message):
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if not started:
                await self._send(send, 413, _too_large(self.limit))
                return 413
        except Exception as exc:  # noqa: BLE001 - the one place that catches everything
            log.error("unexpected %s on %s %s", type(exc).__name__, scope.get("method"),
                      scope.get("path"))
            if not started:
                await self._send(send, 500, error_body(
                    500, "internal error in the gateway; the request was not charged",
                    code="internal_error"))
                return 500
        return status

    @staticmethod
    async def _send(send, status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
