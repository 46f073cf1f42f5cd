"""What a request may ask of the model: the new tokens its context leaves room for, and the
sampling settings its plan allows (logprobs only where the plan sells them, capped)."""

from __future__ import annotations

from persea.accounts import Caller
from persea.serve.backends.base import Prepared, Sampling
from persea.serve.errors import ApiError, bad_request
from persea.serve.wire import AnyRequest

DEFAULT_MAX_TOKENS = 256  # when a request names none (bounded by the context room too)


def sampling_for(caller: Caller, req: AnyRequest, max_tokens: int) -> Sampling:
    """The request's sampling settings; logit_bias is refused, and logprobs unless the plan
    allows them (then capped at its `max_top_logprobs`)."""
    wants, k = req.wants_logprobs()
    if req.logit_bias:
        if wants:
            raise ApiError(403, "logit_bias together with logprobs is refused: the two "
                           "together would reveal the model's distribution",
                           code="logprobs_not_allowed", param="logit_bias")
        raise bad_request("logit_bias is not supported", "logit_bias", "unsupported")
    top = None
    if wants:
        plan = caller.plan
        if not plan.allow_logprobs:
            raise ApiError(403, "logprobs are not available on your plan: the weights and "
                           "the model's distribution stay closed",
                           code="logprobs_not_allowed", param="logprobs")
        top = min(k, plan.max_top_logprobs)  # capped at what the plan allows
    return Sampling(max_tokens=max_tokens, n=req.n, stop=tuple(req.stops()),
                    temperature=1.0 if req.temperature is None else req.temperature,
                    top_p=1.0 if req.top_p is None else req.top_p, seed=req.seed,
                    top_logprobs=top)


def bound_max_tokens(req: AnyRequest, prepared: Prepared, prompt_param: str) -> int:
    """The request's max_tokens (default DEFAULT_MAX_TOKENS), refused when the prompt leaves
    the context less room than that."""
    asked = req.requested_max_tokens()
    room = prepared.max_new_tokens
    if room is not None and room <= 0:
        raise bad_request(f"the prompt is {prepared.prompt_tokens} tokens: it fills the "
                          "model's context, leaving no room for an answer", prompt_param,
                          "context_length_exceeded")
    if asked is None:
        return min(DEFAULT_MAX_TOKENS, room) if room is not None else DEFAULT_MAX_TOKENS
    if room is not None and asked > room:
        param = "max_completion_tokens" if getattr(req, "max_completion_tokens", None) \
            else "max_tokens"
        raise bad_request(f"{param} is {asked} but the prompt is {prepared.prompt_tokens} "
                          f"tokens and the model's context leaves room for {room}", param,
                          "context_length_exceeded")
    return asked
