"""Combining teachers at the same position: hand-computed targets, the mass bound, the
losses' reading of padded entries, and distillation end to end on the built-in teachers."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from persea.distill import losses
from persea.distill.combine import Signal, average, pad, select, teacher_weights
from persea.errors import PerseaError

ABSENT = -np.inf


def signal(name, pos, ids, probs, tail, conf):
    probs = np.asarray(probs, np.float64)
    with np.errstate(divide="ignore"):
        logp = np.where(probs > 0, np.log(np.where(probs > 0, probs, 1)), ABSENT)
    return Signal(name, np.asarray(pos, np.int64), np.asarray(ids, np.int64),
                  logp.astype(np.float32), np.asarray(tail, np.float32),
                  np.asarray(conf, np.float32))


def rows(sig):
    """Each position as ({student id: probability}, sorted unmatched probabilities, tail)."""
    out = {}
    for j, pos in enumerate(sig.pos):
        p = np.exp(sig.logp[j].astype(np.float64))
        ids = sig.ids[j]
        matched = {int(i): float(x) for i, x in zip(ids, p) if i >= 0}
        assert len(matched) == int((ids >= 0).sum())  # each student id once per row
        unmatched = sorted(float(x) for i, x in zip(ids, p) if i < 0 and x > 0)
        out[int(pos)] = (matched, unmatched, float(sig.tail[j]))
    return out


def approx(value):
    return pytest.approx(value, abs=1e-6)


# author A at student positions 0, 1, 2; scorer B at 0, 2, 3 (B has no aligned start at 1)
A = signal("A", [0, 1, 2], [[5, 7, -1], [3, -1, -1], [9, 1, 2]],
           [[0.5, 0.3, 0.1], [0.6, 0.2, 0.0], [0.9, 0.05, 0.01]], [0.1, 0.2, 0.04],
           [0.5, 0.6, 0.9])
B = signal("B", [0, 2, 3], [[7, 5], [9, -1], [4, 8]],
           [[0.6, 0.2], [0.7, 0.2], [0.5, 0.5]], [0.2, 0.1, 0.0], [0.6, 0.7, 0.5])


def test_average_uniform_against_hand_computed_mixture():
    out = rows(average([A, B]))
    assert sorted(out) == [0, 1, 2, 3]
    m, u, tail = out[0]  # both present: 1/2 each; same id adds, unmatched stay apart
    assert m == approx({5: 0.35, 7: 0.45}) and u == approx([0.05]) and tail == approx(0.15)
    m, u, tail = out[1]  # A alone: its own distribution
    assert m == approx({3: 0.6}) and u == approx([0.2]) and tail == approx(0.2)
    m, u, tail = out[2]
    assert m == approx({9: 0.8, 1: 0.025, 2: 0.005}) and u == approx([0.1])
    assert tail == approx(0.07)
    m, u, tail = out[3]
    assert m == approx({4: 0.5, 8: 0.5}) and u == [] and tail == approx(0.0)
    conf = average([A, B]).conf
    assert conf.tolist() == approx([0.55, 0.6, 0.8, 0.5])


def test_average_weights_are_renormalised_over_the_teachers_present():
    out = rows(average([A, B], [3.0, 1.0]))
    m, u, tail = out[0]  # 3/4 and 1/4
    assert m == approx({5: 0.425, 7: 0.375}) and u == approx([0.075]) and tail == approx(0.125)
    assert out[1][0] == approx({3: 0.6})  # A alone keeps its full weight
    assert out[3][0] == approx({4: 0.5, 8: 0.5})  # and B alone its own
    # all present teachers weighted 0 there: uniform over them, never an empty target
    zero = rows(average([A, B], [0.0, 0.0]))
    assert zero[0][0] == approx({5: 0.35, 7: 0.45})


def test_select_takes_the_most_confident_teacher_and_the_author_on_ties():
    out = select([A, B])
    chosen = rows(out)
    assert chosen[0][0] == approx({7: 0.6, 5: 0.2}) and chosen[0][2] == approx(0.2)  # B 0.6
    assert chosen[1][0] == approx({3: 0.6})  # only A there
    assert chosen[2][0] == approx({9: 0.9, 1: 0.05, 2: 0.01})  # A 0.9 > B 0.7
    assert chosen[3][0] == approx({4: 0.5, 8: 0.5})
    assert out.conf.tolist() == approx([0.6, 0.6, 0.9, 0.5])
    tied = B.conf.copy()
    tied[0] = 0.5  # A has 0.5 at position 0 too
    b_tied = Signal("B", B.pos, B.ids, B.logp, B.tail, tied)
    assert rows(select([A, b_tied]))[0][0] == approx({5: 0.5, 7: 0.3})
    assert rows(select([b_tied, A]))[0][0] == approx({7: 0.6, 5: 0.2})  # order decides


def test_rows_over_one_from_quantisation_are_rescaled():
    over = signal("Q", [0], [[1, 2]], [[0.6, 0.45]], [0.1], [0.6])  # 1.15 in all
    m, _, tail = rows(average([over]))[0]
    assert tail == approx(0.1) and sum(m.values()) == approx(0.9)
    assert m[1] / m[2] == pytest.approx(0.6 / 0.45, rel=1e-5)


def test_teacher_weights_follow_dev_accuracy_on_the_skill():
    dev = {"sort": {"A": 0.9, "B": 0.3, "C": 0.0}, "kb": {"A": 0.0, "B": 0.0}}
    assert teacher_weights(["B", "A", "C"], "sort", dev) == [0.3, 0.9, 0.0]
    assert teacher_weights(["A", "B"], "kb", dev) == [1.0, 1.0]  # nothing to go on
    assert teacher_weights(["A", "B"], "count", dev) == [1.0, 1.0]
    assert teacher_weights(["A", "B"], "sort", None) == [1.0, 1.0]


@st.composite
def signals(draw):
    """1-4 teachers on up to 8 positions, each row k candidates (some unmatched, some
    absent) whose stored mass may be up to 3.2% over 1, as quantisation can leave it."""
    n_teachers = draw(st.integers(1, 4))
    unit = st.floats(0.0, 1.0)
    out = []
    for t in range(n_teachers):
        pos = sorted(draw(st.sets(st.integers(0, 7), max_size=6)))
        k = draw(st.integers(1, 5))
        ids = np.full((len(pos), k), -1)
        probs = np.zeros((len(pos), k))
        tails = np.zeros(len(pos))
        for j in range(len(pos)):
            chosen = draw(st.permutations(list(range(8))))[:k]
            ids[j] = [i if draw(st.booleans()) else -1 for i in chosen]
            raw = np.array(draw(st.lists(unit, min_size=k + 1, max_size=k + 1))) + 1e-9
            raw = raw / raw.sum()
            probs[j] = np.minimum(raw[:k] * draw(st.floats(0.97, 1.032)), 1.0)
            probs[j, [c for c in range(1, k) if draw(st.booleans())]] = 0.0  # absent
            tails[j] = raw[k]
        conf = draw(st.lists(unit, min_size=len(pos), max_size=len(pos)))
        out.append(signal(f"t{t}", pos, ids, probs, tails, conf))
    weights = draw(st.lists(st.floats(0.0, 10.0), min_size=n_teachers, max_size=n_teachers))
    return out, weights


@settings(max_examples=150, deadline=None)
@given(signals())
def test_combined_mass_never_exceeds_one(case):
    sigs, weights = case
    union = sorted(set().union(*[set(s.pos.tolist()) for s in sigs]))
    for out in (average(sigs, weights), average(sigs), select(sigs)):
        assert out.pos.tolist() == union
        p = np.where(np.isfinite(out.logp), np.exp(out.logp.astype(np.float64)), 0.0)
        assert np.all(p.sum(-1) + out.tail <= 1.0 + 1e-5)
        assert np.all(out.tail >= 0)
        for row in out.ids:
            real = row[row >= 0]
            assert len(set(real.tolist())) == len(real)
        assert np.all(out.ids[~np.isfinite(out.logp)] == -1)  # absent entries carry no id


def test_losses_read_padded_entries_as_absent():
    """Padding a combined target with (id -1, -inf) changes neither logit loss."""
    torch.manual_seed(0)
    target = average([A, B])
    wide_ids, wide_logp = pad(target.ids, target.logp, target.ids.shape[1] + 6)
    assert wide_ids.shape == (4, target.ids.shape[1] + 6)
    assert np.all(wide_ids[:, -6:] == -1) and np.all(np.isneginf(wide_logp[:, -6:]))
    z = torch.randn(4, 12)
    tail = torch.from_numpy(target.tail)
    for T in (1.0, 2.0):
        narrow = losses.cross_tokenizer_kd(z, torch.from_numpy(target.ids),
                                           torch.from_numpy(target.logp), tail, T=T)
        wide = losses.cross_tokenizer_kd(z, torch.from_numpy(wide_ids),
                                         torch.from_numpy(wide_logp), tail, T=T)
        assert torch.isfinite(wide) and wide.item() == pytest.approx(narrow.item(), rel=1e-5)


# -- end to end on the three built-in teachers (three tokenizers) ------------------------

BUILTINS = ["qwen3-toy", "gemma3-toy", "gptoss-toy"]


@pytest.fixture(scope="module")
def cross_project(tmp_path_factory):
    from persea.harvest import HarvestJob, run_harvest
    from persea.project import load_project

    d = tmp_path_factory.mktemp("combine") / "p"
    d.mkdir()
    data = {"name": "c", "teachers": [{"name": n, "builtin": n} for n in BUILTINS],
            "prompts": {"toyworld": {"per_skill": 1}},
            "harvest": {"shard_size": 3, "batch_size": 3, "max_new_tokens": 10, "top_k": 8,
                        "cross_score": True, "backend": "transformers"},
            "distill": {"steps": 3, "batch_size": 6, "checkpoint_every": 3, "warmup": 1,
                        "student": {"hidden_size": 32, "layers": 1, "heads": 2,
                                    "intermediate_size": 64, "vocab_size": 350},
                        "weighting": ["uniform"]}}
    (d / "persea.yaml").write_text(yaml.safe_dump(data))
    run_harvest(HarvestJob.of(load_project(d)))
    return d


def with_combine(src, dst, combine, **loss):
    shutil.copytree(src, dst)
    data = yaml.safe_load((dst / "persea.yaml").read_text())
    data["distill"]["loss"] = {"combine": combine, **loss}
    (dst / "persea.yaml").write_text(yaml.safe_dump(data))
    from persea.project import load_project

    return load_project(dst)


def test_examples_combine_every_teacher_on_the_authors_text(cross_project):
    from persea.cache.reader import open_harvest, read_responses, read_scores
    from persea.distill.data import build_examples
    from persea.distill.student import harvest_corpus, train_student_tokenizer

    harvest = open_harvest(cross_project / "cache" / "harvest", "c", BUILTINS)
    assert len(harvest.score_sets) == 6
    scores = read_scores(harvest, "gemma3-toy", "qwen3-toy")
    assert [s.prompt_index for s in scores] == \
        [r.prompt_index for r in read_responses(harvest, "qwen3-toy")]
    with pytest.raises(PerseaError, match="no scores of teacher 'qwen3-toy' on 'ghost'"):
        read_scores(harvest, "qwen3-toy", "ghost")
    tok = train_student_tokenizer(harvest_corpus(harvest), 350)
    plain = build_examples(harvest, tok, BUILTINS)
    avg = build_examples(harvest, tok, BUILTINS, "average")
    sel = build_examples(harvest, tok, BUILTINS, "select")
    assert len(plain) == len(avg) == len(sel) == 18
    widths = {e.kd_ids.shape[1] for e in avg}
    assert len(widths) == 1 and widths.pop() > 8  # several teachers' candidates, one width
    grew = 0
    for p, a, s in zip(plain, avg, sel):
        assert (p.prompt_index, p.teacher) == (a.prompt_index, a.teacher) == \
            (s.prompt_index, s.teacher)
        assert np.array_equal(p.input_ids, a.input_ids)  # same text, same labels
        # combined positions: the author's, plus any where another teacher aligns
        assert set(p.kd_pos.tolist()) <= set(a.kd_pos.tolist()) == set(s.kd_pos.tolist())
        grew += len(a.kd_pos) > len(p.kd_pos)
        for e in (a, s):
            mass = np.where(np.isfinite(e.kd_logp), np.exp(e.kd_logp), 0).sum(-1) + e.kd_tail
            assert np.all(mass <= 1 + 1e-4)
    assert grew > 0  # character-level gptoss aligns where the author's tokens do not


@pytest.mark.parametrize("combine", ["average", "select"])
def test_distill_runs_with_combined_teachers(cross_project, tmp_path, combine):
    from persea.distill.run import run_distill

    result = run_distill(with_combine(cross_project, tmp_path / "p", combine, alm_weight=0.5))
    with open(result.run_dir / "loss.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert [int(r["step"]) for r in got] == [1, 2, 3]
    assert all(np.isfinite(float(r["kd"])) and float(r["kd"]) > 0 for r in got)
    assert (result.student_dir / "model.safetensors").is_file()


def test_combine_without_cross_scores_or_logit_loss_is_refused(cross_project, project_copy,
                                                               tmp_path):
    from persea.distill.run import run_distill
    from persea.project import load_project

    with pytest.raises(PerseaError, match="kd is none; set kd: xtok"):
        run_distill(with_combine(cross_project, tmp_path / "a", "select", kd="none"))
    data = yaml.safe_load((project_copy / "persea.yaml").read_text())
    data["distill"]["loss"]["combine"] = "average"  # on a harvest without cross scores
    (project_copy / "persea.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(PerseaError, match="set harvest.cross_score: true"):
        run_distill(load_project(project_copy))
    assert not (project_copy / "runs").exists()  # refused before anything was written


def test_run_record_names_combine_only_away_from_its_default(cross_project, tmp_path):
    """A run made before the option existed (its run.json has no `combine`) still resumes
    under the default; a run with average or select records it."""
    from persea.cache.reader import open_harvest
    from persea.distill.run import _config_record
    from persea.project import load_project

    harvest = open_harvest(cross_project / "cache" / "harvest", "c", BUILTINS)
    assert "combine" not in _config_record(load_project(cross_project), harvest)["distill"][
        "loss"]
    chosen = with_combine(cross_project, tmp_path / "p", "select")
    assert _config_record(chosen, harvest)["distill"]["loss"]["combine"] == "select"
