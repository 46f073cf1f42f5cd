"""Invoices and usage summaries, computed from the usage records and nothing else.

An invoice covers one organisation and one calendar month (UTC). It has one line per model
and price (a price changed mid-month gives that model two lines, each at the price actually
charged), and its `total` is exactly the sum of the month's usage records: money stays
`Decimal` from the database to the JSON, which writes amounts as decimal strings. The
`amount_due` is that total rounded half-up to cents, the one rounding there is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

import sqlalchemy as sa

from persea.accounts.money import CURRENCY, format_money, money_json, month_of
from persea.accounts.service import Accounts
from persea.db import READ_ONLY
from persea.db.schema import usage_records

CENT = Decimal("0.01")


@dataclass(frozen=True)
class InvoiceLine:
    model: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    requests: int
    prompt_tokens: int
    completion_tokens: int
    input_cost: Decimal
    output_cost: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Invoice:
    org_id: str
    org_name: str
    plan: str
    month: str
    lines: tuple[InvoiceLine, ...]
    total: Decimal  # exact: the sum of the month's usage records
    generated_at: datetime
    currency: str = CURRENCY

    @property
    def amount_due(self) -> Decimal:
        return self.total.quantize(CENT, rounding=ROUND_HALF_UP)

    @property
    def requests(self) -> int:
        return sum(line.requests for line in self.lines)

    def to_json(self) -> dict:
        """Machine-readable: every amount an exact decimal string."""
        return {
            "org": {"id": self.org_id, "name": self.org_name}, "plan": self.plan,
            "month": self.month, "currency": self.currency,
            "lines": [{"model": x.model, "input_per_mtok": money_json(x.input_per_mtok),
                       "output_per_mtok": money_json(x.output_per_mtok),
                       "requests": x.requests, "prompt_tokens": x.prompt_tokens,
                       "completion_tokens": x.completion_tokens,
                       "input_cost": money_json(x.input_cost),
                       "output_cost": money_json(x.output_cost),
                       "amount": money_json(x.amount)} for x in self.lines],
            "requests": self.requests, "total": money_json(self.total),
            "amount_due": money_json(self.amount_due),
            "generated_at": self.generated_at.isoformat(),
        }

    def to_markdown(self) -> str:
        """A readable invoice document (Markdown)."""
        rows = [f"# Invoice: {self.org_name}, {self.month}", "",
                f"- organisation: {self.org_name} (`{self.org_id}`)",
                f"- plan: {self.plan}",
                f"- period: {self.month} (calendar month, UTC)",
                f"- currency: {self.currency}; prices per million tokens", "",
                "| model | price in / out | requests | prompt tokens | completion tokens "
                "| input | output | amount |",
                "|---|---|--:|--:|--:|--:|--:|--:|"]
        for x in self.lines:
            rows.append(f"| {x.model} | {format_money(x.input_per_mtok)} / "
                        f"{format_money(x.output_per_mtok)} | {x.requests:,} | "
                        f"{x.prompt_tokens:,} | {x.completion_tokens:,} | "
                        f"{format_money(x.input_cost)} | {format_money(x.output_cost)} | "
                        f"{format_money(x.amount)} |")
        if not self.lines:
            rows.append("| (no usage) | | 0 | 0 | 0 | 0.00 | 0.00 | 0.00 |")
        rows += ["", f"**Total: {format_money(self.total)} {self.currency}** (exact sum of "
                 f"{self.requests:,} usage records)", "",
                 f"**Amount due: {format_money(self.amount_due)} {self.currency}** (rounded "
                 "half-up to cents)", "",
                 f"_generated {self.generated_at.isoformat(timespec='seconds')}_"]
        return "\n".join(rows) + "\n"


def invoice(accounts: Accounts, org: str, month: str | None = None) -> Invoice:
    """The invoice of `org` (name or id) for `month` (YYYY-MM; default: this month)."""
    info = accounts.admin.org(org)
    month = month or month_of(accounts.clock())
    u = usage_records.c
    query = (sa.select(u.model, u.input_per_mtok, u.output_per_mtok,
                       sa.func.count().label("requests"),
                       sa.func.sum(u.prompt_tokens).label("prompt_tokens"),
                       sa.func.sum(u.completion_tokens).label("completion_tokens"),
                       sa.func.sum(u.input_cost).label("input_cost"),
                       sa.func.sum(u.output_cost).label("output_cost"),
                       sa.func.sum(u.cost).label("amount"))
             .where(u.org_id == info.id, u.month == month)
             .group_by(u.model, u.input_per_mtok, u.output_per_mtok)
             .order_by(u.model, u.input_per_mtok, u.output_per_mtok))
    with accounts.engine.connect().execution_options(**READ_ONLY) as conn:
        lines = tuple(InvoiceLine(r.model, r.input_per_mtok, r.output_per_mtok, r.requests,
                                  int(r.prompt_tokens), int(r.completion_tokens),
                                  r.input_cost, r.output_cost, r.amount)
                      for r in conn.execute(query))
    total = sum((x.amount for x in lines), Decimal(0))
    return Invoice(info.id, info.name, info.plan, month, lines, total, accounts.clock())


@dataclass(frozen=True)
class UsageSummary:
    """An org's month so far: the invoice lines plus what is held and the budget."""

    invoice: Invoice
    reserved: Decimal
    budget: Decimal | None

    @property
    def left(self) -> Decimal | None:
        if self.budget is None:
            return None
        return max(Decimal(0), self.budget - self.invoice.total - self.reserved)


def usage(accounts: Accounts, org: str, month: str | None = None) -> UsageSummary:
    inv = invoice(accounts, org, month)
    _, reserved = accounts.balance(inv.org_id, inv.month)
    return UsageSummary(inv, reserved, accounts.admin.plan(inv.plan).monthly_budget)
