"""The SQLite database holds API key hashes and invoices: the files it lives in (the database,
its -wal and -shm) are created readable by their owner only, whatever the umask allows."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import uvicorn

from persea.accounts import Accounts
from persea.cli.serve import ServeOptions, run_serve
from persea.db import make_engine, upgrade


@pytest.fixture
def open_umask():
    """The common umask (022: files readable by every local user), for this test only."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}


def test_the_db_layer_creates_a_private_database(tmp_path, open_umask):
    url = f"sqlite:///{tmp_path / 'persea.db'}"
    upgrade(url)
    accounts = Accounts(url)
    try:
        accounts.admin.create_plan("p", {})
        accounts.admin.create_org("acme", "p")
        accounts.admin.create_key("acme")
        modes = _modes(tmp_path)
    finally:
        accounts.close()
    assert {"persea.db", "persea.db-wal", "persea.db-shm"} <= set(modes)
    assert all(mode == 0o600 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}


def test_persea_serve_first_start_leaves_a_private_database(tmp_path, open_umask, monkeypatch):
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))  # no server
    printed: list[str] = []
    run_serve(ServeOptions(db=f"sqlite:///{tmp_path / 'persea.db'}",
                           models=["toy=qwen3-toy"], workers=1), echo=printed.append)
    try:
        assert served and any("first API key" in line for line in printed)
        modes = _modes(tmp_path)
    finally:
        gateway = served[0].state.gateway
        gateway.close()
        gateway.accounts.close()
    assert "persea.db" in modes
    assert all(mode == 0o600 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}


def test_an_existing_database_keeps_its_mode(tmp_path, open_umask):
    db = tmp_path / "shared.db"
    engine = make_engine(f"sqlite:///{db}")
    with engine.connect():
        pass
    engine.dispose()
    db.chmod(0o640)  # an operator's choice (a group that backs it up) is left alone
    engine = make_engine(f"sqlite:///{db}")
    with engine.connect():
        pass
    engine.dispose()
    assert stat.S_IMODE(db.stat().st_mode) == 0o640
