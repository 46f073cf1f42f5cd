"""`persea eval`: run the suites on the chosen models and store each run as a record."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from persea.errors import PerseaError
from persea.evaluate.lmeval import run_lmeval_suite, task_manager
from persea.evaluate.records import store_for
from persea.evaluate.runner import make_progress, run_item_suite
from persea.evaluate.suites import TOYWORLD, ToyworldSuite, parse_suite
from persea.evaluate.targets import default_targets, endpoint_target, model_target
from persea.project import load_project

SPLITS = ("train", "dev", "test")


@dataclass
class EvalOptions:
    project: Path | None = None
    models: list[str] = field(default_factory=list)  # NAME=SOURCE
    endpoints: list[str] = field(default_factory=list)  # NAME=URL
    served_model: str | None = None
    timeout: float = 30.0
    suites: list[str] = field(default_factory=lambda: ["toyworld"])
    include_path: Path | None = None
    per_skill: int | None = None
    split: str | None = None  # toy world: train, dev or test (default: the project's eval.split)
    limit: int | None = None
    batch_size: int | None = None
    rerun: bool = False
    only_named: bool = False  # evaluate only --model/--endpoint, not the project's models


def run_eval(options: EvalOptions, console=None, note=print) -> list:
    """Every chosen model on every chosen suite; returns the run records."""
    project = load_project(options.project)
    if options.split not in (None, *SPLITS):
        raise PerseaError(f"--split {options.split!r}: expected one of {', '.join(SPLITS)}")
    parsed = [(s, *parse_suite(s)) for s in options.suites]  # bad names fail before loading
    indexes = {task: task_manager(task, options.include_path)
               for _, kind, task in parsed if kind != TOYWORLD}
    cfg = project.spec.eval
    named = [model_target(m, project) for m in options.models]
    named += [endpoint_target(e, options.served_model, options.timeout)
              for e in options.endpoints]
    explicit = bool(named) and options.only_named
    targets = named if explicit else default_targets(project, note) + named
    names = [t.name for t in targets]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PerseaError(f"two models are both named {', '.join(dup)}; give each --model "
                          "and --endpoint a name of its own")
    split = options.split or cfg.split
    store = store_for(project, split)
    records = []
    with make_progress(console) as progress:
        for target in targets:
            model = target.load()
            for _, kind, task in parsed:
                if kind == TOYWORLD:
                    suite = ToyworldSuite(split=split, per_skill=options.per_skill or
                                          cfg.per_skill, seed=cfg.seed, skills=cfg.skills,
                                          max_new_tokens=cfg.max_new_tokens)
                    records.append(run_item_suite(
                        model, suite, store, name=target.name, source=target.source,
                        batch_size=options.batch_size or cfg.batch_size, progress=progress,
                        rerun=options.rerun))
                else:
                    records.append(run_lmeval_suite(
                        model, task, store, name=target.name, source=target.source,
                        include_path=options.include_path, seed=cfg.seed,
                        batch_size=options.batch_size or 16, limit=options.limit,
                        rerun=options.rerun, progress=progress, tasks=indexes[task]))
            del model
    return records
