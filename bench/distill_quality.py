"""Does the multi-teacher student beat every teacher, on every seed? Per-skill exact match.

    .venv/bin/python bench/distill_quality.py [--quick] [--seeds 0,1,2] [--per-skill 1500]
        [--steps 2500] [--eval 200] [--jobs 2] [--out DIR] [--skip ROW]

One run harvests the three built-in teachers on toy-world train prompts once, then trains
every student row once per seed (`distill.seed`: the student's initial weights, the batch
order and the on-policy samples) and scores it on the test split. The rows
(bench/quality_rows.py) all start from the example project that `persea init` writes:

- each teacher (scored once; its answers do not depend on the seed);
- the example project's own recipe, as the template has it;
- SFT only (every teacher's answers, cross-entropy only, no weighting); multi-teacher
  variants: verified + CE only, verified + KD, + ALM, best_teacher, confidence, and the
  teachers' distributions averaged or one teacher selected per token (these two need the
  harvest's cross scores, so the harvest makes them when a row needs them);
- one student per single teacher (verified, CE + cross-tokenizer KD);
- on-policy rows (`distill.on_policy`): each teacher alone, all teachers with
  `combine: select`, with `combine: best`, and `select` with `lmbda: 0.5` (half the steps on
  the cache, as the example recipe trains).

Off-policy rows train `--steps` steps. On-policy rows get the same training wall-clock as
the best off-policy row (highest mean overall): its training loop's seconds, measured in
each of its runs and averaged over the seeds, become every on-policy run's
`distill.time_budget` (the run stops when its own training loop has spent them, and its
learning rate decays with the share spent; persea.distill.trainer), with a step cap of
`TIME_CAP` times `--steps` that the budget reaches first. Both sides run `--jobs` at a time,
so under the same load, and both are timed by the trainer's own clock (its loop's seconds,
checkpoint writes included, summed over resumes); setup outside the loop (building
examples, loading the teachers that grade the student's samples) counts for neither side.
The output prints the budget and what each on-policy row then trained (seconds and steps).
(An earlier version timed a few on-policy steps of an untrained student and divided: the
real steps cost many times more, and the on-policy row overran its share.)

The table gives, per row, skill and overall, the mean over seeds and the lowest and highest
seed, e.g. `0.81 (0.77–0.84)`, and the worst seed's overall. The verdicts use the range
(highest minus lowest seed) as the seed spread.

`--quick` (sized for 20 minutes on 2 cores, three seeds; measured in docs/benchmarks.md):
the sizes in bench/quality_rows.py's PROFILES, and only the teachers, the example recipe,
verified + CE only, verified + KD and two on-policy rows (all teachers, select, lmbda 0.5,
from the start or after half the time). It leaves out SFT only, ALM, best_teacher,
confidence, the averaged and selected off-policy rows (and with them the cross-scored
harvest), the single-teacher rows and the other on-policy rows. An explicit `--per-skill`,
`--steps` or `--eval` overrides the profile's.

Students train `--jobs` at a time, each in its own process on one thread (two processes of
two threads each on two cores spend their time waiting on each other). Each result is
written to `results/` as it finishes; with `--out DIR` the project is kept there and a second
run resumes: the harvest, every finished student and score are reused.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean, pstdev

import yaml

from persea.init_template import EXAMPLE_PROJECT
from persea.skills import get_world

# the benchmark's own helpers, next to this file
from quality_report import Row, table, verdicts  # noqa: E402, I001
from quality_rows import (CE_ROW, KD_ROW, PROFILES, TINY_STUDENT, all_rows,  # noqa: E402
                          distill_block, is_on_policy, needs_cross_scores)

TIME_CAP = 10  # on-policy step cap, times --steps: the time budget ends those runs first


def child(file: Path, name: str, per_eval: int, out: Path) -> None:
    """Child process: one student trained (or resumed) and scored on the test split."""
    import torch  # heavy: only the children train

    from persea.distill.run import run_distill
    from persea.models.sources import load_hf_dir
    from persea.project import load_project
    from persea.skills import skill_accuracy

    torch.set_num_threads(1)
    result = run_distill(load_project(file))
    acc = skill_accuracy(load_hf_dir(name, result.student_dir), per_skill=per_eval)
    out.write_text(json.dumps({"name": name, "acc": acc, "params": result.params,
                               "seconds": result.summary["seconds"],
                               "steps": result.summary["steps"]}))


def write_project(root: Path, base: dict, block: dict | None) -> Path:
    """The base project, or one run's copy of it (its own file and run directory)."""
    data = dict(base)
    file = root / "persea.yaml"
    if block is not None:
        data["distill"] = block
        file = root / f"{Path(block['out']).name}.yaml"
    file.write_text(yaml.safe_dump(data), encoding="utf-8")
    return file


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="the 20-minute profile (fewer rows)")
    ap.add_argument("--seeds", default="0,1,2", help="distill.seed of each run, comma-separated")
    ap.add_argument("--per-skill", type=int, help="harvest prompts per skill")
    ap.add_argument("--steps", type=int, help="steps of every off-policy row")
    ap.add_argument("--eval", type=int, help="test items per skill")
    ap.add_argument("--jobs", type=int, default=2, help="students trained at once")
    ap.add_argument("--out", type=Path, default=None, help="keep the project here")
    ap.add_argument("--skip", action="append", default=[], metavar="ROW",
                    help="leave out this student row (repeatable; the table says so)")
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # smoke runs
    ap.add_argument("--child", nargs=3, metavar=("FILE", "NAME", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    for field, value in PROFILES["quick" if args.quick else "full"].items():
        if getattr(args, field) is None:
            setattr(args, field, value)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        ap.error(f"--seeds: expected comma-separated integers such as 0,1,2, got {args.seeds!r}")
    return args


def main() -> int:
    args = parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1], args.eval, Path(args.child[2]))
        return 0

    from persea.harvest import HarvestJob, run_harvest  # heavy: torch, transformers
    from persea.models.sources import load_teacher
    from persea.project import load_project
    from persea.skills import skill_accuracy

    root = (args.out or Path(tempfile.mkdtemp(prefix="persea-quality-"))).resolve()
    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(EXAMPLE_PROJECT.format(name="quality"))
    if args.tiny:
        base["distill"]["student"].update(TINY_STUDENT)
        base["distill"]["dev_per_skill"] = 5
    rows = all_rows(base, args.quick)
    unknown = set(args.skip) - set(rows)
    if unknown:
        raise SystemExit(f"--skip: no such row: {', '.join(sorted(unknown))}; "
                         f"expected one of: {', '.join(rows)}")
    rows = {k: v for k, v in rows.items() if k not in args.skip}
    base["prompts"]["toyworld"]["per_skill"] = args.per_skill
    base["harvest"]["cross_score"] = needs_cross_scores(rows)
    skills = list(get_world().skills)
    print(f"project: {root}\nseeds: {args.seeds}; off-policy steps: {args.steps}; "
          f"harvest: {args.per_skill} prompts per skill; test: {args.eval} items per skill",
          flush=True)
    proj = load_project(write_project(root, base, None))
    run_harvest(HarvestJob.of(proj))

    table_rows: list[Row] = []
    for spec in proj.spec.teachers:
        done = results / f"teacher-{spec.name}-e{args.eval}.json"
        if not done.is_file():
            model = load_teacher(spec, proj)
            params = sum(p.numel() for p in model.model.parameters())
            done.write_text(json.dumps({"acc": skill_accuracy(model, per_skill=args.eval),
                                        "params": params}))
        table_rows.append(Row(f"teacher: {spec.name}", [json.loads(done.read_text())], [0],
                              teacher=True))

    def run(job: tuple[str, dict, int]) -> dict:
        """One run (row name, distill block, seed), trained and scored in a child."""
        name, block, seed = job
        done = results / f"{Path(block['out']).name}-e{args.eval}.json"
        if not done.is_file():
            file = write_project(root, base, block)
            bound = (f"{block['time_budget']:.0f} s" if block.get("time_budget")
                     else f"{block['steps']} steps")
            print(f"training: {name} (seed {seed}, {bound})", flush=True)
            cmd = [sys.executable, __file__, "--eval", str(args.eval), "--child", str(file),
                   name, str(done)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{name} (seed {seed}) failed:\n{proc.stderr[-3000:]}")
        return json.loads(done.read_text())

    def run_all(jobs: list[tuple[str, dict, int]]) -> list[dict]:
        """The runs' results in order; runs of the same configuration train once."""
        unique: dict[str, tuple] = {}
        for job in jobs:
            unique.setdefault(job[1]["out"], job)
        with ThreadPoolExecutor(args.jobs) as pool:
            done = dict(zip(unique, pool.map(run, unique.values())))
        return [done[job[1]["out"]] for job in jobs]

    def train_rows(names: list[str], steps: int, on_policy: bool,
                   budget: float | None = None) -> None:
        jobs = [(n, distill_block(base, rows[n], steps, s, budget), s)
                for n in names for s in args.seeds]
        out = iter(run_all(jobs))
        for n in names:
            runs = [next(out) for _ in args.seeds]
            table_rows.append(Row(n, runs, list(args.seeds), on_policy=on_policy))

    def kind(name: str) -> bool:
        return is_on_policy(distill_block(base, rows[name], 1, 0))

    off = [n for n in rows if not kind(n)]
    on = [n for n in rows if kind(n)]
    train_rows(off, args.steps, on_policy=False)
    notes: list[str] = []
    if on and off:
        best = max([r for r in table_rows if not r.teacher and not r.on_policy], key=Row.mean)
        budget = mean(r["seconds"] for r in best.runs)
        notes.append(f"equal-time budget: {best.name} (best off-policy row by mean overall) "
                     f"trained {budget:.1f} s on average over {len(best.runs)} seeds "
                     f"({args.steps} steps; sd {pstdev(r['seconds'] for r in best.runs):.1f} s)")
        train_rows(on, args.steps * TIME_CAP, on_policy=True, budget=budget)
        notes.append("on-policy rows, each run bounded by that budget (distill.time_budget):")
        for r in (r for r in table_rows if r.on_policy):
            took = mean(x["seconds"] for x in r.runs)
            notes.append(f"  {r.name}: trained {took:.1f} s ({took / budget:.0%} of the "
                         f"budget), {mean(x['steps'] for x in r.runs):.0f} steps on average")
    print("\n" + "\n".join(table(table_rows, skills, args.skip)))
    print("\ncells: mean over seeds (lowest–highest seed); seed spread = highest - lowest")
    print("\n".join(["", *notes, ""]))
    print("\n".join(verdicts(table_rows, skills, KD_ROW, CE_ROW)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
