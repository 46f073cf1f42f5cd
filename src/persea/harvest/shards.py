"""The harvest cache on disk: one Parquet file per (teacher, shard of prompts).

Why Parquet: columnar, so a distiller reads only the columns it needs; list columns hold
variable-length responses without padding; zstd compresses the repetitive id and span
columns well; pyarrow writes it deterministically (no timestamps), which makes an interrupted
and resumed harvest byte-identical to an uninterrupted one. See docs/cache-format.md.

A row is one response of one teacher to one prompt:

    prompt_index  int32            position in prompts.jsonl
    prompt_id     string
    text          string           the response, special tokens removed
    token_ids     list<uint16|32>  the teacher's ids (uint16 when its vocabulary fits)
    span_start    list<int32>      character span of each token in `text`
    span_end      list<int32>
    logprob       list<float32>    log-probability of each chosen token (exact)
    tail_mass     list<float16>    probability outside the stored top-k (exact to float16)
    topk_ids      list<fixed_size_list<uint16|32, k>>   sorted by probability, best first
    topk_q        list<fixed_size_list<uint8, k>>       quantised log-probs (persea.harvest.quant)
    vocab         list<string>     only for black-box teachers: the strings the ids index

Files appear under their final name only once complete (write to a temporary file, fsync,
rename), so a shard that exists is whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from persea.harvest import quant
from persea.models.protocol import Trace

SHARD_PATTERN = "shard-{:05d}.parquet"


def id_type(vocab_size: int | None) -> pa.DataType:
    return pa.uint16() if vocab_size is not None and vocab_size <= 65536 else pa.uint32()


def schema(top_k: int, vocab_size: int | None) -> pa.Schema:
    ids = id_type(vocab_size)
    return pa.schema([
        ("prompt_index", pa.int32()), ("prompt_id", pa.string()), ("text", pa.string()),
        ("token_ids", pa.list_(ids)), ("span_start", pa.list_(pa.int32())),
        ("span_end", pa.list_(pa.int32())), ("logprob", pa.list_(pa.float32())),
        ("tail_mass", pa.list_(pa.float16())),
        ("topk_ids", pa.list_(pa.list_(ids, top_k))),
        ("topk_q", pa.list_(pa.list_(pa.uint8(), top_k))),
        ("vocab", pa.list_(pa.string())),
    ])


def _fixed(rows: np.ndarray, dtype: pa.DataType, k: int) -> pa.Array:
    flat = pa.array(rows.reshape(-1), type=dtype)
    return pa.FixedSizeListArray.from_arrays(flat, k)


def _topk_rows(trace: Trace, k: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(trace)
    ids = np.zeros((n, k), np.int64)
    lps = np.full((n, k), -np.inf, np.float32)
    if trace.topk_ids.size:
        kk = min(k, trace.topk_ids.shape[1])
        ids[:, :kk] = trace.topk_ids[:, :kk]
        lps[:, :kk] = trace.topk_logprobs[:, :kk]
    return ids, lps


def traces_to_table(rows: list[tuple[int, str, Trace]], top_k: int,
                    vocab_size: int | None) -> tuple[pa.Table, np.ndarray]:
    """Build the shard table; also return every position's exact top-k log-probs ([N, k])
    so the caller can measure what quantisation lost."""
    sch = schema(top_k, vocab_size)
    ids_t = id_type(vocab_size)
    cols: dict[str, list] = {name: [] for name in sch.names}
    exact: list[np.ndarray] = []
    for index, prompt_id, tr in rows:
        ids, lps = _topk_rows(tr, top_k)
        exact.append(lps)
        cols["prompt_index"].append(index)
        cols["prompt_id"].append(prompt_id)
        cols["text"].append(tr.text)
        cols["token_ids"].append(pa.array(tr.token_ids, type=ids_t))
        cols["span_start"].append([s for s, _ in tr.spans])
        cols["span_end"].append([e for _, e in tr.spans])
        cols["logprob"].append(pa.array(np.asarray(tr.logprobs, np.float32)))
        cols["tail_mass"].append(pa.array(quant.tail_mass(lps).astype(np.float16)))
        cols["topk_ids"].append(_fixed(ids, ids_t, top_k))
        cols["topk_q"].append(_fixed(quant.quantize(lps), pa.uint8(), top_k))
        cols["vocab"].append(tr.vocab)
    arrays = []
    for field in sch:
        values = cols[field.name]
        if field.name in ("token_ids", "logprob", "tail_mass", "topk_ids", "topk_q"):
            arrays.append(pa.ListArray.from_arrays(
                pa.array(np.cumsum([0] + [len(v) for v in values]), pa.int32()),
                pa.concat_arrays(values) if values else pa.array([], field.type.value_type)))
        else:
            arrays.append(pa.array(values, type=field.type))
    table = pa.Table.from_arrays(arrays, schema=sch)
    all_exact = np.concatenate(exact) if exact else np.zeros((0, top_k), np.float32)
    return table, all_exact


def write_atomic(path: Path, writer) -> None:
    """Call `writer(tmp_path)`, fsync, then rename onto `path`: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        writer(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_shard(path: Path, table: pa.Table, stats: dict) -> None:
    table = table.replace_schema_metadata({"persea.stats": json.dumps(stats, sort_keys=True)})
    write_atomic(path, lambda tmp: pq.write_table(
        table, tmp, compression="zstd", compression_level=9, use_dictionary=["prompt_id"],
        write_statistics=False))


def read_shard(path: Path) -> pa.Table:
    return pq.read_table(path)


def shard_stats(path: Path) -> dict:
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(b"persea.stats", b"{}"))


def clean_temporaries(directory: Path) -> int:
    """Remove leftovers of writes that were killed before their rename."""
    n = 0
    if directory.is_dir():
        for p in directory.glob(".*.tmp-*"):
            p.unlink()
            n += 1
    return n
