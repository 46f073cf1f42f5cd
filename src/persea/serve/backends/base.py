"""What the gateway needs from a backend, whatever runs the model.

A backend is asked two things per request: `prepare` (cheap, in the request path: count the
prompt's tokens so the reservation is right, and say how many new tokens fit) and then
`stream` (an async iterator of `Piece`s, one per step of one choice, ending with an optional
`Reported` usage from the backend itself). `complete` is the non-streaming form; by default it
collects the stream. Token counts travel with every piece, so a stream cut short by a client
that went away is still charged exactly for what was produced before that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator, Literal, Protocol

from persea.errors import Kind


class BackendError(Exception):
    """The backend could not answer; the message is safe to show a caller. `kind` says
    whose fault: a model server behind us (`upstream_failed`) or our own model (`internal`).
    `status` is the upstream's HTTP status when it answered one (None: no answer at all, a
    timeout, or our own model failed)."""

    def __init__(self, message: str, kind: Kind = Kind.UPSTREAM_FAILED,
                 status: int | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status

    @property
    def retryable(self) -> bool:
        """Another model may well answer: no answer at all (connection refused or reset, a
        timeout), a server error (5xx) or a refusal to take more now (429). Any other status
        says the request itself was refused, and another model would refuse it too."""
        return self.status is None or self.status == 429 or self.status >= 500


@dataclass(frozen=True)
class Prompt:
    """A chat (`messages`: role/content dicts) or a plain text completion (`text`)."""

    kind: Literal["chat", "text"]
    messages: tuple[tuple[str, str], ...] = ()
    text: str = ""


@dataclass(frozen=True)
class Sampling:
    """The generation settings of one request, already validated and bounded."""

    max_tokens: int
    n: int = 1
    stop: tuple[str, ...] = ()
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    top_logprobs: int | None = None  # None: no logprobs at all; 0: the chosen token's only


@dataclass
class Prepared:
    """A prompt made ready for one backend: its token count and how much room is left."""

    prompt: Prompt
    prompt_tokens: int
    max_new_tokens: int | None  # context room after the prompt; None = the backend decides
    payload: object = None      # backend-specific (token ids, ...)


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Piece:
    """New text for choice `index`, produced by `tokens` new tokens (text may be empty while
    a multi-byte character or a possible stop sequence is held back)."""

    index: int
    text: str
    tokens: int
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None


@dataclass
class Reported:
    """Usage as the backend itself counted it (an upstream server's `usage`)."""

    prompt_tokens: int
    completion_tokens: int


@dataclass
class Choice:
    index: int
    text: str = ""
    finish_reason: str | None = None
    tokens: int = 0
    logprobs: list[TokenLogprob] | None = None


@dataclass
class Result:
    choices: list[Choice]
    prompt_tokens: int
    completion_tokens: int


class Backend(Protocol):
    name: str          # the model name clients ask for
    ready: bool

    def prepare(self, prompt: Prompt) -> Prepared: ...

    def stream(self, prepared: Prepared, sampling: Sampling) -> AsyncIterator[Piece | Reported]:
        ...

    async def complete(self, prepared: Prepared, sampling: Sampling) -> Result: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


async def collect(pieces: AsyncIterator[Piece | Reported], prepared: Prepared, n: int) -> Result:
    """Gathers a stream into whole choices; a backend's own usage report wins if present."""
    choices = [Choice(index=i) for i in range(n)]
    reported: Reported | None = None
    async for p in pieces:
        if isinstance(p, Reported):
            reported = p
            continue
        c = choices[p.index]
        c.text += p.text
        c.tokens += p.tokens
        if p.finish_reason:
            c.finish_reason = p.finish_reason
        if p.logprobs is not None:
            c.logprobs = (c.logprobs or []) + p.logprobs
    completion = sum(c.tokens for c in choices)
    prompt_tokens = prepared.prompt_tokens
    if reported is not None:
        prompt_tokens, completion = reported.prompt_tokens, reported.completion_tokens
    return Result(choices=choices, prompt_tokens=prompt_tokens, completion_tokens=completion)
