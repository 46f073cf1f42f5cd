"""The register of generations: what became of each student's weights.

`<project>/generations.jsonl` holds one JSON object a line, one per event, appended and
never rewritten:

- `sealed` (`persea seal`): the weights' fingerprint, the sealed directory and id, the
  release it rests on (gate id, or the forced release), and the evaluation of those
  weights (each suite's newest complete run and its scores);
- `exported` (`persea export --open`): the fingerprint, the checkpoint and the export
  directory, the evaluation, the licence the card gives, and the export policy's decision
  with each rule's numbers;
- `export-refused`: an export the policy refused, with the same decision (nothing else is
  written for it).

Every entry has `event`, `id`, `at` (UTC, ISO 8601) and `fingerprint`. A *sealed
generation* is a fingerprint that was sealed; generations are numbered 1, 2, ... in the
order they were first sealed (sealing the same weights again makes no new generation).

An entry is appended under an exclusive `flock` on the register with a single `write` of
its whole line and then `fsync`ed, so two commands appending at once never interleave, and
a crash leaves at most a torn last line, which reading skips.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from persea.evaluate.records import RunStore

REGISTER = "generations.jsonl"
SEALED, EXPORTED, EXPORT_REFUSED, SERVED = "sealed", "exported", "export-refused", "served"


def register_path(project) -> Path:
    return project.root / REGISTER


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def append(project, event: str, fingerprint: str, **fields) -> dict:
    """Append one entry to the project's register and return it."""
    at = now_iso()
    entry = {"event": event,
             "id": f"{event}_{at[:19].replace('-', '').replace(':', '')}_"
                   f"{secrets.token_hex(3)}",
             "at": at, "fingerprint": fingerprint, **fields}
    line = (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8")
    path = register_path(project)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        written = os.write(fd, line)
        if written != len(line):  # a full disk mid-line: the torn line is skipped on read
            raise OSError(28, "short write to the generations register", str(path))
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock
    return entry


def entries(project) -> list[dict]:
    """Every whole entry of the register, oldest first (a torn or foreign line skipped)."""
    try:
        text = register_path(project).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") and entry.get("fingerprint"):
            out.append(entry)
    return out


@dataclass
class Generation:
    number: int  # 1 for the first fingerprint ever sealed
    fingerprint: str
    first_sealed_at: str
    seals: list[dict] = field(default_factory=list)  # its `sealed` entries, oldest first

    @property
    def latest(self) -> dict:
        return self.seals[-1]


def sealed_generations(found: list[dict]) -> list[Generation]:
    """The sealed generations of the register's entries (oldest first, as appended), in
    the order first sealed."""
    gens: dict[str, Generation] = {}
    for e in (e for e in found if e["event"] == SEALED):  # appended in time order
        fp = e["fingerprint"]
        if fp not in gens:
            gens[fp] = Generation(len(gens) + 1, fp, e["at"])
        gens[fp].seals.append(e)
    return list(gens.values())


def evaluation_of(project, fingerprint: str) -> dict:
    """The newest complete run of each suite on these weights, with its scores:
    `{suite: {run_id, model, suite_version, finished_at, n_items, split, scores}}`, where
    `scores` is `{metric: {"mean", "n"}}` (the project's eval split only, as the gate)."""
    store = RunStore(project.resolve(project.spec.eval.out), split=project.spec.eval.split)
    best = {}
    for r in store.runs():
        if r.complete and r.n_items > 0 and r.fingerprint == fingerprint and (
                r.suite not in best or (r.finished_at or "") > (best[r.suite].finished_at
                                                                 or "")):
            best[r.suite] = r
    return {suite: {"run_id": r.run_id, "model": r.model, "suite_version": r.suite_version,
                    "finished_at": r.finished_at, "n_items": r.n_items, "split": r.split,
                    "scores": r.scores}
            for suite, r in sorted(best.items())}


def score_of(evaluation: dict, metric: str) -> tuple[float, int, str] | None:
    """(mean, items, run id) of `metric` in an evaluation summary, or None."""
    for suite in evaluation.values():
        s = suite.get("scores", {}).get(metric)
        if s is not None:
            return float(s["mean"]), int(s["n"]), suite["run_id"]
    return None
