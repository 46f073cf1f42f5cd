"""Synthetic evaluation records for the learned-router tests: runs written through the real
run store, with a pattern planted in who answers what right."""

from __future__ import annotations

import random
import string

import yaml

from persea.evaluate.records import RunRecord, RunStore, make_run_id
from persea.evaluate.runner import finish_run

PRICES = {"digits": 1.0, "letters": 2.0, "cheap": 0.1}
FINGERPRINTS = {m: (m[0] * 64) for m in PRICES}


def planted_items(n: int, seed: int) -> list[tuple[str, str, bool]]:
    """(id, prompt, has digits): half the prompts are digit strings, half letter strings."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        digits = i % 2 == 0
        alphabet = string.digits if digits else string.ascii_lowercase
        words = [''.join(rng.choice(alphabet) for _ in range(rng.randint(2, 6)))
                 for _ in range(rng.randint(1, 4))]
        out.append((f"s{seed}-{i}", "please: " + " ".join(words), digits))
    return out


def planted_outcomes(items, seed: int, noise: float = 0.1) -> dict[str, list[float]]:
    """`digits` is right on digit prompts, `letters` on letter prompts (each wrong with
    probability `noise`), `cheap` right on a third of all prompts at random."""
    rng = random.Random(seed + 1000)
    out = {m: [] for m in PRICES}
    for _, _, digits in items:
        out["digits"].append(float(digits != (rng.random() < noise)))
        out["letters"].append(float((not digits) != (rng.random() < noise)))
        out["cheap"].append(float(rng.random() < 1 / 3))
    return out


def write_run(store: RunStore, model: str, split: str, items, values, fingerprint=None,
              suite: str = "toyworld") -> RunRecord:
    fingerprint = fingerprint or FINGERPRINTS[model]
    config = {"split": split, "per_skill": len(items), "seed": 0, "skills": None,
              "max_new_tokens": 8}
    run_id = make_run_id(model, fingerprint, suite, "1+test", config)
    record = RunRecord(run_id=run_id, model=model, fingerprint=fingerprint, source="test",
                       suite=suite, suite_version="1+test", seed=0, config=config,
                       n_items=len(items))
    rows = [{"id": i, "group": "planted", "prompt": p, "target": "",
             "output": "", "outcomes": {f"{suite}/planted": v, f"{suite}/overall": v}}
            for (i, p, _), v in zip(items, values)]
    store.save(record)
    store.rewrite_items(run_id, rows)
    return finish_run(store, record, rows)


def write_split(store: RunStore, split: str, n: int, seed: int, models=tuple(PRICES),
                fingerprints=None):
    items = planted_items(n, seed)
    values = planted_outcomes(items, seed)
    for m in models:
        write_run(store, m, split, items, values[m], (fingerprints or {}).get(m))
    return items, values


def write_project(directory, serve=None):
    directory.mkdir(parents=True, exist_ok=True)
    data = {"name": "rt", "teachers": [{"name": "qwen3-toy", "builtin": "qwen3-toy"}]}
    if serve is not None:
        data["serve"] = serve
    (directory / "persea.yaml").write_text(yaml.safe_dump(data))
    return directory
