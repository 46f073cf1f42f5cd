"""The training loop: it wires components and holds no maths of its own.

AdamW with linear warm-up and cosine decay, gradient accumulation, bf16 autocast where the
hardware has it, gradient clipping, a checkpoint every N steps, and a CSV of the loss curve.
It runs under `accelerate` (one process, or several with `accelerate launch`: each process
takes its share of every global batch and gradients are averaged).

Time budget (`distill.time_budget`, seconds): the run stops after the first step that
brings its training time (the loop's own seconds, checkpoints included, summed over
resumes) to the budget, or at `steps`, whichever comes first, and writes a checkpoint
there. The cosine decay then follows whichever is further along, the share of the steps or
the share of the budget, so a run cut by time still ends at the low learning rate, and
`on_policy.start` likewise counts as a share of the budget once that is further along. This is
how two recipes of different step cost are compared at equal wall-clock; the weights depend
on the machine's speed.

Resume: the batches of step s are a pure function of (seed, s), and a checkpoint holds the
weights, optimiser and scheduler states. After `kill -9` the same command loads the last
checkpoint, drops the loss rows written after it and continues: the curve it writes is the
one an uninterrupted run writes.
"""

from __future__ import annotations

import csv
import math
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from persea.distill.batch import collate
from persea.distill.objective import compute_loss
from persea.distill.onpolicy import is_on_policy_step
from persea.distill.sampling import SkillMix, batch_indices

CSV_FIELDS = ["step", "loss", "ce", "kd", "alm", "lr", "tokens", "tokens_per_s", "on_policy"]


def lr_factor(step: int, warmup: int, total: int, spent_share: float = 0.0) -> float:
    """Linear warm-up to 1 over `warmup` steps, then cosine decay to 0.1 at `total`, or
    earlier where `spent_share` (of a time budget) is further along than the steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = max((step - warmup) / max(1, total - warmup), spent_share)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


_FINISHED = re.compile(r"step-\d{7}")


def checkpoints(run_dir: Path) -> list[Path]:
    """The finished checkpoints, oldest first. A checkpoint is written as `step-N.tmp` and
    renamed when whole, so a temporary (a write cut by kill -9 or a full disk) is never
    one of them."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and _FINISHED.fullmatch(p.name))


def clean_temporaries(run_dir: Path) -> None:
    """Remove checkpoint writes that did not finish (only one process trains a run)."""
    folder = run_dir / "checkpoints"
    if folder.is_dir():
        for p in folder.glob("step-*.tmp"):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()


def save_checkpoint(run_dir: Path, step: int, model, optimizer, scheduler, keep: int = 2,
                    spent: float = 0.0) -> Path:
    from safetensors.torch import save_model

    final = run_dir / "checkpoints" / f"step-{step:07d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    torch.save({"step": step, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "spent": spent}, tmp / "trainer.pt")
    tmp.rename(final)
    for old in checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model, optimizer, scheduler) -> tuple[int, float]:
    """Load a checkpoint; its step and the training seconds spent up to it."""
    from safetensors.torch import load_model

    load_model(model, str(path / "model.safetensors"))
    state = torch.load(path / "trainer.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"]), float(state.get("spent", 0.0))


def _read_log(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if int(r["step"]) <= upto]


def _write_log(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def train(model, examples, weights: np.ndarray, spec, run_dir: Path, pad_id: int,
          progress=None, on_policy=None) -> dict:
    """Train `model` in place for `spec.steps` optimiser steps (resuming if a checkpoint
    exists); returns a summary (steps, tokens, tokens/s, final loss).

    With `on_policy` (a persea.distill.onpolicy.OnPolicy), the steps that
    `is_on_policy_step` picks train on the student's own samples instead of the cache."""
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    acc = Accelerator(cpu=not cuda, mixed_precision="bf16" if bf16 else "no")
    torch.manual_seed(spec.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr,
                                  weight_decay=spec.weight_decay, betas=(0.9, 0.95))
    budget = spec.time_budget
    clock = {"spent": 0.0}  # training seconds so far, read by the schedule
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(
        s, spec.warmup, spec.steps, clock["spent"] / budget if budget else 0.0))
    start = 0
    if acc.is_main_process:
        clean_temporaries(run_dir)
    if checkpoints(run_dir):
        start, clock["spent"] = load_checkpoint(checkpoints(run_dir)[-1], model, optimizer,
                                                scheduler)
    log_path = run_dir / "loss.csv"
    rows = _read_log(log_path, start)
    model, optimizer = acc.prepare(model, optimizer)
    model.train()
    pool = np.flatnonzero(weights > 0)
    mix = None if spec.skill_mix == "examples" else SkillMix(
        [e.skill for e in examples], weights, spec.skill_mix)
    world, rank = acc.num_processes, acc.process_index
    task = progress.add_task("distill", total=spec.steps, completed=start) if progress else None
    t0, tokens_done = time.perf_counter(), 0
    loss_value = float("nan")
    done = start
    on_loss = spec.loss.model_copy(update={
        "ce": 0.0, "kd": "topk", "kd_weight": 1.0, "alm_weight": 0.0, "temperature": 1.0,
        "divergence": spec.on_policy.divergence, "beta": spec.on_policy.beta})
    for step in range(start, spec.steps):
        if budget is not None and clock["spent"] >= budget:
            break
        t_step = time.perf_counter()
        sums: dict[str, float] = {}
        step_tokens = 0
        # `on_policy.start` is a share of the run: of the steps, or of a time budget
        first = int(spec.on_policy.start * spec.steps)
        if budget is not None and clock["spent"] >= spec.on_policy.start * budget:
            first = min(first, step)
        on = on_policy is not None and is_on_policy_step(
            step, spec.on_policy.lmbda, spec.seed, first)
        for micro in range(spec.grad_accum):
            if on:
                batch, _ = on_policy.batch(acc.unwrap_model(model),
                                           (step * spec.grad_accum + micro) * world + rank,
                                           spec.batch_size // world, spec.seed)
                batch = batch.to(acc.device)
            else:
                if mix is None:
                    idx = batch_indices(pool, step, micro, spec.batch_size, spec.grad_accum,
                                        spec.seed)[rank::world]
                else:
                    idx = mix.batch(step, micro, spec.batch_size, spec.seed)[rank::world]
                batch = collate([examples[i] for i in idx], weights[idx], pad_id,
                                spec.loss.token_confidence).to(acc.device)
            with acc.autocast():
                loss, parts = compute_loss(model, batch, on_loss if on else spec.loss)
            acc.backward(loss / spec.grad_accum)
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v / spec.grad_accum
            step_tokens += batch.tokens
        acc.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if world > 1:  # log the mean over processes, not the main process's share
            keys = sorted(sums)
            mean = acc.reduce(torch.tensor([sums[k] for k in keys], device=acc.device), "mean")
            sums = dict(zip(keys, mean.tolist()))
        tokens_done += step_tokens * world
        rate = tokens_done / max(time.perf_counter() - t0, 1e-9)
        loss_value = sums["loss"]
        rows.append({"step": step + 1, "lr": f"{scheduler.get_last_lr()[0]:.6g}",
                     "on_policy": int(on),
                     "tokens": step_tokens * world, "tokens_per_s": f"{rate:.1f}",
                     **{k: f"{sums.get(k, float('nan')):.6f}" for k in ("loss", "ce", "kd", "alm")}})
        if progress is not None:
            progress.update(task, advance=1, description=f"distill loss {loss_value:.3f} "
                            f"{rate:,.0f} tok/s")
        done = step + 1
        spent = clock["spent"] + time.perf_counter() - t_step
        if world > 1 and budget is not None:  # every process stops at the same step
            spent = float(acc.reduce(torch.tensor([spent], device=acc.device), "max"))
        out_of_time = budget is not None and spent >= budget
        if done % spec.checkpoint_every == 0 or done == spec.steps or out_of_time:
            acc.wait_for_everyone()
            if acc.is_main_process:
                _write_log(log_path, rows)
                save_checkpoint(run_dir, done, acc.unwrap_model(model), optimizer, scheduler,
                                spent=spent)
            spent = clock["spent"] + time.perf_counter() - t_step  # the save counts too
            if world > 1 and budget is not None:
                spent = float(acc.reduce(torch.tensor([spent], device=acc.device), "max"))
        clock["spent"] = spent
        if out_of_time:
            break
    acc.wait_for_everyone()
    elapsed = time.perf_counter() - t0
    return {"steps": done, "resumed_from": start, "seconds": clock["spent"], "tokens": tokens_done,
            "tokens_per_s": tokens_done / max(elapsed, 1e-9), "final_loss": loss_value,
            "model": acc.unwrap_model(model), "is_main": acc.is_main_process}
