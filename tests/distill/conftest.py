"""A small finished harvest of the tiny test model, shared by the distillation tests."""

from __future__ import annotations

import shutil

import pytest
import yaml


def write_distill_project(directory, model_dir, **distill):
    directory.mkdir(parents=True, exist_ok=True)
    data = {
        "name": "d",
        "teachers": [{"name": "alpha", "path": str(model_dir)},
                     {"name": "beta", "path": str(model_dir)}],
        "prompts": {"toyworld": {"per_skill": 3}},
        "harvest": {"shard_size": 9, "batch_size": 9, "max_new_tokens": 6, "top_k": 8},
        "distill": {"steps": 10, "batch_size": 6, "checkpoint_every": 4, "warmup": 2,
                    "student": {"hidden_size": 32, "layers": 1, "heads": 2,
                                "intermediate_size": 64, "vocab_size": 350},
                    "loss": {"alm_weight": 0.5}, "weighting": ["uniform"], **distill},
    }
    (directory / "persea.yaml").write_text(yaml.safe_dump(data))
    return directory


@pytest.fixture(scope="session")
def harvested(tmp_path_factory, tiny_model_dir):
    """A project directory whose harvest is done; copy it before writing into it."""
    from persea.harvest import HarvestJob, run_harvest
    from persea.project import load_project

    d = write_distill_project(tmp_path_factory.mktemp("harvested") / "p", tiny_model_dir)
    run_harvest(HarvestJob.of(load_project(d)))
    return d


@pytest.fixture
def project_copy(harvested, tmp_path):
    dst = tmp_path / "p"
    shutil.copytree(harvested, dst)
    return dst
