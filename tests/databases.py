"""Database fixtures for every package's tests (tests/conftest.py offers them), run against
BOTH databases.

`db_url` is an empty database: a fresh SQLite file, or a fresh uniquely named schema in the
PostgreSQL at $PERSEA_TEST_PG_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test),
selected by `search_path` and dropped afterwards, so test runs can share that server. When
PostgreSQL is unreachable its cases are skipped with a reason that names it.
`migrated_url` is the same after `persea.db.upgrade`; `accounts` is an `Accounts` on it with a
`clock` the test can move.
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

PG_URL = os.environ.get("PERSEA_TEST_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
_pg_problem: list[str] = []  # filled once per session: why PostgreSQL cannot be used


def _postgres_problem() -> str | None:
    if not _pg_problem:
        try:
            engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            engine.dispose()
            _pg_problem.append("")
        except Exception as err:  # any failure to connect means: skip, saying why
            _pg_problem.append(f"PostgreSQL unreachable at {PG_URL} "
                               f"({type(err).__name__}: {str(err).splitlines()[0][:160]})")
    return _pg_problem[0] or None


def _with_search_path(url: str, schema: str) -> str:
    parsed = sa.make_url(url)
    return parsed.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """An empty database URL: SQLite file or a fresh PostgreSQL schema (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'persea.db'}"
        return
    problem = _postgres_problem()
    if problem:
        pytest.skip(problem)
    schema = f"persea_test_{secrets.token_hex(6)}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield _with_search_path(PG_URL, schema)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def migrated_url(db_url):
    from persea.db import upgrade

    upgrade(db_url)
    return db_url


class Clock:
    """A clock the test moves by hand: aware UTC, starting mid-month."""

    def __init__(self, now: datetime | None = None):
        self.now = now or datetime(2026, 3, 14, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def accounts(migrated_url, clock):
    from persea.accounts import Accounts

    acc = Accounts(migrated_url, clock=clock, actor="test")
    yield acc
    acc.close()
