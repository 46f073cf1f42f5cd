"""The harvest's bytes do not depend on the process or on the ambient torch thread count."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from persea.harvest import HarvestJob, run_harvest
from persea.project import load_project
from tests.harvest.test_harvest import tree, write_project

# Sets the ambient thread count the way a library or an earlier caller might, then harvests.
_HARVEST = ("import sys, torch; torch.set_num_threads(int(sys.argv[2])); "
            "from persea.harvest import HarvestJob, run_harvest; "
            "from persea.project import load_project; "
            "run_harvest(HarvestJob.of(load_project(sys.argv[1])))")


def _harvest_in_subprocess(project_dir, threads: int) -> dict[str, bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-c", _HARVEST, str(project_dir), str(threads)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tree(project_dir / "cache" / "harvest")


def test_two_processes_at_different_thread_counts_write_identical_bytes(tmp_path,
                                                                       tiny_model_dir):
    one = _harvest_in_subprocess(write_project(tmp_path / "one", tiny_model_dir), 1)
    two = _harvest_in_subprocess(write_project(tmp_path / "two", tiny_model_dir), 2)
    assert any(name.endswith(".parquet") for name in one)
    assert one == two


@pytest.mark.parametrize("ambient", [1, 2])
def test_the_callers_thread_count_is_restored(tmp_path, tiny_model_dir, ambient):
    before = torch.get_num_threads()
    torch.set_num_threads(ambient)
    try:
        project_dir = write_project(tmp_path / "p", tiny_model_dir,
                                    teachers=[{"name": "alpha", "path": str(tiny_model_dir)}],
                                    harvest={"threads": 2 if ambient == 1 else 1})
        run_harvest(HarvestJob.of(load_project(project_dir)))
        assert torch.get_num_threads() == ambient
    finally:
        torch.set_num_threads(before)
