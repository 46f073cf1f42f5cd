"""`persea distill`: harvest cache in, trained student out.

Steps: check the cache against the project; train (or reload) the student tokenizer on the
harvest text, or load a pretrained student and check that its tokenizer encodes that text;
build aligned examples; weight them with the multi-teacher policy and record what each
teacher transfers (`transfer.json`); train with checkpoints; save the student.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from persea.cache import format as cache_format
from persea.cache.reader import open_harvest
from persea.distill.curves import plot_losses
from persea.distill.transfer import TeacherTransfer, nothing_warning, transfer_stats
from persea.distill.weighting import drop_reasons, example_weights
from persea.errors import PerseaError
from persea.locks import stage_lock
from persea.models.threads import fixed_threads
from persea.skills import get_world, skill_table


@dataclass
class DistillResult:
    run_dir: Path
    student_dir: Path
    examples: int
    used: int
    summary: dict
    params: int
    transfer: list[TeacherTransfer] = field(default_factory=list)
    # stray cache files left out; teachers that contribute nothing
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. a plain chat template was used


def _config_record(project, harvest) -> dict:
    distill = project.spec.distill.model_dump(mode="json")
    distill["student"] = project.spec.distill.student.record()  # shape fields, or a source
    if distill["loss"]["combine"] == "sum":  # the default: runs made before the option resume
        del distill["loss"]["combine"]
    if distill["time_budget"] is None:  # likewise
        del distill["time_budget"]
    return {"distill": distill,
            "harvest_manifest_sha256": hashlib.sha256(
                (harvest.path / cache_format.MANIFEST).read_bytes()).hexdigest()}


def _check_resume(run_dir: Path, record: dict) -> None:
    path = run_dir / "run.json"
    if not path.exists():
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    if all(old.get(key) == value for key, value in record.items()):
        return  # keys beside the configuration (the transfer.json reference) do not count
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

    specs = {t.name: t for t in project.spec.teachers}
    scores = skill_table(teachers, lambda name: load_teacher(specs[name], project),
                         split="dev", per_skill=per_skill, seed=project.spec.seed)
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


def on_policy_source(project, spec, harvest, tokenizer, teachers: list[str],
                     scores: dict | None, say):
    """The on-policy batch maker for this run, or None when `on_policy.lmbda` is 0 or no
    teacher can score the student's text (then one line says what it falls back to)."""
    op = spec.on_policy
    if op.lmbda <= 0:
        return None
    from persea.distill.onpolicy import OnPolicy, PromptRecord, make_scorers
    from persea.models.sources import load_teacher  # heavy: transformers

    specs = {t.name: t for t in project.spec.teachers}
    models = {name: load_teacher(specs[name], project) for name in teachers}
    scorers, skipped = make_scorers(models, tokenizer)
    if not scorers:
        say(f"on-policy: none of the teachers ({', '.join(teachers)}) can score the student's "
            "text (black-box endpoints return no prompt log-probabilities); training on "
            "their cached answers only (off-policy, sequence level)")
        return None
    if skipped:
        say(f"on-policy: {', '.join(skipped)} cannot score the student's text and take part "
            "through their cached answers only (sequence level)")
    world = get_world()
    if op.prompts_per_skill:
        items = world.make_mixture("train", op.prompts_per_skill, spec.seed + 1,
                                   allow_fewer=True)
        prompts = [PromptRecord(it.prompt, it.skill, it.answer) for it in items]
    else:
        prompts = [PromptRecord(r["prompt"], r.get("skill"), r.get("answer"))
                   for r in harvest.prompts]

    def check(skill, answer, text):
        if skill in world.skills and answer is not None:
            return world.skills[skill].check(answer, text)
        return None

    return OnPolicy(tokenizer, scorers, prompts, op, check, scores)


def run_distill(project, progress=None) -> DistillResult:
    """Distil the student of `project`. The torch work runs at `distill.threads` intra-op
    threads (recorded in run.json with the rest of the settings), so the weights do not
    depend on the caller's thread setting, which is restored afterwards."""
    with fixed_threads(project.spec.distill.threads), ExitStack() as held:
        return _run(project, progress, held)


def _run(project, progress, held: ExitStack) -> DistillResult:
    from persea.distill.data import build_examples
    from persea.distill.student import (WHERE, build_student_model, check_encodes,
                                        harvest_corpus, load_pretrained_student,
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
    st = spec.student
    model, notes = None, []
    if st.source is not None:  # checked before anything is written to the run directory
        model, tokenizer, notes = load_pretrained_student(st, project.resolve)
        check_encodes(tokenizer, harvest_corpus(harvest), WHERE,
                      "start from a base model with a byte-level tokenizer, or use a shape "
                      "(vocab_size, hidden_size, ...) to train one on the harvest text")
    from accelerate import PartialState

    state = PartialState()  # under `accelerate launch`, the main process prepares the run
    if state.is_main_process:  # one `persea distill` per run directory
        held.enter_context(stage_lock(run_dir, "persea distill"))
    tok_dir = run_dir / "tokenizer"
    policies = list(spec.weighting)
    needs_dev = (spec.on_policy.lmbda > 0 and spec.on_policy.combine != "select") or \
        "best_teacher" in policies or any(
        "best_teacher" in ps for ps in spec.weighting_by_skill.values())
    with state.main_process_first():
        if state.is_main_process:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "run.json").write_text(
                json.dumps({**record, "transfer": "transfer.json"}, indent=2, sort_keys=True)
                + "\n", encoding="utf-8")
            if model is None and not tok_dir.is_dir():
                tokenizer = train_student_tokenizer(harvest_corpus(harvest),
                                                    st.vocab_size, st.tokenizer,
                                                    st.chat_format, st.min_word_count,
                                                    st.split_compounds)
                tmp = tok_dir.with_name("tokenizer.tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                tokenizer.save_pretrained(str(tmp))
                tmp.rename(tok_dir)
        scores = dev_scores(project, teachers, spec.dev_per_skill,
                            run_dir / "dev_scores.json") if needs_dev else None
    if model is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    examples = build_examples(harvest, tokenizer, teachers, spec.loss.combine, scores)
    weights = example_weights(examples, policies, spec.weighting_by_skill, scores,
                              spec.confidence_tau)
    transfer = transfer_stats(
        examples, weights, drop_reasons(examples, policies, spec.weighting_by_skill, scores,
                                        spec.confidence_tau), teachers)
    warnings = [w for w in (nothing_warning(t, policies, spec.loss.uses_logit_kd)
                            for t in transfer) if w]
    if state.is_main_process:
        _write_json(run_dir / "transfer.json", {
            "teachers": [t.as_json() for t in transfer], "warnings": warnings,
            "kd": spec.loss.kd, "combine": spec.loss.combine})
    if not (weights > 0).any():
        raise PerseaError("the weighting policy leaves no example to learn from (every weight "
                          f"is 0 under {policies}); use a looser policy such as uniform")
    if model is None:
        model = build_student_model(tokenizer, st.hidden_size, st.layers, st.heads,
                                    st.intermediate_size, spec.seed, st.kv_heads)
    on_policy = on_policy_source(project, spec, harvest, tokenizer, teachers, scores,
                                 notes.append)
    summary = train(model, examples, weights, spec, run_dir, tokenizer.pad_token_id, progress,
                    on_policy)
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
                         summary, sum(p.numel() for p in model.parameters()), transfer,
                         [f"{p} is not listed in the harvest's manifest.json; ignored "
                          "(remove it)" for p in harvest.strays] + warnings, notes)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
