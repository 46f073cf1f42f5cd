"""The audit log: one row per admin action (who, what, on which target, details).

A row never holds a secret: `record` refuses details that look like an API key or its hash,
so a careless caller fails loudly instead of leaking one into a log that many people read.
"""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from persea.db import READ_ONLY
from persea.db.schema import audit_log

ACTIONS = ("org.created", "org.plan_changed", "key.created", "key.revoked", "plan.created",
           "plan.changed")
_SECRET_LIKE = re.compile(r"psk-|^[0-9a-f]{64}$")
_SECRET_FIELDS = {"key", "raw_key", "key_hash", "secret", "password", "token"}


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]


def default_actor() -> str:
    """Who is acting: $PERSEA_ACTOR, else the login name."""
    try:
        return os.environ.get("PERSEA_ACTOR") or getpass.getuser()
    except Exception:  # pragma: no cover - no login name in some containers
        return "unknown"


def _check_no_secret(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if str(k).lower() in _SECRET_FIELDS:
                raise ValueError(f"audit details may not hold a secret field ({where}.{k})")
            _check_no_secret(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_no_secret(v, f"{where}[{i}]")
    elif isinstance(value, str) and _SECRET_LIKE.search(value):
        raise ValueError(f"audit details may not hold key material ({where})")


def record(conn: sa.Connection, at: datetime, actor: str, action: str, target: str,
           details: dict[str, Any]) -> None:
    """Write one audit row inside the caller's transaction (so the action and its record
    commit together or not at all)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    _check_no_secret(details, "details")
    conn.execute(audit_log.insert().values(at=at, actor=actor, action=action, target=target,
                                           details=details))


def entries(engine: sa.Engine, target: str | None = None, limit: int = 100) -> list[AuditEntry]:
    """The newest audit rows first, optionally only those about `target`."""
    query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if target is not None:
        query = query.where(audit_log.c.target == target)
    with engine.connect().execution_options(**READ_ONLY) as conn:
        return [AuditEntry(r.id, r.at, r.actor, r.action, r.target, r.details)
                for r in conn.execute(query)]
