"""Runs are records: per-item outcomes and per-metric scores on disk and in the database;
a run stopped midway (Ctrl-C, an error, SIGKILL) is no result and resumes where it stopped."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import sqlalchemy as sa

from persea.evaluate.records import COMPLETE, INCOMPLETE, RUNNING, RunStore
from persea.evaluate.runner import run_item_suite
from persea.evaluate.suites import ToyworldSuite

from tests.evaluate.conftest import ScriptedModel


def _answers(suite):
    return {it.prompt: it.target for it in suite.items()}


def _half_right(suite):
    """Right on the items of addition and sort, wrong elsewhere."""
    truth = _answers(suite)
    skill = {it.prompt: it.group for it in suite.items()}
    return lambda p: truth[p] if skill[p] in ("addition", "sort") else "wrong"


def test_a_run_records_items_scores_and_database_rows(tmp_path, db_url):
    suite = ToyworldSuite(per_skill=4, max_new_tokens=4)
    store = RunStore(tmp_path / "evals", db_url)
    model = ScriptedModel(_half_right(suite))
    rec = run_item_suite(model, suite, store, name="m", source="scripted", batch_size=5)

    assert rec.status == COMPLETE and rec.n_items == 24 and rec.items_done == 24
    saved = json.loads((store.run_dir(rec.run_id) / "record.json").read_text())
    assert saved["fingerprint"] == "f" * 64 and saved["suite"] == "toyworld"
    assert saved["suite_version"].startswith("1+") and saved["seed"] == 0
    assert saved["started_at"] <= saved["finished_at"] and saved["duration_s"] >= 0
    items = store.read_items(rec.run_id)
    assert len(items) == 24 and len({i["id"] for i in items}) == 24
    assert saved["scores"]["toyworld/addition"] == {"mean": 1.0, "n": 4}
    assert saved["scores"]["toyworld/kb"] == {"mean": 0.0, "n": 4}
    assert saved["scores"]["toyworld/overall"] == {"mean": 8 / 24, "n": 24}

    from persea.db import make_engine
    from persea.db.schema import eval_items, eval_runs, eval_scores

    engine = make_engine(db_url)
    with engine.connect() as conn:
        run = conn.execute(sa.select(eval_runs)).one()
        scores = dict(conn.execute(sa.select(eval_scores.c.metric, eval_scores.c.value)).all())
        n_items = conn.execute(sa.select(sa.func.count()).select_from(eval_items)).scalar()
    engine.dispose()
    assert (run.id, run.model, run.status, run.n_items) == (rec.run_id, "m", COMPLETE, 24)
    assert scores["toyworld/sort"] == 1.0 and scores["toyworld/overall"] == pytest.approx(1 / 3)
    assert n_items == 24


def test_a_complete_run_is_reused_not_redone(tmp_path):
    suite = ToyworldSuite(per_skill=2, max_new_tokens=4)
    store = RunStore(tmp_path / "evals")
    first = ScriptedModel(_half_right(suite))
    rec = run_item_suite(first, suite, store, name="m", source="s")
    again = ScriptedModel(_half_right(suite))
    assert run_item_suite(again, suite, store, name="m", source="s").run_id == rec.run_id
    assert again.asked == []
    redo = ScriptedModel(_half_right(suite))
    run_item_suite(redo, suite, store, name="m", source="s", rerun=True)
    assert len(redo.asked) == 12


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_run_is_incomplete_then_resumes(tmp_path, failure):
    suite = ToyworldSuite(per_skill=4, max_new_tokens=4)
    store = RunStore(tmp_path / "evals")
    broken = ScriptedModel(_half_right(suite), fail_on_call=3, failure=failure)
    with pytest.raises(failure):
        run_item_suite(broken, suite, store, name="m", source="s", batch_size=5)
    (rec,) = store.runs()
    assert rec.status == INCOMPLETE and rec.items_done == 10
    assert store.latest_complete() == {}  # never counted as a result

    resumed = ScriptedModel(_half_right(suite))
    done = run_item_suite(resumed, suite, store, name="m", source="s", batch_size=5)
    assert done.status == COMPLETE and done.run_id == rec.run_id
    assert len(resumed.asked) == 14  # only what the first run had not written
    items = store.read_items(done.run_id)
    assert sorted(i["id"] for i in items) == sorted(it.id for it in suite.items())
    assert done.scores["toyworld/overall"]["mean"] == pytest.approx(8 / 24)
    assert store.latest_complete()[("m", "toyworld")].run_id == done.run_id


def test_a_killed_run_stays_unfinished_and_resumes(tmp_path):
    """SIGKILL in the middle of the third batch: no handler runs at all."""
    evals = tmp_path / "evals"
    script = textwrap.dedent(f"""
        import os, signal
        from persea.evaluate.records import RunStore
        from persea.evaluate.runner import run_item_suite
        from persea.evaluate.suites import ToyworldSuite
        from tests.evaluate.conftest import ScriptedModel
        suite = ToyworldSuite(per_skill=4, max_new_tokens=4)
        truth = {{it.prompt: it.target for it in suite.items()}}
        model = ScriptedModel(truth.get)
        real = model.generate
        def generate(prompts, n, top_k=0):
            if model.calls == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(prompts, n, top_k)
        model.generate = generate
        run_item_suite(model, suite, RunStore({str(evals)!r}), name="m", source="s",
                       batch_size=5)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr
    store = RunStore(evals)
    (rec,) = store.runs()
    assert rec.status == RUNNING and rec.items_done == 10
    assert store.latest_complete() == {}
    # a torn last line (a crash mid-write) is dropped, and its item asked again
    with open(store.run_dir(rec.run_id) / "items.jsonl", "a") as f:
        f.write('{"id": "torn')
    suite = ToyworldSuite(per_skill=4, max_new_tokens=4)
    resumed = ScriptedModel(_answers(suite).get)
    done = run_item_suite(resumed, suite, store, name="m", source="s", batch_size=5)
    assert len(resumed.asked) == 14 and done.scores["toyworld/overall"]["mean"] == 1.0


def test_migrations_match_the_schema(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from persea.db import current_revision, make_engine, upgrade
    from persea.db.schema import metadata

    upgrade(db_url)
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        names = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert {"eval_runs", "eval_scores", "eval_items", "gate_records",
            "release_records"} <= names
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from persea.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert current_revision(db_url) == ScriptDirectory.from_config(cfg).get_current_head()
    engine = make_engine(db_url)
    with engine.begin() as conn:  # the downgrade leaves the gateway's tables alone
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001_gateway")
    with engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert "eval_runs" not in names and "usage_records" in names


def test_an_unreachable_database_is_named_without_its_password(tmp_path):
    from persea.errors import PerseaError

    suite = ToyworldSuite(per_skill=1, max_new_tokens=4)
    url = "postgresql+psycopg://someone:s3cret@127.0.0.1:1/nowhere"
    store = RunStore(tmp_path / "evals", url)
    with pytest.raises(PerseaError) as err:
        run_item_suite(ScriptedModel(_answers(suite).get), suite, store, name="m", source="s")
    assert "127.0.0.1:1/nowhere" in err.value.message and "s3cret" not in err.value.message
    (rec,) = store.runs()
    assert rec.status == COMPLETE  # the files on disk are the record and stay


def test_skill_accuracy_scores_like_the_suite():
    from persea.skills import skill_accuracy

    suite = ToyworldSuite(per_skill=3, max_new_tokens=4)
    scores = skill_accuracy(ScriptedModel(_half_right(suite)), per_skill=3, batch_size=4)
    assert scores == {"addition": 1.0, "reverse": 0.0, "sort": 1.0, "kb": 0.0, "count": 0.0,
                      "convert": 0.0, "overall": 2 / 6}


def test_a_run_of_no_items_is_never_complete(tmp_path):
    from persea.errors import PerseaError

    store = RunStore(tmp_path / "evals")
    suite = ToyworldSuite(per_skill=0, max_new_tokens=4)
    with pytest.raises(PerseaError, match="the suite gave 0 items"):
        run_item_suite(ScriptedModel(lambda p: "x"), suite, store, name="m", source="s")
    (run,) = store.runs()
    assert run.status == INCOMPLETE and store.latest_complete() == {}
