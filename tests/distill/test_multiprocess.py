"""Multi-process training through `accelerate launch`, two CPU processes (DDP on gloo)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def test_accelerate_launch_two_cpu_processes(project_copy):
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(accelerate), "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "persea.cli", "distill",
         "--project", str(project_copy), "--eval-per-skill", "0"],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = project_copy / "runs" / "student"
    with open(run_dir / "loss.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 11))
    assert np.isfinite([float(r["loss"]) for r in rows]).all()
    assert (run_dir / "student" / "model.safetensors").is_file()
    assert proc.stdout.count("student: ") == 1  # only the main process reports
