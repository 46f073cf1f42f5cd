"""Bytes per token of the harvest cache, side by side with a plain float32 cache, in one run.

    .venv/bin/python bench/harvest_cache.py [--per-skill 48] [--top-k 32] [--gguf FILE]

For each teacher, the same generated traces are written twice: in persea's shard format
(one-byte quantised log-probs, narrow ids, exact tail mass, zstd) and in a plain baseline
(float32 log-probs and int32 ids for the same top-k, same Parquet + zstd). It prints
bytes per token for both, their ratio, what quantisation lost, and a verdict against the
issue's target (< 100 bytes per token at top-32). Published anchors, for context only (not
run here): DistillKit's cache, about 300 bytes/token recommended and 114 budget, one
vocabulary only (arcee-ai/DistillKit README).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from persea.cache import quant, writer
from persea.harvest.prompts import from_toyworld
from persea.models.sources import load_gguf, load_hf_dir
from persea.toyworld.builtin import BUILTIN_TEACHERS


def baseline_bytes(rows, top_k: int, path: Path) -> int:
    """The same content stored plainly: int32 ids, float32 log-probs, same compression."""
    def lists(values, typ):
        return pa.array([list(v) for v in values], type=pa.list_(typ))

    traces = [t for _, _, t in rows]
    topk = [writer._topk_rows(t, top_k) for t in traces]
    table = pa.table({
        "prompt_index": pa.array([i for i, _, _ in rows], pa.int32()),
        "prompt_id": pa.array([p for _, p, _ in rows]),
        "text": pa.array([t.text for t in traces]),
        "token_ids": lists([t.token_ids for t in traces], pa.int32()),
        "span_start": lists([[s for s, _ in t.spans] for t in traces], pa.int32()),
        "span_end": lists([[e for _, e in t.spans] for t in traces], pa.int32()),
        "logprob": lists([t.logprobs for t in traces], pa.float32()),
        "topk_ids": lists([ids.reshape(-1).tolist() for ids, _ in topk], pa.int32()),
        "topk_logprobs": lists([lp.reshape(-1).tolist() for _, lp in topk], pa.float32()),
    })
    pq.write_table(table, path, compression="zstd", compression_level=9)
    return path.stat().st_size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-skill", type=int, default=48)
    ap.add_argument("--top-k", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--gguf", type=Path, help="also measure a GGUF teacher (e.g. Gemma 3 270M)")
    args = ap.parse_args()

    records = from_toyworld("train", args.per_skill, seed=0)
    models = [load_hf_dir(name, t.path) for name, t in BUILTIN_TEACHERS.items()]
    if args.gguf:
        models.append(load_gguf("gemma3-270m-gguf", args.gguf, chat_template=False))

    print(f"{len(records)} toy-world prompts, top-{args.top_k}, "
          f"max {args.max_new_tokens} new tokens\n")
    head = (f"{'teacher':<18}{'vocab':>8}{'tokens':>8}{'prompts/s':>10}{'persea B/tok':>14}"
            f"{'float32 B/tok':>15}{'ratio':>7}{'max|dlogp|':>11}{'KL(top-k)':>11}")
    print(head)
    print("-" * len(head))
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            start = time.perf_counter()
            rows = []
            for b in range(0, len(records), args.batch_size):
                batch = records[b:b + args.batch_size]
                traces = model.generate([r.prompt for r in batch], args.max_new_tokens,
                                        args.top_k)
                rows += [(b + j, r.id, t) for j, (r, t) in enumerate(zip(batch, traces))]
            rate = len(records) / (time.perf_counter() - start)
            table, exact = writer.traces_to_table(rows, args.top_k, model.vocab_size)
            err = quant.reconstruction_error(exact)
            ours = Path(tmp) / f"{model.name}.parquet"
            writer.write_shard(ours, table, err)
            plain = baseline_bytes(rows, args.top_k, Path(tmp) / f"{model.name}-plain.parquet")
            n_tok = sum(len(t) for _, _, t in rows)
            ours_bpt = ours.stat().st_size / n_tok
            plain_bpt = plain / n_tok
            worst = max(worst, ours_bpt)
            print(f"{model.name:<18}{model.vocab_size:>8}{n_tok:>8}{rate:>10.1f}"
                  f"{ours_bpt:>14.1f}{plain_bpt:>15.1f}{ours_bpt / plain_bpt:>7.2f}"
                  f"{err['max_abs_logprob']:>11.4f}{err['kl_topk_mean']:>11.2e}")
    ok = worst < 100
    print(f"\ncache below 100 bytes per token at top-{args.top_k}: {'yes' if ok else 'no'} "
          f"(worst teacher {worst:.1f}; DistillKit, cited: 300 recommended / 114 budget)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
