"""Writing the harvest cache (its format: persea.cache.format).

Why Parquet: columnar, so a distiller reads only the columns it needs; list columns hold
variable-length responses without padding; zstd compresses the repetitive id and span
columns well; pyarrow writes it deterministically (no timestamps), which makes an interrupted
and resumed harvest byte-identical to an uninterrupted one. See docs/cache-format.md.

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

from persea.cache import format as fmt
from persea.cache import quant
from persea.models.protocol import Trace

# columns built from numpy arrays, one list per row
_NUMERIC_LISTS = (fmt.TOKEN_IDS, fmt.LOGPROB, fmt.TAIL_MASS, fmt.TOPK_IDS, fmt.TOPK_Q)


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
    sch = fmt.schema(top_k, vocab_size)
    ids_t = fmt.id_type(vocab_size)
    cols: dict[str, list] = {name: [] for name in sch.names}
    exact: list[np.ndarray] = []
    for index, prompt_id, tr in rows:
        ids, lps = _topk_rows(tr, top_k)
        exact.append(lps)
        cols[fmt.PROMPT_INDEX].append(index)
        cols[fmt.PROMPT_ID].append(prompt_id)
        cols[fmt.TEXT].append(tr.text)
        cols[fmt.TOKEN_IDS].append(pa.array(tr.token_ids, type=ids_t))
        cols[fmt.SPAN_START].append([s for s, _ in tr.spans])
        cols[fmt.SPAN_END].append([e for _, e in tr.spans])
        cols[fmt.LOGPROB].append(pa.array(np.asarray(tr.logprobs, np.float32)))
        cols[fmt.TAIL_MASS].append(pa.array(quant.tail_mass(lps).astype(np.float16)))
        cols[fmt.TOPK_IDS].append(_fixed(ids, ids_t, top_k))
        cols[fmt.TOPK_Q].append(_fixed(quant.quantize(lps), pa.uint8(), top_k))
        cols[fmt.VOCAB].append(tr.vocab)
    arrays = []
    for field in sch:
        values = cols[field.name]
        if field.name in _NUMERIC_LISTS:
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
    except OSError as err:
        if err.filename is None:  # pyarrow's errors name no file: name the one we write
            raise OSError(err.errno, err.strerror or " ".join(str(err).split()),
                          str(path)) from err
        raise
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
    table = table.replace_schema_metadata({fmt.STATS_KEY: json.dumps(stats, sort_keys=True)})
    write_atomic(path, lambda tmp: pq.write_table(
        table, tmp, compression="zstd", compression_level=9, use_dictionary=[fmt.PROMPT_ID],
        write_statistics=False))


def clean_temporaries(directory: Path) -> int:
    """Remove leftovers of writes that were killed before their rename."""
    n = 0
    if directory.is_dir():
        for p in directory.glob(".*.tmp-*"):
            p.unlink()
            n += 1
    return n
