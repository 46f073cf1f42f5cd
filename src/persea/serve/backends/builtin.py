"""The built-in backend: persea's own model layer, with concurrent requests batched.

Requests wait in an asyncio queue; one worker takes whatever arrived within a few
milliseconds of the first (up to `max_batch` rows, and only rows whose prompt plus new tokens
fit the context together) and runs ONE `generate` for all of them in a worker thread, so a
hundred concurrent callers cost a handful of batched generates, not a hundred serial ones.

Sampling is per row, not per batch: a logits processor draws each row's next token with that
row's temperature, top-p and its own seeded `torch.Generator`, then leaves only that token
for transformers' greedy step. So a request with a seed gets the same answer whichever other
requests share its batch (up to float rounding of padding), and `n` choices are `n` rows with
seeds derived from the request's. A stopping criterion sees each new token: it streams the
decoded text out, ends a row at its end-of-turn token, its own `max_tokens`, a stop sequence,
or when its caller went away.

One request never fails its batch neighbours. Sampling is safe for any value the wire
accepts (a temperature too small to divide by is greedy, top-p keeps at least one token,
NaN and infinite logits are tamed), and a row whose draw still fails ends alone with an
error. If the batched `generate` itself raises, each request that has not yet received a
token is run again on its own, so only the one that fails alone gets the error (a 502).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from pathlib import Path
from typing import AsyncIterator

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, \
    StoppingCriteriaList

from persea.errors import Kind, PerseaError
from persea.models.builtin import builtin_models
from persea.models.sources import load_hf_dir
from persea.serve.backends.base import BackendError, Piece, Prepared, Prompt, Reported, \
    Result, Sampling, TokenLogprob, collect

log = logging.getLogger("persea.serve")

# Temperatures below this are greedy: dividing float32 logits by them overflows, and the
# distribution they ask for is the argmax anyway.
GREEDY_BELOW = 1e-5

_END = object()  # sentinel on a job's queue: no more pieces


class _Row:
    """One choice being generated: its sampling state, its tokens and what was sent."""

    def __init__(self, job: "_Job", index: int, sampling: Sampling):
        self.job = job
        self.index = index
        self.s = sampling
        self.gen = None
        if sampling.temperature >= GREEDY_BELOW:
            self.gen = torch.Generator()
            seed = sampling.seed if sampling.seed is not None else secrets.randbits(63)
            self.gen.manual_seed((seed + 1_000_003 * index) % 2**63)
        self.tokens: list[int] = []
        self.sent = 0  # characters of the decoded text already streamed
        self.done = False
        self.failed = False  # its draw raised: the row ended early, its request fails
        self.pending: TokenLogprob | None = None


class _Job:
    """One request: its prompt ids, its rows, and the queue its pieces go to."""

    def __init__(self, ids: list[int], sampling: Sampling, loop: asyncio.AbstractEventLoop):
        self.ids = ids
        self.sampling = sampling
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.rows = [_Row(self, i, sampling) for i in range(sampling.n)]
        self.cancelled = False
        self.open_rows = sampling.n
        self.delivered = False  # a piece went out: the job can no longer be run again

    def put(self, item) -> None:
        if isinstance(item, Piece):
            self.delivered = True
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def restart(self) -> None:
        """Fresh rows (same seeds) for running the job again on its own."""
        self.rows = [_Row(self, i, self.sampling) for i in range(self.sampling.n)]
        self.open_rows = self.sampling.n


def draw(logits: torch.Tensor, s: Sampling, gen: torch.Generator | None) -> int:
    """One row's next token: greedy below `GREEDY_BELOW`, else temperature and top-p
    sampling. Safe for every temperature in [0, 2] and top-p in (0, 1]; raises only when
    the logits hold no finite value at all (a broken model)."""
    logits = torch.nan_to_num(logits, nan=float("-inf"), neginf=float("-inf"),
                              posinf=torch.finfo(logits.dtype).max)
    if not torch.isfinite(logits).any():
        raise ValueError("the model gave no finite logit")
    if s.temperature < GREEDY_BELOW or gen is None:
        return int(logits.argmax())
    probs = ((logits - logits.max()) / s.temperature).softmax(-1)  # <= 0 before exp: no inf
    if s.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < s.top_p
        keep[0] = True  # a top-p below the first token's float32 precision keeps that token
        filtered = torch.zeros_like(probs)
        filtered[order[keep]] = probs[order[keep]]
        probs = filtered
    return int(torch.multinomial(probs, 1, generator=gen))


class _Sampler(LogitsProcessor):
    """Draws each row's token with its own settings, then masks everything else."""

    def __init__(self, rows: list[_Row]):
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor):
        scores = scores.float()
        out = torch.full_like(scores, float("-inf"))
        for b, row in enumerate(self.rows):
            if row.done:
                out[b, 0] = 0.0
                continue
            logits = scores[b]
            try:
                token = draw(logits, row.s, row.gen)
            except Exception as err:  # noqa: BLE001 - this row fails, its neighbours go on
                log.error("sampling a row failed: %s", type(err).__name__)
                row.failed = row.done = True
                out[b, 0] = 0.0
                continue
            if row.s.top_logprobs is not None:
                logp = torch.nan_to_num(logits, nan=float("-inf")).log_softmax(-1)
                top = []
                if row.s.top_logprobs:
                    vals, idx = logp.topk(min(row.s.top_logprobs, logp.shape[-1]))
                    top = [(int(i), float(v)) for i, v in zip(idx, vals)]
                row.pending = TokenLogprob(token=str(token), logprob=float(logp[token]),
                                           top=top)  # ids for now; decoded by the stopper
            out[b, token] = 0.0
        return out


class _Stopper(StoppingCriteria):
    """Sees each new token: streams text out and says which rows are finished."""

    def __init__(self, rows: list[_Row], backend: "BuiltinBackend"):
        self.rows = rows
        self.backend = backend

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        last = input_ids[:, -1].tolist()
        done = torch.zeros(len(self.rows), dtype=torch.bool, device=input_ids.device)
        for b, row in enumerate(self.rows):
            if not row.done:
                self.backend._step(row, last[b])
            done[b] = row.done
        return done


class BuiltinBackend:
    """Serves one `HFModel` (persea.models) under the name clients ask for."""

    def __init__(self, name: str, model, *, batch_window_ms: float = 5.0, max_batch: int = 32,
                 torch_threads: int | None = None):
        if torch_threads is not None:
            # Process-wide. On a busy machine torch's worker threads wait on each other:
            # the toy model took 0.06 s for 30 tokens on one thread and 0.3-10 s on two.
            torch.set_num_threads(torch_threads)
        self.name = name
        self.hf = model
        self.tok = model.tokenizer
        self.context = int(getattr(model.model.config, "max_position_embeddings", 2048))
        self.window = batch_window_ms / 1000
        self.max_batch = max_batch
        self.ready = True
        # What the batching did, for tests and operators: counters, and the rows of the
        # latest generate calls (bounded: a server runs for months).
        self.generate_calls = 0
        self.rows_generated = 0
        self.recent_batches: deque[int] = deque(maxlen=256)
        self.tokens_generated = 0  # every token any row drew, delivered or not
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    # -- prompts ---------------------------------------------------------------------
    def prompt_ids(self, prompt: Prompt) -> list[int]:
        tok = self.tok
        if prompt.kind == "text":
            return tok(prompt.text, add_special_tokens=True)["input_ids"]
        messages = [{"role": "system" if r == "developer" else r, "content": c}
                    for r, c in prompt.messages]
        if self.hf.use_chat_template:
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return tok(text, add_special_tokens=False)["input_ids"]
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return tok(text, add_special_tokens=True)["input_ids"]

    def prepare(self, prompt: Prompt) -> Prepared:
        ids = self.prompt_ids(prompt)
        return Prepared(prompt=prompt, prompt_tokens=len(ids),
                        max_new_tokens=max(0, self.context - len(ids)), payload=ids)

    # -- the batching worker ---------------------------------------------------------
    async def start(self) -> None:
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(), name=f"batcher:{self.name}")

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
            self._worker = None

    def _fits(self, batch: list[_Job], job: _Job) -> bool:
        rows = sum(j.sampling.n for j in batch) + job.sampling.n
        width = max(len(j.ids) for j in [*batch, job])
        new = max(j.sampling.max_tokens for j in [*batch, job])
        return rows <= self.max_batch and width + new <= self.context

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        carry: _Job | None = None
        while True:
            job = carry or await self._queue.get()
            carry = None
            batch = [job]
            deadline = loop.time() + self.window
            while True:
                try:
                    nxt = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(self._queue.get(), left)
                    except TimeoutError:
                        break
                if self._fits(batch, nxt):
                    batch.append(nxt)
                else:
                    carry = nxt
                    break
            for j in batch:
                if j.cancelled:
                    j.put(_END)
            batch = [j for j in batch if not j.cancelled]
            if batch:
                await asyncio.to_thread(self._generate, batch)

    def _generate(self, batch: list[_Job]) -> None:
        """One `generate` for every row of every job (in a worker thread). When it raises
        for a batch of several jobs, each job that has received nothing yet runs again on
        its own, so only a job that fails alone is told so."""
        if self._generate_once(batch):
            return
        if len(batch) == 1:
            self._fail(batch[0])
            return
        for j in batch:
            if j.delivered or j.cancelled:
                self._fail(j)  # half answered: cannot be run again without repeating text
            else:
                j.restart()
                self._generate([j])

    def _generate_once(self, batch: list[_Job]) -> bool:
        """False when `generate` raised (nothing has been told to the jobs then)."""
        rows = [r for j in batch for r in j.rows]
        seqs = [j.ids for j in batch for _ in j.rows]
        self.generate_calls += 1
        self.rows_generated += len(rows)
        self.recent_batches.append(len(rows))
        try:
            input_ids, mask = self.hf._left_pad(seqs)
            max_new = max(j.sampling.max_tokens for j in batch)
            with torch.inference_mode():
                self.hf.model.generate(
                    input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new,
                    do_sample=False, logits_processor=LogitsProcessorList([_Sampler(rows)]),
                    stopping_criteria=StoppingCriteriaList([_Stopper(rows, self)]))
        except Exception as err:  # noqa: BLE001 - logged by type: its text may hold a prompt
            log.error("built-in model %s failed on a batch of %d request(s): %s", self.name,
                      len(batch), type(err).__name__)
            return False
        for j in batch:
            if any(r.failed for r in j.rows):
                self._fail(j)
                continue
            for row in j.rows:  # rows the model ended without our say (it should not happen)
                if not row.done:
                    self._finish(row, "length")
            j.put(_END)
        return True

    def _fail(self, job: _Job) -> None:
        job.put(BackendError(f"model {self.name} failed to generate", Kind.UPSTREAM_FAILED))
        job.put(_END)

    # -- per token, in the worker thread ---------------------------------------------
    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _step(self, row: _Row, token: int) -> None:
        job = row.job
        if job.cancelled:
            row.done = True
            return
        row.tokens.append(token)
        self.tokens_generated += 1
        logprobs = None
        if row.pending is not None:
            lp = row.pending
            lp.token = self._decode([token]) if token not in self.hf.stop_ids else ""
            lp.top = [(self._decode([i]), v) for i, v in lp.top]
            logprobs = [lp]
            row.pending = None
        if token in self.hf.stop_ids:
            self._finish(row, "stop", tokens=1, logprobs=None)
            return
        text = self._decode(row.tokens)
        stops = row.s.stop
        for s in stops:
            at = text.find(s, max(0, row.sent - len(s)))
            if at >= 0:
                self._emit(row, text[:at], 1, "stop", logprobs)
                return
        if len(row.tokens) >= row.s.max_tokens:
            self._emit(row, text, 1, "length", logprobs)
            return
        hold = max((len(s) - 1 for s in stops), default=0)
        safe = len(text) - hold
        while safe > row.sent and text[safe - 1] == "\ufffd":  # half a UTF-8 character
            safe -= 1
        safe = max(safe, row.sent)
        job.put(Piece(index=row.index, text=text[row.sent:safe], tokens=1, logprobs=logprobs))
        row.sent = safe

    def _emit(self, row: _Row, final_text: str, tokens: int, reason: str, logprobs) -> None:
        row.job.put(Piece(index=row.index, text=final_text[row.sent:], tokens=tokens,
                          finish_reason=reason, logprobs=logprobs))
        row.sent = len(final_text)
        row.done = True

    def _finish(self, row: _Row, reason: str, tokens: int = 0, logprobs=None) -> None:
        text = self._decode(row.tokens)
        if reason == "stop":
            text = text.rstrip("\ufffd")
        self._emit(row, text if len(text) >= row.sent else "", tokens, reason, logprobs)

    # -- the backend protocol --------------------------------------------------------
    async def stream(self, prepared: Prepared, sampling: Sampling
                     ) -> AsyncIterator[Piece | Reported]:
        if self._worker is None:
            await self.start()
        job = _Job(prepared.payload, sampling, asyncio.get_running_loop())
        await self._queue.put(job)
        try:
            while True:
                item = await job.queue.get()
                if item is _END:
                    return
                if isinstance(item, BackendError):
                    raise item
                yield item
        finally:
            job.cancelled = True  # a caller that went away stops its rows at the next token

    async def complete(self, prepared: Prepared, sampling: Sampling) -> Result:
        return await collect(self.stream(prepared, sampling), prepared, sampling.n)


def load_builtin(name: str, source: str, torch_threads: int | None = None) -> BuiltinBackend:
    """`source` is a built-in teacher's name (`qwen3-toy`) or a model directory."""
    builtins = builtin_models()
    if source in builtins:
        path = builtins[source].path
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise PerseaError(f"--model {name}={source}: not a built-in teacher "
                              f"({', '.join(builtins)}) nor an existing directory")
    return BuiltinBackend(name, load_hf_dir(name, path), torch_threads=torch_threads)
