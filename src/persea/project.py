"""The project file, `persea.yaml`, as Pydantic models.

Every stage reads its settings from here. A mistake is reported as one line that names the
field (as a path such as `teachers[1].top_k`), the value found and what was expected;
unknown fields are mistakes too, since a misspelt option silently ignored is worse.
"""

from __future__ import annotations

import os
from pathlib import Path
from decimal import Decimal
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, \
    field_validator, model_validator

from persea.accounts.money import MAX_AMOUNT, PRICE_PLACES, parse_amount
from persea.db import resolve_url
from persea.errors import PerseaError

PROJECT_FILE = "persea.yaml"
TEACHER_SOURCES = ("builtin", "path", "hub", "gguf", "endpoint")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LicenseOverride(_Strict):
    """A teacher the licence policy refuses, used all the same: why (an agreement with the
    licensor, a legal review). Recorded in the BOM and the sealed model card."""

    reason: str = Field(min_length=1, max_length=1000)

    @field_validator("reason")
    @classmethod
    def _said(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("give the reason in words (it is recorded with the model)")
        return value.strip()


class TeacherSpec(_Strict):
    """One teacher, from exactly one source."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=64)
    builtin: str | None = None  # a name in persea.models.builtin
    path: str | None = None  # a local Hugging Face model directory
    hub: str | None = None  # a hub id such as Qwen/Qwen3-0.6B (needs the network or a cache)
    revision: str | None = None
    gguf: str | None = None  # a .gguf file, loaded through transformers
    endpoint: str | None = None  # base URL of an OpenAI-compatible API (black box)
    model: str | None = None  # the model name to ask the endpoint for
    api_key_env: str = "OPENAI_API_KEY"
    chat_template: bool = True  # wrap prompts in the tokenizer's chat template when it has one
    # the teacher's licence (an SPDX id such as Apache-2.0, or a licence's name); when not
    # given, read from the model's own metadata where it has one (persea.licences)
    license: str | None = Field(None, min_length=1, max_length=200)
    # use a teacher the licence policy refuses (persea.licences.policy), with the reason
    license_override: LicenseOverride | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "TeacherSpec":
        given = [s for s in TEACHER_SOURCES if getattr(self, s) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one source of {', '.join(TEACHER_SOURCES)}; found "
                f"{', '.join(given) if given else 'none'}")
        if self.endpoint is not None and not self.model:
            raise ValueError("an endpoint teacher needs `model:` (the name the endpoint serves)")
        return self

    @property
    def source(self) -> str:
        return next(s for s in TEACHER_SOURCES if getattr(self, s) is not None)


class ToyworldPrompts(_Strict):
    split: Literal["train", "dev", "test"] = "train"
    # prompts of each skill: one number for all, or {skill: n} (a skill left out gets none),
    # so that a skill that takes long to learn can be given more distinct prompts
    per_skill: StrictInt | dict[str, StrictInt] = 64
    skills: list[str] | None = None
    seed: StrictInt = 0

    @model_validator(mode="after")
    def _counts(self) -> "ToyworldPrompts":
        counts = self.per_skill if isinstance(self.per_skill, dict) else {"": self.per_skill}
        low = 0 if isinstance(self.per_skill, dict) else 1
        for skill, n in counts.items():
            if not low <= n <= 1_000_000:
                raise ValueError(f"per_skill{'.' + skill if skill else ''} is {n}; expected "
                                 f"a count from {low} to 1000000")
        if isinstance(self.per_skill, dict):
            if self.skills is not None:
                raise ValueError("give `skills:` or per-skill counts in `per_skill:`, not both")
            if not any(self.per_skill.values()):
                raise ValueError("per_skill gives every skill 0 prompts")
        return self


class PromptsSpec(_Strict):
    """Where harvest prompts come from: the toy world, or a JSONL file of
    `{"id": ..., "prompt": ..., "skill": ...}` lines (`skill` optional)."""

    toyworld: ToyworldPrompts | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "PromptsSpec":
        if (self.toyworld is None) == (self.file is None):
            raise ValueError("give exactly one of `toyworld:` or `file:`")
        return self


class HarvestRouteSpec(_Strict):
    """Which teachers answer which skills' prompts (docs/harvest.md, "Routing prompts to the
    teachers that can answer them"). Either a probe: each teacher is scored on
    `probe_per_skill` dev-split items of every skill, and answers a skill's prompts only if
    its accuracy is at least `min_accuracy` and within `within` of the best teacher's; or
    explicit `skills: {teacher: [skill, ...]}` (a teacher not listed answers everything).
    Prompts without a skill go to every teacher either way."""

    probe_per_skill: StrictInt = Field(50, ge=1, le=10_000)
    within: float = Field(0.10, ge=0, le=1)
    min_accuracy: float = Field(0.05, ge=0, le=1)
    skills: dict[str, list[str]] | None = None

    @model_validator(mode="after")
    def _probe_or_explicit(self) -> "HarvestRouteSpec":
        probe = sorted({"probe_per_skill", "within", "min_accuracy"} & self.model_fields_set)
        if self.skills is not None and probe:
            raise ValueError(f"give `skills:` (explicit routing) or the probe settings "
                             f"({', '.join(probe)}), not both")
        return self

    @property
    def explicit(self) -> bool:
        return self.skills is not None

    def record(self) -> dict:
        """The setting as plan.json records it: the explicit mapping, or the probe's fields."""
        if self.explicit:
            return {"skills": {t: list(s) for t, s in sorted(self.skills.items())}}
        return self.model_dump(mode="json", include={"probe_per_skill", "within",
                                                     "min_accuracy"})


class HarvestSpec(_Strict):
    out: str = "cache/harvest"
    top_k: StrictInt = Field(32, ge=1, le=256)
    max_new_tokens: StrictInt = Field(32, ge=1, le=4096)
    batch_size: StrictInt = Field(32, ge=1, le=4096)
    shard_size: StrictInt = Field(64, ge=1, le=1_000_000)
    backend: Literal["auto", "transformers", "vllm"] = "auto"
    # after generating, every white-box teacher also scores every other teacher's responses
    # (teacher forcing), so losses can combine teachers at the same position
    cross_score: bool = False
    # torch's intra-op threads while generating and scoring: CPU results depend on it, so it
    # is fixed and recorded in plan.json (docs/harvest.md, "Determinism")
    threads: StrictInt = Field(1, ge=1, le=1024)
    # send each skill's prompts only to the teachers that can answer them; None: every teacher
    # answers every prompt
    route: HarvestRouteSpec | None = None


STUDENT_SOURCES = ("path", "hub", "gguf")
STUDENT_SHAPE = ("tokenizer", "min_word_count", "split_compounds", "chat_format", "vocab_size", "hidden_size",
                 "layers", "heads", "kv_heads", "intermediate_size")


class StudentSpec(_Strict):
    """The student: either a shape (a Llama-architecture model built from scratch, with its
    own tokenizer trained on the harvest text: byte-level BPE, or frequent words plus single
    characters, `words`; see persea.distill.tokenizer), or a pretrained base model from one
    source, which keeps its own tokenizer and chat template."""

    tokenizer: Literal["bpe", "words"] = "bpe"
    min_word_count: StrictInt = Field(4, ge=1)  # words: how often a word must occur to be a token
    # words: a word made of other kept words (`bita` = `bi` + `ta`) is written as its parts;
    # None (unset) means no, and keeps it out of the record, as kv_heads
    split_compounds: StrictBool | None = None
    chat_format: Literal["llama", "compact"] = "llama"
    vocab_size: StrictInt = Field(512, ge=300, le=200_000)
    hidden_size: StrictInt = Field(128, ge=16, le=16384)
    layers: StrictInt = Field(4, ge=1, le=128)
    heads: StrictInt = Field(4, ge=1, le=128)
    # key/value heads (grouped-query attention); None: half the heads, at least one
    kv_heads: StrictInt | None = Field(None, ge=1, le=128)
    intermediate_size: StrictInt = Field(384, ge=16, le=65536)
    path: str | None = None  # a local Hugging Face model directory
    hub: str | None = None  # a hub id (from the local cache, or downloaded when online)
    revision: str | None = None  # with hub only
    gguf: str | None = None  # a .gguf file, loaded through transformers

    @model_validator(mode="after")
    def _shape_or_one_source(self) -> "StudentSpec":
        sources = [s for s in STUDENT_SOURCES if getattr(self, s) is not None]
        shape = [f for f in STUDENT_SHAPE if f in self.model_fields_set]
        if len(sources) > 1 or (sources and shape):
            raise ValueError(
                "give either the shape fields (" + ", ".join(STUDENT_SHAPE) + ") or exactly "
                f"one source of {', '.join(STUDENT_SOURCES)}; found "
                + ", ".join(sources + shape))
        if self.revision is not None and self.hub is None:
            raise ValueError("`revision:` goes with `hub:` only")
        if self.split_compounds and self.tokenizer != "words":
            raise ValueError("`split_compounds:` goes with `tokenizer: words` only")
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise ValueError(f"heads {self.heads} is not a multiple of kv_heads "
                             f"{self.kv_heads}; each key/value head serves a whole group of "
                             "query heads")
        if not sources and self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by heads "
                             f"{self.heads}; choose them so that each head gets "
                             "hidden_size / heads dimensions")
        return self

    @property
    def source(self) -> str | None:
        """`path`, `hub` or `gguf` for a pretrained student; None for a shape."""
        return next((s for s in STUDENT_SOURCES if getattr(self, s) is not None), None)

    def record(self) -> dict:
        """The fields that define this student (for run.json): the shape, or the source."""
        if self.source is None:
            # kv_heads and split_compounds only when set, so runs recorded before the fields
            # existed still resume
            return self.model_dump(mode="json", include=set(STUDENT_SHAPE), exclude_none=True)
        return self.model_dump(mode="json", include={*STUDENT_SOURCES, "revision"},
                               exclude_none=True)


class LossSpec(_Strict):
    ce: float = Field(1.0, ge=0)  # ground-truth cross-entropy on the teachers' responses
    kd: Literal["none", "topk", "xtok"] = "xtok"  # topk needs the student's own tokenizer
    kd_weight: float = Field(1.0, ge=0)
    divergence: Literal["forward", "reverse", "jsd"] = "forward"  # for kd: topk
    beta: float = Field(0.5, gt=0, lt=1)
    temperature: float = Field(1.0, gt=0)
    uld_weight: float = Field(1.0, ge=0)
    alm_weight: float = Field(0.0, ge=0)
    token_confidence: bool = False
    # how teachers combine: sum their losses over their own responses, or (needs
    # harvest.cross_score) average / select their aligned distributions on the same text
    combine: Literal["sum", "average", "select"] = "sum"

    @property
    def uses_logit_kd(self) -> bool:
        return self.kd != "none" and self.kd_weight > 0


class OnPolicySpec(_Strict):
    """On-policy distillation (persea.distill.onpolicy): `lmbda` of the steps train on the
    student's own sampled answers, graded token by token by the teachers."""

    lmbda: float = Field(0.0, ge=0, le=1)  # share of on-policy steps; 0: off
    # no on-policy step before this share of the run (of its steps, or of distill.time_budget)
    start: float = Field(0.0, ge=0, lt=1)
    divergence: Literal["forward", "reverse", "jsd"] = "reverse"
    beta: float = Field(0.5, gt=0, lt=1)  # for jsd
    temperature: float = Field(1.0, ge=0)  # the student's sampling temperature; 0: greedy
    max_new_tokens: StrictInt = Field(24, ge=1, le=4096)
    top_k: StrictInt = Field(32, ge=1, le=256)  # teacher candidates kept per position
    # the target at a student position: the teacher's top-k carried onto student ids, or
    # the teacher's probability of the very token the student sampled (exact across
    # tokenizers: the product over the teacher tokens covering its text)
    target: Literal["topk", "sampled"] = "topk"
    # several teachers per position: the most confident (select), a dev-weighted average,
    # or only the best teacher on the prompt's skill by dev accuracy (best: cheapest)
    combine: Literal["select", "average", "best"] = "select"
    accepted_weight: float = Field(1.0, ge=0)  # weight of a sample the checker accepts
    # fresh prompts per skill from the prompt world (train split); None: the harvest's
    prompts_per_skill: StrictInt | None = Field(None, ge=1, le=1_000_000)


class DistillSpec(_Strict):
    out: str = "runs/student"
    teachers: list[str] | None = None  # default: every teacher of the project
    student: StudentSpec = StudentSpec()
    loss: LossSpec = LossSpec()
    weighting: list[Literal["uniform", "confidence", "verified", "best_teacher"]] = [
        "verified"]
    on_policy: OnPolicySpec = OnPolicySpec()
    weighting_by_skill: dict[str, list[Literal["uniform", "confidence", "verified",
                                               "best_teacher"]]] = {}
    confidence_tau: float = Field(1.0, gt=0)
    dev_per_skill: StrictInt = Field(50, ge=1, le=10_000)  # for best_teacher: dev items per skill
    # how batches share the skills: as the kept examples do, equally, or {skill: share}
    skill_mix: Literal["examples", "equal"] | dict[str, Annotated[float, Field(ge=0)]] = "examples"
    steps: StrictInt = Field(600, ge=1)
    batch_size: StrictInt = Field(32, ge=1)
    grad_accum: StrictInt = Field(1, ge=1)
    lr: float = Field(3e-3, gt=0)
    warmup: StrictInt = Field(30, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    checkpoint_every: StrictInt = Field(100, ge=1)
    # seconds of training after which the run stops (at most `steps` steps); the learning
    # rate then decays with the share of this budget spent. The weights depend on the
    # machine's speed, so such a run is not reproducible (docs/distill.md, "Time budget")
    time_budget: float | None = Field(None, gt=0)
    seed: StrictInt = 0
    # torch's intra-op threads per process while training: CPU results depend on it, so it
    # is fixed and recorded in run.json (docs/distill.md, "Determinism")
    threads: StrictInt = Field(1, ge=1, le=1024)


class DatabaseSpec(_Strict):
    """The gateway's database: a SQLAlchemy URL (`postgresql+psycopg://...` or `sqlite:///...`,
    a relative SQLite path counting from the project directory)."""

    url: str = Field(min_length=1)


class EvalSpec(_Strict):
    """`persea eval`'s defaults: which toy-world items, how long an answer, where records go."""

    out: str = "evals"
    split: Literal["train", "dev", "test"] = "test"
    per_skill: StrictInt = Field(50, ge=1, le=100_000)
    skills: list[str] | None = None
    seed: StrictInt = 0
    max_new_tokens: StrictInt = Field(32, ge=1, le=4096)
    batch_size: StrictInt = Field(32, ge=1, le=4096)


RULE_KINDS = ("beat", "within_best_teacher", "floor")


class ReleaseRule(_Strict):
    """One rule of the release policy; exactly one of `beat`, `within_best_teacher`, `floor`.

    `metrics` says which metrics the rule checks: `core` (the policy's core metrics),
    `skills` (every toy-world skill) or an explicit list such as `[toyworld/kb]`.
    """

    beat: str | None = None  # a rival's name: the candidate must be ahead beyond the CI
    within_best_teacher: float | None = Field(None, ge=0, le=100)  # points (of 100)
    floor: float | None = Field(None, ge=0, le=1)  # the lowest score allowed
    metrics: Literal["core", "skills"] | list[str] = "core"

    @model_validator(mode="after")
    def _one_kind(self) -> "ReleaseRule":
        given = [k for k in RULE_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(RULE_KINDS)} in a rule; found "
                             f"{', '.join(given) if given else 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in RULE_KINDS if getattr(self, k) is not None)


class ReleaseSpec(_Strict):
    """The bar a candidate must clear before it may be released (`persea gate`)."""

    candidate: str = "student"
    core_metrics: list[str] = Field(["toyworld/overall"], min_length=1)
    rules: list[ReleaseRule] = Field(min_length=1)
    confidence: float = Field(0.95, gt=0, lt=1)
    resamples: StrictInt = Field(1000, ge=100, le=100_000)
    seed: StrictInt = 0


SERVED_SOURCES = ("student", "builtin", "path", "endpoint")
POLICIES = ("fallback", "weighted", "least_latency", "learned")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"


def _price_per_1k(value: Any, what: str) -> Decimal:
    """Money per 1,000 tokens: a decimal string (or a whole number), never a float, so that
    what is written is what is charged; at most PRICE_PLACES - 3 + 6 places, so that the
    price per million tokens the plans keep has at most PRICE_PLACES."""
    if isinstance(value, float):
        raise ValueError("write money as a quoted decimal string, e.g. '0.0005' (a YAML "
                         "float is rounded in binary)")
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise ValueError("expected a decimal string such as '0.0005'")
    amount = parse_amount(value, what, places=PRICE_PLACES + 3)
    if amount * 1000 > MAX_AMOUNT:
        raise ValueError(f"{what}: {value!r} per 1k tokens is more than {MAX_AMOUNT} per "
                         "million")
    return amount


class PriceSpec(_Strict):
    """Money per 1,000 tokens (in `persea.accounts.money.CURRENCY`), prompt and completion."""

    input: Decimal
    output: Decimal

    @field_validator("input", "output", mode="before")
    @classmethod
    def _money(cls, value: Any, info) -> Decimal:
        return _price_per_1k(value, "money per 1k tokens")

    def per_mtok(self) -> tuple[Decimal, Decimal]:
        """The same price per million tokens, as plans keep it."""
        return self.input * 1000, self.output * 1000


class ServedModel(_Strict):
    """One model the gateway offers, from exactly one source: the project's released student
    (`student: true`), a built-in teacher, a local model directory (served only once
    released, like the student), or an OpenAI-compatible endpoint (`model:` is the name it
    serves, `api_key_env` the environment variable holding its key, if it needs one)."""

    name: str = Field(pattern=NAME_PATTERN, max_length=64)
    student: Literal[True] | None = None
    builtin: str | None = None
    path: str | None = None
    endpoint: str | None = Field(None, pattern=r"^https?://")
    model: str | None = None  # with endpoint: the name the upstream serves (default: name)
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    timeout_s: float = Field(120.0, gt=0, le=3600)  # with endpoint: a whole answer's limit
    price: PriceSpec | None = None  # None: DEFAULT_PRICE of a new database's default plan

    @model_validator(mode="after")
    def _one_source(self) -> "ServedModel":
        given = [s for s in SERVED_SOURCES if getattr(self, s) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one source of {', '.join(SERVED_SOURCES)}; "
                             f"found {', '.join(given) if given else 'none'}")
        if self.endpoint is None and (self.model is not None or self.api_key_env is not None):
            raise ValueError("`model:` and `api_key_env:` go with `endpoint:` only")
        return self

    @property
    def source(self) -> str:
        return next(s for s in SERVED_SOURCES if getattr(self, s) is not None)


class RouteSpec(_Strict):
    """A name clients may ask for that is not one model but a policy over several.

    - `fallback`: `models` in order; on a connection error, a timeout, a 5xx or a 429 the
      next one answers (an entry may be another route: its own order is used there);
    - `weighted`: `models` as `{name: weight}`; each request draws its first model by
      weight, the rest follow as fallbacks;
    - `least_latency`: `models` ordered by their recent latency in this gateway (an
      untried model first), the rest as fallbacks;
    - `learned`: a router trained by `persea route train` (`router:` its file) orders
      `models` per request; `threshold` is passed to it.
    """

    policy: Literal["fallback", "weighted", "least_latency", "learned"]
    models: list[str] | dict[str, float] = Field(min_length=1)
    max_attempts: StrictInt = Field(3, ge=1, le=16)
    deadline_s: float = Field(60.0, gt=0, le=3600)  # all attempts (a stream: to its 1st token)
    attempt_timeout_s: float | None = Field(None, gt=0, le=3600)  # one attempt's limit
    router: str | None = None  # learned: the router file
    threshold: float | None = Field(None, ge=0, le=1)  # learned

    @field_validator("models", mode="before")
    @classmethod
    def _weights(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name, weight in value.items():
                if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                        or not 0 < weight <= 1_000_000:
                    raise ValueError(f"the weight of {name} must be a number above 0 and at "
                                     f"most 1000000 (found: {weight!r})")
        return value

    @model_validator(mode="after")
    def _fits_policy(self) -> "RouteSpec":
        weighted = isinstance(self.models, dict)
        if (self.policy == "weighted") != weighted:
            raise ValueError("`weighted` takes `models` as {name: weight}; the other policies "
                             "take a list of names")
        learned = self.policy == "learned"
        if learned and (self.router is None or self.threshold is None):
            raise ValueError("a `learned` route needs `router:` (a file from `persea route "
                             "train`) and `threshold:` (0 to 1)")
        if not learned and (self.router is not None or self.threshold is not None):
            raise ValueError("`router:` and `threshold:` go with `policy: learned` only")
        names = list(self.models)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"a route names a model twice: {', '.join(dup)}")
        return self

    @property
    def names(self) -> list[str]:
        return list(self.models)


class BreakerSpec(_Strict):
    """One circuit breaker per model, for routed requests: `failures` failed attempts in a row
    open it; after `open_s` one probe request may go (half-open); its success closes it, its
    failure opens it again. A probe that never reports frees its slot after `probe_s`."""

    failures: StrictInt = Field(5, ge=1, le=10_000)
    open_s: float = Field(30.0, gt=0, le=86_400)
    probe_s: float = Field(60.0, gt=0, le=86_400)


class ServeSpec(_Strict):
    """`persea serve`'s settings; its flags override them."""

    host: str = "127.0.0.1"
    port: StrictInt = Field(8000, ge=1, le=65535)
    models: list[ServedModel] = Field([ServedModel(name="student", student=True)],
                                      min_length=1)
    routes: dict[Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)], RouteSpec] = {}
    breaker: BreakerSpec = BreakerSpec()
    redis: str | None = Field(None, pattern=r"^rediss?://")  # rate limits and breakers, shared

    @model_validator(mode="after")
    def _names(self) -> "ServeSpec":
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"a model name is given twice in `models`: {', '.join(dup)}")
        both = sorted(set(names) & set(self.routes))
        if both:
            raise ValueError(f"{', '.join(both)} is both a model and a route; give the route "
                             "another name")
        return self


class LicencesSpec(_Strict):
    """What the licence policy needs to know of the project (persea.licences.policy)."""

    # the distilled model is served as a paid API: a non-commercial licence is refused
    commercial: StrictBool = True


HF_LICENSE_ID = r"^[a-z0-9][a-z0-9.+-]*$"


class ExportPolicy(_Strict):
    """Which checkpoints may leave as open weights (`persea export --open`); every rule
    given must hold.

    - `behind_sealed: N`: the checkpoint is a sealed generation with at least N
      generations sealed after it (0: any checkpoint);
    - `below_sealed_by: M`: on every metric of `metrics` (default: release.core_metrics,
      else toyworld/overall) its score is at least M (0 to 1) below the newest sealed
      generation's.
    """

    behind_sealed: StrictInt | None = Field(None, ge=0, le=10_000)
    below_sealed_by: float | None = Field(None, ge=0, le=1)
    metrics: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _some_rule(self) -> "ExportPolicy":
        if self.behind_sealed is None and self.below_sealed_by is None:
            raise ValueError("give at least one rule: behind_sealed (generations) or "
                             "below_sealed_by (a score margin)")
        if self.metrics is not None and self.below_sealed_by is None:
            raise ValueError("`metrics:` goes with `below_sealed_by:` only")
        return self


class ExportSpec(_Strict):
    """The open track: where `persea export --open` writes, what the model card says, and
    the policy a checkpoint must meet before it is written (docs/seal.md, "The open
    track")."""

    out: str = "exports"
    policy: ExportPolicy
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=96)
    # the Hugging Face licence id of the card; None: the teachers' (and base model's)
    # licence when they all share one
    license: str | None = Field(None, pattern=HF_LICENSE_ID, max_length=64)
    license_name: str | None = Field(None, pattern=HF_LICENSE_ID, max_length=64)
    license_link: str | None = Field(None, pattern=r"^https?://", max_length=500)
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = []

    @model_validator(mode="after")
    def _other(self) -> "ExportSpec":
        if (self.license == "other") != (self.license_name is not None):
            raise ValueError("`license: other` needs `license_name:` (and `license_name:` "
                             "goes with `license: other` only)")
        if self.license_link is not None and self.license is None:
            raise ValueError("`license_link:` goes with `license:`")
        return self


class Project(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    seed: StrictInt = 0
    teachers: list[TeacherSpec] = Field(min_length=1)
    prompts: PromptsSpec = PromptsSpec(toyworld=ToyworldPrompts())
    harvest: HarvestSpec = HarvestSpec()
    distill: DistillSpec = DistillSpec()
    database: DatabaseSpec | None = None  # None: sqlite:///<project dir>/persea.db
    eval: EvalSpec = EvalSpec()
    release: ReleaseSpec | None = None  # None: no policy, so `persea gate` refuses
    serve: ServeSpec = ServeSpec()
    licences: LicencesSpec = LicencesSpec()
    export: ExportSpec | None = None  # None: `persea export` refuses (no policy)

    @model_validator(mode="before")
    @classmethod
    def _project_seed_seeds_the_student(cls, data: Any) -> Any:
        """The project's `seed` is the default of `distill.seed`, so changing the one seed
        gives another student (initial weights and batch order), not the same one."""
        if isinstance(data, dict) and isinstance(data.get("seed"), int):
            distill = data.get("distill")
            if distill is None:
                return {**data, "distill": {"seed": data["seed"]}}
            if isinstance(distill, dict) and "seed" not in distill:
                return {**data, "distill": {**distill, "seed": data["seed"]}}
        return data

    @model_validator(mode="after")
    def _unique_names(self) -> "Project":
        names = [t.name for t in self.teachers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"teacher names must be unique; repeated: {', '.join(dup)}")
        unknown = sorted(set(self.distill.teachers or []) - set(names))
        if unknown:
            raise ValueError(f"distill.teachers names unknown teacher(s) {', '.join(unknown)}; "
                             f"the project has {', '.join(names)}")
        route = self.harvest.route
        unknown = sorted(set(route.skills or {}) - set(names)) if route else []
        if unknown:
            raise ValueError(f"harvest.route.skills names unknown teacher(s) "
                             f"{', '.join(unknown)}; the project has {', '.join(names)}")
        return self


class LoadedProject:
    """A validated project and the directory that relative paths in it are resolved from."""

    def __init__(self, spec: Project, root: Path, file: Path):
        self.spec = spec
        self.root = root
        self.file = file

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.root / p)


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def format_validation_error(err: ValidationError, file: str) -> str:
    """One line per problem: `file: field: message (found: value)`; the first comes first."""
    lines = []
    for e in err.errors():
        loc = _where(tuple(p for p in e["loc"] if not (isinstance(p, str) and "[" in p)))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        value = e.get("input")
        shown = "" if isinstance(value, dict) or e["type"] == "missing" else f" (found: {value!r})"
        lines.append(f"{file}: {loc}: {msg}{shown}")
    return lines[0] + (f" — and {len(lines) - 1} more problem(s)" if len(lines) > 1 else "")


def parse_project(data: Any, file: str = PROJECT_FILE) -> Project:
    if not isinstance(data, dict):
        raise PerseaError(f"{file}: expected a mapping of settings at the top level, "
                          f"found {type(data).__name__}")
    try:
        return Project.model_validate(data)
    except ValidationError as err:
        raise PerseaError(format_validation_error(err, file)) from None


def load_project(path: str | Path | None = None) -> LoadedProject:
    """Load `persea.yaml` from a project directory (default: the current one) or a file."""
    p = Path(path or ".").expanduser()
    file = p / PROJECT_FILE if p.is_dir() else p
    if not file.is_file():
        raise PerseaError(f"no project file at {file}: run `persea init DIR` to create one, "
                          "or pass --project PATH")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise PerseaError(f"{file}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError as err:
        raise PerseaError(f"{file}: not UTF-8 text (byte {err.object[err.start]:#04x} at "
                          f"offset {err.start}); save it as UTF-8") from None
    return LoadedProject(parse_project(data, str(file)), file.parent.resolve(), file)


def database_url(db: str | None = None,
                 project: "str | Path | LoadedProject | None" = None) -> str:
    """The database of a command: `db` (the --db flag) or $PERSEA_DB first (the project file
    is then not read); else the project's `database.url` or its `persea.db`; else
    `persea.db` in the current directory (see `persea.db.resolve_url`)."""
    if db or os.environ.get("PERSEA_DB") or project is None:
        return resolve_url(db)
    loaded = project if isinstance(project, LoadedProject) else load_project(project)
    configured = loaded.spec.database.url if loaded.spec.database is not None else None
    return resolve_url(None, loaded.root, configured)
