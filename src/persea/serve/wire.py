"""The OpenAI wire format, in one place: what clients send and what the gateway answers.

Requests are Pydantic models with every bound the gateway enforces written on the field, so a
bad value is refused with a 400 naming the field before any work or money is spent. Fields
that the OpenAI API has but persea does not support are refused rather than silently ignored
(`extra="forbid"` is too strict for real clients, which send vendor fields; instead the few
fields with a meaning we cannot honour are listed and checked in `refuse_unsupported`).

Numbers and flags are strict, as OpenAI's are: `n: "2"`, `best_of: false` or
`stream: "true"` is a 400 naming the field, never coerced. An integer is still a valid
float (`temperature: 1`), as it is for OpenAI.

Responses are plain Pydantic models too; the streaming chunk is a separate type because its
`choices[].delta` differs from a full message.
"""

from __future__ import annotations

import time
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, \
    field_validator

# Bounds a client can ask for. The model's own context length bounds max_tokens further.
MAX_N = 8
MAX_STOP = 4
MAX_STOP_CHARS = 64
MAX_TOKENS_CAP = 4096
MAX_MESSAGES = 256
MAX_TOP_LOGPROBS = 20
SEED_RANGE = 2**63


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: str = Field(min_length=1, max_length=256)
    max_tokens: StrictInt | None = Field(default=None, ge=1, le=MAX_TOKENS_CAP)
    n: StrictInt = Field(default=1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    temperature: StrictFloat | None = Field(default=None, ge=0.0, le=2.0)
    top_p: StrictFloat | None = Field(default=None, gt=0.0, le=1.0)
    seed: StrictInt | None = Field(default=None, ge=-SEED_RANGE, lt=SEED_RANGE)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, StrictFloat] | None = None
    user: str | None = Field(default=None, max_length=256)

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        if v is None:
            return None
        stops = [v] if isinstance(v, str) else list(v)
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        for s in stops:
            if not s or len(s) > MAX_STOP_CHARS:
                raise ValueError(f"each stop sequence must be 1 to {MAX_STOP_CHARS} characters")
        return stops

    def stops(self) -> list[str]:
        return list(self.stop or [])

    def include_usage_chunk(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1, le=MAX_TOKENS_CAP)
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def wants_logprobs(self) -> tuple[bool, int]:
        return self.logprobs or bool(self.top_logprobs), self.top_logprobs or 0


class CompletionRequest(_Request):
    prompt: str | list[str] = Field(min_length=1)
    logprobs: StrictInt | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: StrictBool = False
    suffix: str | None = None
    best_of: StrictInt | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v):
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("exactly one prompt per request (send several requests to batch)")
        return v

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def wants_logprobs(self) -> tuple[bool, int]:
        return self.logprobs is not None, self.logprobs or 0


AnyRequest = Union[ChatCompletionRequest, CompletionRequest]

# Fields OpenAI defines whose meaning persea does not implement: refused, never ignored.
UNSUPPORTED = {
    "tools": "tool calling is not supported",
    "tool_choice": "tool calling is not supported",
    "functions": "function calling is not supported",
    "function_call": "function calling is not supported",
    "response_format": "structured output is not supported",
    "presence_penalty": "presence_penalty is not supported",
    "frequency_penalty": "frequency_penalty is not supported",
    "echo": "echo is not supported",
    "suffix": "suffix is not supported",
    "best_of": "best_of is not supported",
}


def refuse_unsupported(req: AnyRequest) -> tuple[str, str] | None:
    """(field, why) for the first set field whose meaning persea cannot honour, else None."""
    extra = req.model_extra or {}
    declared = type(req).model_fields  # a missing attribute costs pydantic an exception
    for name, why in UNSUPPORTED.items():
        if name in extra:
            value = extra[name]
        elif name in declared:
            value = getattr(req, name)
        else:
            continue
        if value in (None, False, 0, 0.0, [], {}):
            continue
        return name, why
    return None


# -- responses ---------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt: int, completion: int) -> "Usage":
        return cls(prompt_tokens=prompt, completion_tokens=completion,
                   total_tokens=prompt + completion)


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = []


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


FinishReason = Literal["stop", "length"]


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason | None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None = None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: FinishReason | None
    logprobs: CompletionLogprobs | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "persea"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody

