"""A fictional knowledge base: countries that do not exist, with facts nobody can know
without having been taught them. Generated from a seed, so every machine builds the same one.

Recall is what a knowledge skill tests: each fact is asked with several phrasings, and the
splits are drawn per phrasing, so a test question is a new wording of a fact whose other
wordings were seen in training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
           "kl", "st", "tr", "vr", "sh", "th"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
_CODAS = ["", "", "n", "r", "s", "l", "th", "m"]
_COUNTRY_ENDINGS = ["ia", "land", "stan", "ora", "esh", "avia"]
_ANIMALS = ["otter", "heron", "lynx", "badger", "falcon", "ibex", "newt", "marten", "crane",
            "viper", "bison", "owl", "gecko", "moose", "jackal", "stork"]

RELATIONS = ("capital", "currency", "founded", "animal")

QUESTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "capital": ("What is the capital of {c}?", "Name the capital city of {c}.",
                "Which city is the capital of {c}?"),
    "currency": ("What is the currency of {c}?", "Name the currency used in {c}.",
                 "Which currency does {c} use?"),
    "founded": ("In what year was {c} founded?", "When was {c} founded?",
                "Give the founding year of {c}."),
    "animal": ("What is the national animal of {c}?", "Name the national animal of {c}.",
               "Which animal is the emblem of {c}?"),
}


@dataclass(frozen=True)
class Fact:
    country: str
    relation: str
    value: str


def _word(rng: random.Random, syllables: int) -> str:
    parts = []
    for _ in range(syllables):
        parts.append(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS))
    return "".join(parts)


@lru_cache(maxsize=8)
def build_kb(seed: int = 0, countries: int = 60) -> tuple[Fact, ...]:
    """`countries` fictional countries with four facts each (capital, currency, founding
    year, national animal): 240 facts at the default size."""
    rng = random.Random(f"persea-kb-{seed}")
    names: set[str] = set()
    facts: list[Fact] = []
    while len(names) < countries:
        name = (_word(rng, 2) + rng.choice(_COUNTRY_ENDINGS)).capitalize()
        if name in names:
            continue
        names.add(name)
        facts.append(Fact(name, "capital", _word(rng, 2).capitalize()))
        facts.append(Fact(name, "currency", _word(rng, 1) + rng.choice(["o", "ar", "ix", "et"])))
        facts.append(Fact(name, "founded", str(rng.randint(1100, 1990))))
        facts.append(Fact(name, "animal", rng.choice(_ANIMALS)))
    return tuple(facts)
