"""The loss curve as a PNG beside its CSV."""

from __future__ import annotations

import csv
from pathlib import Path


def plot_losses(csv_path: Path, png_path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for key in ("loss", "ce", "kd", "alm"):
        values = [float(r[key]) for r in rows]
        if any(v == v for v in values):  # skip all-NaN columns
            ax.plot(steps, values, label=key, linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(f"distillation: {csv_path.parent.name}")
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return png_path
