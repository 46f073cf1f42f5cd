"""The prompts a harvest runs: toy-world items, or a JSONL file given by the user."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from persea.errors import PerseaError
from persea.skills import get_world


@dataclass(frozen=True)
class PromptRecord:
    id: str
    prompt: str
    skill: str | None = None
    answer: str | None = None


def from_toyworld(split: str, per_skill: int | dict[str, int], seed: int,
                  skills: list[str] | None = None) -> list[PromptRecord]:
    """Up to `per_skill` prompts of each skill (one count for all, or `{skill: n}`): kb's pool
    is finite (556 train prompts), so a larger count takes all of it rather than failing.

    With per-skill counts the skills' prompts are interleaved in a seeded order, as the
    world's mixture interleaves them for one count."""
    world = get_world()
    if isinstance(per_skill, int):
        items = world.make_mixture(split, per_skill, seed, skills, allow_fewer=True)
    else:
        unknown = sorted(set(per_skill) - set(world.skills))
        if unknown:
            raise PerseaError(f"prompts.toyworld.per_skill names unknown skill(s) "
                              f"{', '.join(unknown)}; expected some of: "
                              f"{', '.join(world.skills)}")
        items = [it for name, n in per_skill.items() if n > 0
                 for it in world.make_mixture(split, n, seed, [name], allow_fewer=True)]
        random.Random(f"persea-prompts-{split}-{seed}").shuffle(items)
    return [PromptRecord(it.id, it.prompt, it.skill, it.answer) for it in items]


def from_jsonl(path: Path) -> list[PromptRecord]:
    """Read `{"prompt": str, "id"?: str, "skill"?: str, "answer"?: str}` lines; blank lines
    are skipped; any other mistake names the file and line."""
    if not path.is_file():
        raise PerseaError(f"prompt file not found: {path}")
    records: list[PromptRecord] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise PerseaError(f"{where}: not valid JSON ({err.msg} at column "
                                  f"{err.colno})") from None
            if not isinstance(obj, dict):
                raise PerseaError(f"{where}: expected a JSON object, found "
                                  f"{type(obj).__name__}")
            unknown = set(obj) - {"id", "prompt", "skill", "answer"}
            if unknown:
                raise PerseaError(f"{where}: unknown field(s) {', '.join(sorted(unknown))} "
                                  "(expected id, prompt, skill, answer)")
            prompt = obj.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                raise PerseaError(f"{where}: field 'prompt' must be a non-empty string, "
                                  f"found {prompt!r}")
            for key in ("id", "skill", "answer"):
                if key in obj and not isinstance(obj[key], str):
                    raise PerseaError(f"{where}: field {key!r} must be a string, "
                                      f"found {obj[key]!r}")
            pid = obj.get("id") or f"line-{lineno}"
            if pid in seen:
                raise PerseaError(f"{where}: id {pid!r} already used on line {seen[pid]}")
            seen[pid] = lineno
            records.append(PromptRecord(pid, prompt, obj.get("skill"), obj.get("answer")))
    if not records:
        raise PerseaError(f"{path}: no prompts in file")
    return records


def load_prompts(spec, resolve) -> list[PromptRecord]:
    """The prompt set a project's `prompts:` section names; `resolve` places its file."""
    if spec.toyworld is not None:
        t = spec.toyworld
        return from_toyworld(t.split, t.per_skill, t.seed, t.skills)
    return from_jsonl(resolve(spec.file))


def to_jsonl(records: list[PromptRecord]) -> str:
    return "".join(json.dumps(asdict(r), ensure_ascii=False, sort_keys=True) + "\n"
                   for r in records)


def digest(records: list[PromptRecord]) -> str:
    return hashlib.sha256(to_jsonl(records).encode()).hexdigest()
