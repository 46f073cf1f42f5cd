"""A tiny Llama student (the shape `persea distill` builds, 1 layer of 32) in a project
whose gate passes or fails as the test chooses, and keyrings made for the test."""

from __future__ import annotations

import shutil

import pytest

from persea.evaluate.gate import evaluate_gate
from persea.evaluate.records import RunStore
from persea.evaluate.release import write_gate_record
from persea.models.fingerprint import fingerprint_model_dir
from persea.project import load_project
from persea.seal.keyring import Keyring, generate_keyring

from tests.evaluate.conftest import add_run, write_project

TEACHERS = [{"name": "qwen3-toy", "builtin": "qwen3-toy"}]
POLICY = {"candidate": "student", "rules": [{"floor": 0.5, "metrics": ["toyworld/addition"]}]}


def build_tiny_llama(directory, seed: int = 0):
    from persea.distill.student import build_student_model, train_student_tokenizer
    from persea.toyworld import make_mixture

    corpus = [f"{i.prompt} {i.answer}" for i in make_mixture("train", 30)]
    tok = train_student_tokenizer(corpus, 300, "bpe", "llama", 4)
    model = build_student_model(tok, 32, 1, 2, 64, seed)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def make_project(root, student_from, addition_scores):
    """A project whose student (a copy of `student_from`) was evaluated with
    `addition_scores` (0/1 per item) and gated against a floor of 0.5."""
    project = write_project(root, student_from=student_from, teachers=TEACHERS,
                            release=POLICY)
    student = project / "runs" / "student" / "student"
    store = RunStore(project / "evals")
    add_run(store, "student", {"addition": addition_scores},
            fingerprint=fingerprint_model_dir(student))
    add_run(store, "qwen3-toy", {"addition": [1, 0, 0, 0]})
    proj = load_project(project)
    write_gate_record(proj, evaluate_gate(proj, store), None)
    return proj


@pytest.fixture
def gated_project(tmp_path, tiny_llama_dir):
    return make_project(tmp_path / "p", tiny_llama_dir, [1, 1, 1, 0])


@pytest.fixture
def failed_project(tmp_path, tiny_llama_dir):
    return make_project(tmp_path / "p", tiny_llama_dir, [1, 0, 0, 0])


@pytest.fixture
def keyring(tmp_path):
    generate_keyring(tmp_path / "keys")
    return Keyring.of(tmp_path / "keys", environ={})


def copy_dir(src, dst):
    shutil.copytree(src, dst)
    return dst
