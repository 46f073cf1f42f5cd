"""The model card (`README.md`) of an open-weights export: Hugging Face front matter and
prose.

The front matter follows the Hugging Face model card metadata (huggingface.co/docs/hub/
model-cards): `license` (with `license_name` and `license_link` when it is `other`),
`base_model` and `base_model_relation: finetune` for a student fine-tuned from a hub model,
`library_name`, `pipeline_tag`, `tags`, and `model-index` with one result per evaluation
suite of these weights (task, dataset, and each metric's value; `verified: false`, since
persea ran them, not the hub). The prose names the teachers and what they gave, the
evaluation runs, the export policy's decision, and what the teachers' licences ask, with
their sources.
"""

from __future__ import annotations

import json

import yaml

from persea.cache import format as cache_format

PROSE_TAGS = ["persea", "distillation", "knowledge-distillation"]


def _read_json(path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def model_index(name: str, evaluation: dict) -> list[dict]:
    results = []
    for suite, run in evaluation.items():
        split = run.get("split")
        dataset = {"name": f"persea {suite}" + (f" ({split} split)" if split else ""),
                   "type": suite}
        if split:
            dataset["split"] = split
        results.append({
            "task": {"type": "text-generation", "name": "Text Generation"},
            "dataset": dataset,
            "metrics": [{"type": metric, "name": metric, "value": round(s["mean"], 4),
                         "verified": False}
                        for metric, s in sorted(run["scores"].items())]})
    return [{"name": name, "results": results}]


def front_matter(name: str, licence: dict, evaluation: dict, tags: list[str],
                 base: str | None) -> dict:
    meta = {k: licence[k] for k in ("license", "license_name", "license_link") if k in licence}
    if base is not None:
        meta["base_model"] = base
        meta["base_model_relation"] = "finetune"
    meta["library_name"] = "transformers"
    meta["pipeline_tag"] = "text-generation"
    meta["tags"] = list(dict.fromkeys([*PROSE_TAGS, *tags]))
    meta["model-index"] = model_index(name, evaluation)
    return meta


def _source(t) -> str:
    if t.builtin is not None:
        return f"persea's built-in model {t.builtin}"
    if t.hub is not None:
        return f"the Hugging Face model {t.hub}" + (f" at {t.revision}" if t.revision else "")
    if t.path is not None:
        return f"a local model directory ({t.path})"
    if t.gguf is not None:
        return f"a GGUF file ({t.gguf})"
    return f"the model {t.model} behind an OpenAI-compatible endpoint"


def _student(config: dict, base_source: str | None, base_licence) -> str:
    arch = (config.get("architectures") or [config.get("model_type", "unknown")])[0]
    size = ", ".join(f"{k.replace('num_', '').replace('_', ' ')} {config[k]}" for k in (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
        if k in config)
    if base_source is None:
        return (f"The student is a {arch} built from scratch ({size}) with its own tokenizer, "
                "trained on the teachers' answers.")
    lic = (f", licensed {base_licence.license} (declared in {base_licence.where})"
           if base_licence is not None and base_licence.license else
           ", whose licence no metadata declares")
    return (f"The student is {base_source}{lic}, a {arch} ({size}), fine-tuned on the "
            "teachers' answers.")


def _teachers(project, verdicts) -> list[str]:
    spec = project.spec
    harvested = _read_json(project.resolve(spec.harvest.out) / cache_format.MANIFEST).get(
        "teachers", {})
    moved = {t.get("teacher"): t for t in _read_json(
        project.resolve(spec.distill.out) / "transfer.json").get("teachers", [])}
    by_name = {t.name: t for t in spec.teachers}
    lines = []
    for v in verdicts:
        t = by_name[v.teacher]
        said = f"- **{v.teacher}**, {_source(t)}, under {v.license} (declared in {v.where})"
        info, used = harvested.get(v.teacher, {}), moved.get(v.teacher, {})
        if info.get("responses") is not None:
            said += (f"; it answered {info['responses']:,} prompts ({info.get('tokens', 0):,} "
                     "tokens)")
            if used.get("weighted_in") is not None:
                said += f", of which {used['weighted_in']:,} answers were weighted into training"
        lines.append(said + ".")
    return lines


def card_text(project, name: str, ck, licence: dict, verdicts, evaluation: dict, decision,
              config: dict, base: str | None = None, base_source: str | None = None,
              base_licence=None) -> str:
    """README.md of the export: YAML front matter, then the prose."""
    spec = project.spec
    meta = front_matter(name, licence, evaluation, spec.export.tags, base)
    names = [v.teacher for v in verdicts]
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---",
             "", f"# {name}", "",
             f"Open weights of a language model distilled with persea from "
             f"{len(names)} teacher{'s' if len(names) != 1 else ''} "
             f"({', '.join(names)}), exported from the project `{spec.name}`.", "",
             _student(config, base_source, base_licence), "",
             "## Teachers", "",
             "Each teacher answered the project's prompts, and the student learnt from their "
             "answers (and, where the harvest kept them, their token probabilities).", "",
             *_teachers(project, verdicts), ""]
    lines += ["## Evaluation", "",
              "persea's own evaluation runs of exactly these weights (the `model-index` "
              "above; not verified by the hub):", "",
              "| suite | metric | score | items | run |", "|---|---|---|---|---|"]
    for suite, run in evaluation.items():
        for metric, s in sorted(run["scores"].items()):
            lines.append(f"| {suite} | {metric} | {s['mean']:.4f} | {s['n']} | "
                         f"`{run['run_id']}` |")
    lines += ["", "## This release", "",
              f"- weights fingerprint (SHA-256 over the names and contents of the "
              f"`*.safetensors` files and `config.json`): `{ck.fingerprint}`"]
    if ck.sealed is not None:
        lines.append(f"- exported from the sealed model `{ck.sealed['id']}`")
    if decision.generation is not None:
        lines.append(f"- sealed generation {decision.generation} of {decision.sealed} in the "
                     "project's register")
    lines.append(f"- export policy: {decision.line()}")
    lines += ["", "## Licence", "",
              f"Licence: `{licence['license']}`"
              + (f" ({licence['license_name']})" if licence.get("license_name") else "")
              + f", {licence['why']}.", "",
              "What each teacher's licence asks of a model distilled from it, as persea's "
              "licence policy reads it. This is a record, not legal advice: the licences "
              "decide.", ""]
    for v in verdicts:
        head = f"- {v.teacher} ({v.license}): "
        if v.rule is not None:
            head += f"{v.rule.asks}. Source: {v.rule.source} <{v.rule.url}>."
        if v.override is not None:
            head += f" Used under a recorded override: {v.override}"
        lines.append(head)
        lines += [f"  - {o.text}" + (f": \"{o.notice}\"" if o.notice else "")
                  for o in v.obligations]
    if any(v.notices for v in verdicts):
        lines += ["", "The notices these licences require are in `NOTICE`."]
    if any(v.obligations for v in verdicts):
        lines += ["", "persea works offline and ships no licence texts: where an obligation "
                  "above asks for a copy of a licence or terms to go with the model, add it "
                  "(from the source named) before publishing."]
    lines.append("")
    return "\n".join(lines)
