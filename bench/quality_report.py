"""The table and the verdict lines of bench/distill_quality.py.

Every student row holds one result per seed: `{"acc": {skill: score, "overall": ...},
"params": n, ...}`. A cell is the mean over seeds and, in brackets, the lowest and the highest
seed (the spread below is that range, highest minus lowest). Teachers are scored once: their
answers do not depend on the student's seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import mean


@dataclass
class Row:
    name: str
    runs: list[dict]  # one per seed (teachers: one)
    seeds: list[int]
    teacher: bool = False
    on_policy: bool = False

    def values(self, col: str) -> list[float]:
        return [r["acc"][col] for r in self.runs]

    def mean(self, col: str = "overall") -> float:
        return mean(self.values(col))

    def spread(self, col: str = "overall") -> float:
        v = self.values(col)
        return max(v) - min(v)

    def worst(self, col: str = "overall") -> tuple[float, int]:
        """The lowest score over the seeds on `col`, and its seed."""
        return min(zip(self.values(col), self.seeds))

    @property
    def params(self) -> int:
        return self.runs[0]["params"]


def cell(row: Row, col: str) -> str:
    v = row.values(col)
    if len(v) == 1:
        return f"{v[0]:.2f}"
    return f"{mean(v):.2f} ({min(v):.2f}–{max(v):.2f})"


def table(rows: list[Row], skills: list[str], skipped: list[str]) -> list[str]:
    cols = [*skills, "overall"]
    out = [f"| model | {' | '.join(cols)} | worst seed overall | params |",
           "|---" * (len(cols) + 3) + "|"]
    for r in rows:
        worst = "" if r.teacher else "{:.2f} (seed {})".format(*r.worst())
        out.append(f"| {r.name} | " + " | ".join(cell(r, c) for c in cols)
                   + f" | {worst} | {r.params:,} |")
    out += [f"| {name} | not run |" for name in skipped]
    return out


def _gap(a: Row, b: Row) -> tuple[float, float]:
    """Mean overall of `a` minus that of `b`, and the larger of their seed spreads."""
    return a.mean() - b.mean(), max(a.spread(), b.spread())


def verdicts(rows: list[Row], skills: list[str], kd_row: str, ce_row: str) -> list[str]:
    teachers = [r for r in rows if r.teacher]
    students = [r for r in rows if not r.teacher]
    by_name = {r.name: r for r in rows}
    out = []
    best = max(students, key=Row.mean)
    top = max(teachers, key=Row.mean)
    low, seed = best.worst()
    out.append(f"student beats every teacher overall on its worst seed: "
               f"{'yes' if low > top.mean() else 'no'} (best student row by mean: {best.name}, "
               f"worst seed {seed} {low:.3f}, mean {best.mean():.3f}; best teacher "
               f"{top.name} {top.mean():.3f})")

    def ratio(skill: str) -> float:
        bar = max(t.mean(skill) for t in teachers)
        return best.worst(skill)[0] / bar if bar > 0 else 1.0

    weakest = min(skills, key=ratio)
    bar = max(t.mean(weakest) for t in teachers)
    out.append(f"that row reaches 90% of the best teacher on every skill on its worst seed: "
               f"{'yes' if ratio(weakest) >= 0.9 else 'no'} (weakest: {weakest}, "
               f"{best.worst(weakest)[0]:.2f} vs {bar:.2f}, {ratio(weakest):.0%})")

    on = [r for r in students if r.on_policy]
    off = [r for r in students if not r.on_policy]
    if on and off:
        b_on, b_off = max(on, key=Row.mean), max(off, key=Row.mean)
        gap, spread = _gap(b_on, b_off)
        out.append(f"on-policy beats off-policy at equal training time: "
                   f"{'yes' if gap > spread else 'no'} ({b_on.name} {b_on.mean():.3f} vs "
                   f"{b_off.name} {b_off.mean():.3f}, difference {gap:+.3f}, "
                   f"{'beyond' if abs(gap) > spread else 'within'} the seed spread {spread:.3f})")
    else:
        out.append("on-policy vs off-policy at equal time: not measured (no row of one kind)")

    if kd_row in by_name and ce_row in by_name:
        kd, ce = by_name[kd_row], by_name[ce_row]
        gap, spread = _gap(kd, ce)
        out.append(f"cross-tokenizer KD beats cross-entropy alone beyond the seed spread: "
                   f"{'yes' if gap > spread else 'no'} (mean {kd.mean():.3f} vs {ce.mean():.3f}, "
                   f"difference {gap:+.3f}, larger seed spread {spread:.3f})")
    else:
        out.append(f"KD vs CE only: not measured ({kd_row!r} or {ce_row!r} not run)")

    largest = max(teachers, key=lambda t: t.params)
    out.append(f"student has fewer parameters than the largest teacher: "
               f"{'yes' if best.params < largest.params else 'no'} "
               f"({best.params:,} vs {largest.params:,} [{largest.name}])")
    return out
