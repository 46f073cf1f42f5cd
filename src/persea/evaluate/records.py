"""Evaluation runs as records on disk (and mirrored into the project database).

One run is one model on one suite, in `<project>/<eval.out>/<run-id>/`:

- `record.json`: model name and fingerprint, suite and its version, seed and settings,
  status, dates, duration and, once complete, the score of every metric with its item count;
- `items.jsonl`: one line per item as it is scored (`id`, `group`, `prompt`, `target`,
  `output`, `outcomes: {metric: value}`), appended batch by batch and flushed to disk.

The run id is a digest of model, fingerprint, suite, suite version and settings, so asking
for the same evaluation again finds the same directory: a `running` or `incomplete` run
resumes after its last written item, and a `complete` one is already a result. Only
`complete` runs count anywhere (scorecard, gate); they are also copied into the project
database (tables eval_runs, eval_scores, eval_items) so any two runs can be compared there.

A store may be limited to one split (`RunStore(root, split="test")`, which is what
`store_for(project)` gives: the project's `eval.split`). Its `runs()` then leave out toy-world
runs on another split (the dev-split runs the learned router trains on live beside them), so
the scorecard and the gate never take a dev score for a test score. Runs whose settings name
no split (lm-eval tasks) always count.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from persea.db import make_engine, upgrade
from persea.db.schema import eval_items, eval_runs, eval_scores
from persea.errors import PerseaError
from persea.project import database_url

COMPLETE, RUNNING, INCOMPLETE = "complete", "running", "incomplete"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "x"


def make_run_id(model: str, fingerprint: str, suite: str, version: str, config: dict) -> str:
    blob = json.dumps([model, fingerprint, suite, version, config], sort_keys=True)
    return f"{_slug(model)}--{_slug(suite)}--{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


@dataclass
class RunRecord:
    run_id: str
    model: str
    fingerprint: str
    source: str  # what was loaded: a directory, a built-in, an endpoint URL
    suite: str
    suite_version: str
    seed: int
    config: dict
    n_items: int
    status: str = RUNNING
    items_done: int = 0
    scores: dict = field(default_factory=dict)  # {metric: {"mean": float, "n": int}}
    started_at: str = field(default_factory=lambda: utcnow().isoformat())
    finished_at: str | None = None
    duration_s: float = 0.0

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE

    @property
    def split(self) -> str | None:
        """The split its items came from (toy world), or None when its settings name none."""
        return self.config.get("split")


def scores_of(items: list[dict]) -> dict[str, dict]:
    """`{metric: {"mean", "n"}}` over the items that carry each metric."""
    sums: dict[str, list[float]] = {}
    for it in items:
        for metric, value in it["outcomes"].items():
            sums.setdefault(metric, []).append(float(value))
    return {m: {"mean": sum(v) / len(v), "n": len(v)} for m, v in sums.items()}


class RunStore:
    """The evaluation runs of one project: files under `root`, rows in `db_url`."""

    def __init__(self, root: Path, db_url: str | None = None, split: str | None = None):
        self.root = Path(root)
        self.db_url = db_url
        self.split = split  # when given, runs() leaves out runs on another split

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    # -- record.json --------------------------------------------------------------------
    def load(self, run_id: str) -> RunRecord | None:
        path = self.run_dir(run_id) / "record.json"
        if not path.is_file():
            return None
        try:
            return RunRecord(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError):
            return None  # a damaged record is no result; the run is done again

    def save(self, record: RunRecord) -> None:
        d = self.run_dir(record.run_id)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / "record.json.tmp"
        tmp.write_text(json.dumps(asdict(record), indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, d / "record.json")

    # -- items.jsonl --------------------------------------------------------------------
    def read_items(self, run_id: str) -> list[dict]:
        """Every whole line written so far; a line torn by a crash is dropped (and its item
        asked again)."""
        path = self.run_dir(run_id) / "items.jsonl"
        if not path.is_file():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                break
        return out

    def rewrite_items(self, run_id: str, items: list[dict]) -> None:
        path = self.run_dir(run_id) / "items.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
        os.replace(tmp, path)

    def append_items(self, run_id: str, items: list[dict]) -> None:
        path = self.run_dir(run_id) / "items.jsonl"
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(i) + "\n" for i in items))
            f.flush()
            os.fsync(f.fileno())

    # -- queries ------------------------------------------------------------------------
    def runs(self) -> list[RunRecord]:
        if not self.root.is_dir():
            return []
        found = (self.load(d.name) for d in sorted(self.root.iterdir()) if d.is_dir())
        return [r for r in found if r is not None
                and (self.split is None or r.split in (None, self.split))]

    def latest_complete(self) -> dict[tuple[str, str], RunRecord]:
        """The newest complete run of each (model, suite); incomplete runs never count, nor
        a run of no items (recorded as complete by an older persea)."""
        best: dict[tuple[str, str], RunRecord] = {}
        for r in self.runs():
            if r.complete and r.n_items > 0 and ((r.model, r.suite) not in best or
                               (r.finished_at or "") > (best[(r.model, r.suite)].finished_at
                                                        or "")):
                best[(r.model, r.suite)] = r
        return best

    # -- the database mirror --------------------------------------------------------------
    def mirror(self, record: RunRecord, items: list[dict]) -> None:
        """Copy a complete run into the database (replacing an earlier copy of it)."""
        if self.db_url is None:
            return
        def write(conn):
            conn.execute(sa.delete(eval_items).where(eval_items.c.run_id == record.run_id))
            conn.execute(sa.delete(eval_scores).where(eval_scores.c.run_id == record.run_id))
            conn.execute(sa.delete(eval_runs).where(eval_runs.c.id == record.run_id))
            conn.execute(eval_runs.insert().values(
                id=record.run_id, model=record.model, fingerprint=record.fingerprint,
                suite=record.suite, suite_version=record.suite_version, seed=record.seed,
                config=record.config, status=record.status, n_items=record.n_items,
                started_at=datetime.fromisoformat(record.started_at),
                finished_at=(datetime.fromisoformat(record.finished_at)
                             if record.finished_at else None),
                duration_s=record.duration_s))
            if record.scores:
                conn.execute(eval_scores.insert(), [
                    {"run_id": record.run_id, "metric": m, "value": s["mean"], "n": s["n"]}
                    for m, s in record.scores.items()])
            if items:
                conn.execute(eval_items.insert(), [
                    {"run_id": record.run_id, "item_id": i["id"], "item_group": i["group"],
                     "outcomes": i["outcomes"], "output": i["output"]} for i in items])

        write_to_database(self.db_url, write, f"run {record.run_id}")


def store_for(project, split: str | None = None) -> RunStore:
    """The project's run store: files under `eval.out`, rows in the project database;
    limited to `split` (default: the project's `eval.split`)."""
    return RunStore(project.resolve(project.spec.eval.out), database_url(project=project),
                    split=split or project.spec.eval.split)


def write_to_database(url: str, write, what: str) -> None:
    """Migrate the database at `url` if needed and run `write(conn)` in one transaction; a
    database that cannot be reached is a clear error naming it (never its password)."""
    engine = make_engine(url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            write(conn)
    except sa.exc.OperationalError as err:
        shown = sa.make_url(url).render_as_string(hide_password=True)
        raise PerseaError(f"cannot write {what} to the database {shown} "
                          f"({type(err.orig).__name__}); the files on disk are kept") from None
    finally:
        engine.dispose()
