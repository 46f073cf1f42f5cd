"""The same project and seed give the same student weights, whatever the ambient thread
count of the process that trains it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from persea.models.fingerprint import fingerprint_model_dir

_DISTILL = ("import sys, torch; torch.set_num_threads(int(sys.argv[2])); "
            "from persea.distill.run import run_distill; "
            "from persea.project import load_project; "
            "run_distill(load_project(sys.argv[1]))")


def _distill_in_subprocess(project_dir, threads: int) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-c", _DISTILL, str(project_dir), str(threads)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return fingerprint_model_dir(project_dir / "runs" / "student" / "student")


def test_weights_fingerprint_is_the_same_at_any_ambient_thread_count(harvested, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(harvested, one)
    shutil.copytree(harvested, two)
    assert _distill_in_subprocess(one, 1) == _distill_in_subprocess(two, 2)
