"""`persea serve` refuses an ungated model directory unless forced, and records the force."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from persea.errors import PerseaError


def test_serve_refuses_an_ungated_directory_unless_forced(tmp_path, tiny_model_dir,
                                                         monkeypatch):
    import shutil

    from persea.cli.serve import ServeOptions, build_backends

    model = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, model)
    db = f"sqlite:///{tmp_path / 'serve.db'}"
    with pytest.raises(PerseaError, match="not released"):
        build_backends(ServeOptions(db=db, models=[f"mine={model}"]))
    with pytest.raises(PerseaError, match="needs --reason"):
        build_backends(ServeOptions(db=db, models=[f"mine={model}"], force_release=True))
    backends = build_backends(ServeOptions(db=db, models=[f"mine={model}"], force_release=True,
                                           release_reason="staging smoke test",
                                           forced_by="grace"))
    assert list(backends) == ["mine"]
    line = json.loads((model / "release-log.jsonl").read_text())
    assert (line["forced"], line["who"], line["reason"]) == (True, "grace",
                                                             "staging smoke test")
    from persea.db import make_engine
    from persea.db.schema import release_records

    engine = make_engine(db)
    with engine.connect() as conn:
        row = conn.execute(sa.select(release_records)).one()
    engine.dispose()
    assert (row.forced, row.who, row.model_path) == (True, "grace", str(model.resolve()))
    # built-in teachers are not checkpoints of ours: no gate asked
    assert list(build_backends(ServeOptions(db=db, models=["t=qwen3-toy"]))) == ["t"]


def test_release_records_land_in_either_database(tmp_path, tiny_model_dir, db_url):
    import shutil

    from persea.db import make_engine
    from persea.db.schema import release_records
    from persea.evaluate.release import require_release

    model = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, model)
    require_release(None, model, True, "first", "ada", db=db_url)
    require_release(None, model, True, "second", "bob", db=db_url)
    engine = make_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(release_records.c.who, release_records.c.reason)
                            .order_by(release_records.c.created_at)).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("ada", "first"), ("bob", "second")]
