"""Scorecard numbers against a fixed set of per-item outcomes, computed again here by a
plain loop (same seed, same draws), and the three renderings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persea.evaluate.bootstrap import bootstrap_ci, paired_diff_ci
from persea.evaluate.records import RunStore
from persea.evaluate.scorecard import build_scorecard, to_markdown, to_png

from tests.cli_helpers import run_cli
from tests.evaluate.conftest import add_run, write_project

STUDENT = {"addition": [1, 1, 1, 0, 1, 1, 0, 1], "kb": [0, 1, 0, 0, 1, 0]}
TEACHER = {"addition": [1, 0, 0, 0, 1, 0, 0, 0], "kb": [1, 1, 1, 1, 1, 0]}


def percentile(sorted_values, q):
    """Linear interpolation between closest ranks (numpy's default), by hand."""
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def by_hand(values, resamples=1000, seed=0, confidence=0.95):
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(resamples):
        picks = rng.integers(0, len(values), len(values))
        means.append(sum(values[int(i)] for i in picks) / len(values))
    means.sort()
    tail = (1 - confidence) / 2 * 100
    return sum(values) / len(values), percentile(means, tail), percentile(means, 100 - tail)


def test_bootstrap_matches_a_hand_computation():
    values = [1, 0, 1, 1, 0, 1, 1, 1, 0, 1]
    iv = bootstrap_ci(values, resamples=1000, seed=7)
    mean, low, high = by_hand(values, 1000, seed=7)
    assert (iv.mean, iv.n) == (0.7, 10)
    assert iv.low == pytest.approx(low, abs=1e-12) and iv.high == pytest.approx(high, abs=1e-12)
    assert low < 0.7 < high
    assert bootstrap_ci(values, seed=7) == iv  # seeded: the same every time
    assert bootstrap_ci([], seed=7).n == 0


def test_paired_difference_uses_the_same_items():
    a, b = [1, 1, 1, 1, 0, 1], [0, 1, 0, 1, 0, 0]
    iv = paired_diff_ci(a, b, seed=3)
    mean, low, high = by_hand([x - y for x, y in zip(a, b)], seed=3)
    assert iv.mean == pytest.approx(mean) and iv.low == pytest.approx(low)
    assert iv.high == pytest.approx(high)


def test_scorecard_numbers_on_a_fixed_result_set(tmp_path):
    store = RunStore(tmp_path / "evals")
    add_run(store, "student", STUDENT)
    add_run(store, "teacher", TEACHER)
    add_run(store, "teacher", {"addition": [1] * 8, "kb": [1] * 6}, status="incomplete")
    card = build_scorecard(store, ["student", "teacher"], resamples=1000, seed=0)

    assert card.models == ["student", "teacher"]
    assert card.metrics == ["toyworld/addition", "toyworld/kb", "toyworld/overall"]
    assert [r.status for r in card.unfinished] == ["incomplete"]  # left out, not counted
    for model, outcomes in (("student", STUDENT), ("teacher", TEACHER)):
        for skill, values in outcomes.items():
            ordered = [v for _, v in sorted((f"{skill}-{i}", v) for i, v in enumerate(values))]
            mean, low, high = by_hand(ordered)
            iv = card.get(f"toyworld/{skill}", model)
            assert iv.n == len(values) and iv.mean == pytest.approx(mean)
            assert (iv.low, iv.high) == (pytest.approx(low), pytest.approx(high))
        everything = sorted((f"{s}-{i}", v) for s, vs in outcomes.items()
                            for i, v in enumerate(vs))
        mean, low, high = by_hand([v for _, v in everything])
        iv = card.get("toyworld/overall", model)
        assert iv.n == 14 and iv.mean == pytest.approx(mean) and iv.low == pytest.approx(low)
    assert card.get("toyworld/addition", "student").mean == 0.75  # 6 of 8, by inspection
    assert card.get("toyworld/kb", "teacher").mean == pytest.approx(5 / 6)

    md = to_markdown(card)
    iv = card.get("toyworld/addition", "student")
    assert f"| toyworld/addition | 8 | 0.750 [{iv.low:.3f}, {iv.high:.3f}] |" in md
    assert "teacher--toyworld--incomplete" in md  # named as left out
    png = to_png(card, tmp_path / "scorecard.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_scorecard_command_writes_markdown_and_png(tmp_path, capsys, monkeypatch):
    project = write_project(tmp_path / "p")
    store = RunStore(project / "evals")
    add_run(store, "student", STUDENT)
    add_run(store, "qwen3-toy", TEACHER)
    code, out, err = run_cli(capsys, monkeypatch, "scorecard", "--project", str(project))
    assert code == 0, err
    assert "toyworld/overall" in out and "student" in out
    text = (project / "scorecard.md").read_text()
    assert text.index("student") < text.index("qwen3-toy")  # the candidate comes first
    assert (project / "scorecard.png").stat().st_size > 5000


def test_scorecard_without_runs_says_what_to_do(tmp_path, capsys, monkeypatch):
    project = write_project(tmp_path / "p")
    code, _, err = run_cli(capsys, monkeypatch, "scorecard", "--project", str(project))
    assert code == 2 and "persea eval" in err
