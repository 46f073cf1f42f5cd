"""A router judged on evaluation records: accuracy and cost, side by side with the
alternatives.

On a table of held-out records (`persea.route.records`), for the same items:

- each single model: its accuracy, and its price on every request;
- a random router: each request to a model drawn uniformly; its expected accuracy (the mean
  of the models' accuracies) and expected cost (the mean price), computed exactly rather
  than drawn;
- the learned router at each threshold: the routing rule's first choice per item, scored by
  whether that model answered the item right;
- the oracle: the cheapest model that answered right (the cheapest model when none did):
  the best any router could do on these records.

Cost is per 1,000 requests: 1,000 times the mean price of the model each request went to.
The quality-cost curve sweeps the threshold from 0 (always the cheapest model) to 1 (always
the model most likely to be right).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from persea.errors import PerseaError
from persea.route.learned import Router, first_choice
from persea.route.records import RoutingData

TABLE_THRESHOLDS = (0.3, 0.5, 0.7, 0.8, 0.9, 1.0)
CURVE_STEPS = 101  # thresholds 0, 0.01, ..., 1


@dataclass
class Row:
    name: str
    kind: str  # model, random, learned, oracle
    accuracy: float
    cost_per_1k: float
    threshold: float | None = None
    shares: dict[str, float] = field(default_factory=dict)  # share of requests per model


@dataclass
class Comparison:
    models: list[str]
    prices: dict[str, float]
    items: int
    rows: list[Row]
    curve: list[Row]  # the learned router at every threshold of the sweep

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)

    @property
    def singles(self) -> list[Row]:
        return [r for r in self.rows if r.kind == "model"]

    @property
    def oracle(self) -> Row:
        return next(r for r in self.rows if r.kind == "oracle")

    def cheapest_reaching(self, accuracy: float) -> Row | None:
        """The cheapest point of the curve whose accuracy is at least `accuracy`."""
        reach = [r for r in self.curve if r.accuracy >= accuracy - 1e-12]
        return min(reach, key=lambda r: (r.cost_per_1k, -r.accuracy)) if reach else None


def _shares(choice: np.ndarray, models: list[str]) -> dict[str, float]:
    counts = np.bincount(choice, minlength=len(models)) / max(len(choice), 1)
    return {m: float(c) for m, c in zip(models, counts)}


def learned_row(router: Router, probs: np.ndarray, correct: np.ndarray, prices: np.ndarray,
                threshold: float) -> Row:
    choice = first_choice(probs, prices, threshold)
    rows = np.arange(len(choice))
    return Row(f"learned @ {threshold:.2f}", "learned", float(correct[rows, choice].mean()),
               1000.0 * float(prices[choice].mean()), threshold,
               _shares(choice, router.models))


def compare(router: Router, data: RoutingData,
            thresholds=TABLE_THRESHOLDS, steps: int = CURVE_STEPS) -> Comparison:
    """Every row of the comparison on `data` (the held-out records). The records must hold
    every model of the router, evaluated with the weights it was trained for."""
    missing = [m for m in router.models if m not in data.models]
    if missing:
        raise PerseaError(f"the {data.split}-split records hold no run of {', '.join(missing)}"
                          f", which the router routes to; evaluate it on the {data.split} "
                          "split first")
    changed = [m for m in router.models if data.fingerprints[m] != router.fingerprints[m]]
    if changed:
        raise PerseaError(f"the {data.split}-split records of {', '.join(changed)} come from "
                          "other weights than the router was trained on; evaluate the same "
                          "weights on both splits and train again")
    models = router.models
    correct = np.stack([data.column(m) for m in models], axis=1)
    prices = np.array([router.prices[m] for m in models])
    probs = router.predict_many(data.prompts)
    n = len(data.ids)
    rows = [Row(m, "model", float(correct[:, j].mean()), 1000.0 * prices[j],
                shares={m: 1.0}) for j, m in enumerate(models)]
    rows.append(Row("random", "random", float(correct.mean()), 1000.0 * float(prices.mean()),
                    shares={m: 1 / len(models) for m in models}))
    rows += [learned_row(router, probs, correct, prices, t) for t in thresholds]
    # the oracle: the cheapest right model; the cheapest model when none was right
    masked = np.where(correct > 0, prices[None, :], np.inf)
    right_cheapest = masked.argmin(axis=1)
    oracle = np.where(correct.any(axis=1), right_cheapest, int(prices.argmin()))
    rows.append(Row("oracle", "oracle", float(correct.any(axis=1).mean()),
                    1000.0 * float(prices[oracle].mean()), shares=_shares(oracle, models)))
    curve = [learned_row(router, probs, correct, prices, float(t))
             for t in np.linspace(0.0, 1.0, steps)]
    return Comparison(models, dict(router.prices), n, rows, curve)


def to_png(comparison: Comparison, path: Path, title: str = "routing: quality vs cost") -> Path:
    """The learned router's curve, with each single model, the random router and the oracle
    as points."""
    import matplotlib  # heavy

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.8))
    ax.plot([r.cost_per_1k for r in comparison.curve], [r.accuracy for r in comparison.curve],
            "-", color="black", label="learned router (threshold 0..1)", zorder=2)
    at: dict[tuple[float, float], list[float]] = {}  # thresholds that land on one point
    for r in comparison.rows:
        if r.kind == "learned":
            at.setdefault((r.cost_per_1k, r.accuracy), []).append(r.threshold)
        else:
            marker = {"model": "s", "random": "x", "oracle": "*"}[r.kind]
            ax.plot(r.cost_per_1k, r.accuracy, marker, ms=9 if r.kind == "oracle" else 7,
                    label=r.name, zorder=3)
    for (cost, acc), ts in at.items():
        ax.plot(cost, acc, "o", color="black", ms=4, zorder=3)
        label = f"t={ts[0]:.2f}" if len(ts) == 1 else f"t={min(ts):.2f}..{max(ts):.2f}"
        ax.annotate(label, (cost, acc), fontsize=7, textcoords="offset points", ha="right",
                    xytext=(-4, -10))
    ax.set_xlabel("cost per 1,000 requests")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{title} ({comparison.items} items)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
