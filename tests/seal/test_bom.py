"""The sealed model's CycloneDX 1.6 ML-BOM, validated against the 1.6 JSON schema that ships
in cyclonedx-python-lib: student, teachers with licence and fingerprint, harvested data with
counts, evaluation results and the gate record."""

from __future__ import annotations

import json

import pytest
import yaml

from persea.seal import layout
from persea.seal.bom import build_bom, schema_errors
from persea.seal.seal import seal_student

from tests.seal.conftest import make_project

FP = "ab" * 32


def _harvest(project, teachers: dict[str, int]) -> None:
    """A finished harvest's manifest.json, in the shape `persea harvest` writes it."""
    cache = project.resolve(project.spec.harvest.out)
    cache.mkdir(parents=True)
    manifest = {
        "plan": {"format": "persea-harvest/1", "project": project.spec.name, "prompts": 12,
                 "prompts_sha256": "c" * 64, "top_k": 32, "teachers": list(teachers)},
        "teachers": {name: {"name": name, "source": "builtin", "fingerprint": FP,
                            "tokenizer_fingerprint": "d" * 64, "responses": n,
                            "tokens": 10 * n, "bytes": 100 * n,
                            "shards": [{"file": "shard-00000.parquet", "sha256": "e" * 64,
                                        "rows": n, "tokens": 10 * n, "bytes": 100 * n}]}
                     for name, n in teachers.items()}}
    (cache / "manifest.json").write_text(json.dumps(manifest))
    run = project.resolve(project.spec.distill.out)
    (run / "transfer.json").write_text(json.dumps({"teachers": [
        {"teacher": name, "examples": n, "weighted_in": n - 2} for name, n in teachers.items()]}))


OVERRIDE = "enterprise agreement 2026-01 allows distillation (legal review LR-7)"


def _with_teachers(proj, tmp_path, teachers, cards, **extra):
    data = yaml.safe_load(proj.file.read_text())
    data["teachers"] = teachers
    data.update(extra)
    for name, card in cards.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "README.md").write_text(card)
    proj.file.write_text(yaml.safe_dump(data))
    from persea.project import load_project

    return load_project(proj.file)


@pytest.fixture
def project(tmp_path, tiny_llama_dir):
    """Five teachers: licences from persea.yaml, model cards and an API host; Gemma's and
    Llama's obligations; OpenAI's terms overridden with a recorded reason; the student
    served as Llama-ev, as the Llama licence asks."""
    proj = make_project(tmp_path / "p", tiny_llama_dir, [1, 1, 1, 0])
    proj = _with_teachers(proj, tmp_path, [
        {"name": "qwen3-toy", "builtin": "qwen3-toy", "license": "Apache-2.0"},
        {"name": "mine", "path": str(tmp_path / "mine")},
        {"name": "vendor", "path": str(tmp_path / "vendor")},
        {"name": "meta", "path": str(tmp_path / "meta")},
        {"name": "api", "endpoint": "https://api.openai.com/v1", "model": "gpt-x",
         "license_override": {"reason": OVERRIDE}}], {
        "mine": "---\nlicense: mit\ntags: [x]\n---\n# mine\n",
        "vendor": "---\nlicense: gemma\n---\n# a Gemma 3 fine-tune\n",
        "meta": "---\nlicense: llama3.1\n---\n# a Llama 3.1\n"},
        serve={"models": [{"name": "Llama-ev", "student": True}]})
    _harvest(proj, {"qwen3-toy": 12, "mine": 12, "vendor": 11})
    return proj


def test_the_sealed_bom_validates_and_says_where_the_model_came_from(project, keyring,
                                                                     tmp_path):
    out = seal_student(project, tmp_path / "sealed", keyring, segment_size=4096).out
    bom = json.loads((out / layout.BOM).read_text())
    assert schema_errors(bom) == []
    assert bom["specVersion"] == "1.6"
    student = bom["metadata"]["component"]
    record = json.loads((out / layout.SEAL_JSON).read_text())
    assert student["type"] == "machine-learning-model"
    assert student["hashes"] == [{"alg": "SHA-256", "content": record["model"]["fingerprint"]}]
    card = student["modelCard"]
    assert card["modelParameters"]["modelArchitecture"] == "LlamaForCausalLM"
    assert {"type": "toyworld/addition", "value": "0.7500",
            "slice": "toyworld (4 items, run student--toyworld--complete)"} in \
        card["quantitativeAnalysis"]["performanceMetrics"]
    props = {p["name"]: p["value"] for p in student["properties"]}
    assert props["persea:release"] == "gate" and props["persea:gate:verdict"] == "passed"
    assert props["persea:gate:id"] == record["release"]["gate_id"]
    assert props["persea:gate:rule:0"].startswith("PASS no score below 0.5")

    by_ref = {c["bom-ref"]: c for c in bom["components"]}
    qwen, mine, vendor = (by_ref[f"teacher/{n}"] for n in ("qwen3-toy", "mine", "vendor"))
    assert qwen["licenses"] == [{"license": {
        "id": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0",
        "acknowledgement": "declared"}}]
    assert mine["licenses"][0]["license"]["id"] == "MIT"  # from its model card
    assert {p["name"]: p["value"] for p in mine["properties"]}["persea:license-source"] \
        .endswith("mine/README.md")
    assert vendor["licenses"][0]["license"]["name"] == "gemma"
    assert qwen["hashes"] == [{"alg": "SHA-256", "content": FP}]
    assert qwen["modelCard"]["quantitativeAnalysis"]["performanceMetrics"][0]["value"] == \
        "0.2500"
    data = by_ref["data/harvest/vendor"]
    assert data["type"] == "data"
    counts = {p["name"]: p["value"] for p in data["data"][0]["contents"]["properties"]}
    assert (counts["persea:responses"], counts["persea:tokens"], counts["persea:shards"],
            counts["persea:examples-weighted-in"]) == ("11", "110", "1", "9")
    assert by_ref["data/prompts"]["data"][0]["contents"]["properties"][0]["value"] == "12"
    (deps,) = [d for d in bom["dependencies"] if d["ref"] == "model/student"]
    assert set(deps["dependsOn"]) == set(by_ref)
    assert {"ref": "data/harvest/mine"} in card["modelParameters"]["datasets"]


def test_the_schema_check_catches_a_broken_bom(project):
    record = {"id": "sealed_x", "created_at": "2026-01-01T00:00:00+00:00",
              "model": {"fingerprint": FP}}
    bom = build_bom(project, record, {"kind": "gate", "gate": None}, {})
    assert schema_errors(bom) == []
    bom["metadata"]["component"]["type"] = "neural-network"
    assert schema_errors(bom) and "neural-network" in schema_errors(bom)[0]
    del bom["metadata"]["component"]["type"]
    bom["components"][1]["hashes"] = [{"alg": "SHA-256", "content": "not hex"}]
    assert len(schema_errors(bom)) >= 2


def _props_of(component) -> dict[str, str]:
    return {p["name"]: p["value"] for p in component.get("properties", [])}


def test_the_licences_obligations_go_into_the_bom_notice_and_model_card(project, keyring,
                                                                         tmp_path):
    out = seal_student(project, tmp_path / "sealed", keyring, segment_size=4096).out
    bom = json.loads((out / layout.BOM).read_text())
    assert schema_errors(bom) == []
    by_ref = {c["bom-ref"]: c for c in bom["components"]}
    qwen, vendor, meta, api = (_props_of(by_ref[f"teacher/{n}"])
                               for n in ("qwen3-toy", "vendor", "meta", "api"))
    assert qwen["persea:license-decision"] == "allow"
    assert not any(k.startswith("persea:license-obligation") for k in qwen)
    assert vendor["persea:license-decision"] == "allow-with-obligations"
    assert vendor["persea:license-rule"] == "Gemma Terms of Use"
    assert "https://ai.google.dev/gemma/terms" in vendor["persea:license-terms"]
    gemma_notice = ("Gemma is provided under and subject to the Gemma Terms of Use found at "
                    "ai.google.dev/gemma/terms")
    assert any(gemma_notice in v for k, v in vendor.items()
               if k.startswith("persea:license-obligation:"))
    assert meta["persea:license-decision"] == "allow-with-obligations"  # served as Llama-ev
    assert any('must begin with "Llama"' in v for k, v in meta.items()
               if k.startswith("persea:license-obligation:"))
    assert by_ref["teacher/api"]["licenses"][0]["license"]["name"] == "OpenAI Terms of Use"
    assert api["persea:license-source"] == "endpoint host api.openai.com"
    assert api["persea:license-decision"] == "allow (override)"
    assert api["persea:license-override-reason"] == OVERRIDE
    assert "compete" in api["persea:license-refusal"]

    student = _props_of(bom["metadata"]["component"])
    obligations = [v for k, v in student.items() if k.startswith("persea:obligation:")]
    assert len(obligations) == 4 + 5  # Gemma's four, Llama 3.1's five
    assert sum(v.startswith("vendor (gemma): ") for v in obligations) == 4
    notices = {v for k, v in student.items() if k.startswith("persea:notice:")}
    llama_notice = ("Llama 3.1 is licensed under the Llama 3.1 Community License, Copyright "
                    "© Meta Platforms, Inc. All Rights Reserved.")
    assert notices == {gemma_notice, llama_notice}
    assert student["persea:license-override:api"] == OVERRIDE

    notice = (out / layout.NOTICE).read_text()
    assert gemma_notice in notice and llama_notice in notice
    assert notice.index("vendor (gemma):") < notice.index(gemma_notice)
    card = (out / layout.CARD).read_text()
    for row in ("| qwen3-toy | Apache-2.0 | persea.yaml | allow |",
                "| api | OpenAI Terms of Use | endpoint host api.openai.com | allow (override) |"):
        assert row in card
    assert OVERRIDE in card and '"Built with Llama"' in card and "## Teachers" in card


def test_an_undeclared_licence_is_recorded_as_such_in_a_bom(tmp_path, tiny_llama_dir):
    proj = make_project(tmp_path / "p", tiny_llama_dir, [1, 1, 1, 0])
    proj = _with_teachers(proj, tmp_path, [
        {"name": "qwen3-toy", "builtin": "qwen3-toy"},
        {"name": "vendor", "path": str(tmp_path / "vendor")}],
        {"vendor": "# no front matter\n"})
    record = {"id": "sealed_x", "created_at": "2026-01-01T00:00:00+00:00",
              "model": {"fingerprint": FP}}
    bom = build_bom(proj, record, {"kind": "gate", "gate": None}, {})
    assert schema_errors(bom) == []
    by_ref = {c["bom-ref"]: c for c in bom["components"]}
    assert "licenses" not in by_ref["teacher/vendor"]
    assert _props_of(by_ref["teacher/vendor"])["persea:license"] == "undeclared"
    # the toy teacher's licence comes from the built-in registry when persea.yaml is silent
    assert _props_of(by_ref["teacher/qwen3-toy"])["persea:license-source"] == \
        "built-in model qwen3-toy"
    assert by_ref["teacher/qwen3-toy"]["licenses"][0]["license"]["id"] == "Apache-2.0"
