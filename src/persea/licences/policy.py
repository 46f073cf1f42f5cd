"""The licence policy for teachers: what each teacher's licence asks of a model distilled
from it and served as a paid API, and whether persea goes ahead (docs/licences.md, which
gives each rule's source).

A built-in rule is a record (`Rule`): the licence ids it covers (as a model card or
persea.yaml spells them), or the API hosts whose terms it is; its decision (`allow`,
`allow-with-obligations`, `refuse`); what it asks, in one line; its obligations (naming,
notices, terms passed on), each a sentence and, where the licence words one, the line the
NOTICE file must carry; and the document and section it comes from.

`assess` gives each teacher a `Verdict`; `require` stops a stage on what it may not go on
with: a teacher with no declared licence (bad input, exit status 2) or one the policy
refuses (exit status 1). A refusal stands unless the teacher records
`license_override: {reason: ...}` in persea.yaml; the reason then travels with the verdict
into the BOM and the sealed model card. A licence with no built-in rule is refused the same
way: someone has to read it and record why it allows what persea is about to do.

The harvest checks the licences before it writes anything; the seal checks them again,
with the names the project serves its student under (the Llama licences want "Llama" at
the start of a derived model's name: that refusal waits for the seal, since only a served
model has a name).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from persea.errors import PerseaError
from persea.licences.declared import declared_license
from persea.models.builtin import builtin_models

ALLOW = "allow"
OBLIGATIONS = "allow-with-obligations"
REFUSE = "refuse"
UNDECLARED = "undeclared"

HARVEST = "harvest"
SEAL = "seal"


class LicenceRefused(PerseaError):
    """A stage stopped by the licence policy: a decision, not a mistake in the input."""

    exit_code = 1


@dataclass(frozen=True)
class Obligation:
    text: str  # what the owner of the distilled model must do, one sentence
    notice: str | None = None  # the line a NOTICE file must carry, where the licence words it


@dataclass(frozen=True)
class Rule:
    key: str
    title: str
    decision: str
    asks: str  # what the licence asks of a model distilled from it and served as a paid API
    source: str  # the document and its sections
    url: str
    models: str = ""  # the models known to come under it (for the docs and the table)
    ids: tuple[str, ...] = ()  # declared licence ids, lower case
    hosts: tuple[str, ...] = ()  # API hosts whose terms this is
    obligations: tuple[Obligation, ...] = ()
    non_commercial: bool = False  # refused in a commercial project
    name_prefix: str | None = None  # a served name must begin with it (checked at seal)


def _llama(version: str) -> Rule:
    return Rule(
        key=f"llama{version}", title=f"Llama {version} Community License",
        ids=(f"llama{version}", f"llama-{version}", f"llama {version}",
             f"llama {version} community license"),
        decision=OBLIGATIONS, name_prefix="Llama", models=f"Llama {version}",
        asks="a model trained on Llama's outputs and made available must carry a name that "
             "begins with \"Llama\"; show \"Built with Llama\", pass the licence on, follow "
             "the Acceptable Use Policy",
        obligations=(
            Obligation("the distilled model's name must begin with \"Llama\" (persea checks "
                       "the names in serve.models at seal)"),
            Obligation("display \"Built with Llama\" prominently on a related website, user "
                       "interface, about page or product documentation"),
            Obligation("provide a copy of the licence with the model, and keep its use "
                       "within the Llama Acceptable Use Policy"),
            Obligation("copies of the model carry the licence's attribution notice in a "
                       "NOTICE file",
                       notice=f"Llama {version} is licensed under the Llama {version} "
                              "Community License, Copyright © Meta Platforms, Inc. All "
                              "Rights Reserved."),
            Obligation("a licensee above 700 million monthly active users must ask Meta "
                       "for a licence first"),
        ),
        source=f"Llama {version} Community License Agreement, section 1.b (i: copy of the "
               "agreement, \"Built with Llama\", and \"Llama\" at the start of the name of a "
               "model trained on Llama's outputs; iii: the notice; iv: the Acceptable Use "
               "Policy) and section 2 (additional commercial terms)",
        url=f"https://www.llama.com/llama{version.replace('.', '_')}/license/")


def _closed_api(key: str, title: str, host: str, url: str, section: str,
                models: str) -> Rule:
    return Rule(
        key=key, title=title, ids=(key,), hosts=(host,), decision=REFUSE, models=models,
        asks="the terms forbid using the service's output to develop models that compete "
             "with it; a distilled model served as a paid API is one",
        source=f"{title}, {section}", url=url)


RULES: tuple[Rule, ...] = (
    Rule(key="apache-2.0", title="Apache License 2.0", decision=ALLOW,
         ids=("apache-2.0", "apache 2.0", "apache2", "apache license 2.0",
              "apache license, version 2.0"),
         models="gpt-oss, Qwen3, Gemma 4, persea's built-in toy teachers",
         asks="no condition on a model distilled from it and served as an API; copies of "
              "the teacher's own files keep its licence text and NOTICE",
         source="Apache License 2.0, section 2 (copyright licence, derivative works "
                "included) and section 4 (conditions on redistributing copies)",
         url="https://www.apache.org/licenses/LICENSE-2.0"),
    Rule(key="mit", title="MIT License", decision=ALLOW, ids=("mit", "mit license"),
         models="DeepSeek-R1",
         asks="no condition on a distilled model; copies of the teacher's own files keep "
              "its copyright and permission notice",
         source="MIT License (the permission notice and its one condition)",
         url="https://opensource.org/license/mit"),
    Rule(key="gemma", title="Gemma Terms of Use", decision=OBLIGATIONS,
         ids=("gemma", "gemma terms of use"),
         models="Gemma, Gemma 2, Gemma 3 (Gemma 4 is Apache-2.0)",
         asks="a model distilled from Gemma is a Model Derivative and serving it through "
              "an API is Distribution: Gemma's use restrictions pass on to it and its users",
         obligations=(
             Obligation("make the Gemma use restrictions (section 3.2 and the Gemma "
                        "Prohibited Use Policy) an enforceable part of the terms your API's "
                        "users accept, and tell them the model is subject to them"),
             Obligation("give the model's recipients a copy of the Gemma Terms of Use (for "
                        "an API: with your terms)"),
             Obligation("copies of the model handed out carry the notice in a NOTICE file",
                        notice="Gemma is provided under and subject to the Gemma Terms of "
                               "Use found at ai.google.dev/gemma/terms"),
             Obligation("the model must not be used for what the Prohibited Use Policy "
                        "forbids"),
         ),
         source="Gemma Terms of Use, section 1.1 (Model Derivatives include a model trained "
                "on Gemma's outputs, distillation named; Distribution includes a hosted "
                "service reached by API), section 3.1 (conditions on Distribution) and "
                "section 3.2 (use restrictions)",
         url="https://ai.google.dev/gemma/terms"),
    _llama("3.1"), _llama("3.2"), _llama("3.3"), _llama("4"),
    Rule(key="qwen-research", title="Qwen RESEARCH LICENSE AGREEMENT",
         ids=("qwen-research", "qwen research license agreement"), decision=OBLIGATIONS,
         non_commercial=True, models="Qwen2.5-3B",
         asks="research and evaluation only (non-commercial): a model served as a paid API "
              "needs a commercial licence from Alibaba Cloud",
         obligations=(
             Obligation("use the distilled model for non-commercial purposes only (research "
                        "or evaluation), unless Alibaba Cloud grants a commercial licence"),
             Obligation("copies of the model carry the licence's notice in a NOTICE file",
                        notice="Qwen is licensed under the Qwen RESEARCH LICENSE AGREEMENT, "
                               "Copyright (c) Alibaba Cloud. All Rights Reserved."),
         ),
         source="Qwen RESEARCH LICENSE AGREEMENT (release date 19 September 2024): the "
                "definition of Non-Commercial (research or evaluation purposes only) and the "
                "grant of rights, for non-commercial purposes only; see the licence for the "
                "rest",
         url="https://huggingface.co/Qwen/Qwen2.5-3B-Instruct/blob/main/LICENSE"),
    Rule(key="qwen", title="Qwen LICENSE AGREEMENT", ids=("qwen", "qwen license agreement"),
         decision=OBLIGATIONS, models="Qwen2.5-72B",
         asks="commercial use allowed; a model trained with its outputs and made available "
              "says \"Built with Qwen\" or \"Improved using Qwen\"",
         obligations=(
             Obligation("display \"Built with Qwen\" or \"Improved using Qwen\" prominently "
                        "in the distilled model's product documentation"),
             Obligation("copies of the model carry the licence's notice in a NOTICE file, "
                        "with a copy of the licence",
                        notice="Qwen is licensed under the Qwen LICENSE AGREEMENT, Copyright "
                               "(c) Alibaba Cloud. All Rights Reserved."),
             Obligation("a product above 100 million monthly active users needs a licence "
                        "from Alibaba Cloud first"),
         ),
         source="Qwen LICENSE AGREEMENT (release date 19 September 2024): the conditions on "
                "redistribution (copy of the agreement, the notice) and the restrictions "
                "(attribution for a model trained with Qwen's outputs, the 100 million "
                "monthly active users threshold); see the licence for the exact clauses",
         url="https://huggingface.co/Qwen/Qwen2.5-72B-Instruct/blob/main/LICENSE"),
    _closed_api("openai-terms", "OpenAI Terms of Use", "api.openai.com",
                "https://openai.com/policies/terms-of-use",
                "what you may not do with the services: use their output to develop models "
                "that compete with OpenAI", "GPT models through the OpenAI API"),
    _closed_api("anthropic-terms", "Anthropic Commercial Terms of Service",
                "api.anthropic.com", "https://www.anthropic.com/legal/commercial-terms",
                "use restrictions: no access to the services to build a competing product "
                "or service, including to train competing AI models",
                "Claude models through the Anthropic API"),
    _closed_api("gemini-api-terms", "Gemini API Additional Terms of Service",
                "generativelanguage.googleapis.com", "https://ai.google.dev/gemini-api/terms",
                "use restrictions: the services may not be used to develop models that "
                "compete with them", "Gemini models through the Gemini API"),
)

_BY_ID = {i: r for r in RULES for i in r.ids}


def _normal(license_id: str) -> str:
    return " ".join(license_id.strip().lower().split())


def rule_for(license_id: str) -> Rule | None:
    """The built-in rule for a declared licence (SPDX ids and model-card ids, any case)."""
    return _BY_ID.get(_normal(license_id))


def host_rule(endpoint: str | None) -> tuple[Rule, str] | None:
    """The closed-API terms that govern an endpoint teacher at a known provider's host."""
    if not endpoint:
        return None
    host = (urlparse(endpoint).hostname or "").lower()
    for rule in RULES:
        if any(host == h or host.endswith("." + h) for h in rule.hosts):
            return rule, host
    return None


@dataclass(frozen=True)
class Verdict:
    teacher: str
    license: str | None  # as declared; for a known API host, the terms of that host
    where: str  # where the declaration was read
    decision: str  # allow, allow-with-obligations, refuse, undeclared
    rule: Rule | None = None
    obligations: tuple[Obligation, ...] = ()
    refusal: str | None = None  # why it is refused
    at: str = HARVEST  # the first stage a refusal stops
    override: str | None = None  # the recorded reason to go on all the same
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def refused(self) -> bool:
        return self.decision == REFUSE and self.override is None

    def stops(self, stage: str) -> bool:
        return self.refused and (stage == SEAL or self.at == HARVEST)

    @property
    def shown(self) -> str:
        """The decision as the table prints it."""
        if self.decision == REFUSE:
            if self.override is not None:
                return "allow (override)"
            return "refuse at seal" if self.at == SEAL else REFUSE
        return self.decision

    @property
    def notices(self) -> list[str]:
        return [o.notice for o in self.obligations if o.notice]


def _check_source(spec, resolve) -> None:
    """A local teacher that is not there is named before its licence is looked for."""
    if spec.builtin is not None and spec.builtin not in builtin_models():
        raise PerseaError(f"teacher {spec.name!r}: unknown builtin {spec.builtin!r}; "
                          f"expected one of: {', '.join(builtin_models())}")
    if spec.path is not None and not resolve(spec.path).exists():
        raise PerseaError(f"teacher {spec.name!r}: path does not exist: {resolve(spec.path)} "
                          "(expected a Hugging Face model directory)")
    if spec.gguf is not None and not resolve(spec.gguf).is_file():
        raise PerseaError(f"teacher {spec.name!r}: GGUF file does not exist: "
                          f"{resolve(spec.gguf)}")


def assess_teacher(spec, resolve=Path, *, commercial: bool = True,
                   served_names: list[str] | None = None) -> Verdict:
    """The verdict on one `TeacherSpec`; `served_names`: the names the project serves its
    student under (None: not known here, so a naming rule is an obligation only)."""
    _check_source(spec, resolve)
    override = spec.license_override.reason if spec.license_override is not None else None
    found = host_rule(spec.endpoint)
    notes: list[str] = []
    if found is not None:
        rule, host = found
        license_id, where = rule.title, f"endpoint host {host}"
        if spec.license and rule_for(spec.license) is not rule:
            notes.append(f"persea.yaml declares {spec.license!r}, but {host} serves under "
                         f"the {rule.title}: the host's terms decide")
    else:
        declared = declared_license(spec, resolve)
        if declared.license is None:
            return Verdict(spec.name, None, declared.where, UNDECLARED, override=override)
        license_id, where = declared.license, declared.where
        rule = rule_for(license_id)
    decision = rule.decision if rule is not None else REFUSE
    obligations = rule.obligations if rule is not None else ()
    refusal, at = None, HARVEST
    if rule is None:
        refusal = (f"no built-in rule for licence {license_id!r}: read it, and if it allows "
                   "a model distilled from this teacher to be served as a paid API, record "
                   "why under license_override")
    elif rule.decision == REFUSE:
        refusal = rule.asks
    elif rule.non_commercial and commercial:
        decision, refusal = REFUSE, ("a non-commercial licence, and the project is "
                                     "commercial (licences.commercial: true)")
    elif rule.name_prefix is not None:
        wrong = [n for n in served_names or [] if not n.startswith(rule.name_prefix)]
        if wrong:
            decision, at = REFUSE, SEAL
            refusal = (f"the model must be served under a name that begins with "
                       f"{rule.name_prefix!r}; serve.models names the student "
                       f"{', '.join(repr(n) for n in wrong)}")
        elif served_names == []:
            notes.append("the project serves no student under a name to check; the naming "
                         "obligation is recorded")
    return Verdict(spec.name, license_id, where, decision, rule, obligations, refusal,
                   at, override, tuple(notes))


def assess(teachers, resolve=Path, *, commercial: bool = True,
           served_names: list[str] | None = None) -> list[Verdict]:
    return [assess_teacher(t, resolve, commercial=commercial, served_names=served_names)
            for t in teachers]


def served_names(spec) -> list[str]:
    """The names a project (`Project`) serves its student under."""
    return [m.name for m in spec.serve.models if m.student]


def distilled_teachers(spec) -> list:
    """The teachers the student learns from: `distill.teachers`, else all of them."""
    names = spec.distill.teachers or [t.name for t in spec.teachers]
    return [t for t in spec.teachers if t.name in names]


def assess_project(project, teachers=None) -> list[Verdict]:
    """Verdicts on a loaded project's teachers (default: every teacher), with the names it
    serves its student under."""
    spec = project.spec
    return assess(spec.teachers if teachers is None else teachers, project.resolve,
                  commercial=spec.licences.commercial, served_names=served_names(spec))


def undeclared_line(missing: list[Verdict]) -> str:
    names = ", ".join(repr(v.teacher) for v in missing)
    who = f"teacher {names} declares" if len(missing) == 1 else f"teachers {names} declare"
    return (f"{who} no licence: add `license: <SPDX id or licence name>` to "
            f"{'it' if len(missing) == 1 else 'each'} in persea.yaml (or a `license:` in "
            "the front matter of the model card, README.md, of a local model)")


def require(verdicts: list[Verdict], stage: str) -> None:
    """Stop `stage` (harvest or seal) on an undeclared licence (PerseaError, exit 2) or a
    refused one (LicenceRefused, exit 1), in one line naming the teachers."""
    missing = [v for v in verdicts if v.decision == UNDECLARED]
    if missing:
        raise PerseaError(f"{undeclared_line(missing)}; `persea licences` shows what each "
                          "licence asks; nothing written")
    stopped = [v for v in verdicts if v.stops(stage)]
    if stopped:
        why = "; ".join(f"teacher {v.teacher!r} ({v.license}): {v.refusal}" for v in stopped)
        raise LicenceRefused(f"{stage} refused by the licence policy: {why} (see `persea "
                             "licences`; a recorded `license_override: {reason: ...}` on the "
                             "teacher lets it through); nothing written")
