"""`POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`.

Each answer's `x-request-id` header is its id, the key of its usage record. Each handler
authenticates before it parses the body (an anonymous caller learns nothing
about the request format), validates it against the wire types (a 400 naming the field),
passes it through the gateway's checks and reservation, then answers whole or as server-sent
events. Every answer carries `usage`; a stream carries it in a last chunk when the caller set
`stream_options.include_usage`, and is charged for what it produced even when the caller
goes away before the end.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from persea.serve.backends.base import BackendError, Piece, Prompt, Reported, Result
from persea.serve.errors import error_body, refusal, validation_error
from persea.serve.gateway import Admission, Gateway
from persea.serve.wire import (AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk,
                               ChatCompletionRequest, ChoiceLogprobs, ChunkChoice, Completion,
                               CompletionChoice, CompletionLogprobs, CompletionRequest, Delta,
                               ModelCard, ModelList, TokenLogprob, TopLogprob, Usage)

router = APIRouter()

JSON = "application/json"


def _json(model, request_id: str | None = None) -> Response:
    headers = {"x-request-id": request_id} if request_id else None
    return Response(model.model_dump_json(exclude_none=False), media_type=JSON,
                    headers=headers)


async def _parse(request: Request, gw: Gateway, kind):
    caller = await gw.authenticate(request.headers.get("authorization"))
    body = await request.body()
    try:
        req = kind.model_validate_json(body)
    except ValidationError as err:
        raise validation_error(err) from None
    return caller, req


@router.get("/v1/models")
async def list_models(request: Request):
    gw: Gateway = request.app.state.gateway
    caller = await gw.authenticate(request.headers.get("authorization"))
    names = [m for m in gw.accounts.models_for(caller) if m in gw.backends]
    return _json(ModelList(data=[ModelCard(id=m) for m in names]))


@router.get("/v1/models/{model:path}")
async def get_model(model: str, request: Request):
    gw: Gateway = request.app.state.gateway
    caller = await gw.authenticate(request.headers.get("authorization"))
    gw.backend_for(caller, model)
    return _json(ModelCard(id=model))


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    gw: Gateway = request.app.state.gateway
    caller, req = await _parse(request, gw, ChatCompletionRequest)
    prompt = Prompt("chat", tuple((m.role, m.text()) for m in req.messages))
    adm = await gw.admit(caller, req, prompt, "messages", "chatcmpl")
    if req.stream:
        return await _sse(_chat_events(gw, adm, req), adm.request_id)
    result = await _complete(gw, adm)
    return _json(ChatCompletion(
        id=adm.request_id, model=adm.model, usage=Usage.of(result.prompt_tokens,
                                                           result.completion_tokens),
        choices=[ChatChoice(index=c.index, message=AssistantMessage(content=c.text),
                            finish_reason=c.finish_reason or "stop",
                            logprobs=_chat_logprobs(c.logprobs, adm))
                 for c in result.choices]), adm.request_id)


@router.post("/v1/completions")
async def completions(request: Request):
    gw: Gateway = request.app.state.gateway
    caller, req = await _parse(request, gw, CompletionRequest)
    adm = await gw.admit(caller, req, Prompt("text", text=req.prompt_text()), "prompt", "cmpl")
    if req.stream:
        return await _sse(_completion_events(gw, adm, req), adm.request_id)
    result = await _complete(gw, adm)
    return _json(Completion(
        id=adm.request_id, model=adm.model, usage=Usage.of(result.prompt_tokens,
                                                           result.completion_tokens),
        choices=[CompletionChoice(index=c.index, text=c.text,
                                  finish_reason=c.finish_reason or "stop",
                                  logprobs=_completion_logprobs(c.logprobs, adm))
                 for c in result.choices]), adm.request_id)


async def _complete(gw: Gateway, adm: Admission) -> Result:
    gw.metrics.in_flight.labels(adm.model).inc()
    try:
        result = await adm.backend.complete(adm.prepared, adm.sampling)
    except BackendError as err:
        await gw.release(adm)
        raise refusal(err.kind, f"{err.message}; you were not charged",
                      code="backend_error", reason="backend_error") from None
    except BaseException:
        await gw.release(adm)  # cancelled (caller gone) or a bug: nothing was delivered
        raise
    finally:
        gw.metrics.in_flight.labels(adm.model).dec()
    gw.settle_soon(adm, result.prompt_tokens, result.completion_tokens)
    return result


# -- logprobs in both wire shapes -------------------------------------------------------


def _chat_logprobs(lps, adm: Admission) -> ChoiceLogprobs | None:
    if adm.sampling.top_logprobs is None:
        return None
    lps = lps or []
    return ChoiceLogprobs(content=[
        TokenLogprob(token=t.token, logprob=t.logprob, bytes=list(t.token.encode()),
                     top_logprobs=[TopLogprob(token=s, logprob=v, bytes=list(s.encode()))
                                   for s, v in t.top[:adm.sampling.top_logprobs]])
        for t in lps])


def _completion_logprobs(lps, adm: Admission, offset: int = 0) -> CompletionLogprobs | None:
    if adm.sampling.top_logprobs is None:
        return None
    lps = lps or []
    offsets = []
    for t in lps:
        offsets.append(offset)
        offset += len(t.token)
    return CompletionLogprobs(
        tokens=[t.token for t in lps], token_logprobs=[t.logprob for t in lps],
        top_logprobs=[dict(t.top[:adm.sampling.top_logprobs]) for t in lps]
        if adm.sampling.top_logprobs else None, text_offset=offsets)


# -- streaming ---------------------------------------------------------------------------


async def _sse(events, request_id: str) -> StreamingResponse:
    """Waits for the first chunk before answering, so a backend that fails at once is a
    502 with an error body, not a 200 stream holding an error event."""
    try:
        first = await events.__anext__()
    except StopAsyncIteration:
        first = None

    async def body():
        try:
            if first is not None:
                yield first
            async for chunk in events:
                yield chunk
        finally:
            await events.aclose()  # runs the metering's `finally` now, not at collection

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                      "x-request-id": request_id})


def _data(model) -> bytes:
    return b"data: " + model.model_dump_json().encode() + b"\n\n"


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


async def _metered(gw: Gateway, adm: Admission, make_chunk, make_usage_chunk):
    """The stream's body: pieces become chunks; settles on every way out."""
    tally = _Tally(adm)
    gw.metrics.in_flight.labels(adm.model).inc()
    finished = False
    sent = False
    try:
        try:
            async for item in adm.backend.stream(adm.prepared, adm.sampling):
                if tally.add(item):
                    chunk = make_chunk(item)
                    if chunk is not None:
                        sent = True
                        yield chunk
        except BackendError as err:
            await gw.release(adm)
            error = refusal(err.kind, f"{err.message}; you were not charged",
                            code="backend_error", reason="backend_error")
            if not sent:  # nothing answered yet: a proper error status (see _sse)
                raise error from None
            yield b"data: " + error_body(error.status, error.message, code=error.code,
                                         type=error.type) + b"\n\n"
            return
        finished = True
        prompt_tokens, completion_tokens = tally.counts()
        await gw.settle(adm, prompt_tokens, completion_tokens)
        usage_chunk = make_usage_chunk(Usage.of(prompt_tokens, completion_tokens))
        if usage_chunk is not None:
            yield usage_chunk
        yield b"data: [DONE]\n\n"
    finally:
        gw.metrics.in_flight.labels(adm.model).dec()
        if not finished and not adm.done:
            # The caller went away (or the task is torn down): charge what was produced.
            gw.settle_now(adm, *tally.counts())


def _chat_events(gw: Gateway, adm: Admission, req: ChatCompletionRequest):
    created = int(time.time())
    started: set[int] = set()

    def chunk(choices, usage=None) -> bytes:
        return _data(ChatCompletionChunk(id=adm.request_id, created=created, model=adm.model,
                                         choices=choices, usage=usage))

    def make_chunk(p: Piece) -> bytes | None:
        out = b""
        if p.index not in started:
            started.add(p.index)
            out += chunk([ChunkChoice(index=p.index, delta=Delta(role="assistant",
                                                                 content=""))])
        if p.text or p.finish_reason or p.logprobs:
            out += chunk([ChunkChoice(index=p.index, delta=Delta(content=p.text or None),
                                      finish_reason=p.finish_reason,
                                      logprobs=_chat_logprobs(p.logprobs, adm))])
        return out or None

    def make_usage(usage: Usage) -> bytes | None:
        return chunk([], usage) if req.include_usage_chunk() else None

    return _metered(gw, adm, make_chunk, make_usage)


def _completion_events(gw: Gateway, adm: Admission, req: CompletionRequest):
    created = int(time.time())
    offsets: dict[int, int] = {}

    def chunk(choices, usage=None) -> bytes:
        return _data(Completion(id=adm.request_id, created=created, model=adm.model,
                                choices=choices, usage=usage))

    def make_chunk(p: Piece) -> bytes | None:
        if not (p.text or p.finish_reason or p.logprobs):
            return None
        at = offsets.get(p.index, 0)
        offsets[p.index] = at + len(p.text)
        return chunk([CompletionChoice(index=p.index, text=p.text,
                                       finish_reason=p.finish_reason,
                                       logprobs=_completion_logprobs(p.logprobs, adm, at))])

    def make_usage(usage: Usage) -> bytes | None:
        return chunk([], usage) if req.include_usage_chunk() else None

    return _metered(gw, adm, make_chunk, make_usage)
