"""The scorecard: the candidate side by side with every teacher and rival, per metric, each
score with its bootstrap confidence interval and item count.

It is built from the newest complete run of each (model, suite) in the project's run store;
unfinished runs are left out (and listed, so nobody mistakes a missing column for a zero).
Rendered three ways: a Rich table for the terminal, Markdown, and a PNG bar chart with the
intervals as error bars (matplotlib, Agg backend: no display needed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from persea.evaluate.bootstrap import Interval, bootstrap_ci
from persea.evaluate.records import RunRecord, RunStore, store_for
from persea.evaluate.targets import STUDENT


@dataclass
class Scorecard:
    models: list[str]
    metrics: list[str]
    cells: dict[tuple[str, str], Interval]  # (metric, model) -> score with its interval
    runs: dict[tuple[str, str], RunRecord]  # (model, suite) -> the run it came from
    unfinished: list[RunRecord] = field(default_factory=list)
    confidence: float = 0.95
    resamples: int = 1000

    def get(self, metric: str, model: str) -> Interval | None:
        return self.cells.get((metric, model))


def metric_values(store: RunStore, run: RunRecord) -> dict[str, dict[str, float]]:
    """`{metric: {item_id: value}}` of one run."""
    out: dict[str, dict[str, float]] = {}
    for item in store.read_items(run.run_id):
        for metric, value in item["outcomes"].items():
            out.setdefault(metric, {})[item["id"]] = float(value)
    return out


def _ordered_models(names, first: list[str]) -> list[str]:
    lead = [m for m in first if m in names]
    return lead + sorted(m for m in names if m not in lead)


def build_scorecard(store: RunStore, first: list[str] = (), resamples: int = 1000,
                    confidence: float = 0.95, seed: int = 0) -> Scorecard:
    """Every complete run's metrics with intervals; `first` orders the leading columns
    (the candidate, then the teachers); other models follow by name."""
    latest = store.latest_complete()
    cells: dict[tuple[str, str], Interval] = {}
    metrics: list[str] = []
    for (model, _suite), run in sorted(latest.items(), key=lambda kv: kv[0][1]):
        for metric, by_item in metric_values(store, run).items():
            values = [by_item[k] for k in sorted(by_item)]
            cells[(metric, model)] = bootstrap_ci(values, resamples, confidence, seed)
            if metric not in metrics:
                metrics.append(metric)
    metrics.sort(key=lambda m: (m.split("/")[0], m.endswith("/overall")))
    unfinished = [r for r in store.runs() if not r.complete]
    return Scorecard(_ordered_models({m for m, _ in latest}, list(first)), metrics, cells,
                     latest, unfinished, confidence, resamples)


def _cell(iv: Interval | None, places: int = 3) -> str:
    if iv is None:
        return "-"
    return f"{iv.mean:.{places}f} [{iv.low:.{places}f}, {iv.high:.{places}f}]"


def _items(card: Scorecard, metric: str) -> str:
    ns = sorted({iv.n for (m, _), iv in card.cells.items() if m == metric})
    return "/".join(str(n) for n in ns)


def to_rich(card: Scorecard):
    from rich.table import Table

    table = Table(title=f"scorecard: mean [{card.confidence:.0%} bootstrap CI, "
                        f"{card.resamples} resamples]")
    table.add_column("metric", no_wrap=True)
    table.add_column("items", justify="right")
    for m in card.models:
        table.add_column(m, justify="right")
    for metric in card.metrics:
        table.add_row(metric, _items(card, metric),
                      *[_cell(card.get(metric, m), 2) for m in card.models])
    return table


def to_markdown(card: Scorecard) -> str:
    lines = [f"# Scorecard", "",
             f"Each cell: mean over the items, then the {card.confidence:.0%} percentile "
             f"bootstrap interval ({card.resamples} resamples). `items`: how many items each "
             "score is the mean of.", "",
             "| metric | items | " + " | ".join(card.models) + " |",
             "|---|---:|" + "---:|" * len(card.models)]
    for metric in card.metrics:
        lines.append(f"| {metric} | {_items(card, metric)} | "
                     + " | ".join(_cell(card.get(metric, m)) for m in card.models) + " |")
    lines += ["", "Runs:", ""]
    for (model, suite), run in sorted(card.runs.items()):
        lines.append(f"- {model} on {suite} {run.suite_version}: run `{run.run_id}`, weights "
                     f"`{run.fingerprint[:12]}`, seed {run.seed}, finished {run.finished_at}, "
                     f"{run.duration_s:.1f} s")
    if card.unfinished:
        lines += ["", "Left out (unfinished, not results): "
                  + ", ".join(f"`{r.run_id}` ({r.status})" for r in card.unfinished)]
    return "\n".join(lines) + "\n"


def to_png(card: Scorecard, path: Path) -> Path:
    """Grouped bars (one group per metric, one bar per model) with the intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n_models = max(len(card.models), 1)
    x = np.arange(len(card.metrics))
    width = 0.8 / n_models
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(card.metrics) * max(1, n_models / 3)),
                                    4.5))
    for j, model in enumerate(card.models):
        ivs = [card.get(metric, model) for metric in card.metrics]
        means = np.array([iv.mean if iv else np.nan for iv in ivs])
        err = np.array([[iv.mean - iv.low if iv else 0 for iv in ivs],
                        [iv.high - iv.mean if iv else 0 for iv in ivs]])
        ax.bar(x + (j - (n_models - 1) / 2) * width, means, width, yerr=err, capsize=2,
               label=model)
    ax.set_xticks(x, [m.removeprefix("toyworld/") for m in card.metrics],
                  rotation=30, ha="right")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1.2)  # room for the legend above full marks
    ax.set_title(f"scorecard ({card.confidence:.0%} bootstrap CI)")
    ax.legend(fontsize="small", ncols=min(n_models, 4), loc="upper center")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def scorecard_for_project(project) -> Scorecard:
    """The project's scorecard: the policy's candidate first, then its teachers."""
    rel = project.spec.release
    first = [rel.candidate if rel else STUDENT] + [t.name for t in project.spec.teachers]
    return build_scorecard(store_for(project), first,
                           resamples=rel.resamples if rel else 1000,
                           confidence=rel.confidence if rel else 0.95,
                           seed=rel.seed if rel else 0)
