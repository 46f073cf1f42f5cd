"""Where the three built-in teachers live and what each stands in for.

The weights ship inside the package (`persea/toyworld/teachers/<name>/`), built by
`python -m persea.toyworld.build` from a seed; `docs/teachers.md` has their per-skill accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TEACHERS_DIR = Path(__file__).parent / "teachers"


@dataclass(frozen=True)
class BuiltinTeacher:
    name: str
    architecture: str  # transformers class name
    tokenizer_kind: str
    family: str  # key of persea.models.templates.FORMATS
    strong_skills: tuple[str, ...]
    weak_skills: tuple[str, ...]  # trained on, but on less data: an overlap at lower accuracy
    # persea's own weights, trained from scratch on the toy world: they stand in for the
    # families above but carry none of their licences (docs/licences.md)
    license: str = "Apache-2.0"

    @property
    def path(self) -> Path:
        return TEACHERS_DIR / self.name


BUILTIN_TEACHERS: dict[str, BuiltinTeacher] = {
    t.name: t
    for t in (
        BuiltinTeacher("qwen3-toy", "Qwen3ForCausalLM", "byte-level BPE", "qwen",
                       strong_skills=("addition", "convert"), weak_skills=("sort",)),
        BuiltinTeacher("gemma3-toy", "Gemma3ForCausalLM", "Unigram (SentencePiece-style)",
                       "gemma", strong_skills=("sort", "kb"), weak_skills=("convert",)),
        BuiltinTeacher("gptoss-toy", "GptOssForCausalLM", "character-level", "gpt-oss",
                       strong_skills=("reverse",), weak_skills=("count",)),
    )
}
