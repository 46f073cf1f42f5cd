"""`POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`.

Each answer's `x-request-id` header is its id, the key of its usage record; its
`x-persea-model` header, like its `model` field, names the model that answered (for a
route, one of its models). Each handler
authenticates before it parses the body (an anonymous caller learns nothing
about the request format), validates it against the wire types (a 400 naming the field),
passes it through the gateway's checks and reservation (the model may start while the
reservation commits; the gateway withholds the answer until it is durable), then answers
whole or as server-sent events. Every answer carries `usage`; a stream carries it in a last chunk when the caller set
`stream_options.include_usage`. What is charged, and when, is the gateway's to decide
(persea.serve.gateway): the handlers here translate between the wire and the gateway.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from persea.serve.backends.base import Piece, Prompt
from persea.serve.errors import ApiError, error_body, validation_error
from persea.serve.gateway import Admission, Charged, Gateway
from persea.serve.wire import (AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk,
                               ChatCompletionRequest, ChoiceLogprobs, ChunkChoice, Completion,
                               CompletionChoice, CompletionLogprobs, CompletionRequest, Delta,
                               ModelCard, ModelList, TokenLogprob, TopLogprob, Usage)

router = APIRouter()

JSON = "application/json"
MODEL_HEADER = "x-persea-model"  # the model that answered


def _json(model, adm: Admission | None = None) -> Response:
    headers = {"x-request-id": adm.request_id, MODEL_HEADER: adm.model} if adm else None
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
    names += sorted(r for r in gw.router.routes if gw.may_use_route(caller, r))
    return _json(ModelList(data=[ModelCard(id=m) for m in names]))


@router.get("/v1/models/{model:path}")
async def get_model(model: str, request: Request):
    gw: Gateway = request.app.state.gateway
    caller = await gw.authenticate(request.headers.get("authorization"))
    if model in gw.router.routes and model not in gw.backends:
        gw.route_models(caller, model, gw.router.models(model))
    else:
        gw.backend_for(caller, model)
    return _json(ModelCard(id=model))


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    gw: Gateway = request.app.state.gateway
    caller, req = await _parse(request, gw, ChatCompletionRequest)
    prompt = Prompt("chat", tuple((m.role, m.text()) for m in req.messages))
    adm = await gw.admit(caller, req, prompt, "messages", "chatcmpl", overlap=True)
    if req.stream:
        return await _sse(_chat_events(gw, adm, req), adm)
    result = await gw.complete(adm)
    return _json(ChatCompletion(
        id=adm.request_id, model=adm.model, usage=Usage.of(result.prompt_tokens,
                                                           result.completion_tokens),
        choices=[ChatChoice(index=c.index, message=AssistantMessage(content=c.text),
                            finish_reason=c.finish_reason or "stop",
                            logprobs=_chat_logprobs(c.logprobs, adm))
                 for c in result.choices]), adm)


@router.post("/v1/completions")
async def completions(request: Request):
    gw: Gateway = request.app.state.gateway
    caller, req = await _parse(request, gw, CompletionRequest)
    adm = await gw.admit(caller, req, Prompt("text", text=req.prompt_text()), "prompt", "cmpl",
                         overlap=True)
    if req.stream:
        return await _sse(_completion_events(gw, adm, req), adm)
    result = await gw.complete(adm)
    return _json(Completion(
        id=adm.request_id, model=adm.model, usage=Usage.of(result.prompt_tokens,
                                                           result.completion_tokens),
        choices=[CompletionChoice(index=c.index, text=c.text,
                                  finish_reason=c.finish_reason or "stop",
                                  logprobs=_completion_logprobs(c.logprobs, adm))
                 for c in result.choices]), adm)


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


async def _sse(events, adm: Admission) -> StreamingResponse:
    """Waits for the first chunk before answering, so a backend that fails at once is a
    502 with an error body, not a 200 stream holding an error event (and a route's next
    model can still answer: the model header names the one that did)."""
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
                                      "x-request-id": adm.request_id,
                                      MODEL_HEADER: adm.model})


def _data(model) -> bytes:
    return b"data: " + model.model_dump_json().encode() + b"\n\n"


async def _metered(gw: Gateway, adm: Admission, make_chunk, make_usage_chunk):
    """The stream's body: the gateway's pieces become chunks, its final counts the usage
    chunk. A backend that fails before any chunk went out is an error status (see _sse);
    after, an error event ends the stream."""
    events = gw.stream(adm)
    sent = False
    try:
        async for item in events:
            if isinstance(item, Charged):
                usage_chunk = make_usage_chunk(Usage.of(item.prompt_tokens,
                                                        item.completion_tokens))
                if usage_chunk is not None:
                    yield usage_chunk
                yield b"data: [DONE]\n\n"
                continue
            chunk = make_chunk(item)
            if chunk is not None:
                sent = True
                yield chunk
    except ApiError as err:
        if not sent:
            raise
        yield b"data: " + error_body(err.status, err.message, code=err.code,
                                     type=err.type) + b"\n\n"
    finally:
        await events.aclose()  # the gateway charges what was produced if the caller left


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
