"""Does the multi-teacher student beat every teacher? Per-skill exact match, side by side.

    .venv/bin/python bench/distill_quality.py [--per-skill 400] [--steps 1500] [--eval 100]

One run: harvests the three built-in teachers on toy-world train prompts, then trains one
student per row from the same seed and the same number of steps (so the same number of
training tokens per step), and scores every row on the test split:

- each teacher;
- SFT only: the student on every teacher's responses, cross-entropy only, no weighting;
- one student per single teacher (CE + cross-tokenizer KD on that teacher alone);
- multi-teacher variants: verified + CE only (sequence-level), verified + KD, verified + KD +
  ALM, best_teacher + KD, confidence + KD.

It ends with one line per target of the issue, each with its verdict.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
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
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-skill", type=int, default=400, help="harvest prompts per skill")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--eval", type=int, default=100, help="test items per skill")
    ap.add_argument("--out", type=Path, default=None, help="keep the project here")
    args = ap.parse_args()

    from persea.distill.run import run_distill
    from persea.evaluate.skills import skill_accuracy
    from persea.harvest import run_harvest
    from persea.models import load_hf_dir, load_teacher
    from persea.project import load_project
    from persea.toyworld import SKILLS

    root = args.out or Path(tempfile.mkdtemp(prefix="persea-quality-"))
    root.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(EXAMPLE_PROJECT.format(name="quality"))
    base["prompts"]["toyworld"]["per_skill"] = args.per_skill
    teachers = [t["name"] for t in base["teachers"]]
    variants = dict(VARIANTS)
    for t in teachers:
        variants[f"single teacher: {t}"] = {"teachers": [t], "weighting": ["uniform"],
                                            "loss": {"kd": "xtok"}}

    def project(distill: dict | None = None):
        data = dict(base)
        if distill is not None:
            data["distill"] = {"steps": args.steps, "batch_size": 32, "checkpoint_every": 500,
                               "out": f"runs/{abs(hash(str(distill))) % 10**8}", **distill}
        (root / "persea.yaml").write_text(yaml.safe_dump(data))
        return load_project(root)

    proj = project()
    run_harvest(proj)
    rows: list[tuple[str, dict, int | None]] = []
    for spec in proj.spec.teachers:
        model = load_teacher(spec, proj)
        params = sum(p.numel() for p in model.model.parameters())
        rows.append((f"teacher: {spec.name}", skill_accuracy(model, per_skill=args.eval), params))
    for name, distill in variants.items():
        print(f"training: {name}", flush=True)
        result = run_distill(project(distill))
        student = load_hf_dir(name, result.student_dir)
        rows.append((name, skill_accuracy(student, per_skill=args.eval), result.params))

    cols = [*SKILLS, "overall"]
    print(f"\n| model | {' | '.join(cols)} | params |")
    print("|---" * (len(cols) + 2) + "|")
    for name, acc, params in rows:
        print(f"| {name} | " + " | ".join(f"{acc[c]:.2f}" for c in cols) + f" | {params:,} |")

    teacher_rows = rows[:len(teachers)]
    multi = [r for r in rows if r[0].startswith("multi")]
    best_student = max(multi, key=lambda r: r[1]["overall"])
    best_teacher = max(teacher_rows, key=lambda r: r[1]["overall"])
    beats = best_student[1]["overall"] > best_teacher[1]["overall"]
    print(f"\nstudent beats every teacher: {'yes' if beats else 'no'} (overall "
          f"{best_student[1]['overall']:.2f} [{best_student[0]}] vs best teacher "
          f"{best_teacher[1]['overall']:.2f} [{best_teacher[0]}])")
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
          f"{'yes' if kd > ce else 'no'} ({kd:.2f} vs {ce:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
