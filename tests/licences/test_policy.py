"""The licence policy's built-in rules, each decision, and how a licence is found: from
persea.yaml, a model card, the built-in registry or the API host an endpoint points at."""

from __future__ import annotations

import pytest

from persea.errors import PerseaError
from persea.licences.policy import (HARVEST, OBLIGATIONS, REFUSE, RULES, SEAL, LicenceRefused,
                                    assess_teacher, require, rule_for)
from persea.project import TeacherSpec, parse_project

GEMMA_NOTICE = ("Gemma is provided under and subject to the Gemma Terms of Use found at "
                "ai.google.dev/gemma/terms")


def _teacher(license_id=None, **source) -> TeacherSpec:
    source = source or {"builtin": "qwen3-toy"}
    return TeacherSpec(name="t", license=license_id, **source)


@pytest.mark.parametrize("license_id, rule, decision", [
    ("Apache-2.0", "apache-2.0", "allow"),  # gpt-oss, Qwen3, Gemma 4
    ("apache-2.0", "apache-2.0", "allow"),  # as a Hugging Face model card spells it
    ("MIT", "mit", "allow"),  # DeepSeek-R1
    ("mit", "mit", "allow"),
    ("gemma", "gemma", OBLIGATIONS),  # Gemma 1 to 3
    ("llama3.1", "llama3.1", OBLIGATIONS),
    ("llama3.2", "llama3.2", OBLIGATIONS),
    ("llama3.3", "llama3.3", OBLIGATIONS),
    ("llama4", "llama4", OBLIGATIONS),
    ("qwen", "qwen", OBLIGATIONS),  # Qwen2.5-72B
    ("qwen-research", "qwen-research", REFUSE),  # Qwen2.5-3B, in a commercial project
    ("openai-terms", "openai-terms", REFUSE),  # an endpoint behind a proxy
    ("anthropic-terms", "anthropic-terms", REFUSE),
    ("gemini-api-terms", "gemini-api-terms", REFUSE),
])
def test_each_built_in_rule_decides(license_id, rule, decision):
    verdict = assess_teacher(_teacher(license_id), served_names=["Llama-ev"])
    assert verdict.rule is rule_for(license_id) and verdict.rule.key == rule
    assert verdict.decision == decision
    assert verdict.where == "persea.yaml"
    assert verdict.stops(HARVEST) == (decision == REFUSE)
    assert (verdict.refusal is None) == (decision != REFUSE)
    assert bool(verdict.obligations) == (decision == OBLIGATIONS or rule == "qwen-research")


def test_every_rule_names_its_source_and_is_reachable_by_its_ids():
    assert len({r.key for r in RULES}) == len(RULES)
    for rule in RULES:
        assert rule.source and rule.url.startswith("https://") and rule.asks
        assert all(rule_for(i) is rule for i in rule.ids) and (rule.ids or rule.hosts)
        assert rule.decision in ("allow", OBLIGATIONS, REFUSE)


def test_gemma_passes_its_use_restrictions_on_and_words_the_notice():
    verdict = assess_teacher(_teacher("gemma"))
    assert verdict.notices == [GEMMA_NOTICE]
    texts = " ".join(o.text for o in verdict.obligations)
    assert "use restrictions" in texts and "Prohibited Use Policy" in texts
    assert "Model Derivative" in verdict.rule.asks and "API" in verdict.rule.asks


@pytest.mark.parametrize("served, decision, shown", [
    (["Llama-acme-1"], OBLIGATIONS, OBLIGATIONS),
    (["Llama-acme-1", "acme-1"], REFUSE, "refuse at seal"),
    (["student"], REFUSE, "refuse at seal"),
    (["llama-acme"], REFUSE, "refuse at seal"),  # the licence says "Llama"
    ([], OBLIGATIONS, OBLIGATIONS),  # no served name to check: the obligation is recorded
    (None, OBLIGATIONS, OBLIGATIONS),  # the harvest does not know the names
])
def test_llama_wants_its_name_first_and_refuses_at_seal_only(served, decision, shown):
    verdict = assess_teacher(_teacher("llama3.1"), served_names=served)
    assert (verdict.decision, verdict.shown) == (decision, shown)
    assert not verdict.stops(HARVEST)
    assert verdict.stops(SEAL) == (decision == REFUSE)
    assert any('begin with "Llama"' in o.text for o in verdict.obligations)
    assert verdict.notices == ["Llama 3.1 is licensed under the Llama 3.1 Community License, "
                               "Copyright © Meta Platforms, Inc. All Rights Reserved."]
    if decision == REFUSE:
        assert "begins with 'Llama'" in verdict.refusal
    if served == []:
        assert "no student under a name to check" in verdict.notes[0]


def test_qwen_research_is_refused_for_a_commercial_project_only():
    refused = assess_teacher(_teacher("qwen-research"), commercial=True)
    assert refused.decision == REFUSE and refused.stops(HARVEST)
    assert "non-commercial" in refused.refusal and "licences.commercial" in refused.refusal
    research = assess_teacher(_teacher("qwen-research"), commercial=False)
    assert research.decision == OBLIGATIONS and not research.stops(SEAL)
    assert "non-commercial" in research.obligations[0].text
    assert "Qwen RESEARCH LICENSE AGREEMENT" in research.notices[0]


def test_qwen_72b_asks_for_attribution():
    verdict = assess_teacher(_teacher("qwen"))
    assert any('"Built with Qwen"' in o.text for o in verdict.obligations)
    assert verdict.notices == ["Qwen is licensed under the Qwen LICENSE AGREEMENT, Copyright "
                               "(c) Alibaba Cloud. All Rights Reserved."]


@pytest.mark.parametrize("url, title", [
    ("https://api.openai.com/v1", "OpenAI Terms of Use"),
    ("https://api.anthropic.com/v1/", "Anthropic Commercial Terms of Service"),
    ("https://generativelanguage.googleapis.com/v1beta/openai/",
     "Gemini API Additional Terms of Service"),
])
def test_a_closed_api_teacher_is_refused_unless_overridden_with_a_reason(url, title):
    spec = TeacherSpec(name="api", endpoint=url, model="m")
    verdict = assess_teacher(spec)
    assert verdict.license == title and verdict.where.startswith("endpoint host ")
    assert verdict.decision == REFUSE and verdict.stops(HARVEST) and verdict.stops(SEAL)
    assert "compete" in verdict.refusal
    with pytest.raises(LicenceRefused) as err:
        require([verdict], HARVEST)
    assert err.value.exit_code == 1 and "teacher 'api'" in err.value.message
    # a licence declared in persea.yaml does not change what the host's terms say
    claimed = assess_teacher(TeacherSpec(name="api", endpoint=url, model="m", license="MIT"))
    assert claimed.decision == REFUSE and "persea.yaml declares 'MIT'" in claimed.notes[0]

    reason = "written agreement with the provider, ref. 2026-114, allows distillation"
    allowed = assess_teacher(TeacherSpec(name="api", endpoint=url, model="m",
                                         license_override={"reason": reason}))
    assert allowed.shown == "allow (override)" and allowed.override == reason
    assert not allowed.stops(HARVEST) and not allowed.stops(SEAL)
    require([allowed], SEAL)  # goes through


def test_an_override_needs_a_reason_in_words():
    base = {"name": "p", "teachers": [{"name": "api", "endpoint": "https://api.openai.com/v1",
                                       "model": "m", "license_override": {}}]}
    with pytest.raises(PerseaError, match=r"teachers\[0\].license_override.reason: Field "
                                          "required"):
        parse_project(base)
    base["teachers"][0]["license_override"] = {"reason": "   "}
    with pytest.raises(PerseaError, match="give the reason in words"):
        parse_project(base)
    base["teachers"][0]["license_override"] = {"reason": "ok", "by": "me"}
    with pytest.raises(PerseaError, match="license_override.by: unknown field"):
        parse_project(base)


def test_an_endpoint_elsewhere_needs_its_licence_declared():
    local = TeacherSpec(name="vllm", endpoint="http://127.0.0.1:8001/v1", model="qwen3")
    assert assess_teacher(local).decision == "undeclared"
    declared = TeacherSpec(name="vllm", endpoint="http://127.0.0.1:8001/v1", model="qwen3",
                           license="Apache-2.0")
    assert assess_teacher(declared).decision == "allow"


def test_an_undeclared_licence_is_one_line_naming_the_teacher_and_how_to_declare(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "README.md").write_text("# a card without front matter\n")
    verdicts = [assess_teacher(TeacherSpec(name="mine", path=str(tmp_path / "m"))),
                assess_teacher(_teacher("MIT"))]
    assert verdicts[0].decision == "undeclared" and verdicts[0].license is None
    with pytest.raises(PerseaError) as err:
        require(verdicts, HARVEST)
    message = err.value.message
    assert not isinstance(err.value, LicenceRefused) and err.value.exit_code == 2
    assert message.startswith("teacher 'mine' declares no licence: add `license: ")
    assert "persea.yaml" in message and "\n" not in message


def test_a_licence_without_a_rule_is_refused_unless_overridden():
    verdict = assess_teacher(_teacher("cc-by-nc-4.0"))
    assert verdict.decision == REFUSE and verdict.rule is None
    assert "no built-in rule for licence 'cc-by-nc-4.0'" in verdict.refusal
    spec = TeacherSpec(name="t", builtin="qwen3-toy", license="cc-by-nc-4.0",
                       license_override={"reason": "internal research build, never sold"})
    assert assess_teacher(spec).shown == "allow (override)"


def test_the_licence_comes_from_the_model_card_or_the_built_in_registry(tmp_path):
    for name, card in [("q3b", "---\nlicense: other\nlicense_name: qwen-research\n---\n"),
                       ("g4", "---\nlicense: apache-2.0\nbase_model: google/gemma-4\n---\n"),
                       ("g3", "---\nlicense: gemma\n---\n")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "README.md").write_text(card)
    got = {n: assess_teacher(TeacherSpec(name=n, path=str(tmp_path / n)))
           for n in ("q3b", "g4", "g3")}
    assert got["q3b"].license == "qwen-research" and got["q3b"].decision == REFUSE
    assert got["g4"].rule.key == "apache-2.0" and got["g4"].decision == "allow"
    assert got["g3"].rule.key == "gemma"
    assert all(v.where == str(tmp_path / n / "README.md") for n, v in got.items())
    for toy in ("qwen3-toy", "gemma3-toy", "gptoss-toy"):
        verdict = assess_teacher(TeacherSpec(name=toy, builtin=toy))
        assert (verdict.license, verdict.where, verdict.decision) == (
            "Apache-2.0", f"built-in model {toy}", "allow")
    # persea.yaml wins over the card
    yaml_says = assess_teacher(TeacherSpec(name="g3", path=str(tmp_path / "g3"),
                                           license="MIT"))
    assert (yaml_says.license, yaml_says.where) == ("MIT", "persea.yaml")


def test_a_missing_local_teacher_is_named_before_its_licence(tmp_path):
    with pytest.raises(PerseaError, match="teacher 'ghost': path does not exist"):
        assess_teacher(TeacherSpec(name="ghost", path=str(tmp_path / "nope")))
    with pytest.raises(PerseaError, match="teacher 'x': unknown builtin 'nope'"):
        assess_teacher(TeacherSpec(name="x", builtin="nope"))
