"""Skill routing: a skill's prompts go only to the teachers that can answer them.

Without routing every teacher answers every prompt, and the `verified` weighting of the
distiller later drops most of those answers (a teacher that cannot add writes wrong sums).
With `harvest.route`, the harvest first decides, per skill, which teachers answer:

- probe (default): every teacher is scored on `probe_per_skill` dev-split items of each
  skill of the prompt set (`persea.skills.skill_table`, the scoring distill's `best_teacher`
  weighting uses, at the harvest's response cap); a teacher answers a skill if its accuracy
  is at least `min_accuracy` and at least the best teacher's minus `within`;
- explicit (`skills: {teacher: [skill, ...]}`): a listed teacher answers its skills, a
  teacher not listed answers everything.

A skill that no teacher qualifies for goes to every teacher (and `Routing.everyone` names it);
prompts without a skill, or with a skill the table does not hold, go to every teacher.

The decision is written to `route.json` (atomically) and the harvest records the table in
plan.json, so a resumed harvest reads it back instead of probing again, and a run whose
routing differs is refused like any other changed setting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from persea.cache import format as fmt
from persea.cache import writer
from persea.errors import PerseaError
from persea.skills import get_world, skill_table

PROBE_SPLIT = "dev"
_EPS = 1e-9  # accuracies are ratios of counts: 0.7 - 0.1 must still admit 0.6


@dataclass(frozen=True)
class Routing:
    setting: dict  # HarvestRouteSpec.record()
    teachers: list[str]
    answers: dict[str, list[str]]  # skill -> the teachers that answer its prompts
    everyone: list[str]  # skills no teacher qualified for: every teacher answers them
    probe: dict | None = None  # split, per_skill, seed, max_new_tokens, accuracy[skill][teacher]

    def answers_prompt(self, teacher: str, skill: str | None) -> bool:
        return skill not in self.answers or teacher in self.answers[skill]

    def table(self) -> dict[str, list[str]]:
        """What plan.json records: skill -> teachers."""
        return {skill: list(names) for skill, names in self.answers.items()}

    def as_json(self) -> dict:
        return {"setting": self.setting, "teachers": self.teachers, "answers": self.table(),
                "everyone": self.everyone, "probe": self.probe}

    @classmethod
    def from_json(cls, data: dict) -> "Routing":
        return cls(data["setting"], list(data["teachers"]),
                   {k: list(v) for k, v in data["answers"].items()}, list(data["everyone"]),
                   data.get("probe"))

    def fallback_lines(self) -> list[str]:
        """One line per skill that no teacher qualified for."""
        lines = []
        for skill in self.everyone:
            if self.probe is not None:
                acc = self.probe["accuracy"][skill]
                best = max(acc.values(), default=0.0)
                why = (f"no teacher reaches min_accuracy {self.setting['min_accuracy']:g} on the "
                       f"probe (best {best:.2f})")
            else:
                why = "route.skills gives it to no teacher"
            lines.append(f"routing: {why} for skill {skill!r}; every teacher answers its prompts")
        return lines


def choose(accuracy: dict[str, dict[str, float]], teachers: list[str], within: float,
           min_accuracy: float) -> tuple[dict[str, list[str]], list[str]]:
    """The probe rule: per skill, the teachers with accuracy >= `min_accuracy` and >= the
    best teacher's minus `within` (in `teachers` order); a skill with none goes to all of
    them and is listed second."""
    answers, everyone = {}, []
    for skill, acc in accuracy.items():
        best = max(acc.get(t, 0.0) for t in teachers)
        chosen = [t for t in teachers if acc.get(t, 0.0) >= min_accuracy - _EPS
                  and acc.get(t, 0.0) >= best - within - _EPS]
        if not chosen:
            everyone.append(skill)
            chosen = list(teachers)
        answers[skill] = chosen
    return answers, everyone


def _skills_of(records) -> list[str]:
    """The world's skills that the prompt set uses, in the world's order, then the prompt
    set's other skills in order of first appearance."""
    used = list(dict.fromkeys(r.skill for r in records if r.skill is not None))
    world = list(get_world().skills)
    return [s for s in world if s in used] + [s for s in used if s not in world]


def check(spec, teachers: list[str], records) -> None:
    """Refuse, before anything is written, an explicit mapping that names a teacher the
    project lacks or a skill that is neither the world's nor in the prompt set."""
    if spec is None or not spec.explicit:
        return
    unknown = sorted(set(spec.skills) - set(teachers))
    if unknown:
        raise PerseaError(f"harvest.route.skills names unknown teacher(s) {', '.join(unknown)}; "
                          f"the project has {', '.join(teachers)}")
    known = list(dict.fromkeys([*get_world().skills, *_skills_of(records)]))
    bad = sorted({s for given in spec.skills.values() for s in given} - set(known))
    if bad:
        raise PerseaError(f"harvest.route.skills names unknown skill(s) {', '.join(bad)}; "
                          f"expected some of: {', '.join(known)}")


def _decide(spec, teachers: list[str], records, settings, seed: int, load) -> Routing:
    skills = _skills_of(records)
    if spec.explicit:
        given = spec.skills
        answers, everyone = {}, []
        for skill in skills:
            chosen = [t for t in teachers if t not in given or skill in given[t]]
            if not chosen:
                everyone.append(skill)
                chosen = list(teachers)
            answers[skill] = chosen
        return Routing(spec.record(), list(teachers), answers, everyone)
    probed = [s for s in skills if s in get_world().skills]
    accuracy = skill_table(teachers, load, split=PROBE_SPLIT, per_skill=spec.probe_per_skill,
                           seed=seed, max_new_tokens=settings.max_new_tokens,
                           batch_size=settings.batch_size, skills=probed) if probed else {}
    answers, everyone = choose(accuracy, teachers, spec.within, spec.min_accuracy)
    probe = {"split": PROBE_SPLIT, "per_skill": spec.probe_per_skill, "seed": seed,
             "max_new_tokens": settings.max_new_tokens, "accuracy": accuracy}
    return Routing(spec.record(), list(teachers), answers, everyone, probe)


def resolve(spec, out: Path, teachers: list[str], records, settings, seed: int,
            load) -> Routing:
    """The routing of the harvest in `out`: read back from route.json when it holds this
    setting for these teachers (a resumed harvest never probes again), otherwise decided now
    (`load(name)` gives a teacher's model for the probe) and written there atomically."""
    path = out / fmt.ROUTE
    if path.is_file():
        try:
            found = Routing.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            found = None  # damaged: decide again; plan.json's table guards the result
        if found is not None and found.setting == spec.record() and \
                found.teachers == list(teachers):
            return found
    routing = _decide(spec, teachers, records, settings, seed, load)
    writer.write_text_atomic(path, json.dumps(routing.as_json(), indent=2, sort_keys=True)
                             + "\n")
    return routing
