"""Does the multi-teacher student beat every teacher, on every seed? Per-skill exact match.

    .venv/bin/python bench/distill_quality.py [--quick] [--seeds 0,1,2] [--per-skill 1500]
        [--steps 2500] [--eval 200] [--calib-steps 20] [--jobs 2] [--out DIR] [--skip ROW]

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
the best off-policy row (highest mean overall): its training loop's seconds are measured in
each of its runs (the budget, mean over seeds); then that row and every on-policy row train
`--calib-steps` steps side by side (`--jobs` at a time, so under the load of the real runs)
and their seconds per step after a warm-up give each on-policy row's steps = budget /
seconds per step, scaled by how much slower or faster the real runs were than the
calibration of the same off-policy row. The output prints the budget, the calibration, the
steps chosen, a warning when the load moved, and how long the on-policy runs then took.
Setup outside the training loop (building examples, loading the teachers that grade the
student's samples) counts for neither side.

The table gives, per row, skill and overall, the mean over seeds and the lowest and highest
seed, e.g. `0.81 (0.77–0.84)`, and the worst seed's overall. The verdicts use the range
(highest minus lowest seed) as the seed spread.

`--quick` (sized for about 20 minutes on 2 cores; three seeds; its off-policy part took 8
minutes, its on-policy row far longer: docs/benchmarks.md):
48 harvest prompts per skill, 200 steps, 40 test items per skill, 8 calibration steps, and
only the teachers, the example recipe, verified + CE only, verified + KD and one on-policy
row (all teachers, select, lmbda 0.5). It leaves out SFT only, ALM, best_teacher,
confidence, the averaged and selected off-policy rows (and with them the cross-scored
harvest), the single-teacher rows and the other on-policy rows. An explicit `--per-skill`,
`--steps`, `--eval` or `--calib-steps` overrides the profile's.

Students train `--jobs` at a time, each in its own process on one thread (two processes of
two threads each on two cores spend their time waiting on each other). Each result is
written to `results/` as it finishes; with `--out DIR` the project is kept there and a second
run resumes: the harvest, every finished student, calibration and score are reused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
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

LOAD_TOLERANCE = 1.25  # real runs this much slower or faster than the calibration: say so


class StepClock:
    """Stands in for the trainer's progress bar and notes when each step ends."""

    def __init__(self):
        self.times: list[float] = []

    def add_task(self, *args, **kwargs) -> int:
        self.times.append(time.perf_counter())
        return 0

    def update(self, *args, **kwargs) -> None:
        self.times.append(time.perf_counter())

    def durations(self, skip: int = 0) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:])][skip:]


def child(file: Path, name: str, per_eval: int, out: Path, warm: int | None) -> None:
    """Child process: one student trained (or resumed); scored on the test split, or, with
    `warm`, only timed (seconds per step after `warm` steps)."""
    import torch  # heavy: only the children train

    from persea.distill.run import run_distill
    from persea.models.sources import load_hf_dir
    from persea.project import load_project
    from persea.skills import skill_accuracy

    torch.set_num_threads(1)
    clock = StepClock()
    result = run_distill(load_project(file), progress=clock)
    steps = clock.durations()
    if warm is not None:
        timed = clock.durations(warm)
        out.write_text(json.dumps({"s_per_step": mean(timed), "sd": pstdev(timed),
                                   "steps": len(timed)}))
        return
    acc = skill_accuracy(load_hf_dir(name, result.student_dir), per_skill=per_eval)
    out.write_text(json.dumps({"name": name, "acc": acc, "params": result.params,
                               "seconds": sum(steps), "steps_timed": len(steps)}))


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
    ap.add_argument("--calib-steps", type=int, help="steps of each on-policy timing run")
    ap.add_argument("--jobs", type=int, default=2, help="students trained at once")
    ap.add_argument("--out", type=Path, default=None, help="keep the project here")
    ap.add_argument("--skip", action="append", default=[], metavar="ROW",
                    help="leave out this student row (repeatable; the table says so)")
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # smoke runs
    ap.add_argument("--child", nargs=3, metavar=("FILE", "NAME", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--warm", type=int, default=None, help=argparse.SUPPRESS)
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
        child(Path(args.child[0]), args.child[1], args.eval, Path(args.child[2]), args.warm)
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

    def run(job: tuple[str, dict, int, int | None]) -> dict:
        """One run (row name, distill block, seed, warm-up steps): trained and scored in a
        child, or with a warm-up count, only timed."""
        name, block, seed, warm = job
        done = results / f"{Path(block['out']).name}-{tag(warm)}.json"
        if not done.is_file():
            if warm is not None:  # a timing run starts from step 0, never from a checkpoint
                shutil.rmtree(root / block["out"], ignore_errors=True)
            file = write_project(root, base, block)
            print(f"{'timing' if warm is not None else 'training'}: {name} (seed {seed}, "
                  f"{block['steps']} steps)", flush=True)
            cmd = [sys.executable, __file__, "--eval", str(args.eval), "--child", str(file),
                   name, str(done)] + (["--warm", str(warm)] if warm is not None else [])
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{name} (seed {seed}) failed:\n{proc.stderr[-3000:]}")
        return json.loads(done.read_text())

    def tag(warm: int | None) -> str:
        return "calib" if warm is not None else f"e{args.eval}"

    def run_all(jobs: list[tuple[str, dict, int, int | None]]) -> list[dict]:
        """The runs' results in order; runs of the same configuration train once."""
        unique: dict[tuple[str, str], tuple] = {}
        for job in jobs:
            unique.setdefault((job[1]["out"], tag(job[3])), job)
        with ThreadPoolExecutor(args.jobs) as pool:
            done = dict(zip(unique, pool.map(run, unique.values())))
        return [done[(job[1]["out"], tag(job[3]))] for job in jobs]

    def jobs_of(names: list[str], steps: dict[str, int], seeds: list[int],
                warm: int | None = None) -> list[tuple[str, dict, int, int | None]]:
        return [(n, distill_block(base, rows[n], steps[n], s), s, warm)
                for n in names for s in seeds]

    def train_rows(names: list[str], steps: dict[str, int], on_policy: bool) -> None:
        out = iter(run_all(jobs_of(names, steps, args.seeds)))
        for n in names:
            runs = [next(out) for _ in args.seeds]
            table_rows.append(Row(n, runs, list(args.seeds), on_policy=on_policy))

    def kind(name: str) -> bool:
        return is_on_policy(distill_block(base, rows[name], 1, 0))

    off = [n for n in rows if not kind(n)]
    on = [n for n in rows if kind(n)]
    train_rows(off, dict.fromkeys(off, args.steps), on_policy=False)
    notes: list[str] = []
    if on and off:
        steps_on, budget = calibrate(args, table_rows, on, jobs_of, run_all, notes)
        train_rows(on, steps_on, on_policy=True)
        notes.append("on-policy rows' training time:")
        for r in (r for r in table_rows if r.on_policy):
            took = mean(x["seconds"] for x in r.runs)
            notes.append(f"  {r.name}: trained {took:.1f} s on average "
                         f"({took / max(budget, 1e-9):.0%} of the budget)")
    print("\n" + "\n".join(table(table_rows, skills, args.skip)))
    print("\ncells: mean over seeds (lowest–highest seed); seed spread = highest - lowest")
    print("\n".join(["", *notes, ""]))
    print("\n".join(verdicts(table_rows, skills, KD_ROW, CE_ROW)))
    return 0


def calibrate(args, table_rows: list[Row], on: list[str], jobs_of, run_all,
              notes: list[str]) -> tuple[dict[str, int], float]:
    """On-policy rows' steps for the training wall-clock of the best off-policy row, and
    that wall-clock (seconds)."""
    best = max([r for r in table_rows if not r.teacher and not r.on_policy], key=Row.mean)
    timed = [r for r in best.runs if r.get("steps_timed")]
    budget = mean(r["seconds"] for r in best.runs)
    warm = max(1, args.calib_steps // 4)
    names = [best.name, *on]
    cal = run_all(jobs_of(names, dict.fromkeys(names, args.calib_steps), args.seeds[:1], warm))
    c_off = cal[0]["s_per_step"]
    notes.append(f"equal-time budget: {best.name} (best off-policy row by mean overall) "
                 f"trained {budget:.1f} s on average over {len(best.runs)} seeds "
                 f"({args.steps} steps)")
    if len(timed) == len(best.runs):
        real = mean(r["seconds"] / r["steps_timed"] for r in timed)
        load = real / c_off
    else:  # resumed runs timed only their last steps: trust the calibration alone
        real, load = c_off, 1.0
        notes.append("  (its runs were resumed, so their time is partial; the budget is "
                     f"{args.steps} steps at the calibrated seconds per step)")
        budget = args.steps * c_off
    notes.append(f"calibration ({args.calib_steps} steps each, seed {args.seeds[0]}, first "
                 f"{warm} not counted, {args.jobs} at a time): {best.name} "
                 f"{c_off:.3f} s/step (sd {cal[0]['sd']:.3f}); its real runs {real:.3f} "
                 f"s/step ({load:.2f}x)")
    if not 1 / LOAD_TOLERANCE <= load <= LOAD_TOLERANCE:
        notes.append(f"  warning: the real runs ran at {load:.2f}x the calibration's speed "
                     "(the load on the machine moved), so the on-policy step counts are rough")
    steps = {}
    for name, c in zip(on, cal[1:]):
        steps[name] = max(1, round(budget / (c["s_per_step"] * load)))
        notes.append(f"  {name}: {c['s_per_step']:.3f} s/step (sd {c['sd']:.3f}) -> "
                     f"{steps[name]} steps")
        if c["sd"] > c["s_per_step"] / 2:
            notes.append("    (noisy: the step times vary by more than half their mean)")
    print("\n".join(notes), flush=True)
    return steps, budget


if __name__ == "__main__":
    sys.exit(main())
