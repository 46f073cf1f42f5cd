"""Migrations build the schema on an empty database of either kind; running them again is
harmless; the migrated schema is exactly what persea.db.schema declares; money is exact."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from persea.db import MIGRATIONS, current_revision, make_engine, upgrade
from persea.db.schema import metadata, plans

def head_revision() -> str:
    """The newest revision shipped in persea/db/migrations (other packages add their own)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


GATEWAY_TABLES = {"plans", "plan_prices", "orgs", "api_keys", "balances", "reservations",
                  "usage_records", "audit_log"}


def test_upgrade_on_empty_database_builds_the_schema(db_url):
    if db_url.startswith("sqlite"):
        Path(sa.make_url(db_url).database).touch()  # an empty file, zero bytes
    assert current_revision(db_url) is None
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        names = set(sa.inspect(engine).get_table_names())
        assert GATEWAY_TABLES <= names and "alembic_version" in names
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == [], f"migration and persea.db.schema disagree: {diff}"
        uniques = {tuple(u["column_names"])
                   for u in sa.inspect(engine).get_unique_constraints("usage_records")}
        assert ("request_id",) in uniques  # the idempotency key is enforced by the database
    finally:
        engine.dispose()
    assert current_revision(db_url) == head_revision()


def test_upgrade_twice_is_harmless_and_keeps_data(migrated_url):
    engine = make_engine(migrated_url)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with engine.begin() as conn:
        conn.execute(plans.insert().values(id="plan_1", name="p", allow_logprobs=False,
                                           max_top_logprobs=0, created_at=now, updated_at=now))
    upgrade(migrated_url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(plans.c.name)).scalars().all() == ["p"]
    engine.dispose()
    assert current_revision(migrated_url) == head_revision()


@pytest.mark.parametrize("amount", ["0.000000000001", "9000000.123456789012", "0.1", "0"])
def test_money_round_trips_exactly(migrated_url, amount):
    engine = make_engine(migrated_url)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with engine.begin() as conn:
        conn.execute(plans.insert().values(id="plan_1", name="p", allow_logprobs=False,
                                           max_top_logprobs=0, created_at=now, updated_at=now,
                                           monthly_budget=Decimal(amount)))
        # arithmetic inside SQL stays exact too: 0.1 added ten times is exactly 1 more
        for _ in range(10):
            conn.execute(plans.update().values(
                monthly_budget=plans.c.monthly_budget + sa.literal(Decimal("0.1"),
                                                                    plans.c.monthly_budget.type)))
        got = conn.execute(sa.select(plans.c.monthly_budget)).scalar_one()
    engine.dispose()
    assert isinstance(got, Decimal)
    assert got == Decimal(amount) + 1


def test_money_refuses_float_and_excess_precision(migrated_url):
    engine = make_engine(migrated_url)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    row = dict(id="plan_1", name="p", allow_logprobs=False, max_top_logprobs=0,
               created_at=now, updated_at=now)
    try:
        for bad in (0.1, Decimal("0.0000000000001")):
            with pytest.raises(sa.exc.StatementError):
                with engine.begin() as conn:
                    conn.execute(plans.insert().values(**row, monthly_budget=bad))
    finally:
        engine.dispose()


def test_sqlite_uses_wal_and_a_busy_timeout(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    engine.dispose()


def test_sqlite_commits_wait_for_fsync_unless_the_url_says_otherwise(tmp_path):
    """FULL (2) by default; `?synchronous=normal` (1) only when asked for; anything else is
    refused by name."""
    from persea.errors import PerseaError

    for query, expected in (("", 2), ("?synchronous=full", 2), ("?synchronous=normal", 1)):
        engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}{query}")
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == expected
        engine.dispose()
    with pytest.raises(PerseaError, match="synchronous='off'"):
        make_engine(f"sqlite:///{tmp_path / 'x.db'}?synchronous=off")
