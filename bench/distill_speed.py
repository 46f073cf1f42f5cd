"""Student training speed with cached top-k KD from three teachers vs plain cross-entropy.

    .venv/bin/python bench/distill_speed.py [--steps 40] [--per-skill 16]

One run: harvests the three built-in teachers (top-32) into a temporary project, builds the
aligned examples once, then trains the same student from the same seed with each objective
in its own child process (so each peak memory is its own), and prints tokens/s, the ratio to
plain cross-entropy, and peak resident memory. Target: ratio >= 0.8 for KD from three
teachers.
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

VARIANTS = {
    "CE only (sequence-level)": {"kd": "none", "alm_weight": 0.0},
    "CE + cross-tokenizer KD (top-32)": {"kd": "xtok", "alm_weight": 0.0},
    "CE + KD + ALM": {"kd": "xtok", "alm_weight": 0.5},
}


def child(data_path: str, loss: str, steps: int) -> None:
    import torch

    from persea.distill.student import build_student_model
    from persea.distill.trainer import train
    from persea.project import DistillSpec

    torch.set_num_threads(2)
    with open(data_path, "rb") as f:
        examples, weights, tok = pickle.load(f)
    spec = DistillSpec(steps=steps, batch_size=32, checkpoint_every=10**9, warmup=5,
                       loss=json.loads(loss))
    model = build_student_model(tok, 128, 4, 4, 384, 0)
    with tempfile.TemporaryDirectory() as run:
        summary = train(model, examples, weights, spec, Path(run), tok.pad_token_id)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tokens_per_s": summary["tokens_per_s"], "peak_mb": peak_mb}))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--per-skill", type=int, default=16)
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return 0

    from persea.distill.cache import open_harvest
    from persea.distill.data import build_examples
    from persea.distill.student import harvest_corpus, train_student_tokenizer
    from persea.distill.weighting import example_weights
    from persea.harvest import run_harvest
    from persea.init_template import EXAMPLE_PROJECT
    from persea.project import load_project

    with tempfile.TemporaryDirectory() as tmp:
        data = yaml.safe_load(EXAMPLE_PROJECT.format(name="bench"))
        data["prompts"]["toyworld"]["per_skill"] = args.per_skill
        (Path(tmp) / "persea.yaml").write_text(yaml.safe_dump(data))
        proj = load_project(Path(tmp))
        run_harvest(proj)
        harvest = open_harvest(proj.resolve(proj.spec.harvest.out))
        tok = train_student_tokenizer(harvest_corpus(harvest.path), 512)
        examples = build_examples(harvest, tok)
        weights = example_weights(examples, ["uniform"])
        data_path = Path(tmp) / "examples.pkl"
        with open(data_path, "wb") as f:
            pickle.dump((examples, weights, tok), f)
        print(f"{len(examples)} examples from 3 teachers; student Llama 4x128; "
              f"{args.steps} steps of 32 sequences per variant\n")
        results = {}
        for name, loss in VARIANTS.items():
            out = subprocess.run([sys.executable, __file__, "--child", str(data_path),
                                  json.dumps(loss), str(args.steps)],
                                 capture_output=True, text=True, check=True)
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    base = results["CE only (sequence-level)"]["tokens_per_s"]
    print(f"{'objective':<36}{'tokens/s':>10}{'ratio':>8}{'peak RSS MB':>13}")
    for name, r in results.items():
        print(f"{name:<36}{r['tokens_per_s']:>10.0f}{r['tokens_per_s'] / base:>8.2f}"
              f"{r['peak_mb']:>13.0f}")
    ratio = results["CE + cross-tokenizer KD (top-32)"]["tokens_per_s"] / base
    print(f"\nKD from three teachers keeps >= 0.8 of CE speed: {'yes' if ratio >= 0.8 else 'no'} "
          f"(ratio {ratio:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
