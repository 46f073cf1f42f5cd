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


@pytest.fixture
def project(tmp_path, tiny_llama_dir):
    proj = make_project(tmp_path / "p", tiny_llama_dir, [1, 1, 1, 0])
    data = yaml.safe_load(proj.file.read_text())
    data["teachers"] = [{"name": "qwen3-toy", "builtin": "qwen3-toy", "license": "Apache-2.0"},
                        {"name": "mine", "path": str(tmp_path / "mine")},
                        {"name": "vendor", "path": str(tmp_path / "vendor")}]
    for name, card in [("mine", "---\nlicense: mit\ntags: [x]\n---\n# mine\n"),
                       ("vendor", "# no front matter\n")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "README.md").write_text(card)
    proj.file.write_text(yaml.safe_dump(data))
    from persea.project import load_project

    proj = load_project(proj.file)
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
    assert qwen["licenses"] == [{"license": {"id": "Apache-2.0"}}]
    assert mine["licenses"] == [{"license": {"id": "MIT"}}]  # from its model card
    assert {p["name"]: p["value"] for p in mine["properties"]}["persea:license-source"] \
        .endswith("mine/README.md")
    assert "licenses" not in vendor
    assert {p["name"]: p["value"] for p in vendor["properties"]}["persea:license"] == \
        "undeclared"
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
