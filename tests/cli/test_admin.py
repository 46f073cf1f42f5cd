"""The admin CLI end to end, through `persea.cli.main` as a person runs it: plan, org and key
created, an invoice as JSON, bad input as one red line with exit status 2."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest
import yaml

from persea.accounts import Accounts, InvalidKey
from tests.cli_helpers import run_cli

KEY = re.compile(r"^psk-[A-Za-z0-9_-]{43}$", re.M)


@pytest.fixture
def persea(monkeypatch, capsys):
    """Run `persea ARGS...`; returns (exit status, stdout, stderr)."""
    return lambda *args: run_cli(capsys, monkeypatch, *args)


def test_plan_org_key_and_invoice_json(persea, db_url):
    db = ["--db", db_url]
    assert persea("plans", "create", "pro", "--price", "small=0.10/0.30",
                  "--price", "large=2.5/10", "--budget", "50", "--rpm", "60", *db)[0] == 0
    code, text, _ = persea("orgs", "create", "acme", "--plan", "pro", *db)
    assert code == 0 and "created organisation acme" in text
    code, text, notes = persea("keys", "create", "--org", "acme", "--model", "small",
                               "--expires", "30d", *db)
    assert code == 0 and "shown once" in notes
    raw = KEY.search(text).group(0)

    accounts = Accounts(db_url)
    try:
        caller = accounts.authenticate(raw)
        assert caller.allowed_models == {"small"} and caller.plan.monthly_budget == 50
        for i, (p, c) in enumerate([(1000, 200), (333, 777), (1, 1)]):
            res = accounts.reserve(caller, "small", p, 1000, f"r{i}")
            accounts.settle(res, p, c)
        key_id = accounts.admin.keys("acme")[0].id
    finally:
        accounts.close()

    code, text, _ = persea("billing", "invoice", "--org", "acme", "--month",
                           caller_month(), "--json", *db)
    assert code == 0
    doc = json.loads(text)
    expected = (Decimal(1334) * Decimal("0.10") + Decimal(978) * Decimal("0.30")) / 10**6
    assert Decimal(doc["total"]) == expected
    assert [(x["model"], x["requests"]) for x in doc["lines"]] == [("small", 3)]
    code, text, _ = persea("billing", "invoice", "--org", "acme", "--month", caller_month(),
                           *db)
    assert code == 0 and "# Invoice: acme" in text and "| small |" in text

    code, text, _ = persea("usage", "--org", "acme", *db)
    assert code == 0 and "budget 50.00" in text
    assert persea("keys", "revoke", key_id, *db)[0] == 0
    code, text, _ = persea("keys", "list", "--org", "acme", *db)
    assert "revoked" in text and raw not in text
    code, text, _ = persea("audit", *db)
    assert code == 0 and "key.revoked" in text and raw not in text
    accounts = Accounts(db_url)
    try:
        with pytest.raises(InvalidKey):
            accounts.authenticate(raw)
    finally:
        accounts.close()


def caller_month() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m")


@pytest.mark.parametrize("args, message", [
    (["billing", "invoice", "--org", "ghost", "--month", "2026-01"], "no organisation 'ghost'"),
    (["billing", "invoice", "--org", "acme", "--month", "2026-13"], "--month: month '2026-13'"),
    (["billing", "invoice", "--org", "acme", "--month", "Jan"], "expected YYYY-MM"),
    (["plans", "create", "x", "--price", "small=1"], "expected MODEL=IN/OUT"),
    (["plans", "create", "x", "--price", "small=0.1/abc"], "'abc' is not a number"),
    (["plans", "create", "x", "--price", "small=-1/1"], "must be a number >= 0"),
    (["plans", "create", "x", "--price", "m=1/1", "--budget", "lots"], "--budget"),
    (["orgs", "create", "beta", "--plan", "gold"], "no plan named 'gold'"),
    (["keys", "create", "--org", "acme", "--expires", "soon"], "--expires 'soon'"),
    (["keys", "create", "--org", "acme", "--model", "huge"], "not sold on plan 'pro'"),
    (["keys", "revoke", "key_nope"], "no API key with id 'key_nope'"),
    (["usage", "--org", "acme", "--db", "nonsense"], "not a database URL"),
])
def test_bad_input_is_one_red_line_and_exit_2(persea, tmp_path, args, message):
    db = ["--db", f"sqlite:///{tmp_path / 'p.db'}"]
    persea("plans", "create", "pro", "--price", "small=1/2", *db)
    persea("orgs", "create", "acme", "--plan", "pro", *db)
    code, text, err = persea(*args, *([] if "--db" in args else db))
    assert code == 2, (text, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert "Traceback" not in err + text


def test_unreachable_database_is_one_line(persea):
    code, _, err = persea("orgs", "list", "--db", "postgresql+psycopg://nobody@127.0.0.1:1/x")
    assert code == 2 and "cannot open it" in err and len(err.strip().splitlines()) == 1


def test_database_comes_from_flag_env_or_project(persea, tmp_path, monkeypatch):
    project = tmp_path / "proj"
    project.mkdir()
    spec = {"name": "p", "teachers": [{"name": "a", "builtin": "qwen3-toy"}]}
    (project / "persea.yaml").write_text(yaml.safe_dump(spec))
    assert persea("plans", "create", "pro", "--price", "m=1/1", "-p", str(project))[0] == 0
    assert (project / "persea.db").is_file()  # the project's default database

    spec["database"] = {"url": "sqlite:///data/gateway.db"}  # relative to the project
    (project / "data").mkdir()
    (project / "persea.yaml").write_text(yaml.safe_dump(spec))
    assert persea("plans", "create", "pro", "--price", "m=1/1", "-p", str(project))[0] == 0
    assert (project / "data" / "gateway.db").is_file()

    monkeypatch.setenv("PERSEA_DB", f"sqlite:///{tmp_path / 'env.db'}")
    assert persea("plans", "create", "pro", "--price", "m=1/1")[0] == 0
    assert (tmp_path / "env.db").is_file()
    code, _, err = persea("plans", "create", "pro", "--price", "m=1/1")
    assert code == 2 and "already exists" in err
