"""`persea export --open` and the register of generations: what an export writes (weights
transformers loads, a card whose front matter parses, the NOTICE a licence asks for), the
export policy over sealed generations, and a refusal that writes nothing but its record."""

from __future__ import annotations

import shutil

import pytest
import yaml

from persea.errors import PerseaError
from persea.evaluate.gate import evaluate_gate
from persea.evaluate.records import RunRecord, RunStore, scores_of
from persea.evaluate.release import write_gate_record
from persea.models.fingerprint import fingerprint_model_dir
from persea.project import load_project
from persea.seal import generations
from persea.seal.export import ExportRefused, export_open
from persea.seal.seal import seal_student

from tests.cli_helpers import run_cli
from tests.seal.conftest import build_tiny_llama, make_project

SEG = 4096


def _student(project):
    return project.root / "runs" / "student" / "student"


def _with(project, **sections):
    """The project with persea.yaml's top-level `sections` set (None: removed), reloaded."""
    data = yaml.safe_load(project.file.read_text())
    for key, value in sections.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    project.file.write_text(yaml.safe_dump(data))
    return load_project(project.root)


def _evaluate(project, directory, outcomes, model="student"):
    """A complete toy-world run of the weights in `directory`, with the 0/1 outcomes the
    test chose for the addition skill."""
    fp = fingerprint_model_dir(directory)
    items = [{"id": f"addition-{i}", "group": "addition", "prompt": "", "target": "",
              "output": "", "outcomes": {"toyworld/addition": float(v),
                                         "toyworld/overall": float(v)}}
             for i, v in enumerate(outcomes)]
    store = RunStore(project.root / "evals")
    rec = RunRecord(run_id=f"{model}--toyworld--{fp[:10]}", model=model, fingerprint=fp,
                    source=str(directory), suite="toyworld", suite_version="1+test", seed=0,
                    config={}, n_items=len(items), status="complete",
                    items_done=len(items), scores=scores_of(items),
                    finished_at="2026-02-01T00:00:00+00:00")
    store.save(rec)
    store.rewrite_items(rec.run_id, items)
    return fp


def _next_generation(project, seed, outcomes):
    """Train-free stand-in for a new `persea distill`: other weights in the student
    directory, evaluated and gated."""
    student = _student(project)
    shutil.rmtree(student)
    build_tiny_llama(student, seed=seed)
    fp = _evaluate(project, student, outcomes)
    write_gate_record(project, evaluate_gate(project, RunStore(project.root / "evals")), None)
    return fp


def _front_matter(readme):
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    front, sep, body = text[4:].partition("\n---\n")
    assert sep
    return yaml.safe_load(front), body


def _leftovers(tmp_path):
    return [p for p in tmp_path.rglob("*") if ".exporting-" in p.name]


POLICY_BEHIND = {"policy": {"behind_sealed": 1}}


def test_sealing_appends_a_generation_to_the_register(gated_project, keyring, tmp_path):
    result = seal_student(gated_project, tmp_path / "sealed", keyring, segment_size=SEG)
    (entry,) = generations.entries(gated_project)
    assert entry["event"] == "sealed" and entry["fingerprint"] == result.fingerprint
    assert entry["sealed_id"] == result.sealed_id
    assert entry["paths"]["sealed"] == str((tmp_path / "sealed").resolve())
    assert entry["release"]["gate_id"] == result.release["gate_id"]
    assert entry["evaluation"]["toyworld"]["scores"]["toyworld/addition"]["mean"] == 0.75
    assert entry["at"].endswith("+00:00")
    # the same weights sealed again are the same generation
    seal_student(gated_project, tmp_path / "again", keyring, segment_size=SEG)
    found = generations.entries(gated_project)
    assert len(found) == 2
    (gen,) = generations.sealed_generations(found)
    assert gen.number == 1 and len(gen.seals) == 2


def test_a_torn_last_line_is_skipped_and_appending_goes_on(gated_project):
    generations.append(gated_project, "sealed", "a" * 64)
    with open(generations.register_path(gated_project), "a") as f:
        f.write('{"event": "sealed", "fingerp')  # a crash in mid-line
    assert [e["fingerprint"] for e in generations.entries(gated_project)] == ["a" * 64]


def test_an_older_sealed_generation_is_exported_as_loadable_open_weights(
        gated_project, keyring, tmp_path, tiny_llama_dir):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    project = _with(gated_project, export=POLICY_BEHIND)
    first = seal_student(project, tmp_path / "gen1", keyring, segment_size=SEG)
    second_fp = _next_generation(project, seed=1, outcomes=[1, 1, 1, 1])
    assert second_fp != first.fingerprint
    seal_student(project, tmp_path / "gen2", keyring, segment_size=SEG)

    out = tmp_path / "open"
    result = export_open(project, generation=1, out=out, keyring=keyring)
    assert result.out == out and result.decision.allowed
    assert result.decision.generation == 1 and result.decision.sealed == 2
    assert not _leftovers(tmp_path)
    # the weights are generation 1's, byte for byte, and transformers loads them
    assert fingerprint_model_dir(out) == first.fingerprint
    assert (out / "model.safetensors").read_bytes() == \
        (tiny_llama_dir / "model.safetensors").read_bytes()
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    expected = load_file(str(tiny_llama_dir / "model.safetensors"))
    for name, tensor in model.state_dict().items():
        if name in expected:
            assert tensor.equal(expected[name]), name
    assert tok("1 + 2 =")["input_ids"]
    assert not (out / "release-gate.json").exists()
    # the card: front matter that parses, with the licence and this generation's results
    meta, body = _front_matter(out / "README.md")
    assert meta["license"] == "apache-2.0"
    assert "base_model" not in meta  # a student built from a shape has none
    assert "persea" in meta["tags"] and meta["pipeline_tag"] == "text-generation"
    (index,) = meta["model-index"]
    (res,) = index["results"]
    values = {m["type"]: m["value"] for m in res["metrics"]}
    assert values == {"toyworld/addition": 0.75, "toyworld/overall": 0.75}
    assert res["dataset"]["type"] == "toyworld"
    # and the hub's own client reads the same card and its evaluation results
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")
    assert card.data.license == "apache-2.0" and card.data.model_name == "ev-student"
    assert {(r.metric_type, r.metric_value) for r in card.data.eval_results} == {
        ("toyworld/addition", 0.75), ("toyworld/overall", 0.75)}
    assert "qwen3-toy" in body and "persea's built-in model qwen3-toy" in body
    assert first.fingerprint in body and "sealed generation 1 of 2" in body
    assert not (out / "NOTICE").exists()  # Apache-2.0 words no notice
    # the register: two seals, then the export with its decision
    found = generations.entries(project)
    assert [e["event"] for e in found] == ["sealed", "sealed", "exported"]
    exported = found[-1]
    assert exported["fingerprint"] == first.fingerprint
    assert exported["paths"]["out"] == str(out.resolve())
    assert exported["decision"]["verdict"] == "allowed"
    (rule,) = exported["decision"]["rules"]
    assert rule["rule"] == "behind_sealed: 1" and rule["numbers"]["behind"] == 1
    assert exported["licence"] == {"license": "apache-2.0"}


def test_the_newest_sealed_generation_is_refused_nothing_written_and_recorded(
        gated_project, keyring, tmp_path, capsys, monkeypatch):
    project = _with(gated_project, export=POLICY_BEHIND)
    sealed = seal_student(project, tmp_path / "gen1", keyring, segment_size=SEG)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")
                    if p.name != generations.REGISTER)
    code, out, err = run_cli(capsys, monkeypatch, "export", "--open", "-p",
                             str(project.root), "--out", str(tmp_path / "open"))
    assert code == 1 and out == ""
    line = " ".join(err.split())
    assert "refused by export.policy: behind_sealed: 1:" in line
    assert "sealed generation 1 of 1, 0 behind the newest" in line
    assert "nothing written" in line
    assert len(err.strip().splitlines()) <= 3  # one line, wrapped by the terminal at most
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")
                   if p.name != generations.REGISTER)
    assert after == before
    refused = generations.entries(project)[-1]
    assert refused["event"] == "export-refused"
    assert refused["fingerprint"] == sealed.fingerprint
    assert refused["decision"]["verdict"] == "refused"
    assert refused["decision"]["rules"][0]["passed"] is False


def test_no_sealed_generation_yet_is_a_refusal(gated_project, tmp_path):
    project = _with(gated_project, export=POLICY_BEHIND)
    with pytest.raises(ExportRefused, match="no generation has been sealed yet"):
        export_open(project, out=tmp_path / "open")
    assert not (tmp_path / "open").exists() and not _leftovers(tmp_path)
    (entry,) = generations.entries(project)
    assert entry["event"] == "export-refused"


def test_below_sealed_by_compares_with_the_newest_sealed_scores(gated_project, keyring,
                                                                  tmp_path):
    """The sealed student scores 0.75 on addition; a weaker checkpoint directory scores
    0.5: 0.25 below, so a margin of 0.2 lets it out and 0.3 does not."""
    seal_student(gated_project, tmp_path / "gen1", keyring, segment_size=SEG)
    weaker = build_tiny_llama(tmp_path / "weaker", seed=2)
    _evaluate(gated_project, weaker, [1, 1, 0, 0], model="weaker")
    policy = {"below_sealed_by": 0.3, "metrics": ["toyworld/addition"]}
    project = _with(gated_project, export={"policy": policy})
    with pytest.raises(ExportRefused, match=r"below_sealed_by: 0.3: toyworld/addition 0.500 "
                                            r"vs newest sealed 0.750 \(at most 0.450"):
        export_open(project, checkpoint=weaker, out=tmp_path / "open")
    assert not (tmp_path / "open").exists()
    project = _with(gated_project, export={"policy": {**policy, "below_sealed_by": 0.2}})
    result = export_open(project, checkpoint=weaker, out=tmp_path / "open")
    assert fingerprint_model_dir(tmp_path / "open") == fingerprint_model_dir(weaker)
    assert result.decision.generation is None  # a checkpoint never sealed
    assert [e["event"] for e in generations.entries(project)] == [
        "sealed", "export-refused", "exported"]
    numbers = generations.entries(project)[-1]["decision"]["rules"][0]["numbers"]
    assert numbers["toyworld/addition"]["checkpoint"] == 0.5
    assert numbers["toyworld/addition"]["newest_sealed"] == 0.75


def test_a_licence_that_words_a_notice_gets_its_notice_file(tmp_path, tiny_llama_dir):
    project = make_project(tmp_path / "p", tiny_llama_dir, [1, 1, 1, 0])
    project = _with(project, teachers=[{"name": "qwen3-toy", "builtin": "qwen3-toy",
                                        "license": "gemma"}],
                    export={"policy": {"behind_sealed": 0}, "tags": ["toy"]})
    result = export_open(project, out=tmp_path / "open")
    notice = (tmp_path / "open" / "NOTICE").read_text()
    assert "Gemma is provided under and subject to the Gemma Terms of Use" in notice
    meta, body = _front_matter(tmp_path / "open" / "README.md")
    assert meta["license"] == "gemma" and "toy" in meta["tags"]
    assert "Gemma Terms of Use" in body and "NOTICE" in body
    assert "ships no licence texts" in " ".join(body.split())
    assert "NOTICE" in result.files


def test_licences_that_differ_need_export_license(tmp_path, tiny_llama_dir):
    project = make_project(tmp_path / "p", tiny_llama_dir, [1, 1, 1, 0])
    two = [{"name": "qwen3-toy", "builtin": "qwen3-toy"},
           {"name": "gemma3-toy", "builtin": "gemma3-toy", "license": "MIT"}]
    project = _with(project, teachers=two, export={"policy": {"behind_sealed": 0}})
    with pytest.raises(PerseaError, match="the teachers' licences differ .*apache-2.0.*mit.*"
                                          "export.license"):
        export_open(project, out=tmp_path / "open")
    assert not (tmp_path / "open").exists()
    assert generations.entries(project) == []  # bad input, not a decision
    project = _with(project, export={"policy": {"behind_sealed": 0}, "license": "mit"})
    export_open(project, out=tmp_path / "open")
    meta, _ = _front_matter(tmp_path / "open" / "README.md")
    assert meta["license"] == "mit"


def test_bad_input_is_one_line_and_nothing_written(gated_project, tmp_path, capsys,
                                                   monkeypatch):
    code, _, err = run_cli(capsys, monkeypatch, "export", "--open", "-p",
                           str(gated_project.root))
    assert code == 2 and "no `export:` section" in err
    project = _with(gated_project, export={"policy": {"behind_sealed": 0}})
    code, _, err = run_cli(capsys, monkeypatch, "export", "-p", str(project.root))
    assert code == 2 and "pass --open" in err
    unevaluated = build_tiny_llama(tmp_path / "other", seed=3)
    code, _, err = run_cli(capsys, monkeypatch, "export", "--open", "-p", str(project.root),
                           "--checkpoint", str(unevaluated), "--out", str(tmp_path / "o"))
    assert code == 2 and "has no complete evaluation run" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    code, _, err = run_cli(capsys, monkeypatch, "export", "--open", "-p", str(project.root),
                           "--out", str(tmp_path / "full"))
    assert code == 2 and "already exists and is not empty" in err
    code, _, err = run_cli(capsys, monkeypatch, "export", "--open", "-p", str(project.root),
                           "--generation", "1")
    assert code == 2 and "lists 0 sealed generation(s)" in err
    assert not (tmp_path / "o").exists() and not (project.root / "exports").exists()
    assert generations.entries(project) == []


@pytest.mark.parametrize("export, message", [
    ({"policy": {}}, "give at least one rule"),
    ({"policy": {"behind_sealed": 1, "metrics": ["toyworld/overall"]}},
     "`metrics:` goes with `below_sealed_by:` only"),
    ({"policy": {"behind_sealed": 1}, "licence": "mit"}, "export.licence: unknown field"),
    ({"policy": {"below_sealed_by": 2}}, "export.policy.below_sealed_by"),
    ({"policy": {"behind_sealed": 1}, "license": "other"}, "needs `license_name:`"),
])
def test_the_export_section_is_strict(gated_project, export, message):
    data = yaml.safe_load(gated_project.file.read_text())
    gated_project.file.write_text(yaml.safe_dump({**data, "export": export}))
    with pytest.raises(PerseaError, match=message.replace("(", r"\(")):
        load_project(gated_project.root)


def test_the_cli_exports_the_student_when_the_policy_allows(gated_project, capsys,
                                                            monkeypatch):
    project = _with(gated_project, export={"policy": {"behind_sealed": 0}, "out": "open"})
    code, out, err = run_cli(capsys, monkeypatch, "export", "--open", "-p", str(project.root))
    assert code == 0, err
    fp = fingerprint_model_dir(_student(project))
    target = project.root / "open" / f"ev-student-{fp[:12]}"
    assert f"exported {target}" in " ".join(out.split())
    assert fingerprint_model_dir(target) == fp
    entry = generations.entries(project)[-1]
    assert entry["event"] == "exported" and entry["fingerprint"] == fp
    assert entry["decision"]["rules"][0]["rule"] == "behind_sealed: 0"


def test_serving_a_sealed_generation_is_recorded(gated_project, keyring, tmp_path,
                                                 monkeypatch):
    import uvicorn

    from persea.cli.serve import ServeOptions, run_serve

    sealed = seal_student(gated_project, tmp_path / "gen1", keyring, segment_size=SEG)
    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append(kw))
    run_serve(ServeOptions(project=str(gated_project.root), port=8123, workers=1,
                           models=[f"mine={tmp_path / 'gen1'}"],
                           db=f"sqlite:///{tmp_path / 'gw.db'}",
                           keyring=str(keyring.directory)), echo=lambda line: None)
    assert started and started[0]["port"] == 8123
    served = generations.entries(gated_project)[-1]
    assert served["event"] == "served" and served["name"] == "mine"
    assert served["fingerprint"] == sealed.fingerprint
    assert served["sealed_id"] == sealed.sealed_id
    assert served["address"] == "http://127.0.0.1:8123/v1"


def test_a_pretrained_students_base_model_counts_in_the_licence(tmp_path, tiny_llama_dir):
    """A student fine-tuned from a local model directory: that model's own card licence
    joins the teachers' (here it differs, so the card's licence must be chosen)."""
    base = shutil.copytree(tiny_llama_dir, tmp_path / "base")
    (base / "README.md").write_text("---\nlicense: mit\n---\n# base\n")
    project = make_project(tmp_path / "p", tiny_llama_dir, [1, 1, 1, 0])
    project = _with(project, distill={"student": {"path": str(base)}},
                    export={"policy": {"behind_sealed": 0}})
    with pytest.raises(PerseaError, match=r"differ \(apache-2.0 \(teacher qwen3-toy\), mit "
                                          r"\(base model .*base\)\)"):
        export_open(project, out=tmp_path / "open")
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n# base\n")
    export_open(project, out=tmp_path / "open")
    meta, body = _front_matter(tmp_path / "open" / "README.md")
    assert meta["license"] == "apache-2.0"
    assert "base_model" not in meta  # a local directory is no hub id
    assert "fine-tuned on the teachers' answers" in body


def test_a_hub_base_model_is_named_in_the_front_matter():
    from persea.seal.opencard import front_matter

    meta = front_matter("m", {"license": "other", "license_name": "qwen",
                              "license_link": "https://example.org/l"},
                        {"toyworld": {"split": "test", "run_id": "r", "scores": {
                            "toyworld/overall": {"mean": 0.812345, "n": 200}}}},
                        ["x"], "Qwen/Qwen3-0.6B")
    assert meta["base_model"] == "Qwen/Qwen3-0.6B"
    assert meta["base_model_relation"] == "finetune"
    assert (meta["license"], meta["license_name"]) == ("other", "qwen")
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"] == {"name": "persea toyworld (test split)", "type": "toyworld",
                                 "split": "test"}
    assert result["metrics"][0]["value"] == 0.8123
