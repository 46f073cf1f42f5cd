"""The evaluation records a learned router learns from and is judged on.

`persea eval` stores one run per model and suite, with one line per item: the prompt the
model was asked and its outcomes (`persea.evaluate.records`). For routing, the newest complete
run of each model on one split becomes a table: the items every chosen model answered, their
prompts, and a 0/1 matrix of who got each one right (`toyworld/overall` by default). The
router is fitted on the dev split's table and judged on the test split's, so no test prompt
is ever seen in training (the toy world's splits are disjoint by prompt).

Only the prompt text goes into the table, never an item's skill or id: a client sends
messages, not labels, and the router must decide from what it is sent.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from persea.errors import PerseaError
from persea.evaluate.records import RunRecord, RunStore

DEFAULT_SUITE = "toyworld"


@dataclass
class RoutingData:
    """Per item: the prompt, and for each model whether it answered it right."""

    models: list[str]
    fingerprints: dict[str, str]  # model -> weights fingerprint of the run
    runs: dict[str, str]  # model -> run id
    ids: list[str]
    prompts: list[str]
    correct: np.ndarray  # (items, models), 0.0 or 1.0
    suite: str
    split: str
    metric: str

    @property
    def digest(self) -> str:
        """SHA-256 of what the table holds: runs, weights, items and every outcome."""
        blob = json.dumps([self.suite, self.split, self.metric,
                           [[m, self.runs[m], self.fingerprints[m]] for m in self.models],
                           self.ids, self.correct.astype(int).tolist()])
        return hashlib.sha256(blob.encode()).hexdigest()

    def accuracy(self) -> dict[str, float]:
        return {m: float(self.correct[:, j].mean()) for j, m in enumerate(self.models)}

    def column(self, model: str) -> np.ndarray:
        return self.correct[:, self.models.index(model)]


def newest_runs(store: RunStore, split: str, suite: str = DEFAULT_SUITE) -> dict[str, RunRecord]:
    """The newest complete run of each model on `suite` with items of `split`."""
    best: dict[str, RunRecord] = {}
    for r in store.runs():
        if not (r.complete and r.n_items > 0 and r.suite == suite and r.split == split):
            continue
        if r.model not in best or (r.finished_at or "") > (best[r.model].finished_at or ""):
            best[r.model] = r
    return best


def routing_data(store: RunStore, split: str, models: list[str] | None = None,
                 suite: str = DEFAULT_SUITE, metric: str | None = None,
                 hint: str = "persea eval --split {split}") -> RoutingData:
    """The table of `split` from the store's newest complete runs (of `models`, default every
    model evaluated there). One-line errors: no runs, a named model without a run, fewer than
    two models, no item that every model answered."""
    metric = metric or f"{suite}/overall"
    runs = newest_runs(store, split, suite)
    todo = hint.replace("{split}", split)
    if not runs:
        raise PerseaError(f"no complete {suite} evaluation runs on the {split} split under "
                          f"{store.root}; run `{todo}` first")
    if models is not None:
        missing = [m for m in models if m not in runs]
        if missing:
            raise PerseaError(f"no complete {suite} run of {', '.join(missing)} on the {split} "
                              f"split under {store.root} (found: {', '.join(sorted(runs))}); "
                              f"run `{todo}` first")
        runs = {m: runs[m] for m in models}
    if len(runs) < 2:
        raise PerseaError(f"routing needs at least two models with {split}-split runs; found "
                          f"only {', '.join(runs)}; run `{todo}` with more models")
    names = list(runs) if models is not None else sorted(runs)
    per_model: dict[str, dict[str, tuple[str, float]]] = {}
    order: list[str] = []
    for m in names:
        rows = {}
        for item in store.read_items(runs[m].run_id):
            if metric in item.get("outcomes", {}):
                rows[item["id"]] = (item["prompt"], float(item["outcomes"][metric]))
                if m == names[0]:
                    order.append(item["id"])
        per_model[m] = rows
    ids = [i for i in order if all(i in per_model[m] for m in names)]
    if not ids:
        raise PerseaError(f"the {split}-split runs of {', '.join(names)} share no item scored "
                          f"by {metric}; evaluate them on the same items")
    correct = np.array([[per_model[m][i][1] for m in names] for i in ids], dtype=np.float64)
    return RoutingData(models=names, fingerprints={m: runs[m].fingerprint for m in names},
                       runs={m: runs[m].run_id for m in names}, ids=ids,
                       prompts=[per_model[names[0]][i][0] for i in ids],
                       correct=(correct > 0.5).astype(np.float64), suite=suite, split=split,
                       metric=metric)


def project_routing_data(project, split: str, models: list[str] | None = None,
                         suite: str = DEFAULT_SUITE, metric: str | None = None) -> RoutingData:
    """`routing_data` of the project's run store (every split, not only `eval.split`)."""
    store = RunStore(project.resolve(project.spec.eval.out))  # runs of every split
    return routing_data(store, split, models, suite, metric,
                        hint=f"persea eval --project {project.root} --split {split}")
