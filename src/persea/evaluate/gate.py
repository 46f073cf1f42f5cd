"""The release gate: check the candidate's evaluation runs against the project's policy.

Rules (see `persea.project.ReleaseRule`), each over a set of metrics:

- `beat: RIVAL` — on every metric, the candidate is ahead of RIVAL beyond the confidence
  interval: the lower bound of the paired bootstrap interval of (candidate - rival), over the
  items both were asked, is above zero;
- `within_best_teacher: N` — on every metric, the candidate's mean is at least the best
  project teacher's mean minus N points (N/100);
- `floor: F` — on every metric, the candidate's mean is at least F.

Only complete runs count, and only runs of the candidate's current weights: for the student
that is the fingerprint of `<distill.out>/student` now, so a gate never passes a checkpoint
on the strength of an older one's scores. A policy naming a metric or rival that is not
there is bad input (exit 2), not a failed gate (exit 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from persea.errors import PerseaError
from persea.evaluate.bootstrap import paired_diff_ci
from persea.evaluate.records import RunRecord, RunStore
from persea.evaluate.scorecard import metric_values
from persea.evaluate.suites import TOYWORLD, toyworld_metric_names
from persea.evaluate.targets import STUDENT, student_dir
from persea.models.fingerprint import fingerprint_model_dir


@dataclass
class Check:
    metric: str
    passed: bool
    detail: str  # the numbers behind the verdict, for a person
    numbers: dict


@dataclass
class RuleResult:
    rule: str
    passed: bool
    checks: list[Check]


@dataclass
class GateResult:
    candidate: str
    fingerprint: str
    model_dir: str | None
    passed: bool
    rules: list[RuleResult]
    policy: dict
    runs: dict = field(default_factory=dict)  # suite -> run id of the candidate

    def to_dict(self) -> dict:
        return asdict(self)


def _runs_of(store: RunStore, model: str, fingerprint: str | None) -> dict[str, RunRecord]:
    """The newest complete run per suite of `model` (of these weights, when given)."""
    best: dict[str, RunRecord] = {}
    for r in store.runs():
        if r.complete and r.model == model and fingerprint in (None, r.fingerprint):
            if r.suite not in best or (r.finished_at or "") > (best[r.suite].finished_at or ""):
                best[r.suite] = r
    return best


class _Scores:
    """Per-item values of each model's metrics, loaded on demand."""

    def __init__(self, store: RunStore):
        self.store = store
        self.cache: dict[str, dict[str, dict[str, float]]] = {}

    def of(self, model: str, runs: dict[str, RunRecord]) -> dict[str, dict[str, float]]:
        if model not in self.cache:
            merged: dict[str, dict[str, float]] = {}
            for run in runs.values():
                merged.update(metric_values(self.store, run))
            self.cache[model] = merged
        return self.cache[model]


def candidate_fingerprint(project, candidate: str) -> tuple[str | None, Path | None]:
    """The candidate's current weights (for the student: its directory now)."""
    if candidate == STUDENT:
        d = student_dir(project)
        if not (d / "config.json").is_file():
            raise PerseaError(f"release.candidate student: no student at {d}; run "
                              "`persea distill` and `persea eval` first")
        return fingerprint_model_dir(d), d
    return None, None


def _mean(by_item: dict[str, float]) -> float:
    return sum(by_item.values()) / len(by_item)


def _metrics_of(rule, rel) -> list[str]:
    if rule.metrics == "core":
        return list(rel.core_metrics)
    if rule.metrics == "skills":
        return toyworld_metric_names()[:-1]
    return list(rule.metrics)


def _describe(rule) -> str:
    which = ({"core": "every core metric", "skills": "every skill"}[rule.metrics]
             if isinstance(rule.metrics, str) else ", ".join(rule.metrics))
    if rule.kind == "beat":
        return f"beat {rule.beat} beyond the confidence interval on {which}"
    if rule.kind == "within_best_teacher":
        return f"within {rule.within_best_teacher:g} points of the best teacher on {which}"
    return f"no score below {rule.floor:g} on {which}"


def evaluate_gate(project, store: RunStore) -> GateResult:
    """Check the project's release policy against its runs; raises PerseaError on bad input."""
    rel = project.spec.release
    if rel is None:
        raise PerseaError(f"{project.file}: no `release:` section, so there is no bar to "
                          "check; add one (see docs/evaluate.md)")
    fingerprint, model_dir = candidate_fingerprint(project, rel.candidate)
    cand_runs = _runs_of(store, rel.candidate, fingerprint)
    if not cand_runs:
        what = f" of its current weights ({fingerprint[:12]})" if fingerprint else ""
        raise PerseaError(f"release.candidate {rel.candidate!r}: no complete evaluation "
                          f"run{what}; run `persea eval` first")
    fingerprint = fingerprint or next(iter(cand_runs.values())).fingerprint
    scores = _Scores(store)
    cand = scores.of(rel.candidate, cand_runs)
    known = sorted(set(cand) | set(toyworld_metric_names()))
    for where, names in [("release.core_metrics", rel.core_metrics)] + [
            (f"release.rules[{i}].metrics", _metrics_of(r, rel))
            for i, r in enumerate(rel.rules)]:
        for m in names:
            if m not in known:
                raise PerseaError(f"{where}: unknown metric {m!r}; known: {', '.join(known)}")
            if m not in cand:
                suite = m.split("/")[0] if m.startswith(TOYWORLD) else "its suite"
                raise PerseaError(f"{where}: the candidate has no score for {m!r}; run "
                                  f"`persea eval` on {suite} first")
    teachers = [t.name for t in project.spec.teachers]
    results = [_check_rule(rule, i, rel, store, scores, cand, teachers)
               for i, rule in enumerate(rel.rules)]
    return GateResult(rel.candidate, fingerprint, str(model_dir) if model_dir else None,
                      all(r.passed for r in results), results, rel.model_dump(mode="json"),
                      {s: r.run_id for s, r in cand_runs.items()})


def _rival_scores(name: str, where: str, store, scores, teachers, metrics):
    runs = _runs_of(store, name, None)
    if not runs:
        if name in teachers:
            raise PerseaError(f"{where}: rival {name!r} has no complete evaluation run; "
                              "run `persea eval` first")
        evaluated = sorted({r.model for r in store.runs() if r.complete})
        raise PerseaError(f"{where}: unknown rival {name!r}; expected a project teacher "
                          f"({', '.join(teachers)}) or an evaluated model "
                          f"({', '.join(evaluated) or 'none yet'})")
    values = scores.of(name, runs)
    for m in metrics:
        if m not in values:
            raise PerseaError(f"{where}: rival {name!r} has no score for {m!r}; evaluate it "
                              "on that suite first")
    return values


def _check_rule(rule, i, rel, store, scores, cand, teachers) -> RuleResult:
    where = f"release.rules[{i}]"
    metrics = _metrics_of(rule, rel)
    checks: list[Check] = []
    if rule.kind == "beat":
        rival = _rival_scores(rule.beat, where, store, scores, teachers, metrics)
        for m in metrics:
            common = sorted(set(cand[m]) & set(rival[m]))
            if not common:
                raise PerseaError(f"{where}: {rule.beat!r} and the candidate share no items "
                                  f"on {m!r} (different suite settings?); evaluate both on "
                                  "the same suite")
            a = [cand[m][k] for k in common]
            b = [rival[m][k] for k in common]
            d = paired_diff_ci(a, b, rel.resamples, rel.confidence, rel.seed)
            ok = d.low > 0
            checks.append(Check(m, ok, (
                f"{sum(a) / len(a):.3f} vs {sum(b) / len(b):.3f}: difference {d.mean:+.3f}, "
                f"{rel.confidence:.0%} CI [{d.low:+.3f}, {d.high:+.3f}] on {d.n} items"
                + ("" if ok else " (not above 0)")),
                {"candidate": sum(a) / len(a), "rival": sum(b) / len(b), "diff": d.mean,
                 "low": d.low, "high": d.high, "n": d.n}))
    elif rule.kind == "within_best_teacher":
        tscores = {}
        for t in teachers:
            runs = _runs_of(store, t, None)
            if runs:
                tscores[t] = scores.of(t, runs)
        if not tscores:
            raise PerseaError(f"{where}: no teacher has a complete evaluation run; run "
                              "`persea eval` first")
        margin = rule.within_best_teacher / 100
        for m in metrics:
            have = {t: _mean(v[m]) for t, v in tscores.items() if m in v}
            if not have:
                raise PerseaError(f"{where}: no teacher has a score for {m!r}")
            best = max(have, key=have.get)
            c = _mean(cand[m])
            ok = c >= have[best] - margin - 1e-12
            checks.append(Check(m, ok, f"{c:.3f} vs best teacher {best} {have[best]:.3f} "
                                f"(allowed down to {have[best] - margin:.3f})",
                                {"candidate": c, "best_teacher": best, "best": have[best],
                                 "margin": margin, "n": len(cand[m])}))
    else:
        for m in metrics:
            c = _mean(cand[m])
            ok = c >= rule.floor - 1e-12
            checks.append(Check(m, ok, f"{c:.3f} (floor {rule.floor:g}) on {len(cand[m])} "
                                "items", {"candidate": c, "floor": rule.floor,
                                          "n": len(cand[m])}))
    return RuleResult(_describe(rule), all(c.passed for c in checks), checks)
