"""Reading the harvest cache (its format: persea.cache.format).

`open_harvest` reads a finished cache for distillation, checked against what the distiller
expects before anything is trained: it must be complete (manifest written), every
teacher the project names must be in it with the same fingerprint, and every shard it lists
must match its recorded SHA-256 (persea.cache.check); otherwise the error names the mismatch
and nothing is written. Shard files it does not list are left out (`Harvest.strays`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from persea.align import token_bytes
from persea.cache import check
from persea.cache import format as fmt
from persea.cache import quant
from persea.errors import PerseaError


def read_shard(path: Path, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(path, columns=columns)


def shard_stats(path: Path) -> dict:
    """What quantisation lost in a shard, as the writer measured it."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(fmt.STATS_KEY.encode(), b"{}"))


def read_prompts(cache: Path) -> list[dict]:
    """prompts.jsonl: the prompt set in order (id, prompt, skill, answer)."""
    with open(cache / fmt.PROMPTS, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def corpus(harvest: "Harvest") -> list[str]:
    """Every prompt and every non-empty teacher response of a finished cache, one string
    each, from the shards its manifest lists (cross scores excluded: they repeat the
    responses)."""
    lines = [p["prompt"] for p in harvest.prompts]
    for name in sorted(harvest.teachers):
        for shard in harvest.teachers[name].shards(harvest.path):
            lines += [t for t in read_shard(shard, [fmt.TEXT]).column(fmt.TEXT).to_pylist()
                      if t]
    return lines


@dataclass
class CachedTeacher:
    name: str
    info: dict
    tokenizer: object | None  # None for a black-box teacher
    bytes_of_ids: list[bytes | None] | None
    end_of_turn: int | None

    def shards(self, cache: Path) -> list[Path]:
        return [cache / self.name / s["file"] for s in self.info["shards"]]


@dataclass
class Harvest:
    path: Path
    manifest: dict
    prompts: list[dict]
    teachers: dict[str, CachedTeacher]
    strays: list[Path] = field(default_factory=list)  # shard files the manifest does not list

    @property
    def score_sets(self) -> set[tuple[str, str]]:
        """The (scorer, author) pairs whose cross scores the cache holds (harvest with
        `cross_score`; empty otherwise)."""
        return {(s, a) for s, authors in self.manifest.get("scores", {}).items()
                for a in authors}


def open_harvest(path: Path, expected_project: str | None = None,
                 expected_teachers: list[str] | None = None) -> Harvest:
    manifest_file = path / fmt.MANIFEST
    if not manifest_file.is_file():
        raise PerseaError(f"no finished harvest at {path} (manifest.json missing): run "
                          "`persea harvest` first")
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    plan = manifest["plan"]
    if expected_project is not None and plan["project"] != expected_project:
        raise PerseaError(f"the harvest at {path} belongs to project {plan['project']!r}, not "
                          f"{expected_project!r}")
    missing = [t for t in expected_teachers or [] if t not in manifest["teachers"]]
    if missing:
        raise PerseaError(f"the harvest at {path} has no responses from teacher(s) "
                          f"{', '.join(missing)} (it has {', '.join(manifest['teachers'])}); "
                          "run `persea harvest` again")
    listed = check.listed_shards(path, manifest)
    for shard, sha256 in listed.items():
        problem = check.against_manifest(shard, sha256)
        if problem:
            raise PerseaError(f"{problem}; run `persea harvest` again to regenerate it")
    prompts = read_prompts(path)
    teachers = {}
    for name, info in manifest["teachers"].items():
        tok_dir = path / name / fmt.TOKENIZER
        tok = None
        if tok_dir.is_dir():
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(tok_dir))
        teachers[name] = CachedTeacher(
            name, info, tok, token_bytes(tok) if tok is not None else None,
            tok.eos_token_id if tok is not None else None)
    return Harvest(path, manifest, prompts, teachers, check.strays(path, listed))


@dataclass
class Response:
    """One teacher response as stored, with top-k dequantised."""

    prompt_index: int
    text: str
    token_ids: np.ndarray
    spans: list[tuple[int, int]]
    logprob: np.ndarray
    tail: np.ndarray
    topk_ids: np.ndarray
    topk_logp: np.ndarray
    vocab: list[str] | None


def read_responses(harvest: Harvest, teacher: str) -> list[Response]:
    """Every response of `teacher`, in prompt order."""
    return _read_rows(harvest.teachers[teacher].shards(harvest.path))


def read_scores(harvest: Harvest, scorer: str, author: str) -> list[Response]:
    """`scorer`'s traces on `author`'s responses (teacher-forced by the harvest): one
    per response of `author`, in the same order (by prompt index), with the scorer's own
    token ids, spans, top-k and tail on the author's text. A row whose `text` differs from
    the author's (a tokenizer that could not reproduce it) is the caller's to skip."""
    if (scorer, author) not in harvest.score_sets:
        have = ", ".join(f"{s} on {a}" for s, a in sorted(harvest.score_sets)) or "none"
        raise PerseaError(f"the harvest at {harvest.path} has no scores of teacher {scorer!r} "
                          f"on {author!r}'s responses (it has: {have}); harvest with "
                          "`harvest.cross_score: true`")
    folder = fmt.score_dir(harvest.path, scorer, author)
    return _read_rows([folder / s["file"]
                       for s in harvest.manifest["scores"][scorer][author]["shards"]])


def _read_rows(paths: list[Path]) -> list[Response]:
    out = []
    for shard in paths:
        table = read_shard(shard)
        for row in table.to_pylist():
            n = len(row[fmt.TOKEN_IDS])
            k = len(row[fmt.TOPK_Q][0]) if n else 0
            out.append(Response(
                prompt_index=row[fmt.PROMPT_INDEX], text=row[fmt.TEXT],
                token_ids=np.asarray(row[fmt.TOKEN_IDS], np.int64),
                spans=list(zip(row[fmt.SPAN_START], row[fmt.SPAN_END])),
                logprob=np.asarray(row[fmt.LOGPROB], np.float32),
                tail=np.asarray(row[fmt.TAIL_MASS], np.float32),
                topk_ids=np.asarray(row[fmt.TOPK_IDS], np.int64).reshape(n, k),
                topk_logp=quant.dequantize(np.asarray(row[fmt.TOPK_Q], np.uint8).reshape(n, k)),
                vocab=row[fmt.VOCAB]))
    return out
