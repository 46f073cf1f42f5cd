"""persea's database: one engine factory and one migration entry point.

SQLite is the embedded default (a file readable by its owner only, WAL journal, a busy
timeout, every write transaction taken with `BEGIN IMMEDIATE` so that concurrent writers
queue instead of failing); PostgreSQL is used when given a `postgresql+psycopg://` URL. The
schema lives in `persea.db.schema`; migrations ship inside the package
(`persea/db/migrations`) and run programmatically through `upgrade(url)`, so an installed
persea can migrate its own database.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from persea.errors import PerseaError

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30.0
READ_ONLY = {"persea_read": True}  # execution option: a read-only transaction (SQLite: DEFERRED)


def default_url(directory: Path | str = ".") -> str:
    """The embedded default: `persea.db` in `directory`."""
    return f"sqlite:///{(Path(directory) / 'persea.db').resolve()}"


def resolve_url(db: str | None = None, root: Path | None = None,
                configured: str | None = None) -> str:
    """Which database a command uses: `db` (the --db flag) or $PERSEA_DB first; else the
    `configured` URL of a project at `root` (a relative SQLite path counts from `root`) or
    its `persea.db`; else `persea.db` in the current directory. Reading the project file is
    the caller's job (`persea.project.database_url`)."""
    db = db or os.environ.get("PERSEA_DB")
    if db:
        return db
    if root is None:
        return default_url(".")
    if configured is None:
        return default_url(root)
    url = sa.make_url(configured)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
            and not Path(url.database).is_absolute():
        url = url.set(database=str((Path(root) / url.database).resolve()))
    return url.render_as_string(hide_password=False)


SQLITE_SYNCHRONOUS = ("full", "normal")
DB_FILE_MODE = 0o600  # the database holds API key hashes and invoices


def _create_private(path: str) -> None:
    """Create an SQLite database file that does not exist yet with mode 0600, before SQLite
    would create it with the umask's (usually 0644, readable by every local user). SQLite
    gives the -wal and -shm files it creates later the database file's mode. An existing
    file keeps its mode; a missing directory is left to SQLite's own error."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DB_FILE_MODE)
    except OSError:  # it exists already, or SQLite will say why it cannot be opened
        return
    os.close(fd)


def make_engine(url: str, **kwargs) -> sa.Engine:
    """An engine for `url`, set up for many threads: WAL, busy timeout and immediate
    write transactions on SQLite; pre-ping on PostgreSQL.

    SQLite commits are durable against a power cut by default (`synchronous=FULL`: every
    commit waits for an fsync). `?synchronous=normal` on the URL is the explicit, weaker
    choice: under WAL a commit then survives a killed process but the last transactions
    can be lost on a power cut or OS crash (fsync only at checkpoints); see docs/billing.md
    before using it for money."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return sa.create_engine(url, **kwargs)
    synchronous = parsed.query.get("synchronous", "full")
    if synchronous not in SQLITE_SYNCHRONOUS:
        raise PerseaError(f"database URL: synchronous={synchronous!r}; expected one of "
                          f"{', '.join(SQLITE_SYNCHRONOUS)}")
    parsed = parsed.difference_update_query(["synchronous"])
    kwargs.setdefault("connect_args", {"timeout": SQLITE_BUSY_TIMEOUT_S,
                                       "check_same_thread": False})
    engine = sa.create_engine(parsed, **kwargs)
    file_db = parsed.database not in (None, "", ":memory:") \
        and not parsed.database.startswith("file:") and "uri" not in parsed.query

    @event.listens_for(engine, "do_connect")
    def _before_connect(_dialect, _record, _cargs, _cparams):
        if file_db:
            _create_private(parsed.database)
        # None: SQLAlchemy goes on to connect as usual

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # the driver stops issuing BEGIN; we do, below
        cur = dbapi_conn.cursor()
        if parsed.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # IMMEDIATE takes the write lock up front: a read that later writes can otherwise
        # deadlock with another writer and fail at once with "database is locked".
        read = conn.get_execution_options().get("persea_read", False)
        conn.exec_driver_sql("BEGIN DEFERRED" if read else "BEGIN IMMEDIATE")

    return engine


def upgrade(url: str | sa.Engine, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (default: the newest). Harmless when it is
    already there; on PostgreSQL an advisory lock keeps two starting replicas apart."""
    from alembic import command
    from alembic.config import Config

    engine = url if isinstance(url, sa.Engine) else make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7351827364)")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        if engine is not url:
            engine.dispose()


def current_revision(url: str | sa.Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    engine = url if isinstance(url, sa.Engine) else make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        if engine is not url:
            engine.dispose()
