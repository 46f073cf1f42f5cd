"""Student training speed with cached top-k KD from three teachers vs plain cross-entropy.

    .venv/bin/python bench/distill_speed.py [--steps 150] [--per-skill 16]

One run: harvests the three built-in teachers (top-32) into a temporary project and builds
the aligned examples once. Then the same student (same seed) is trained once per objective,
the objectives taking turns step by step in one process (step i of each, the one that goes
first rotating, then step i+1 of each, ...). Each step is timed on its own (collate, forward, loss,
backward, optimiser), so a burst of load from elsewhere on a shared machine falls on every
objective alike. The first steps are warm-up and not counted. Peak resident memory comes
from a short run of each objective in its own child process, so each peak is its own.

Target: tokens/s with KD from three teachers >= 0.8 x plain cross-entropy.
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

VARIANTS = {
    "CE only (sequence-level)": {"kd": "none", "alm_weight": 0.0},
    "CE + cross-tokenizer KD (top-32)": {"kd": "xtok", "alm_weight": 0.0},
    "CE + KD + ALM": {"kd": "xtok", "alm_weight": 0.5},
}
WARMUP = 10


class Run:
    """One objective's student, optimiser and step clock (the trainer's step, unrolled)."""

    def __init__(self, tok, loss: dict, steps: int, student: dict):
        import torch

        from persea.distill.student import build_student_model
        from persea.project import DistillSpec

        self.spec = DistillSpec(steps=steps, batch_size=32, warmup=5, loss=loss)
        self.model = build_student_model(tok, student["hidden_size"], student["layers"],
                                         student["heads"], student["intermediate_size"], 0)
        self.model.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.spec.lr,
                                     weight_decay=self.spec.weight_decay, betas=(0.9, 0.95))
        self.seconds, self.tokens = 0.0, 0

    def step(self, examples, weights, pool, i: int, pad_id: int) -> None:
        import torch

        from persea.distill.batch import collate
        from persea.distill.objective import compute_loss
        from persea.distill.sampling import batch_indices

        t0 = time.perf_counter()
        idx = batch_indices(pool, i, 0, self.spec.batch_size, 1, self.spec.seed)
        batch = collate([examples[j] for j in idx], weights[idx], pad_id)
        loss, _ = compute_loss(self.model, batch, self.spec.loss)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if i >= WARMUP:
            self.seconds += time.perf_counter() - t0
            self.tokens += batch.tokens


def load(data_path: str):
    import numpy as np

    with open(data_path, "rb") as f:
        examples, weights, tok, student = pickle.load(f)
    return examples, weights, tok, student, np.flatnonzero(weights > 0)


def child(data_path: str, loss: str, steps: int) -> None:
    """A short run of one objective alone, for its peak resident memory."""
    import torch

    torch.set_num_threads(2)
    examples, weights, tok, student, pool = load(data_path)
    run = Run(tok, json.loads(loss), steps, student)
    for i in range(steps):
        run.step(examples, weights, pool, i, tok.pad_token_id)
    print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--per-skill", type=int, default=16)
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return 0

    import torch

    from persea.cache.reader import open_harvest
    from persea.distill.data import build_examples
    from persea.distill.student import harvest_corpus, train_student_tokenizer
    from persea.distill.weighting import example_weights
    from persea.harvest import HarvestJob, run_harvest
    from persea.init_template import EXAMPLE_PROJECT
    from persea.project import load_project

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        data = yaml.safe_load(EXAMPLE_PROJECT.format(name="bench"))
        data["prompts"]["toyworld"]["per_skill"] = args.per_skill
        (Path(tmp) / "persea.yaml").write_text(yaml.safe_dump(data))
        proj = load_project(Path(tmp))
        run_harvest(HarvestJob.of(proj))
        harvest = open_harvest(proj.resolve(proj.spec.harvest.out))
        student = data["distill"]["student"]  # the example project's student
        tok = train_student_tokenizer(harvest_corpus(harvest), student["vocab_size"])
        examples = build_examples(harvest, tok)
        weights = example_weights(examples, ["uniform"])
        data_path = Path(tmp) / "examples.pkl"
        with open(data_path, "wb") as f:
            pickle.dump((examples, weights, tok, student), f)
        print(f"{len(examples)} examples from 3 teachers; student {student}; "
              f"{args.steps} steps of 32 sequences per objective, taking turns step by step "
              f"(first {WARMUP} not timed)\n")
        pool = load(str(data_path))[4]
        runs = {name: Run(tok, loss, args.steps, student) for name, loss in VARIANTS.items()}
        order = list(runs.values())
        for i in range(args.steps):
            for run in order[i % 3:] + order[:i % 3]:  # who goes first rotates
                run.step(examples, weights, pool, i, tok.pad_token_id)
        peaks = {}
        for name, loss in VARIANTS.items():
            out = subprocess.run([sys.executable, __file__, "--child", str(data_path),
                                  json.dumps(loss), "30"],
                                 capture_output=True, text=True, check=True)
            peaks[name] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]

    rate = {name: r.tokens / r.seconds for name, r in runs.items()}
    base = rate["CE only (sequence-level)"]
    print(f"{'objective':<36}{'tokens/s':>10}{'ratio':>8}{'peak RSS MB':>13}")
    for name in VARIANTS:
        print(f"{name:<36}{rate[name]:>10.0f}{rate[name] / base:>8.2f}{peaks[name]:>13.0f}")
    ratio = rate["CE + cross-tokenizer KD (top-32)"] / base
    print(f"\nKD from three teachers keeps >= 0.8 of CE speed: {'yes' if ratio >= 0.8 else 'no'} "
          f"(ratio {ratio:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
