"""Skill routing in the harvest: a skill's prompts go only to the teachers the probe (or an
explicit mapping) names, the decision survives a kill, and every reader copes with the
missing rows."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import yaml
from rich.console import Console

from persea.cache.reader import open_harvest, read_responses, read_scores
from persea.errors import PerseaError
from persea.harvest import HarvestJob, run_harvest
from persea.harvest.route import choose
from persea.project import parse_project, load_project
from persea.skills import skill_accuracy

from .test_harvest import _KILLER, run_cli, tree, write_project

BUILTINS = ["qwen3-toy", "gemma3-toy", "gptoss-toy"]
STRONG = {"qwen3-toy": "addition", "gemma3-toy": "kb", "gptoss-toy": "reverse"}
ROUTE = {"probe_per_skill": 4, "within": 0.1, "min_accuracy": 0.05}


def write_routed_project(directory, route=None, **harvest):
    directory.mkdir(parents=True, exist_ok=True)
    data = {"name": "r", "teachers": [{"name": n, "builtin": n} for n in BUILTINS],
            "prompts": {"toyworld": {"per_skill": 2}},
            "harvest": {"shard_size": 5, "batch_size": 4, "max_new_tokens": 16, "top_k": 4,
                        "backend": "transformers", "cross_score": True,
                        "route": route or ROUTE, **harvest}}
    (directory / "persea.yaml").write_text(yaml.safe_dump(data))
    return directory


@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    """The three built-in teachers on 12 prompts (two per skill), routed by a probe of four
    dev items per skill, cross-scored."""
    d = write_routed_project(tmp_path_factory.mktemp("routed") / "p")
    return d, run_harvest(HarvestJob.of(load_project(d)))


def shard_indices(folder) -> list[int]:
    return [i for p in sorted(folder.glob("shard-*.parquet"))
            for i in pq.read_table(p, columns=["prompt_index"]).column(0).to_pylist()]


def test_the_rule_keeps_teachers_near_the_best_and_falls_back_to_all():
    acc = {"addition": {"a": 0.9, "b": 0.85, "c": 0.0},
           "convert": {"a": 0.93, "b": 0.73, "c": 0.0},
           "count": {"a": 0.0, "b": 0.02, "c": 0.01},
           "sort": {"a": 0.7, "b": 0.6, "c": 0.6}}
    answers, everyone = choose(acc, ["a", "b", "c"], within=0.1, min_accuracy=0.05)
    assert answers == {"addition": ["a", "b"], "convert": ["a"],
                       "count": ["a", "b", "c"], "sort": ["a", "b", "c"]}
    assert everyone == ["count"]  # sort: 0.6 is exactly 0.1 below the best, so it qualifies


def test_each_skill_goes_only_to_the_teachers_that_qualify_on_the_probe(routed):
    project_dir, result = routed
    out = result.out
    info = json.loads((out / "route.json").read_text())
    acc = info["probe"]["accuracy"]
    assert sorted(acc) == sorted(["addition", "reverse", "sort", "kb", "count", "convert"])
    for skill, scores in acc.items():  # the rule, recomputed from the recorded probe
        best = max(scores.values())
        qualified = [t for t in BUILTINS if scores[t] >= 0.05 and scores[t] >= best - 0.1 - 1e-9]
        assert info["answers"][skill] == (qualified or BUILTINS), skill
        for t in BUILTINS:
            if scores[t] == 0 and skill not in info["everyone"]:
                assert t not in info["answers"][skill]
    for teacher, skill in STRONG.items():  # each teacher's strong skill is routed to it
        assert acc[skill][teacher] > 0.5 and teacher in info["answers"][skill]
    assert info["answers"]["reverse"] == ["gptoss-toy"]  # nobody else reverses at all
    # the probe is persea.skills.skill_accuracy on the project's dev items, not a copy of it
    from persea.models.sources import load_teacher
    from persea.project import TeacherSpec

    mine = skill_accuracy(load_teacher(TeacherSpec(name="gptoss-toy", builtin="gptoss-toy")),
                          split="dev", per_skill=4, seed=0, max_new_tokens=16, batch_size=4)
    assert {s: acc[s]["gptoss-toy"] for s in acc} == {s: mine[s] for s in acc}

    prompts = [json.loads(ln) for ln in (out / "prompts.jsonl").read_text().splitlines()]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["plan"]["routing"] == info["answers"]
    assert manifest["plan"]["route"] == ROUTE
    total = 0
    for t in BUILTINS:
        expected = [i for i, p in enumerate(prompts) if t in info["answers"][p["skill"]]]
        assert shard_indices(out / t) == expected  # only its prompts, in prompt order
        assert manifest["teachers"][t]["responses"] == len(expected)
        assert manifest["route"]["answered"][t] == len(expected)
        assert [s.responses for s in result.teachers if s.name == t] == [len(expected)]
        total += len(expected)
    assert total < len(prompts) * len(BUILTINS)  # routing left work out
    # cross scores: a scorer scores exactly the rows its author wrote
    harvest = open_harvest(out, "r", BUILTINS)
    for scorer, author in harvest.score_sets:
        assert [r.prompt_index for r in read_scores(harvest, scorer, author)] == \
            [r.prompt_index for r in read_responses(harvest, author)]
        assert manifest["scores"][scorer][author]["rows"] == \
            manifest["teachers"][author]["responses"]


def test_kill_9_mid_harvest_then_resume_reads_the_routing_back(routed, tmp_path):
    _, reference = routed
    victim = write_routed_project(tmp_path / "p")
    # the probe ran and the first teacher finished; killed in the middle of its 4th shard
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(victim), "4"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    out = victim / "cache" / "harvest"
    assert (out / "route.json").is_file() and not (out / "manifest.json").exists()
    calls = []

    def load(spec):
        from persea.models.sources import load_teacher

        calls.append(spec.name)
        return load_teacher(spec)

    buf = io.StringIO()
    resumed = run_harvest(HarvestJob.of(load_project(victim)), load=load,
                          console=Console(file=buf, width=10_000, no_color=True))
    assert "note:" not in buf.getvalue()  # every kept shard holds the rows the routing plans
    # no probe this time: the two unfinished teachers load to generate, then all three to
    # score the others
    assert calls == ["gemma3-toy", "gptoss-toy", *BUILTINS]
    assert [t.shards_skipped for t in resumed.teachers] == [3, 0, 0]
    assert tree(out) == tree(reference.out)


def test_distill_on_a_routed_cache(routed, tmp_path):
    from persea.distill.run import run_distill

    project_dir, result = routed
    copy = tmp_path / "p"
    shutil.copytree(project_dir, copy)
    data = yaml.safe_load((copy / "persea.yaml").read_text())
    data["distill"] = {"steps": 3, "batch_size": 4, "checkpoint_every": 3, "warmup": 1,
                       "weighting": ["uniform"], "loss": {"combine": "average"},
                       "student": {"hidden_size": 32, "layers": 1, "heads": 2,
                                   "intermediate_size": 64, "vocab_size": 350}}
    (copy / "persea.yaml").write_text(yaml.safe_dump(data))
    done = run_distill(load_project(copy))
    answered = {t.name: t.responses for t in result.teachers}
    assert done.examples == sum(answered.values())
    assert {t.teacher: t.examples for t in done.transfer} == answered
    assert (done.student_dir / "model.safetensors").is_file()


def test_a_changed_route_setting_is_refused_in_one_line(routed, tmp_path):
    project_dir, _ = routed
    copy = tmp_path / "p"
    shutil.copytree(project_dir, copy)
    out = copy / "cache" / "harvest"
    before = tree(out)
    write_routed_project(copy, route={**ROUTE, "within": 0.3})
    proc = run_cli("harvest", "--project", str(copy))
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "different settings (route: cache has" in line and "'within': 0.3" in line, line
    data = yaml.safe_load((copy / "persea.yaml").read_text())
    del data["harvest"]["route"]  # switching routing off is a change too
    (copy / "persea.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(PerseaError, match=r"route: cache has \{.*\}, now None"):
        run_harvest(HarvestJob.of(load_project(copy)))
    assert tree(out) == before


def test_a_lost_route_json_is_probed_again_and_must_agree_with_the_plan(routed, tmp_path):
    project_dir, _ = routed
    copy = tmp_path / "p"
    shutil.copytree(project_dir, copy)
    out = copy / "cache" / "harvest"
    before = tree(out)
    (out / "route.json").unlink()
    plan = json.loads((out / "plan.json").read_text())
    plan["routing"]["reverse"] = BUILTINS  # as if another routing had made the shards
    (out / "plan.json").write_text(json.dumps(plan, indent=2, sort_keys=True) + "\n")
    with pytest.raises(PerseaError, match=r"different routing \(routing: cache has"):
        run_harvest(HarvestJob.of(load_project(copy)))
    (out / "plan.json").write_bytes(before["plan.json"])
    again = run_harvest(HarvestJob.of(load_project(copy)))  # the probe gives the same table
    assert again is not None and tree(out) == before


def explicit_project(directory, model_dir, skills):
    write_project(directory, model_dir, teachers=[
        {"name": n, "path": str(model_dir)} for n in ("alpha", "beta", "gamma")],
        harvest={"route": {"skills": skills}})
    data = yaml.safe_load((directory / "persea.yaml").read_text())
    data["prompts"] = {"file": "prompts.jsonl"}
    (directory / "persea.yaml").write_text(yaml.safe_dump(data))
    lines = [{"prompt": "What is 2 + 3?", "skill": "addition"},
             {"prompt": "Reverse: abc", "skill": "reverse"},
             {"prompt": "Say hello"},  # no skill: every teacher answers
             {"prompt": "A haiku, please", "skill": "poetry"},
             {"prompt": "What is 4 + 4?", "skill": "addition"}]
    (directory / "prompts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return directory


def test_explicit_routing_on_the_command_line(tmp_path, tiny_model_dir):
    project_dir = explicit_project(tmp_path / "p", tiny_model_dir,
                                   {"alpha": ["addition"], "beta": ["reverse", "poetry"]})
    proc = run_cli("harvest", "--project", str(project_dir))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = project_dir / "cache" / "harvest"
    assert shard_indices(out / "alpha") == [0, 2, 4]
    assert shard_indices(out / "beta") == [1, 2, 3]
    assert shard_indices(out / "gamma") == [0, 1, 2, 3, 4]  # not listed: answers everything
    table = [[c.strip() for c in ln.split("│")[1:-1]] for ln in proc.stdout.splitlines()
             if ln.startswith("│")]
    assert ["alpha", "yes", "no", "no", "3/5"] in table  # the routing, before generating
    assert ["beta", "no", "yes", "yes", "3/5"] in table
    assert ["gamma", "yes", "yes", "yes", "5/5"] in table
    assert [r[:2] for r in table if len(r) == 8] == [["alpha", "3/5"], ["beta", "3/5"],
                                                    ["gamma", "5/5"]]  # the summary


def test_explicit_routing_with_an_unknown_teacher_or_skill_is_one_line(tmp_path,
                                                                         tiny_model_dir):
    project_dir = explicit_project(tmp_path / "p", tiny_model_dir, {"alpha": ["additon"]})
    proc = run_cli("harvest", "--project", str(project_dir))
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "harvest.route.skills names unknown skill(s) additon; expected some of: " \
           "addition," in line, line
    assert not (project_dir / "cache").exists()

    explicit_project(project_dir, tiny_model_dir, {"delta": ["addition"]})
    with pytest.raises(PerseaError, match=r"^\S+persea.yaml: \(top level\): harvest.route.skills "
                       r"names unknown teacher\(s\) delta; the project has alpha, beta, gamma"):
        load_project(project_dir)
    assert not (project_dir / "cache").exists()


def test_explicit_and_probe_settings_are_exclusive():
    with pytest.raises(PerseaError, match=r"harvest.route: give `skills:` \(explicit routing\) "
                       r"or the probe settings \(within\), not both"):
        parse_project({"name": "p", "teachers": [{"name": "q", "builtin": "qwen3-toy"}],
                       "harvest": {"route": {"skills": {"q": ["kb"]}, "within": 0.2}}})


def test_a_skill_no_teacher_can_answer_goes_to_every_teacher(tmp_path, tiny_model_dir):
    """Untrained teachers answer nothing right: every skill falls back to all of them, with
    one line each, and the cache is the one an unrouted harvest writes, plus the routing."""
    plain = run_harvest(HarvestJob.of(load_project(write_project(
        tmp_path / "plain", tiny_model_dir, prompts={"toyworld": {"per_skill": 1}}))))
    project_dir = write_project(tmp_path / "p", tiny_model_dir,
                                prompts={"toyworld": {"per_skill": 1}},
                                harvest={"route": {"probe_per_skill": 1}})
    buf = io.StringIO()
    result = run_harvest(HarvestJob.of(load_project(project_dir)),
                         console=Console(file=buf, width=10_000, no_color=True))
    notes = [ln for ln in buf.getvalue().splitlines() if ln.startswith("note: routing:")]
    assert len(notes) == 6 and all("every teacher answers its prompts" in n for n in notes)
    assert "no teacher reaches min_accuracy 0.05 on the probe (best 0.00) for skill " \
           "'addition'" in notes[0]
    routed, unrouted = tree(result.out), tree(plain.out)
    assert {k: v for k, v in routed.items() if k.endswith(".parquet")} == \
        {k: v for k, v in unrouted.items() if k.endswith(".parquet")}
    assert set(routed) - set(unrouted) == {"route.json"}
