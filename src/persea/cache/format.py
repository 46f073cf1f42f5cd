"""The harvest cache on disk, defined once: file names, directory layout and shard schema.

The harvest writes with it (persea.cache.writer) and the distiller reads with it
(persea.cache.reader); docs/cache-format.md says the same for people.

    <cache>/plan.json                       settings that shape the cache
    <cache>/prompts.jsonl                   the prompt set, in order
    <cache>/route.json                      with harvest.route: the probe and which
                                            teachers answer which skills
    <cache>/manifest.json                   written last: the cache is finished
    <cache>/<teacher>/teacher.json          source and fingerprints
    <cache>/<teacher>/tokenizer/            the teacher's tokenizer (save_pretrained)
    <cache>/<teacher>/shard-00000.parquet   responses, one row per (prompt, teacher)
    <cache>/_scores/<scorer>/<author>/shard-00000.parquet   cross scores, rows as above

A row is one response of one teacher to one prompt (or one scorer's trace on it):

    prompt_index  int32            position in prompts.jsonl
    prompt_id     string
    text          string           the response, special tokens removed
    token_ids     list<uint16|32>  the teacher's ids (uint16 when its vocabulary fits)
    span_start    list<int32>      character span of each token in `text`
    span_end      list<int32>
    logprob       list<float32>    log-probability of each chosen token (exact)
    tail_mass     list<float16>    probability outside the stored top-k (exact to float16)
    topk_ids      list<fixed_size_list<uint16|32, k>>   sorted by probability, best first
    topk_q        list<fixed_size_list<uint8, k>>       quantised log-probs (persea.cache.quant)
    vocab         list<string>     only for black-box teachers: the strings the ids index

A shard's schema metadata holds, under `persea.stats`, what quantisation lost in it.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

FORMAT = "persea-harvest/1"

PLAN = "plan.json"
PROMPTS = "prompts.jsonl"
MANIFEST = "manifest.json"
ROUTE = "route.json"
TEACHER = "teacher.json"
TOKENIZER = "tokenizer"
SCORES_DIR = "_scores"  # cannot clash with a teacher: names start with a letter or digit
SHARD_PATTERN = "shard-{:05d}.parquet"
SHARD_GLOB = "shard-*.parquet"
STATS_KEY = "persea.stats"

PROMPT_INDEX = "prompt_index"
PROMPT_ID = "prompt_id"
TEXT = "text"
TOKEN_IDS = "token_ids"
SPAN_START = "span_start"
SPAN_END = "span_end"
LOGPROB = "logprob"
TAIL_MASS = "tail_mass"
TOPK_IDS = "topk_ids"
TOPK_Q = "topk_q"
VOCAB = "vocab"


def shard_name(index: int) -> str:
    return SHARD_PATTERN.format(index)


def score_dir(cache: Path, scorer: str, author: str) -> Path:
    """Where `scorer`'s traces on `author`'s responses live."""
    return cache / SCORES_DIR / scorer / author


def id_type(vocab_size: int | None) -> pa.DataType:
    return pa.uint16() if vocab_size is not None and vocab_size <= 65536 else pa.uint32()


def schema(top_k: int, vocab_size: int | None) -> pa.Schema:
    ids = id_type(vocab_size)
    return pa.schema([
        (PROMPT_INDEX, pa.int32()), (PROMPT_ID, pa.string()), (TEXT, pa.string()),
        (TOKEN_IDS, pa.list_(ids)), (SPAN_START, pa.list_(pa.int32())),
        (SPAN_END, pa.list_(pa.int32())), (LOGPROB, pa.list_(pa.float32())),
        (TAIL_MASS, pa.list_(pa.float16())),
        (TOPK_IDS, pa.list_(pa.list_(ids, top_k))),
        (TOPK_Q, pa.list_(pa.list_(pa.uint8(), top_k))),
        (VOCAB, pa.list_(pa.string())),
    ])
