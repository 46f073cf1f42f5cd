"""Run one model on one suite into a run record, batched, with progress, resumable.

Items are answered in batches of `batch_size`; after each batch its per-item outcomes are
appended to `items.jsonl` and the record's counters saved, so a run stopped at any point
(Ctrl-C, an error, a kill) loses at most the batch in flight. A run stopped by an exception
or Ctrl-C is marked `incomplete`; one killed outright stays `running`; either way it is no
result, and asking for the same evaluation again resumes it after its last written item.
"""

from __future__ import annotations

import shutil
import time

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                           TextColumn, TimeRemainingColumn)
from rich.text import Text

from persea.errors import PerseaError
from persea.evaluate.records import (COMPLETE, INCOMPLETE, RUNNING, RunRecord, RunStore,
                                     make_run_id, scores_of, utcnow)


class RateColumn(ProgressColumn):
    """Items per second."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("  - items/s" if speed is None else f"{speed:5.1f} items/s")


def make_progress(console=None, disable: bool = False) -> Progress:
    """The progress bar of `persea eval`: what runs, a bar, M/N items, rate and ETA."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    RateColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                    disable=disable)


def open_run(store: RunStore, *, model: str, fingerprint: str, source: str, suite: str,
             version: str, config: dict, seed: int, n_items: int,
             rerun: bool = False) -> tuple[RunRecord, list[dict]]:
    """The run for this evaluation and the items it already holds: a new one, or the
    earlier one to resume (`rerun` starts it afresh). A complete run comes back as it is."""
    run_id = make_run_id(model, fingerprint, suite, version, config)
    record = store.load(run_id)
    if record is not None and rerun:
        shutil.rmtree(store.run_dir(run_id))
        record = None
    if record is not None and record.complete:
        return record, store.read_items(run_id)
    if record is None:
        record = RunRecord(run_id=run_id, model=model, fingerprint=fingerprint, source=source,
                           suite=suite, suite_version=version, seed=seed, config=config,
                           n_items=n_items)
        store.save(record)
        store.rewrite_items(run_id, [])
        return record, []
    done = store.read_items(run_id)
    store.rewrite_items(run_id, done)  # drops a line torn by a crash before appending more
    record.status = RUNNING
    record.items_done = len(done)
    store.save(record)
    return record, done


def finish_run(store: RunStore, record: RunRecord, items: list[dict]) -> RunRecord:
    """Mark the run complete with its scores, then mirror it into the database. A run of
    no items has no score: it stays incomplete and the error says so."""
    if not items:
        mark_incomplete(store, record)
        raise PerseaError(f"{record.model} on {record.suite}: the suite gave 0 items, so there "
                          "is nothing to score and no result was recorded; ask for at least "
                          "one item (--per-skill, --limit, eval.skills)")
    record.scores = scores_of(items)
    record.items_done = len(items)
    record.status = COMPLETE
    record.finished_at = utcnow().isoformat()
    store.save(record)
    store.mirror(record, items)
    return record


def mark_incomplete(store: RunStore, record: RunRecord) -> None:
    record.status = INCOMPLETE
    store.save(record)


def run_item_suite(model, suite, store: RunStore, *, name: str, source: str,
                   batch_size: int = 32, progress: Progress | None = None,
                   rerun: bool = False) -> RunRecord:
    """Evaluate `model` (any model of the protocol) on an item suite (`persea.evaluate.
    suites`), resuming an earlier unfinished run of the same evaluation."""
    items = suite.items()
    record, done = open_run(store, model=name, fingerprint=model.fingerprint, source=source,
                            suite=suite.name, version=suite.version, config=suite.config,
                            seed=suite.seed, n_items=len(items), rerun=rerun)
    if record.complete:
        return record
    have = {d["id"] for d in done}
    todo = [it for it in items if it.id not in have]
    task = (progress.add_task(f"{name} · {suite.name}", total=len(items), completed=len(done))
            if progress is not None else None)
    start = time.monotonic()
    base = record.duration_s
    try:
        for b in range(0, len(todo), batch_size):
            chunk = todo[b:b + batch_size]
            outs = model.generate([it.prompt for it in chunk], suite.max_new_tokens)
            rows = [{"id": it.id, "group": it.group, "prompt": it.prompt, "target": it.target,
                     "output": o.text, "outcomes": suite.score(it, o.text)}
                    for it, o in zip(chunk, outs, strict=True)]
            store.append_items(record.run_id, rows)
            done.extend(rows)
            record.items_done = len(done)
            record.duration_s = base + time.monotonic() - start
            store.save(record)
            if task is not None:
                progress.update(task, advance=len(chunk))
    except BaseException:
        record.duration_s = base + time.monotonic() - start
        mark_incomplete(store, record)
        raise
    record.duration_s = base + time.monotonic() - start
    return finish_run(store, record, done)
