"""Gate records and the release check that sealing and serving call.

`persea gate` writes a gate record bound to the candidate's weight fingerprint: a file
`<project>/gates/<id>.json`, a row in `gate_records`, and, when the candidate is a model
directory, a copy `release-gate.json` inside it (so a directory served without its project
still carries its verdict; the fingerprint inside is checked against the weights, so a copy
beside other weights counts for nothing).

`require_release(project, model_dir, force, reason, who)` lets a checkpoint out only when a
passing gate record matches its current weights. Otherwise it raises `PerseaError`, unless
forced: a forced release needs a reason, and is recorded (who, why, which weights) in a
file and a `release_records` row, like every release.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path

from persea.db.schema import gate_records, release_records
from persea.errors import PerseaError
from persea.evaluate.records import write_to_database
from persea.models.fingerprint import fingerprint_model_dir
from persea.project import database_url, load_project

GATE_FILE = "release-gate.json"
RELEASE_LOG = "release-log.jsonl"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{_now().strftime('%Y%m%dT%H%M%S')}_{secrets.token_hex(3)}"


def _db_rows(url: str | None, table, row: dict, what: str) -> None:
    if url is not None:
        write_to_database(url, lambda conn: conn.execute(table.insert().values(**row)), what)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def write_gate_record(project, result, db_url: str | None) -> dict:
    """Record a gate verdict (file, database row, and a copy in the model directory)."""
    now = _now()
    record = {"id": _new_id("gate"), "created_at": now.isoformat(),
              "verdict": "passed" if result.passed else "failed", **result.to_dict()}
    _write_json(project.root / "gates" / f"{record['id']}.json", record)
    if result.model_dir:
        _write_json(Path(result.model_dir) / GATE_FILE, record)
    _db_rows(db_url, gate_records, {
        "id": record["id"], "candidate": result.candidate, "fingerprint": result.fingerprint,
        "verdict": record["verdict"], "policy": result.policy,
        "results": record["rules"], "created_at": now}, f"gate record {record['id']}")
    return record


def _load_project(project_or_none):
    if project_or_none is None:
        return None
    if hasattr(project_or_none, "spec"):
        return project_or_none
    return load_project(project_or_none)


def find_gate(project, model_dir: Path, fingerprint: str) -> dict | None:
    """The newest gate record for these weights, from the project's gates and the copy in
    the model directory."""
    paths = list((project.root / "gates").glob("*.json")) if project is not None else []
    paths.append(model_dir / GATE_FILE)
    found = []
    for p in paths:
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if rec.get("fingerprint") == fingerprint:
            found.append(rec)
    return max(found, key=lambda r: r.get("created_at", "")) if found else None


def find_release(project, model_dir: Path, fingerprint: str) -> dict | None:
    """The newest release record (forced or gated) for these weights, from the project's
    releases and the model directory's release log."""
    found = []
    for p in (project.root / "releases").glob("*.json") if project is not None else []:
        try:
            found.append(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    try:
        lines = (model_dir / RELEASE_LOG).read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    mine = [r for r in found if isinstance(r, dict) and r.get("fingerprint") == fingerprint]
    return max(mine, key=lambda r: r.get("created_at", "")) if mine else None


def require_release(project_or_none, model_dir, force: bool = False,
                    reason: str | None = None, who: str | None = None,
                    db: str | None = None) -> dict:
    """Allow `model_dir` out only with a passing gate for its current weights, or forced
    (with a reason). Returns the release record; raises PerseaError when refused."""
    project = _load_project(project_or_none)
    model_dir = Path(model_dir).expanduser()
    if not (model_dir / "config.json").is_file():
        raise PerseaError(f"{model_dir}: not a model directory (no config.json)")
    fingerprint = fingerprint_model_dir(model_dir)
    gate = find_gate(project, model_dir, fingerprint)
    gated = gate is not None and gate.get("verdict") == "passed"
    if not gated and not force:
        why = ("its newest gate failed" if gate is not None else
               "no release gate was run on these weights")
        raise PerseaError(
            f"{model_dir} is not released: {why} (fingerprint {fingerprint[:12]}); run "
            "`persea eval` and `persea gate --project P`, or force it with --force-release "
            "--reason '...' (the forced release is recorded)")
    if not gated and not (reason and reason.strip()):
        raise PerseaError(f"{model_dir}: forcing the release of an ungated checkpoint needs "
                          "--reason (it is recorded with who forced it)")
    now = _now()
    record = {"id": _new_id("release"), "fingerprint": fingerprint,
              "model_path": str(model_dir.resolve()), "forced": not gated,
              "who": who or getpass.getuser(), "reason": reason,
              "gate_id": gate["id"] if gated else None, "created_at": now.isoformat()}
    if project is not None:
        _write_json(project.root / "releases" / f"{record['id']}.json", record)
    else:
        try:
            with open(model_dir / RELEASE_LOG, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
        except OSError:
            pass  # a read-only model directory: the database row below still records it
    url = database_url(db, project)
    _db_rows(url, release_records, {**record, "created_at": now},
             f"release record {record['id']}")
    return record
