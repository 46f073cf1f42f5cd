"""`persea distill`: harvest cache in, trained student out.

Steps: check the cache against the project; train (or reload) the student tokenizer on the
harvest text; build aligned examples; weight them with the multi-teacher policy; train with
checkpoints; save the student; score it per skill on the toy world's test split.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from persea.cache import format as cache_format
from persea.cache.reader import open_harvest
from persea.distill.curves import plot_losses
from persea.distill.weighting import example_weights
from persea.errors import PerseaError
from persea.skills import get_world, skill_accuracy


@dataclass
class DistillResult:
    run_dir: Path
    student_dir: Path
    examples: int
    used: int
    summary: dict
    params: int


def _config_record(project, harvest) -> dict:
    distill = project.spec.distill.model_dump(mode="json")
    if distill["loss"]["combine"] == "sum":  # the default: runs made before the option resume
        del distill["loss"]["combine"]
    return {"distill": distill,
            "harvest_manifest_sha256": hashlib.sha256(
                (harvest.path / cache_format.MANIFEST).read_bytes()).hexdigest()}


def _check_resume(run_dir: Path, record: dict) -> None:
    path = run_dir / "run.json"
    if not path.exists():
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    if old == record:
        return
    diffs = []
    for key in sorted(set(old.get("distill", {})) | set(record["distill"])):
        a, b = old.get("distill", {}).get(key), record["distill"].get(key)
        if a != b:
            diffs.append(f"distill.{key}: was {a!r}, now {b!r}")
    if old.get("harvest_manifest_sha256") != record["harvest_manifest_sha256"]:
        diffs.append("the harvest cache changed")
    raise PerseaError(f"{run_dir} holds a run with another configuration ({'; '.join(diffs)}); "
                      "set distill.out to a new directory or delete it")


def dev_scores(project, teachers: list[str], per_skill: int, path: Path) -> dict:
    """Per-skill dev-split accuracy of each teacher (for `best_teacher`), cached in `path`."""
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    from persea.models.sources import load_teacher

    skills = get_world().skills
    scores: dict[str, dict[str, float]] = {s: {} for s in skills}
    specs = {t.name: t for t in project.spec.teachers}
    for name in teachers:
        acc = skill_accuracy(load_teacher(specs[name], project), split="dev",
                             per_skill=per_skill, seed=project.spec.seed)
        for skill in skills:
            scores[skill][name] = acc[skill]
    path.write_text(json.dumps(scores, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return scores


def _check_combine(loss, harvest, teachers: list[str]) -> None:
    """`combine: average/select` mixes logit targets, so it needs a logit loss and the
    harvest's cross scores among the distilled teachers."""
    if loss.combine == "sum":
        return
    if loss.kd == "none":
        raise PerseaError(f"distill.loss.combine: {loss.combine} combines the teachers' "
                          "logit targets, but distill.loss.kd is none; set kd: xtok")
    if not any(s in teachers and a in teachers for s, a in harvest.score_sets):
        raise PerseaError(f"distill.loss.combine: {loss.combine} needs every teacher scored "
                          f"on the others' responses, and the harvest at {harvest.path} has "
                          "no such scores; set harvest.cross_score: true and run "
                          "`persea harvest` again (it adds them to the finished cache)")


def run_distill(project, progress=None) -> DistillResult:
    from persea.distill.data import build_examples
    from persea.distill.student import (build_student_model, harvest_corpus,
                                        train_student_tokenizer)
    from persea.distill.trainer import train

    spec = project.spec.distill
    teachers = spec.teachers or [t.name for t in project.spec.teachers]
    harvest = open_harvest(project.resolve(project.spec.harvest.out), project.spec.name,
                           teachers)
    _check_combine(spec.loss, harvest, teachers)
    run_dir = project.resolve(spec.out)
    record = _config_record(project, harvest)
    _check_resume(run_dir, record)
    from accelerate import PartialState

    state = PartialState()  # under `accelerate launch`, the main process prepares the run
    tok_dir = run_dir / "tokenizer"
    policies = list(spec.weighting)
    needs_dev = "best_teacher" in policies or any(
        "best_teacher" in ps for ps in spec.weighting_by_skill.values())
    with state.main_process_first():
        if state.is_main_process:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "run.json").write_text(
                json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            if not tok_dir.is_dir():
                tokenizer = train_student_tokenizer(harvest_corpus(harvest.path),
                                                    spec.student.vocab_size)
                tmp = tok_dir.with_name("tokenizer.tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                tokenizer.save_pretrained(str(tmp))
                tmp.rename(tok_dir)
        scores = dev_scores(project, teachers, spec.dev_per_skill,
                            run_dir / "dev_scores.json") if needs_dev else None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    examples = build_examples(harvest, tokenizer, teachers, spec.loss.combine, scores)
    weights = example_weights(examples, policies, spec.weighting_by_skill, scores,
                              spec.confidence_tau)
    if not (weights > 0).any():
        raise PerseaError("the weighting policy leaves no example to learn from (every weight "
                          f"is 0 under {policies}); use a looser policy such as uniform")
    st = spec.student
    model = build_student_model(tokenizer, st.hidden_size, st.layers, st.heads,
                                st.intermediate_size, spec.seed)
    summary = train(model, examples, weights, spec, run_dir, tokenizer.pad_token_id, progress)
    student_dir = run_dir / "student"
    if summary.pop("is_main"):
        trained = summary.pop("model")
        tmp = student_dir.with_name("student.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        trained.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        shutil.rmtree(student_dir, ignore_errors=True)
        tmp.rename(student_dir)
        plot_losses(run_dir / "loss.csv", run_dir / "loss.png")
    else:
        summary.pop("model")
    return DistillResult(run_dir, student_dir, len(examples), int((weights > 0).sum()),
                         summary, sum(p.numel() for p in model.parameters()))
