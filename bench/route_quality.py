"""Does the learned router beat every single model, and at what cost? Toy-world test split.

    .venv/bin/python bench/route_quality.py --project DIR [--dev-per-skill 150]
        [--test-per-skill 50] [--price MODEL=X ...] [--png FILE]
    .venv/bin/python bench/route_quality.py --tiny [--out DIR] [--png FILE]

`--project DIR` is a project where `persea harvest` and `persea distill` have run (as
`make demo` leaves `demo-project/`). The run evaluates the student and every teacher on
the toy world's dev split (`--dev-per-skill` items per skill; kb and convert hold fewer) and
test split (`--test-per-skill`), reusing complete runs (a project already evaluated with
those counts on both splits is not evaluated again; `--no-eval` takes the newest complete
runs it holds on both splits as they are, whatever their counts); fits the learned router on the dev
records (`persea.route.learned.train_router`); and judges it on the test records beside each
single model, a random router and the oracle (`persea.route.quality.compare`). A project
without a student is routed between its teachers only (and says so).

`--tiny` builds a throwaway project first, for a smoke run of a few minutes: 24 harvest
prompts per skill, a one-layer student trained 40 steps, 30 dev and 15 test items per skill.
Its student learns little; the routing between the teachers is still real.

Prices come from configuration, as `persea route train` reads them
(`persea.route.learned.serve_prices`): each model's `price: {input, output}` in the project's
`serve.models` (money per 1,000 tokens), turned into the cost of one request of 1,000 prompt
and 1,000 completion tokens. `--tiny` writes its project's serve section with the prices
below, a learned route `auto` over all four models and the router the run fits
(`router.json`), so `persea serve` can serve it as judged here. A `--project` whose serve
section prices no model gets the same assumption; `--price MODEL=X` (per request) overrides
it for a model the serve section leaves unpriced.

The assumption (money per 1,000 prompt / completion tokens): the student, our own small
model, 0.0001 / 0.0004; each teacher, standing in for a provider's model, ten times that for
the first teacher of the project and one more step of 0.001 / 0.004 for each next one
(qwen3-toy 0.001 / 0.004, gemma3-toy 0.002 / 0.008, gptoss-toy 0.003 / 0.012 in the
example project). The teachers' order of price is the project's order, chosen before any
run and blind to how well each one answers. So one request costs 0.0005, 0.005, 0.010 and
0.015.

Verdicts, read off the same test records:

1. the learned router at threshold 1 (always the model most likely right) is more accurate
   than every single model;
2. that accuracy is at least 95% of the oracle's (the best any router could do here);
3. at the best single model's accuracy, the router costs less: the cheapest threshold of the
   sweep (0, 0.01, ..., 1) whose accuracy reaches the best single model's, against that
   model's cost.

The quality-cost curve (the sweep, with each single model, the random router and the oracle
as points) goes to `--png`, by default `<project>/route-quality.png`.

Decision time: `Router.choose` on every test prompt (as a one-message chat), three passes,
each call timed alone, side by side with a fixed preference list timed the same way; the
added time is the difference of the two medians (target: at most 0.2 ms at p50).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from decimal import Decimal

import yaml

from persea.evaluate.targets import STUDENT, student_dir
from persea.init_template import EXAMPLE_PROJECT
from persea.project import load_project
from persea.route.learned import (REQUEST_TOKENS, request_price, resolve_prices,
                                  serve_prices, train_router)
from persea.route.quality import compare, to_png
from persea.route.records import project_routing_data

# The assumed prices, money per 1,000 prompt / completion tokens (module docstring).
STUDENT_PRICE = ("0.0001", "0.0004")
TEACHER_STEP = ("0.001", "0.004")  # the first teacher's price, and each next one's step up
ROUTER_FILE = "router.json"
TINY = {"prompts": 24, "steps": 40, "dev": 30, "test": 15,
        "student": {"vocab_size": 300, "hidden_size": 32, "layers": 1, "heads": 2,
                    "intermediate_size": 64}}
TARGET_MS = 0.2


def assumed_prices(student: bool, teachers: list[str]) -> dict[str, dict[str, str]]:
    """The assumed price of each model, per 1,000 tokens, as a serve section writes it."""
    out = {STUDENT: {"input": STUDENT_PRICE[0], "output": STUDENT_PRICE[1]}} if student else {}
    for i, name in enumerate(teachers, 1):
        out[name] = {"input": str(Decimal(TEACHER_STEP[0]) * i),
                     "output": str(Decimal(TEACHER_STEP[1]) * i)}
    return out


def serve_section(teachers: list[str]) -> dict:
    """The tiny project's serving configuration: the student and every built-in teacher at
    the assumed prices, and a learned route over them with the router this run fits."""
    prices = assumed_prices(True, teachers)
    models = [{"name": STUDENT, "student": True, "price": prices[STUDENT]}]
    models += [{"name": t, "builtin": t, "price": prices[t]} for t in teachers]
    return {"models": models,
            "routes": {"auto": {"policy": "learned", "models": [STUDENT, *teachers],
                                "router": ROUTER_FILE, "threshold": 0.5}}}


def build_tiny(root: Path) -> Path:
    """A small project: harvest and distil with the CLI, as a person would."""
    data = yaml.safe_load(EXAMPLE_PROJECT.format(name="route-bench"))
    data["prompts"]["toyworld"]["per_skill"] = TINY["prompts"]
    data["distill"]["student"] = TINY["student"]
    data["distill"].update(steps=TINY["steps"], checkpoint_every=TINY["steps"], warmup=5)
    data["serve"] = serve_section([t["builtin"] for t in data["teachers"]])
    root.mkdir(parents=True, exist_ok=True)
    (root / "persea.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    persea("harvest", "--project", str(root))
    persea("distill", "--project", str(root), "--eval-per-skill", "0")
    return root


def persea(*args: str) -> None:
    """One persea command, as a person would run it; its output goes by."""
    print("persea " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "persea.cli", *args], check=True)


def parse_prices(values: list[str]) -> dict[str, float]:
    out = {}
    for v in values:
        name, _, amount = v.partition("=")
        out[name] = float(amount)
    return out


def timed_p50(fn, prompts: list[str], passes: int = 3) -> tuple[float, float]:
    """(p50, p99) in ms of `fn(messages)`, each call timed alone."""
    samples = []
    for _ in range(passes):
        for p in prompts:
            messages = [{"role": "user", "content": p}]
            t0 = time.perf_counter_ns()
            fn(messages)
            samples.append((time.perf_counter_ns() - t0) / 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(0.99 * (len(samples) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--project", type=Path, help="a project where harvest and distill ran")
    ap.add_argument("--tiny", action="store_true", help="build a tiny project first")
    ap.add_argument("--out", type=Path, help="--tiny: keep the project here (resumes)")
    ap.add_argument("--dev-per-skill", type=int, default=None)
    ap.add_argument("--test-per-skill", type=int, default=None)
    ap.add_argument("--price", action="append", default=[],
                    help="MODEL=X: the cost of one request, for a model the serve section "
                    "does not price (repeatable)")
    ap.add_argument("--png", type=Path, help="the quality-cost curve (default: "
                    "<project>/route-quality.png)")
    ap.add_argument("--no-eval", action="store_true",
                    help="evaluate nothing: use the newest complete runs the project already "
                    "holds on the dev and test splits, whatever their item counts")
    args = ap.parse_args()
    if args.tiny == (args.project is not None):
        ap.error("give exactly one of --project DIR or --tiny")
    started = time.monotonic()
    if args.tiny:
        root = args.out or Path(tempfile.mkdtemp(prefix="route-bench-"))
        if not (root / "persea.yaml").is_file():
            build_tiny(root)
        dev_n, test_n = TINY["dev"], TINY["test"]
    else:
        root = args.project
        dev_n, test_n = 150, 50
    dev_n, test_n = args.dev_per_skill or dev_n, args.test_per_skill or test_n
    project = load_project(root)
    if not (student_dir(project) / "config.json").is_file():
        print(f"note: no student in {root}; routing between the teachers only")
    for split, n in (("dev", dev_n), ("test", test_n)):
        if not args.no_eval:
            persea("eval", "--project", str(root), "--split", split, "--per-skill", str(n))
    models = [m for m in [STUDENT, *(t.name for t in project.spec.teachers)]
              if m != STUDENT or (student_dir(project) / "config.json").is_file()]
    dev = project_routing_data(project, "dev", models)
    test = project_routing_data(project, "test", models)
    from_serve = serve_prices(project)
    given = parse_prices(args.price)
    unpriced = [m for m in models if m not in from_serve and m not in given]
    if from_serve and unpriced:
        raise SystemExit(f"{root}: the serve section prices {', '.join(from_serve)} but not "
                         f"{', '.join(unpriced)}; price them there or with --price MODEL=X")
    if not from_serve:  # the assumption, for the models that --price leaves out
        assumed = assumed_prices(STUDENT in models, [m for m in models if m != STUDENT])
        given = {m: request_price(assumed[m]) for m in models} | given
    prices, source = resolve_prices(models, from_serve, given)
    if not from_serve:
        source = {m: "--price" if m in parse_prices(args.price) else "bench assumption"
                  for m in models}
    t0 = time.monotonic()
    router = train_router(dev, prices)
    fit_s = time.monotonic() - t0
    result = compare(router, test)
    if args.tiny:  # the serving configuration names this file
        router.save(root / ROUTER_FILE)
    png = to_png(result, args.png or root / "route-quality.png",
                 f"routing on {root.name}: quality vs cost")

    print(f"\nrouter: fitted on {len(dev.ids)} dev items in {fit_s:.1f} s, "
          f"{len(router.vocabulary):,} features; judged on {len(test.ids)} test items")
    print(f"prices per request of {REQUEST_TOKENS[0]:,} + {REQUEST_TOKENS[1]:,} tokens: "
          + ", ".join(f"{m} {prices[m]:g} ({source[m]})" for m in models))
    print(f"\n| router | threshold | accuracy | cost / 1k requests | requests to |")
    print("|---|---:|---:|---:|---|")
    for r in result.rows:
        shares = ", ".join(f"{m} {s:.0%}" for m, s in r.shares.items() if s > 0)
        t = "-" if r.threshold is None else f"{r.threshold:.2f}"
        print(f"| {r.name} | {t} | {r.accuracy:.3f} | {r.cost_per_1k:,.2f} | {shares} |")

    best = max(result.singles, key=lambda r: (r.accuracy, -r.cost_per_1k))
    top = result.row("learned @ 1.00")
    oracle = result.oracle
    reach = result.cheapest_reaching(best.accuracy)
    print("\nverdicts:")
    beats = all(top.accuracy > r.accuracy for r in result.singles)
    print(f"- learned router beats every single model's accuracy: {'yes' if beats else 'no'} "
          f"({top.accuracy:.3f} at threshold 1 vs best single {best.name} {best.accuracy:.3f})")
    share = top.accuracy / oracle.accuracy if oracle.accuracy else float("nan")
    print(f"- reaches 95% of the oracle's accuracy: {'yes' if share >= 0.95 else 'no'} "
          f"({top.accuracy:.3f} / {oracle.accuracy:.3f} = {share:.1%})")
    if reach is None:
        print(f"- at {best.name}'s accuracy it costs less: no (no threshold reaches "
              f"{best.accuracy:.3f})")
    else:
        cheaper = reach.cost_per_1k < best.cost_per_1k
        print(f"- at {best.name}'s accuracy it costs less: {'yes' if cheaper else 'no'} "
              f"(threshold {reach.threshold:.2f}: accuracy {reach.accuracy:.3f} for "
              f"{reach.cost_per_1k:,.2f} per 1k requests vs {best.cost_per_1k:,.2f}, "
              f"{reach.cost_per_1k / best.cost_per_1k:.2f}x)")

    fixed = list(router.models)
    p50_fixed, _ = timed_p50(lambda messages: list(fixed), test.prompts)
    p50, p99 = timed_p50(router.choose, test.prompts)
    added = p50 - p50_fixed
    print(f"\ndecision time per request ({3 * len(test.prompts)} calls): router.choose p50 "
          f"{p50:.4f} ms, p99 {p99:.4f} ms; fixed list p50 {p50_fixed:.4f} ms; added at p50 "
          f"{added:.4f} ms (target <= {TARGET_MS} ms: {'yes' if added <= TARGET_MS else 'no'})")
    print(f"quality-cost curve: {png}")
    print(f"project: {root}; total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
