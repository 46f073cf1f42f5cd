"""The sealed model's CycloneDX 1.6 ML-BOM: where the weights came from.

The student is the BOM's subject (`metadata.component`, type `machine-learning-model`) with
a model card: its architecture, the datasets it learnt from (references to the `data`
components), its evaluation results (`quantitativeAnalysis.performanceMetrics`, from the
runs the gate checked) and the gate record or forced release (as properties). Each teacher
is a `machine-learning-model` component with its declared licence, what the licence
policy decided and the obligations it puts on the student (persea.licences.policy), and
its weights fingerprint (SHA-256); each teacher's harvested answers are a `data` component
with their counts (responses, tokens, shards, bytes, and the examples distillation weighted
in); the prompt set is one more. `dependencies` says the student depends on all of them.
The student carries every teacher's obligations and the notices they word as properties
(`persea:obligation:N`, `persea:notice:N`), and any recorded override with its reason.

Only what the project records is written: a teacher with no declared licence has no
`licenses` and says `persea:license = undeclared`. The BOM is checked against the 1.6 JSON
schema that ships inside cyclonedx-python-lib (no network) before it is written.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from importlib.metadata import PackageNotFoundError, version

from persea.cache import format as cache_format
from persea.errors import PerseaError
from persea.evaluate.records import RunStore
from persea.licences.policy import Verdict, assess_project, distilled_teachers

SPEC_VERSION = "1.6"


def _persea_version() -> str:
    try:
        return version("persea")
    except PackageNotFoundError:
        return "0"


def _props(pairs) -> list[dict]:
    return [{"name": f"persea:{k}", "value": str(v)} for k, v in pairs if v is not None]


def _licenses(verdict: Verdict) -> list[dict] | None:
    name = verdict.license
    if not name:
        return None
    from cyclonedx.spdx import fixup_id, is_expression

    spdx = fixup_id(name)
    if spdx is not None:
        lic = {"id": spdx}
    elif is_expression(name) and " " in name:
        return [{"expression": name, "acknowledgement": "declared"}]
    else:
        lic = {"name": name}
    if verdict.rule is not None:
        lic["url"] = verdict.rule.url
    return [{"license": {**lic, "acknowledgement": "declared"}}]


def _policy_props(v: Verdict) -> list[dict]:
    """What the licence policy decided for one teacher, and what it asks of the student."""
    pairs = [("license-decision", v.shown),
             ("license-rule", v.rule.title if v.rule is not None else "none"),
             ("license-source", v.where)]
    if v.rule is not None:
        pairs.append(("license-terms", f"{v.rule.source} <{v.rule.url}>"))
    if v.override is not None:
        pairs += [("license-refusal", v.refusal), ("license-override-reason", v.override)]
    pairs += [(f"license-obligation:{i}", o.text + (f": \"{o.notice}\"" if o.notice else ""))
              for i, o in enumerate(v.obligations)]
    pairs += [(f"license-note:{i}", n) for i, n in enumerate(v.notes)]
    return _props(pairs)


def _obligation_props(verdicts: list[Verdict]) -> list[dict]:
    """The student's share: every teacher's obligations and the notices it must carry."""
    pairs = [(f"obligation:{i}", f"{v.teacher} ({v.license}): {o.text}") for i, (v, o) in
             enumerate((v, o) for v in verdicts for o in v.obligations)]
    notices = list(dict.fromkeys(n for v in verdicts for n in v.notices))
    pairs += [(f"notice:{i}", n) for i, n in enumerate(notices)]
    pairs += [(f"license-override:{v.teacher}", v.override) for v in verdicts
              if v.override is not None]
    return _props(pairs)


def _read_json(path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _metrics(run) -> list[dict]:
    return [{"type": metric, "value": f"{s['mean']:.4f}",
             "slice": f"{run.suite} ({s['n']} items, run {run.run_id})"}
            for metric, s in sorted(run.scores.items())]


def _gate_props(release: dict) -> list[dict]:
    gate = release.get("gate") or {}
    pairs = [("release", release["kind"]), ("gate:id", gate.get("id")),
             ("gate:verdict", gate.get("verdict")), ("gate:created-at", gate.get("created_at"))]
    for i, rule in enumerate(gate.get("rules", [])):
        checks = "; ".join(f"{c['metric']}: {c['detail']}" for c in rule.get("checks", []))
        pairs.append((f"gate:rule:{i}", f"{'PASS' if rule.get('passed') else 'FAIL'} "
                                        f"{rule.get('rule')}: {checks}"))
    if release["kind"] == "forced":
        pairs += [("release:id", release.get("release_id")), ("release:who", release.get("who")),
                  ("release:reason", release.get("reason"))]
    return _props(pairs)


def build_bom(project, record: dict, release: dict, student_config: dict,
              verdicts: list[Verdict] | None = None) -> dict:
    """The BOM of the sealed model `record` (seal.json) of `project`'s student; `verdicts`:
    the licence policy's, one per teacher the student learnt from (default: assessed now)."""
    spec = project.spec
    teachers = distilled_teachers(spec)
    if verdicts is None:
        verdicts = assess_project(project, teachers)
    by_teacher = {v.teacher: v for v in verdicts}
    harvest_dir = project.resolve(spec.harvest.out)
    manifest = _read_json(harvest_dir / cache_format.MANIFEST) or {}
    harvested = manifest.get("teachers", {})
    transfer = {t["teacher"]: t for t in (_read_json(
        project.resolve(spec.distill.out) / "transfer.json") or {}).get("teachers", [])}
    store = RunStore(project.resolve(spec.eval.out))
    runs = store.latest_complete()

    components, refs = [], []
    plan = manifest.get("plan", {})
    if plan:
        ref = "data/prompts"
        refs.append(ref)
        components.append({
            "type": "data", "bom-ref": ref, "name": f"{spec.name} harvest prompts",
            "data": [{"type": "dataset", "name": "prompts",
                      "description": "the prompts every teacher answered",
                      "contents": {"properties": _props([
                          ("prompts", plan.get("prompts")),
                          ("prompts-sha256", plan.get("prompts_sha256"))])}}]})
    for t in teachers:
        verdict = by_teacher[t.name]
        info = harvested.get(t.name, {})
        teacher_ref = f"teacher/{t.name}"
        comp = {"type": "machine-learning-model", "bom-ref": teacher_ref, "name": t.name,
                "description": f"teacher ({t.source}: {getattr(t, t.source)})"}
        if info.get("fingerprint"):
            comp["hashes"] = [{"alg": "SHA-256", "content": info["fingerprint"]}]
        if (lic := _licenses(verdict)) is not None:
            comp["licenses"] = lic
        teacher_runs = [r for (m, _), r in sorted(runs.items()) if m == t.name]
        if teacher_runs:
            comp["modelCard"] = {"quantitativeAnalysis": {"performanceMetrics": [
                m for r in teacher_runs for m in _metrics(r)]}}
        comp["properties"] = _props([("license", verdict.license or "undeclared")]) + \
            _policy_props(verdict) + _props([
                ("source", t.source),
                ("tokenizer-fingerprint", info.get("tokenizer_fingerprint"))])
        components.append(comp)
        refs.append(teacher_ref)
        if info:
            data_ref = f"data/harvest/{t.name}"
            moved = transfer.get(t.name, {})
            components.append({
                "type": "data", "bom-ref": data_ref, "name": f"{t.name} answers",
                "data": [{"type": "dataset", "name": f"{t.name} answers",
                          "description": f"{t.name}'s answers to the prompts with top-"
                                         f"{plan.get('top_k', '?')} log-probabilities "
                                         "(persea harvest cache)",
                          "contents": {"properties": _props([
                              ("responses", info.get("responses")),
                              ("tokens", info.get("tokens")),
                              ("shards", len(info.get("shards", []))),
                              ("bytes", info.get("bytes")),
                              ("examples", moved.get("examples")),
                              ("examples-weighted-in", moved.get("weighted_in")),
                              ("shards-sha256", hashlib.sha256("".join(
                                  s["sha256"] for s in info.get("shards", [])).encode()
                              ).hexdigest())])}}]})
            refs.append(data_ref)

    gate = release.get("gate") or {}
    student_runs = [store.load(run_id) for run_id in gate.get("runs", {}).values()]
    student_runs = [r for r in student_runs if r is not None]
    if not student_runs:  # a forced release without a gate: the runs of these weights
        student_runs = [r for (m, _), r in sorted(runs.items())
                        if m == "student" and r.fingerprint == record["model"]["fingerprint"]]
    card: dict = {"modelParameters": {
        "approach": {"type": "supervised"}, "task": "text-generation",
        "architectureFamily": str(student_config.get("model_type", "unknown")),
        "modelArchitecture": str((student_config.get("architectures") or ["unknown"])[0]),
        "datasets": [{"ref": r} for r in refs if r.startswith("data/")]}}
    metrics = [m for r in student_runs for m in _metrics(r)]
    if metrics:
        card["quantitativeAnalysis"] = {"performanceMetrics": metrics}
    student_ref = "model/student"
    student = {"type": "machine-learning-model", "bom-ref": student_ref,
               "name": f"{spec.name}-student", "version": record["id"],
               "description": f"distilled from {', '.join(t.name for t in teachers)}",
               "hashes": [{"alg": "SHA-256", "content": record["model"]["fingerprint"]}],
               "modelCard": card,
               "properties": _props([("sealed-id", record["id"])]) + _gate_props(release)
               + _obligation_props(verdicts)}
    return {
        "bomFormat": "CycloneDX", "specVersion": SPEC_VERSION,
        "serialNumber": f"urn:uuid:{uuid.uuid4()}", "version": 1,
        "metadata": {"timestamp": record["created_at"],
                     "tools": {"components": [{"type": "application", "name": "persea",
                                               "version": _persea_version()}]},
                     "component": student},
        "components": components,
        "dependencies": [{"ref": student_ref, "dependsOn": refs}] + [
            {"ref": r} for r in refs]}


def schema_errors(bom: dict) -> list[str]:
    """What the CycloneDX 1.6 JSON schema (strict) says about `bom`; empty when valid."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(bom),
                                                                   all_errors=True)
    return [" ".join(str(e).split())[:300] for e in (errors or [])]


def write_bom(path, project, record: dict, release: dict, student_config: dict,
              verdicts: list[Verdict] | None = None) -> dict:
    bom = build_bom(project, record, release, student_config, verdicts)
    problems = schema_errors(bom)
    if problems:
        raise PerseaError(f"the BOM for {record['id']} does not validate against CycloneDX "
                          f"{SPEC_VERSION}: {problems[0]}")
    path.write_text(json.dumps(bom, indent=2) + "\n", encoding="utf-8")
    return bom
