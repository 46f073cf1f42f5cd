"""Reading a finished harvest cache for distillation.

The cache is checked against what the distiller expects before anything is trained: it must
be complete (manifest written), and every teacher the project names must be in it with the
same fingerprint; otherwise the error names the mismatch and nothing is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from persea.align import token_bytes
from persea.errors import PerseaError
from persea.harvest import quant
from persea.harvest.cross import score_dir


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

    @property
    def score_sets(self) -> set[tuple[str, str]]:
        """The (scorer, author) pairs whose cross scores the cache holds (harvest with
        `cross_score`; empty otherwise)."""
        return {(s, a) for s, authors in self.manifest.get("scores", {}).items()
                for a in authors}


def open_harvest(path: Path, expected_project: str | None = None,
                 expected_teachers: list[str] | None = None) -> Harvest:
    manifest_file = path / "manifest.json"
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
    with open(path / "prompts.jsonl", encoding="utf-8") as f:
        prompts = [json.loads(line) for line in f if line.strip()]
    teachers = {}
    for name, info in manifest["teachers"].items():
        tok_dir = path / name / "tokenizer"
        tok = None
        if tok_dir.is_dir():
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(tok_dir))
        teachers[name] = CachedTeacher(
            name, info, tok, token_bytes(tok) if tok is not None else None,
            tok.eos_token_id if tok is not None else None)
    return Harvest(path, manifest, prompts, teachers)


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
    """`scorer`'s traces on `author`'s responses (teacher-forced, persea.harvest.cross): one
    per response of `author`, in the same order (by prompt index), with the scorer's own
    token ids, spans, top-k and tail on the author's text. A row whose `text` differs from
    the author's (a tokenizer that could not reproduce it) is the caller's to skip."""
    if (scorer, author) not in harvest.score_sets:
        have = ", ".join(f"{s} on {a}" for s, a in sorted(harvest.score_sets)) or "none"
        raise PerseaError(f"the harvest at {harvest.path} has no scores of teacher {scorer!r} "
                          f"on {author!r}'s responses (it has: {have}); harvest with "
                          "`harvest.cross_score: true`")
    folder = score_dir(harvest.path, scorer, author)
    return _read_rows([folder / s["file"]
                       for s in harvest.manifest["scores"][scorer][author]["shards"]])


def _read_rows(paths: list[Path]) -> list[Response]:
    out = []
    for shard in paths:
        table = pq.read_table(shard)
        for row in table.to_pylist():
            n = len(row["token_ids"])
            k = len(row["topk_q"][0]) if n else 0
            out.append(Response(
                prompt_index=row["prompt_index"], text=row["text"],
                token_ids=np.asarray(row["token_ids"], np.int64),
                spans=list(zip(row["span_start"], row["span_end"])),
                logprob=np.asarray(row["logprob"], np.float32),
                tail=np.asarray(row["tail_mass"], np.float32),
                topk_ids=np.asarray(row["topk_ids"], np.int64).reshape(n, k),
                topk_logp=quant.dequantize(np.asarray(row["topk_q"], np.uint8).reshape(n, k)),
                vocab=row["vocab"]))
    return out
