"""`persea export --open`: a checkpoint written out as open weights, when the project's
export policy allows it.

The checkpoint is the student directory of the run (default), another model directory, or
a sealed directory (`persea seal`; decrypted in memory with the keyring, then written out
in the clear, which is the point of an open release), also named by its generation number
in the register (persea.seal.generations).

Before anything is written:

1. the checkpoint's fingerprint is read (a sealed directory's from its `seal.json`);
2. the teachers' licences go through the licence policy as for a seal (an undeclared or
   refused licence stops it), and the licence the card will carry is settled: `export.license`
   in persea.yaml, else the one licence the teachers (and a pretrained student's base model)
   all share, else one line asks for `export.license`;
3. the checkpoint must have a complete evaluation run (its results go into the card);
4. the export policy (`export.policy`) is checked against the register of sealed
   generations; its decision, allowed or refused with each rule's numbers, is appended to
   the register. A refusal is one line naming the rule, exit status 1, nothing else written.

The export is then built beside its destination (`.NAME.exporting-XXXX`) and renamed into
place once complete and its fingerprint checked again against the one the policy decided
on: weights, config and tokenizer as `save_pretrained` wrote them, a model card `README.md`
(persea.seal.opencard) and, when a teacher's licence words one, a `NOTICE`. An existing
non-empty destination is never overwritten.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from persea.errors import PerseaError
from persea.evaluate.targets import student_dir
from persea.licences import policy as licence_policy
from persea.licences.declared import declared_license
from persea.licences.notices import notice_text
from persea.models.fingerprint import fingerprint_model_dir
from persea.seal import generations, layout
from persea.seal.keyring import Keyring
from persea.seal.opencard import card_text
from persea.seal.unseal import is_sealed, read_record, unseal

PICKLED = (".bin", ".pt", ".pth", ".gguf")  # not written as open weights: safetensors only
REPLACED = ("README.md",)  # the export writes its own card
DEFAULT_METRICS = ["toyworld/overall"]


class ExportRefused(PerseaError):
    """The export policy refused the checkpoint: a decision, not a mistake in the input."""

    exit_code = 1


@dataclass
class Checkpoint:
    path: Path
    fingerprint: str
    sealed: dict | None = None  # seal.json, for a sealed directory


@dataclass
class RuleCheck:
    rule: str  # as persea.yaml spells it, e.g. "behind_sealed: 1"
    passed: bool
    detail: str  # the numbers behind it, for a person
    numbers: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"rule": self.rule, "passed": self.passed, "detail": self.detail,
                "numbers": self.numbers}


@dataclass
class Decision:
    allowed: bool
    checks: list[RuleCheck]
    generation: int | None  # the checkpoint's sealed generation, if it is one
    sealed: int  # how many generations are sealed
    newest: str | None  # the newest sealed generation's fingerprint

    def to_dict(self) -> dict:
        return {"verdict": "allowed" if self.allowed else "refused",
                "generation": self.generation, "sealed_generations": self.sealed,
                "newest_sealed": self.newest, "rules": [c.to_dict() for c in self.checks]}

    def line(self) -> str:
        shown = self.checks if self.allowed else [c for c in self.checks if not c.passed]
        return "; ".join(f"{c.rule}: {c.detail}" for c in shown)


@dataclass
class ExportResult:
    out: Path
    fingerprint: str
    license: dict
    decision: Decision
    entry: dict
    files: list[str]


# -- the checkpoint -------------------------------------------------------------------------


def resolve_checkpoint(project, checkpoint: Path | None = None,
                       generation: int | None = None) -> Checkpoint:
    """The checkpoint to export: `checkpoint` (a model or sealed directory), sealed
    generation number `generation` of the register, or the run's student directory."""
    if checkpoint is not None and generation is not None:
        raise PerseaError("give --checkpoint or --generation, not both")
    if generation is not None:
        gens = generations.sealed_generations(generations.entries(project))
        if not 1 <= generation <= len(gens):
            raise PerseaError(f"--generation {generation}: the register "
                              f"{generations.register_path(project)} lists "
                              f"{len(gens)} sealed generation(s)")
        gen = gens[generation - 1]
        for seal in reversed(gen.seals):
            d = Path(seal.get("paths", {}).get("sealed", ""))
            if d.is_dir() and is_sealed(d) and \
                    read_record(d)["model"]["fingerprint"] == gen.fingerprint:
                return Checkpoint(d, gen.fingerprint, read_record(d))
        raise PerseaError(f"--generation {generation}: none of its sealed directories is "
                          f"still there ({', '.join(str(s.get('paths', {}).get('sealed')) for s in gen.seals)})"
                          "; name a copy with --checkpoint")
    if checkpoint is None:
        d = student_dir(project)
        if not (d / "config.json").is_file():
            raise PerseaError(f"no student at {d}; run `persea distill` first, or name a "
                              "checkpoint with --checkpoint")
    else:
        d = Path(checkpoint).expanduser()
        if is_sealed(d):
            record = read_record(d)
            return Checkpoint(d, record["model"]["fingerprint"], record)
        if not (d / "config.json").is_file():
            raise PerseaError(f"--checkpoint {d}: neither a model directory (no config.json) "
                              f"nor a sealed directory (no {layout.SEAL_JSON})")
    _plain_files(d)  # weights that cannot leave as safetensors are refused before all else
    return Checkpoint(d, fingerprint_model_dir(d), None)


def _plain_files(d: Path) -> list[Path]:
    files = sorted(p for p in d.iterdir() if p.is_file() and p.name not in layout.NOT_SEALED
                   and p.name not in REPLACED and not p.name.endswith(".tmp")
                   and not p.name.startswith("."))
    pickled = [p.name for p in files if p.suffix in PICKLED]
    if pickled:
        raise PerseaError(f"{d}: {', '.join(pickled)} is not safetensors; open weights are "
                          "exported as safetensors only (save the model with save_pretrained)")
    if not any(p.suffix == ".safetensors" for p in files):
        raise PerseaError(f"{d}: no .safetensors weights to export")
    return files


def _write_checkpoint(ck: Checkpoint, into: Path, keyring) -> list[str]:
    """The checkpoint's files written into `into`: copied from a model directory, or
    decrypted (in memory) from a sealed one. Returns their names."""
    if ck.sealed is None:
        names = []
        for p in _plain_files(ck.path):
            shutil.copyfile(p, into / p.name)
            names.append(p.name)
        return names
    opened = unseal(ck.path, keyring)
    for name, data in {**opened.files, **opened.weights}.items():
        if name in REPLACED or "/" in name or name.startswith("."):
            continue
        (into / name).write_bytes(data)
    return sorted(n for n in {**opened.files, **opened.weights} if (into / n).is_file())


# -- the licence of the card ------------------------------------------------------------------

# Hugging Face's licence ids for the built-in rules that have one; the others are `other`
HF_IDS = {"apache-2.0": "apache-2.0", "mit": "mit", "gemma": "gemma", "llama3.1": "llama3.1",
          "llama3.2": "llama3.2", "llama3.3": "llama3.3", "llama4": "llama4"}


def _hf_licence(rule) -> dict:
    if rule.key in HF_IDS:
        return {"license": HF_IDS[rule.key]}
    return {"license": "other", "license_name": rule.key, "license_link": rule.url}


def base_model_licence(project) -> tuple[str | None, object]:
    """(hub id or path of a pretrained student's base model, its declared licence) or
    (None, None) for a student built from a shape."""
    st = project.spec.distill.student
    if st.source is None:
        return None, None
    shim = SimpleNamespace(license=None, builtin=None, path=st.path, hub=st.hub,
                           revision=st.revision, gguf=st.gguf)
    return getattr(st, st.source), declared_license(shim, project.resolve)


def card_licence(project, verdicts) -> dict:
    """The licence fields of the card and where they come from (`why`)."""
    spec = project.spec.export
    if spec.license is not None:
        chosen = {"license": spec.license}
        if spec.license_name:
            chosen["license_name"] = spec.license_name
        if spec.license_link:
            chosen["license_link"] = spec.license_link
        return {**chosen, "why": "set in persea.yaml (export.license)"}
    found: dict[str, dict] = {}
    for v in verdicts:
        if v.rule is None or v.rule.decision == licence_policy.REFUSE:
            raise PerseaError(f"teacher {v.teacher!r} ({v.license}) gives the exported model "
                              "no licence persea can name; set export.license in "
                              "persea.yaml (a Hugging Face licence id)")
        found.setdefault(v.rule.key, {**_hf_licence(v.rule), "from": []})["from"].append(
            f"teacher {v.teacher}")
    base, declared = base_model_licence(project)
    if base is not None:
        rule = licence_policy.rule_for(declared.license) if declared.license else None
        if rule is None:
            raise PerseaError(f"the student's base model {base} declares "
                              f"{'no licence' if not declared.license else repr(declared.license)}"
                              " persea can name; set export.license in persea.yaml")
        found.setdefault(rule.key, {**_hf_licence(rule), "from": []})["from"].append(
            f"base model {base}")
    if len(found) != 1:
        said = ", ".join(f"{k} ({', '.join(v['from'])})" for k, v in found.items())
        raise PerseaError(f"the teachers' licences differ ({said}); choose the exported "
                          "model's licence with export.license in persea.yaml")
    (chosen,) = found.values()
    return {**{k: v for k, v in chosen.items() if k != "from"},
            "why": "the licence of " + " and ".join(chosen["from"])}


# -- the policy -----------------------------------------------------------------------------


def _metrics(project) -> list[str]:
    pol = project.spec.export.policy
    if pol.metrics is not None:
        return list(pol.metrics)
    rel = project.spec.release
    return list(rel.core_metrics) if rel is not None else list(DEFAULT_METRICS)


def decide(project, fingerprint: str, evaluation: dict, found: list[dict]) -> Decision:
    """The export policy on the checkpoint with `fingerprint` and `evaluation`, given the
    register's entries `found`. Raises PerseaError where a score it needs is missing."""
    pol = project.spec.export.policy
    gens = generations.sealed_generations(found)
    mine = next((g for g in gens if g.fingerprint == fingerprint), None)
    newest = gens[-1] if gens else None
    checks: list[RuleCheck] = []
    if pol.behind_sealed is not None:
        n = pol.behind_sealed
        rule = f"behind_sealed: {n}"
        if n == 0:
            checks.append(RuleCheck(rule, True, "any checkpoint (0 generations behind)"))
        elif newest is None:
            checks.append(RuleCheck(rule, False, "no generation has been sealed yet, so none "
                                    f"is {n} behind the newest sealed one"))
        elif mine is None:
            checks.append(RuleCheck(rule, False, (
                f"checkpoint {fingerprint[:12]} is not a sealed generation (the register "
                f"lists {len(gens)}, the newest {newest.fingerprint[:12]}); only a sealed "
                "generation can be behind another"), {"sealed": len(gens)}))
        else:
            behind = len(gens) - mine.number
            checks.append(RuleCheck(rule, behind >= n, (
                f"checkpoint {fingerprint[:12]} is sealed generation {mine.number} of "
                f"{len(gens)}, {behind} behind the newest ({newest.fingerprint[:12]}); at "
                f"least {n} needed"), {"generation": mine.number, "sealed": len(gens),
                                       "behind": behind}))
    if pol.below_sealed_by is not None:
        margin = pol.below_sealed_by
        rule = f"below_sealed_by: {margin:g}"
        if newest is None:
            checks.append(RuleCheck(rule, False, "no generation has been sealed yet to "
                                    "compare the checkpoint's scores with"))
        else:
            theirs = generations.evaluation_of(project, newest.fingerprint) or \
                newest.latest.get("evaluation") or {}
            said, numbers, ok = [], {}, True
            for m in _metrics(project):
                a = generations.score_of(evaluation, m)
                if a is None:
                    raise PerseaError(f"export.policy.below_sealed_by: the checkpoint "
                                      f"{fingerprint[:12]} has no score for {m!r}; run "
                                      "`persea eval` on it first")
                b = generations.score_of(theirs, m)
                if b is None:
                    raise PerseaError(f"export.policy.below_sealed_by: the newest sealed "
                                      f"generation ({newest.fingerprint[:12]}) has no score "
                                      f"for {m!r}; evaluate it first")
                passed = a[0] <= b[0] - margin + 1e-12
                ok = ok and passed
                said.append(f"{m} {a[0]:.3f} vs newest sealed {b[0]:.3f} (at most "
                            f"{b[0] - margin:.3f} allowed)")
                numbers[m] = {"checkpoint": a[0], "newest_sealed": b[0], "margin": margin,
                              "n": a[1], "newest_n": b[1], "run": a[2], "newest_run": b[2]}
            checks.append(RuleCheck(rule, ok, "; ".join(said), numbers))
    return Decision(all(c.passed for c in checks), checks, mine.number if mine else None,
                    len(gens), newest.fingerprint if newest else None)


# -- the export -----------------------------------------------------------------------------


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PerseaError(f"{out} already exists and is not empty; choose another --out or "
                          "delete it (an export is never overwritten)")


def model_name(project) -> str:
    return project.spec.export.name or f"{project.spec.name}-student"


def export_open(project, checkpoint: Path | None = None, out: Path | None = None,
                keyring=None, generation: int | None = None) -> ExportResult:
    """Export a checkpoint of `project` as open weights into `out` (default:
    `<export.out>/<name>-<fingerprint[:12]>`), or raise ExportRefused (recorded) when the
    export policy forbids it and PerseaError on bad input; either way nothing is written
    under `out`."""
    spec = project.spec.export
    if spec is None:
        raise PerseaError(f"{project.file}: no `export:` section, so no export policy allows "
                          "open weights; add one, e.g. `export: {policy: {behind_sealed: 1}}` "
                          "(docs/seal.md, \"The open track\")")
    ck = resolve_checkpoint(project, checkpoint, generation)
    teachers = licence_policy.distilled_teachers(project.spec)
    verdicts = licence_policy.assess_project(project, teachers)
    licence_policy.require(verdicts, licence_policy.SEAL)
    name = model_name(project)
    named = [v for v in verdicts if v.rule is not None and v.rule.name_prefix
             and not name.startswith(v.rule.name_prefix) and v.override is None]
    if named:
        raise licence_policy.LicenceRefused(
            f"export refused by the licence policy: teacher {named[0].teacher!r} "
            f"({named[0].license}) asks for a model name that begins with "
            f"{named[0].rule.name_prefix!r}, and the export is named {name!r}; set "
            "export.name in persea.yaml; nothing written")
    licence = card_licence(project, verdicts)
    out = Path(out).expanduser() if out is not None else \
        project.resolve(spec.out) / f"{name}-{ck.fingerprint[:12]}"
    _check_out(out)
    if ck.sealed is not None:
        keyring = keyring if keyring is not None else Keyring.of(None)
        keyring.kek()  # a missing or bad key is refused before the policy is recorded
        keyring.public_key_path()
    evaluation = generations.evaluation_of(project, ck.fingerprint)
    if not evaluation:
        raise PerseaError(f"checkpoint {ck.path} (fingerprint {ck.fingerprint[:12]}) has no "
                          "complete evaluation run, and its card needs one; run `persea eval`"
                          " on it first (`--model NAME=DIR` for a checkpoint that is not the "
                          "student)")
    found = generations.entries(project)
    decision = decide(project, ck.fingerprint, evaluation, found)
    paths = {"checkpoint": str(ck.path.resolve()), "out": str(out.resolve())}
    if not decision.allowed:
        entry = generations.append(project, generations.EXPORT_REFUSED, ck.fingerprint,
                                   paths=paths, decision=decision.to_dict())
        raise ExportRefused(f"export of {ck.path} (fingerprint {ck.fingerprint[:12]}) refused "
                            f"by export.policy: {decision.line()}; nothing written (recorded "
                            f"as {entry['id']} in {generations.register_path(project)})")
    work = out.parent / f".{out.name}.exporting-{secrets.token_hex(4)}"
    inner = work / out.name
    inner.mkdir(parents=True)
    try:
        files = _write_checkpoint(ck, inner, keyring)
        written = fingerprint_model_dir(inner)
        if written != ck.fingerprint:
            raise PerseaError(f"{ck.path} changed while it was being exported (fingerprint "
                              f"{ck.fingerprint[:12]} decided on, {written[:12]} read); "
                              "export it again once nothing writes to it")
        base, base_declared = base_model_licence(project)
        notices = [n for v in verdicts for n in v.notices]
        if notices:
            (inner / layout.NOTICE).write_text(notice_text(name, verdicts), encoding="utf-8")
            files.append(layout.NOTICE)
        config = json.loads((inner / "config.json").read_text(encoding="utf-8"))
        card = card_text(project, name, ck, licence, verdicts, evaluation, decision, config,
                         base=base if project.spec.distill.student.hub else None,
                         base_source=base, base_licence=base_declared)
        (inner / "README.md").write_text(card, encoding="utf-8")
        files.append("README.md")
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.rename(inner, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    entry = generations.append(
        project, generations.EXPORTED, ck.fingerprint, paths=paths,
        sealed_id=ck.sealed["id"] if ck.sealed else None,
        licence={k: v for k, v in licence.items() if k != "why"},
        evaluation=evaluation, decision=decision.to_dict())
    return ExportResult(out, ck.fingerprint, licence, decision, entry, sorted(files))
