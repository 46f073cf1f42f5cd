"""The rows and profiles of bench/distill_quality.py: which students it trains, and how big.

A row is a name and the `distill:` fields it changes in the example project that
`persea init` writes (persea.init_template.EXAMPLE_PROJECT); everything else (the student's
size and tokenizer, lr, batch, ...) is the template's, so the benchmark follows it. A row
whose `on_policy.lmbda` is above 0 is an on-policy row: it trains not `--steps` steps but
for the same training wall-clock as the best off-policy row (`distill.time_budget`; see the
benchmark).
"""

from __future__ import annotations

import hashlib
import json

from persea.project import DistillSpec

# size of one run: harvest prompts per skill, steps of every off-policy row, test items per
# skill
PROFILES: dict[str, dict[str, int]] = {
    "full": {"per_skill": 1500, "steps": 2500, "eval": 200},
    "quick": {"per_skill": 600, "steps": 700, "eval": 40},
}
EXAMPLE_ROW = "example recipe (persea init)"
# --tiny: a student small enough that a smoke run of every row takes minutes
TINY_STUDENT = {"hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64}

OFF_POLICY: dict[str, dict] = {
    "SFT only (all teachers, CE)": {"weighting": ["uniform"], "loss": {"kd": "none"}},
    "multi: verified, CE only": {"weighting": ["verified"], "loss": {"kd": "none"}},
    "multi: verified, CE + xtok KD": {"weighting": ["verified"], "loss": {"kd": "xtok"}},
    "multi: verified, CE + KD + ALM": {"weighting": ["verified"],
                                       "loss": {"kd": "xtok", "alm_weight": 0.5}},
    "multi: best_teacher, CE + KD": {"weighting": ["best_teacher"], "loss": {"kd": "xtok"}},
    "multi: confidence, CE + KD": {"weighting": ["confidence"], "loss": {"kd": "xtok"}},
    "multi: verified, CE + KD, teachers averaged": {
        "weighting": ["verified"], "loss": {"kd": "xtok", "combine": "average"}},
    "multi: verified, CE + KD, one teacher per token": {
        "weighting": ["verified"], "loss": {"kd": "xtok", "combine": "select"}},
}
# on top of the example recipe: lmbda of the steps sample from the student and the teachers
# grade its tokens (distill.on_policy; the other steps train on the cache as the recipe does)
ON_POLICY: dict[str, dict] = {
    "on-policy: all teachers, select": {"on_policy": {"lmbda": 1.0, "combine": "select"}},
    "on-policy: all teachers, best": {"on_policy": {"lmbda": 1.0, "combine": "best"}},
    "on-policy: all teachers, select, lmbda 0.5": {
        "on_policy": {"lmbda": 0.5, "combine": "select"}},
    # as the published recipes do: the student first learns from the cache alone, and only
    # its second half mixes in its own samples (start counts in the time budget's share)
    "on-policy: all teachers, select, lmbda 0.5 after half the time": {
        "on_policy": {"lmbda": 0.5, "combine": "select", "start": 0.5}},
}
QUICK = ["multi: verified, CE only", "multi: verified, CE + xtok KD",
         "on-policy: all teachers, select, lmbda 0.5",
         "on-policy: all teachers, select, lmbda 0.5 after half the time"]

# the verdicts compare these two rows
KD_ROW, CE_ROW = "multi: verified, CE + xtok KD", "multi: verified, CE only"


def recipe_label(distill: dict) -> str:
    """A few words on what the template's own recipe does."""
    loss = distill.get("loss", {})
    words = ["+".join(distill.get("weighting", ["verified"])), f"kd {loss.get('kd', 'xtok')}"]
    if loss.get("combine", "sum") != "sum":
        words.append(f"combine {loss['combine']}")
    if (distill.get("on_policy") or {}).get("lmbda", 0):
        words.append(f"on-policy lmbda {distill['on_policy']['lmbda']}")
    return f"{EXAMPLE_ROW}: {', '.join(words)}"


def all_rows(base: dict, quick: bool) -> dict[str, dict]:
    """Every student row: name -> the distill fields it sets over the template's."""
    teachers = [t["name"] for t in base["teachers"]]
    rows: dict[str, dict] = {recipe_label(base["distill"]): {}}
    if quick:
        return rows | {name: {**OFF_POLICY, **ON_POLICY}[name] for name in QUICK}
    rows |= OFF_POLICY
    for t in teachers:
        rows[f"single teacher: {t}"] = {
            "teachers": [t], "weighting": ["verified"], "loss": {"kd": "xtok"}}
    for t in teachers:
        rows[f"on-policy: {t} alone"] = {"teachers": [t], "on_policy": {"lmbda": 1.0}}
    return rows | ON_POLICY


def distill_block(base: dict, change: dict, steps: int, seed: int,
                  time_budget: float | None = None) -> dict:
    """The `distill:` section of one run: the template's, the row's change, steps, seed and
    training seconds (none: bounded by steps alone).
    The run directory is named after the whole configuration with its defaults filled in,
    so a rerun finds it again and two rows that train alike share one run."""
    # one torch thread: the benchmark trains --jobs students at once, one per core (the
    # template's `threads: 2` in two such processes made every step several times slower)
    block = {**base["distill"], "checkpoint_every": 500, **change, "steps": steps,
             "seed": seed, "threads": 1}
    if time_budget is not None:
        block["time_budget"] = round(time_budget, 1)
    if "on_policy" in change:
        block["on_policy"] = {**base["distill"].get("on_policy", {}), **change["on_policy"]}
    block.pop("out", None)
    block["out"] = f"runs/{key(DistillSpec.model_validate(block).model_dump(mode='json'))}"
    return block


def is_on_policy(block: dict) -> bool:
    return (block.get("on_policy") or {}).get("lmbda", 0) > 0


def needs_cross_scores(rows: dict[str, dict]) -> bool:
    """Whether a row combines the teachers' distributions on the cached answers, which needs
    every teacher scored on the others' answers (harvest.cross_score)."""
    return any(r.get("loss", {}).get("combine", "sum") != "sum" for r in rows.values())


def key(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
