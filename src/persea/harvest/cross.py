"""Cross-scoring: every white-box teacher teacher-forces every other teacher's responses.

The generation pass leaves each teacher's signal on its own response only. To combine
teachers *at the same position* (average their distributions, or pick one per token), the
distiller needs every teacher's distribution on the same text; this pass provides it. After
the responses exist, each *scorer* (a teacher whose weights we hold) reads each other
teacher's (*author's*) response shards and scores the response texts with
`model.score(prompts, texts, top_k)`: the same Trace as generation (ids, character spans,
chosen-token log-probabilities, top-k, tail), for text it did not write.

One Parquet shard per (scorer, author, shard of prompts), rows as in responses, in
`persea.cache.format.score_dir`. A score shard covers the same prompts as the author's
response shard of the same index, and it is written atomically like every other shard, so a
re-run skips finished shards, a kill mid-shard resumes, and the result is byte-identical
either way.

What is not scored:

- black-box endpoint teachers are never scorers: a chat endpoint does not return the
  log-probabilities of a given continuation (their responses are still scored by others);
- the author's end-of-turn token: `score` takes text, so a scorer's trace covers the
  response text only and the last (end-of-turn) position keeps the author's signal alone;
- scoring runs on transformers, even when generation ran on vLLM (whose `score` is not built).

A scorer's tokenizer may not reproduce the text exactly (an unknown character); the row then
holds the scorer's decoded text, and the distiller ignores rows whose text differs from the
author's (the manifest counts them, `same_text`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from persea.cache import quant, writer
from persea.cache.format import PROMPT_ID, PROMPT_INDEX, TEXT, TOKEN_IDS, score_dir, shard_name
from persea.cache.reader import read_shard
from persea.models.fingerprint import sha256_file


def scorers(specs) -> list:
    """Teachers that can score a given text: all but black-box endpoints."""
    return [s for s in specs if s.endpoint is None]


def pairs(specs) -> list[tuple[str, str]]:
    """Every (scorer, author) pair, in project order."""
    return [(s.name, a.name) for s in scorers(specs) for a in specs if a.name != s.name]


@dataclass
class ScoreSummary:
    scorer: str
    author: str
    shards_written: int = 0


def run_cross(specs, h, out: Path, records, load, prepare, progress,
              teachers: list[str] | None, worker: tuple[int, int],
              counts: dict[str, list[int]] | None = None) -> list[ScoreSummary]:
    """Score the finished response shards of every author (of the teacher `specs`) with
    every scorer, under the harvest settings `h`.

    `load(spec)` gives the scorer's model and `prepare(spec, model)` checks it against the
    cache (the same teacher that generated). Only score shards whose index is `part mod
    parts` are done, and only those whose author shard exists already: with several workers,
    a later run picks up the rest. `teachers` limits the scorers.

    A scorer scores the responses the author's shard holds, nothing else: with the harvest's
    skill routing an author answered only some prompts, and `counts[author][i]` says how many
    of shard i's (for the progress bar; default: every prompt).
    """
    part, parts = worker
    n_shards = (len(records) + h.shard_size - 1) // h.shard_size
    done: list[ScoreSummary] = []
    for spec in scorers(specs):
        if teachers and spec.name not in teachers:
            continue
        authors = [a for s, a in pairs(specs) if s == spec.name]
        if parts == 1:
            for author in authors:
                writer.clean_temporaries(score_dir(out, spec.name, author))
        jobs = [(a, i) for a in authors for i in range(n_shards) if i % parts == part
                and not (score_dir(out, spec.name, a) / shard_name(i)).exists()
                and (out / a / shard_name(i)).exists()]
        if not jobs:
            continue
        model = load(spec)
        prepare(spec, model)
        task = progress.add_task(f"{spec.name} scores others", total=sum(
            counts[a][i] if counts else len(records[i * h.shard_size:(i + 1) * h.shard_size])
            for a, i in jobs))
        summaries = {a: ScoreSummary(spec.name, a) for a in authors}
        for author, i in jobs:
            name = shard_name(i)
            given = read_shard(out / author / name, [PROMPT_INDEX, PROMPT_ID, TEXT]).to_pylist()
            rows = []
            for b in range(0, len(given), h.batch_size):
                batch = given[b:b + h.batch_size]
                traces = model.score([records[g[PROMPT_INDEX]].prompt for g in batch],
                                     [g[TEXT] for g in batch], h.top_k)
                rows += [(g[PROMPT_INDEX], g[PROMPT_ID], t) for g, t in zip(batch, traces)]
                progress.advance(task, len(batch))
            table, exact = writer.traces_to_table(rows, h.top_k, model.vocab_size)
            writer.write_shard(score_dir(out, spec.name, author) / name, table,
                               quant.reconstruction_error(exact))
            summaries[author].shards_written += 1
        done += [s for s in summaries.values() if s.shards_written]
    return done


def complete(out: Path, specs, n_shards: int) -> bool:
    return all((score_dir(out, s, a) / shard_name(i)).exists()
               for s, a in pairs(specs) for i in range(n_shards))


def manifest_section(out: Path, specs, n_shards: int) -> dict:
    """`manifest.json["scores"][scorer][author]`: every score shard's SHA-256, rows, tokens
    and bytes, and how many rows reproduce the author's text exactly (`same_text`)."""
    section: dict[str, dict[str, dict]] = {}
    for scorer, author in pairs(specs):
        files, tokens, size, same, rows = [], 0, 0, 0, 0
        for i in range(n_shards):
            name = shard_name(i)
            path = score_dir(out, scorer, author) / name
            table = read_shard(path)
            n_tok = sum(len(x) for x in table.column(TOKEN_IDS).to_pylist())
            files.append({"file": name, "sha256": sha256_file(path), "rows": table.num_rows,
                          "tokens": n_tok, "bytes": path.stat().st_size})
            theirs = read_shard(out / author / name).column(TEXT).to_pylist()
            same += sum(a == b for a, b in zip(table.column(TEXT).to_pylist(), theirs))
            tokens += n_tok
            size += path.stat().st_size
            rows += table.num_rows
        section.setdefault(scorer, {})[author] = {
            "shards": files, "rows": rows, "tokens": tokens, "bytes": size,
            "same_text": same}
    return section
