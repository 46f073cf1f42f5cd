"""Does the multi-teacher student beat every teacher? Per-skill exact match, side by side.

    .venv/bin/python bench/distill_quality.py [--per-skill 1500] [--steps 4000] [--eval 200]
                                              [--jobs 2] [--out DIR]

One run: harvests the three built-in teachers on toy-world train prompts, then trains one
student per row from the same seed and the same number of steps (so the same number of
training tokens per step), and scores every row on the test split:

- each teacher;
- SFT only: the student on every teacher's responses, cross-entropy only, no weighting;
- one student per single teacher (CE + cross-tokenizer KD on its verified answers alone);
- multi-teacher variants: verified + CE only (sequence-level), verified + KD, verified + KD +
  ALM, best_teacher + KD, confidence + KD, and verified + KD with the teachers' distributions
  averaged or one teacher selected per token (the harvest cross-scores every teacher on the
  others' responses for these).

Students train `--jobs` at a time, each in its own process on one thread (two processes of
two threads each on two cores spend their time waiting on each other). Each student's
scores are written to `results/` as it finishes; with `--out DIR` the project is kept there
and a second run resumes: the harvest, every finished student and every score are reused.

It ends with one line per target of the issue, each with its verdict.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from persea.init_template import EXAMPLE_PROJECT

VARIANTS: dict[str, dict] = {
    "SFT only (all teachers, CE)": {"weighting": ["uniform"], "loss": {"kd": "none"}},
    "multi: verified, CE only": {"weighting": ["verified"], "loss": {"kd": "none"}},
    "multi: verified, CE + xtok KD": {"weighting": ["verified"], "loss": {"kd": "xtok"}},
    "multi: verified, CE + KD + ALM": {"weighting": ["verified"],
                                       "loss": {"kd": "xtok", "alm_weight": 0.5}},
    "multi: best_teacher, CE + KD": {"weighting": ["best_teacher"], "loss": {"kd": "xtok"}},
    "multi: confidence, CE + KD": {"weighting": ["confidence"], "loss": {"kd": "xtok"}},
    "multi: verified, CE + KD, teachers averaged": {
        "weighting": ["verified"], "loss": {"kd": "xtok", "combine": "average"}},
    "multi: verified, CE + KD, one teacher per token": {
        "weighting": ["verified"], "loss": {"kd": "xtok", "combine": "select"}},
}


def slug(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:12]


def variants_of(base: dict) -> dict[str, dict]:
    variants = dict(VARIANTS)
    for t in base["teachers"]:
        variants[f"single teacher: {t['name']}"] = {
            "teachers": [t["name"]], "weighting": ["verified"], "loss": {"kd": "xtok"}}
    return variants


def write_project(root: Path, base: dict, name: str | None, distill: dict | None,
                  steps: int) -> Path:
    """The base project, or one variant's copy of it (its own file and run directory)."""
    data = dict(base)
    file = root / "persea.yaml"
    if distill is not None:
        data["distill"] = {**base["distill"], "steps": steps, "checkpoint_every": 500,
                           "out": f"runs/{slug(name)}", **distill}
        file = root / f"variant-{slug(name)}.yaml"
    file.write_text(yaml.safe_dump(data), encoding="utf-8")
    return file


def train_and_score(file: Path, name: str, per_eval: int, out: Path) -> None:
    """Child process: one student, trained (or resumed) and scored on the test split."""
    import torch

    from persea.distill.run import run_distill
    from persea.models.sources import load_hf_dir
    from persea.project import load_project
    from persea.skills import skill_accuracy

    torch.set_num_threads(1)
    result = run_distill(load_project(file))
    student = load_hf_dir(name, result.student_dir)
    acc = skill_accuracy(student, per_skill=per_eval)
    out.write_text(json.dumps({"name": name, "acc": acc, "params": result.params}))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-skill", type=int, default=1500, help="harvest prompts per skill")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--eval", type=int, default=200, help="test items per skill")
    ap.add_argument("--jobs", type=int, default=2, help="students trained at once")
    ap.add_argument("--out", type=Path, default=None, help="keep the project here")
    ap.add_argument("--skip", action="append", default=[], metavar="ROW",
                    help="leave out this student row (repeatable; the table says so)")
    ap.add_argument("--child", nargs=3, metavar=("FILE", "NAME", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        train_and_score(Path(args.child[0]), args.child[1], args.eval, Path(args.child[2]))
        return 0

    from persea.harvest import HarvestJob, run_harvest
    from persea.models.sources import load_teacher
    from persea.project import load_project
    from persea.skills import skill_accuracy
    from persea.toyworld import SKILLS

    root = (args.out or Path(tempfile.mkdtemp(prefix="persea-quality-"))).resolve()
    (root / "results").mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(EXAMPLE_PROJECT.format(name="quality"))
    base["prompts"]["toyworld"]["per_skill"] = args.per_skill
    base["harvest"]["cross_score"] = True
    variants = variants_of(base)
    unknown = set(args.skip) - set(variants)
    if unknown:
        raise SystemExit(f"--skip: no such row: {', '.join(sorted(unknown))}")
    variants = {k: v for k, v in variants.items() if k not in args.skip}
    print(f"project: {root}", flush=True)
    proj = load_project(write_project(root, base, None, None, args.steps))
    run_harvest(HarvestJob.of(proj))

    rows: list[tuple[str, dict, int]] = []
    for spec in proj.spec.teachers:
        done = root / "results" / f"teacher-{spec.name}.json"
        if not done.is_file():
            model = load_teacher(spec, proj)
            params = sum(p.numel() for p in model.model.parameters())
            done.write_text(json.dumps({"acc": skill_accuracy(model, per_skill=args.eval),
                                        "params": params}))
        r = json.loads(done.read_text())
        rows.append((f"teacher: {spec.name}", r["acc"], r["params"]))

    def student(name: str) -> dict:
        done = root / "results" / f"{slug(name)}.json"
        if not done.is_file():
            file = write_project(root, base, name, variants[name], args.steps)
            print(f"training: {name}", flush=True)
            run = subprocess.run([sys.executable, __file__, "--eval", str(args.eval), "--child",
                                  str(file), name, str(done)], capture_output=True, text=True)
            if run.returncode != 0:
                raise SystemExit(f"{name} failed:\n{run.stderr[-3000:]}")
            print(f"done: {name}", flush=True)
        return json.loads(done.read_text())

    with ThreadPoolExecutor(args.jobs) as pool:
        for r in pool.map(student, list(variants)):
            rows.append((r["name"], r["acc"], r["params"]))

    cols = [*SKILLS, "overall"]
    print(f"\n| model | {' | '.join(cols)} | params |")
    print("|---" * (len(cols) + 2) + "|")
    for name, acc, params in rows:
        print(f"| {name} | " + " | ".join(f"{acc[c]:.2f}" for c in cols) + f" | {params:,} |")

    for name in args.skip:
        print(f"| {name} | not run (--skip) |")

    teacher_rows = [r for r in rows if r[0].startswith("teacher")]
    multi = [r for r in rows if r[0].startswith("multi")]
    best_student = max(multi, key=lambda r: r[1]["overall"])
    best_teacher = max(teacher_rows, key=lambda r: r[1]["overall"])
    beats = best_student[1]["overall"] > best_teacher[1]["overall"]
    print(f"\nstudent beats every teacher: {'yes' if beats else 'no'} (overall "
          f"{best_student[1]['overall']:.3f} [{best_student[0]}] vs best teacher "
          f"{best_teacher[1]['overall']:.3f} [{best_teacher[0]}])")
    worst = min(SKILLS, key=lambda s: best_student[1][s] / max(
        max(r[1][s] for r in teacher_rows), 1e-9))
    best_t = max(r[1][worst] for r in teacher_rows)
    ratio = best_student[1][worst] / best_t if best_t else 1.0
    print(f"student reaches 90% of the best teacher on every skill: "
          f"{'yes' if ratio >= 0.9 else 'no'} (worst: {worst}, {best_student[1][worst]:.2f} vs "
          f"{best_t:.2f}, {ratio:.0%})")
    largest = max(r[2] for r in teacher_rows)
    print(f"student has fewer parameters than the largest teacher: "
          f"{'yes' if best_student[2] < largest else 'no'} ({best_student[2]:,} vs {largest:,})")
    seq = dict((r[0], r[1]["overall"]) for r in rows)
    kd, ce = seq["multi: verified, CE + xtok KD"], seq["multi: verified, CE only"]
    print(f"cross-tokenizer logit KD beats sequence-level only at equal tokens: "
          f"{'yes' if kd > ce else 'no'} ({kd:.3f} vs {ce:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
