"""Invoices: one line per model and price, a total exactly equal to the sum of the usage
records, months split at midnight UTC on the first."""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from persea.db.schema import usage_records
from persea.accounts import Price
from persea.accounts.billing import invoice, usage

# prices chosen so float arithmetic would drift: 0.1, 0.2, 0.3 have no exact binary form
PRICES = {"small": Price(Decimal("0.1"), Decimal("0.3")),
          "large": Price(Decimal("2.5"), Decimal("10.000001"))}


@pytest.fixture
def caller(accounts):
    accounts.admin.create_plan("pro", PRICES, monthly_budget=Decimal("1000"))
    accounts.admin.create_org("acme", "pro")
    accounts.admin.create_org("other", "pro")
    return accounts.authenticate(accounts.admin.create_key("acme").raw_key)


def _request(accounts, caller, model, prompt, completion, request_id):
    res = accounts.reserve(caller, model, prompt, completion + 10, request_id)
    return accounts.settle(res, prompt, completion)


def test_invoice_total_is_the_exact_sum_of_usage_records(accounts, caller):
    rng = random.Random(0)
    for i in range(60):
        _request(accounts, caller, rng.choice(["small", "large"]), rng.randint(1, 3000),
                 rng.randint(0, 2000), f"r{i}")
    other = accounts.authenticate(accounts.admin.create_key("other").raw_key)
    _request(accounts, other, "small", 10, 10, "not-acme")
    failed = accounts.reserve(caller, "large", 100, 100, "backend-failed")
    accounts.release(failed)

    inv = invoice(accounts, "acme", "2026-03")
    with accounts.engine.connect() as conn:
        rows = conn.execute(sa.select(usage_records).where(
            usage_records.c.org_id == caller.org_id)).all()
    assert len(rows) == 60 and inv.requests == 60
    assert inv.total == sum((r.cost for r in rows), Decimal(0))
    assert inv.total == sum(((r.prompt_tokens * PRICES[r.model].input_per_mtok
                              + r.completion_tokens * PRICES[r.model].output_per_mtok)
                             / 1_000_000 for r in rows), Decimal(0))
    assert [x.model for x in inv.lines] == ["large", "small"]
    for line in inv.lines:
        mine = [r for r in rows if r.model == line.model]
        assert line.requests == len(mine)
        assert line.prompt_tokens == sum(r.prompt_tokens for r in mine)
        assert line.completion_tokens == sum(r.completion_tokens for r in mine)
        assert line.amount == line.input_cost + line.output_cost
        assert line.input_cost == line.prompt_tokens * line.input_per_mtok / 1_000_000
    assert accounts.balance(caller.org_id, "2026-03") == (inv.total, 0)
    doc = inv.to_json()
    assert Decimal(doc["total"]) == inv.total
    assert sum(Decimal(x["amount"]) for x in doc["lines"]) == inv.total
    assert json.loads(json.dumps(doc)) == doc
    assert doc["amount_due"] == str(inv.total.quantize(Decimal("0.01")))


def test_a_price_change_mid_month_gives_two_lines(accounts, caller):
    _request(accounts, caller, "small", 1_000_000, 0, "before")
    accounts.admin.update_plan("pro", prices={"small": Price(Decimal("0.2"), Decimal("0.3"))})
    caller = accounts.authenticate(accounts.admin.create_key("acme").raw_key)  # the new terms
    _request(accounts, caller, "small", 1_000_000, 0, "after")
    inv = invoice(accounts, "acme", "2026-03")
    assert [(x.model, x.input_per_mtok, x.amount) for x in inv.lines] == [
        ("small", Decimal("0.1"), Decimal("0.1")), ("small", Decimal("0.2"), Decimal("0.2"))]
    assert inv.total == Decimal("0.3")  # exactly, where 0.1 + 0.2 in floats is not


def test_month_boundary_is_midnight_utc(accounts, caller, clock):
    clock.now = datetime(2026, 1, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
    _request(accounts, caller, "small", 1_000_000, 0, "last-moment-of-january")
    clock.now = datetime(2026, 2, 1, 0, 0, 0, tzinfo=timezone.utc)
    _request(accounts, caller, "large", 1_000_000, 0, "first-moment-of-february")
    jan, feb = invoice(accounts, "acme", "2026-01"), invoice(accounts, "acme", "2026-02")
    assert [(x.model, x.amount) for x in jan.lines] == [("small", Decimal("0.1"))]
    assert [(x.model, x.amount) for x in feb.lines] == [("large", Decimal("2.5"))]
    assert invoice(accounts, "acme", "2026-03").lines == ()


def test_empty_month_and_readable_document(accounts, caller):
    empty = invoice(accounts, "acme", "2025-12")
    assert empty.total == 0 and empty.lines == () and "(no usage)" in empty.to_markdown()
    _request(accounts, caller, "large", 1234, 567, "one")
    text = invoice(accounts, "acme").to_markdown()
    assert "# Invoice: acme, 2026-03" in text and "| large | 2.50 / 10.000001 | 1 |" in text
    assert "Total: 0.008755000567 USD" in text and "Amount due: 0.01 USD" in text


def test_usage_summary_shows_held_money_and_what_is_left(accounts, caller):
    _request(accounts, caller, "large", 0, 1_000_000, "done")
    accounts.reserve(caller, "large", 0, 1_000_000, "in-flight")
    summary = usage(accounts, "acme")
    assert summary.invoice.total == Decimal("10.000001")
    assert summary.reserved == Decimal("10.000001")
    assert summary.left == Decimal("1000") - 2 * Decimal("10.000001")
