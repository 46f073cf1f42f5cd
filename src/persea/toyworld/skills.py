"""The toy world's skills: each one draws a (prompt, answer) pair from a random generator and
checks a model's answer exactly.

Skills differ in kind on purpose: arithmetic with carries (addition), character-level work
(reverse, count), ordering (sort), memorised knowledge (kb) and a fixed rule with numbers
(convert). A tokenizer that splits digits one by one and one that merges letters into words
find different skills easy, which is what makes choosing between teachers matter.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Callable

from persea.toyworld.kb import QUESTION_TEMPLATES, build_kb

Generator = Callable[[random.Random], tuple[str, str]]

_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "pe", "si", "du", "ra", "fe", "go",
              "bi", "zu", "ho", "ly", "wen", "tor", "mas"]

_UNITS = [  # (from, to, factor): powers of ten and sixty, learnable by a tiny model
    ("km", "m", 1000), ("m", "cm", 100), ("kg", "g", 1000), ("h", "min", 60),
    ("min", "s", 60), ("cm", "mm", 10), ("l", "ml", 1000),
]


def _addition(rng: random.Random) -> tuple[str, str]:
    a = rng.randint(0, 999)
    b = rng.randint(0, 999)
    return f"What is {a} + {b}?", str(a + b)


def _reverse(rng: random.Random) -> tuple[str, str]:
    word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 8)))
    return f"Reverse the word: {word}", word[::-1]


def _sort(rng: random.Random) -> tuple[str, str]:
    words: list[str] = []
    while len(words) < rng.randint(3, 5):
        w = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 2)))
        if w not in words:
            words.append(w)
    return f"Sort these words: {', '.join(words)}", ", ".join(sorted(words))


def _kb(rng: random.Random) -> tuple[str, str]:
    fact = rng.choice(build_kb())
    template = rng.choice(QUESTION_TEMPLATES[fact.relation])
    return template.format(c=fact.country), fact.value


def _count(rng: random.Random) -> tuple[str, str]:
    alphabet = rng.sample("abcdefgh", 3)
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(4, 12)))
    letter = rng.choice(alphabet)
    return f"How many times does '{letter}' appear in '{text}'?", str(text.count(letter))


def _convert(rng: random.Random) -> tuple[str, str]:
    src, dst, factor = rng.choice(_UNITS)
    value = rng.randint(1, 99)
    return f"Convert {value} {src} to {dst}.", str(value * factor)


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    generate: Generator

    def check(self, answer: str, predicted: str) -> bool:
        """Exact match after trimming surrounding whitespace: nothing else is forgiven."""
        return predicted.strip() == answer.strip()


SKILLS: dict[str, Skill] = {
    s.name: s
    for s in (
        Skill("addition", "add two integers of up to three digits", _addition),
        Skill("reverse", "reverse a random lowercase word of 3-8 letters", _reverse),
        Skill("sort", "sort 3-5 made-up words alphabetically", _sort),
        Skill("kb", "recall a fact about a fictional country (240 facts)", _kb),
        Skill("count", "count one letter in a random string", _count),
        Skill("convert", "convert a whole number between two units", _convert),
    )
}


def get_skill(name: str) -> Skill:
    try:
        return SKILLS[name]
    except KeyError:
        from persea.errors import PerseaError

        raise PerseaError(
            f"unknown skill {name!r}; expected one of: {', '.join(SKILLS)}"
        ) from None
