"""`persea route train|eval`: fit the learned router from the project's evaluation records,
and judge it against each single model, a random router and the oracle."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from persea.cli.output import wide_console
from persea.errors import PerseaError
from persea.project import load_project
from persea.route.learned import (DEFAULT_THRESHOLD, check_threshold, read_router,
                                  resolve_prices, serve_prices, train_router)
from persea.route.quality import TABLE_THRESHOLDS, compare, to_png
from persea.route.records import project_routing_data

out = wide_console()

route_app = typer.Typer(no_args_is_help=True,
                        help="The learned router: train it on evaluation records, judge it.")

ProjectOpt = typer.Option(None, "--project", "-p",
                          help="Project directory or persea.yaml (default: current directory).")
ROUTER_FILE = "router.json"
CURVE_FILE = "route-quality.png"


def parse_prices(values: list[str]) -> dict[str, float]:
    """`MODEL=X` flags as {model: price}; anything else is a one-line error."""
    prices: dict[str, float] = {}
    for value in values:
        name, eq, amount = value.partition("=")
        try:
            price = float(amount)
        except ValueError:
            price = float("nan")
        if not eq or not name.strip() or not math.isfinite(price) or price <= 0:
            raise PerseaError(f"--price {value!r}: expected MODEL=X with X a positive number "
                              "(the cost of one request), for example student=0.2")
        prices[name.strip()] = price
    return prices


def _project_file(proj, given: Optional[Path], default: str) -> Path:
    return given if given is not None else proj.root / default


@route_app.command("train")
def train(project: Optional[Path] = ProjectOpt,
          out_file: Optional[Path] = typer.Option(
              None, "--out", help=f"Where to write the router (default: <project>/{ROUTER_FILE})."),
          price: Optional[list[str]] = typer.Option(
              None, "--price", help="MODEL=X: the cost of one request to MODEL, for projects "
              "whose serve section gives none (repeatable; default 1.0 each)."),
          model: Optional[list[str]] = typer.Option(
              None, "--model", "-m", help="Route between these models only (repeatable; "
              "default: every model with runs on the split)."),
          split: str = typer.Option("dev", help="The split whose records it learns from."),
          threshold: float = typer.Option(
              DEFAULT_THRESHOLD, help="The default threshold stored with the router: the "
              "cheapest model predicted right with at least this probability.")):
    """Fit the learned router on the project's evaluation records (the dev split)."""
    proj = load_project(project)
    threshold = check_threshold(threshold)
    data = project_routing_data(proj, split, list(model) if model else None)
    prices, source = resolve_prices(data.models, serve_prices(proj), parse_prices(price or []))
    router = train_router(data, prices, threshold=threshold)
    path = router.save(_project_file(proj, out_file, ROUTER_FILE))
    table = Table(title=f"learned router: {len(data.ids)} items of the {split} split, "
                        f"{len(router.vocabulary):,} n-gram features")
    for col in ("model", "price", "from", f"{split} accuracy", "C", "weights"):
        table.add_column(col, justify="left" if col in ("model", "from") else "right")
    for m in router.models:
        c = router.settings["C"][m]
        table.add_row(m, f"{prices[m]:g}", source[m], f"{data.accuracy()[m]:.3f}",
                      "-" if c is None else f"{c:g}", router.fingerprints[m][:12])
    out.print(table)
    out.print(f"wrote {path} (records digest {data.digest[:12]}, default threshold "
              f"{threshold:g})", highlight=False, soft_wrap=True)
    out.print(f"next: persea route eval --project {project or '.'}", highlight=False)


@route_app.command("eval")
def eval_(project: Optional[Path] = ProjectOpt,
          router_file: Optional[Path] = typer.Option(
              None, "--router", help=f"The router file (default: <project>/{ROUTER_FILE})."),
          split: str = typer.Option("test", help="The split whose records judge it."),
          threshold: Optional[list[float]] = typer.Option(
              None, "--threshold", "-t", help="Thresholds for the table (repeatable; default "
              + ", ".join(f"{t:g}" for t in TABLE_THRESHOLDS) + ")."),
          png: Optional[Path] = typer.Option(
              None, help=f"The quality-cost curve (default: <project>/{CURVE_FILE}).")):
    """The learned router side by side with each single model, a random router and the
    oracle on held-out records: accuracy and cost per 1,000 requests; writes the curve."""
    proj = load_project(project)
    thresholds = [check_threshold(t) for t in (threshold or TABLE_THRESHOLDS)]
    router = read_router(_project_file(proj, router_file, ROUTER_FILE))
    if split == router.trained_on.get("split"):
        raise PerseaError(f"--split {split}: the router was trained on the {split} split; "
                          "judge it on held-out records (another split)")
    data = project_routing_data(proj, split, router.models)
    result = compare(router, data, thresholds)
    table = Table(title=f"routing on the {split} split: {result.items} items")
    for col in ("router", "threshold", "accuracy", "cost / 1k requests", "requests to"):
        table.add_column(col, justify="left" if col in ("router", "requests to") else "right")
    for r in result.rows:
        shares = ", ".join(f"{m} {s:.0%}" for m, s in r.shares.items() if s > 0)
        table.add_row(r.name, "-" if r.threshold is None else f"{r.threshold:.2f}",
                      f"{r.accuracy:.3f}", f"{r.cost_per_1k:,.1f}", shares)
    out.print(table)
    path = to_png(result, _project_file(proj, png, CURVE_FILE))
    out.print(f"prices per request: " + ", ".join(f"{m} {p:g}" for m, p in
                                                   result.prices.items()), highlight=False)
    out.print(f"wrote {path}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `persea route` to the `persea` app."""
    app.add_typer(route_app, name="route")
