"""The admin commands: `persea orgs|keys|plans|usage|billing|audit`.

Each command is a thin wrapper over `persea.accounts` / `persea.accounts.billing`: parse
the flags, call one method, print a table. Every command takes `--db URL` (or $PERSEA_DB) or
`--project DIR` (the project's database), and migrates the database to the newest schema
before it starts, so a fresh directory just works.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import sqlalchemy as sa
import typer
from rich.table import Column, Table

from persea.accounts import Accounts
from persea.accounts import audit as audit_log
from persea.accounts.admin import UNSET
from persea.accounts.audit import default_actor
from persea.accounts.billing import invoice
from persea.accounts.billing import usage as month_usage
from persea.accounts.money import format_money, parse_amount, parse_month, parse_price
from persea.cli.output import wide_console
from persea.db import upgrade
from persea.errors import PerseaError
from persea.project import database_url

out = wide_console()
err = wide_console(stderr=True)

DbOpt = typer.Option(None, "--db", envvar="PERSEA_DB",
                     help="Database URL (sqlite:///FILE or postgresql+psycopg://...). "
                          "Default: the project's database, else ./persea.db.")
ProjectOpt = typer.Option(None, "--project", "-p",
                          help="Project directory or persea.yaml whose database to use.")
OrgOpt = typer.Option(..., "--org", help="Organisation name or id.")

orgs_app = typer.Typer(no_args_is_help=True, help="Organisations (tenants).")
keys_app = typer.Typer(no_args_is_help=True, help="API keys: create (shown once), list, revoke.")
plans_app = typer.Typer(no_args_is_help=True,
                        help="Plans: prices per model, rate limits, monthly budget.")
billing_app = typer.Typer(no_args_is_help=True, help="Invoices.")


def open_accounts(db: str | None, project: Path | None):
    """The accounts database the flags point at, migrated; PerseaError when unusable."""
    url = database_url(db, project)
    try:
        shown = sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        raise PerseaError(f"--db {url!r}: not a database URL; expected sqlite:///FILE or "
                          "postgresql+psycopg://USER@HOST/DB") from None
    try:
        upgrade(url)
    except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.NoSuchModuleError) as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise PerseaError(f"database {shown}: cannot open it ({reason})") from None
    return Accounts(url, actor=default_actor())


def _money(value) -> str:
    return "unlimited" if value is None else format_money(value)


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def _month(value: Optional[str]) -> Optional[str]:
    try:
        return None if value is None else parse_month(value)
    except ValueError as e:
        raise PerseaError(f"--month: {e}") from None


# -- orgs -------------------------------------------------------------------------------------

@orgs_app.command("create")
def orgs_create(name: str = typer.Argument(..., help="Organisation name."),
                plan: str = typer.Option(..., "--plan", help="The plan it is on."),
                db: Optional[str] = DbOpt, project: Optional[Path] = ProjectOpt):
    """Create an organisation on a plan."""
    org = open_accounts(db, project).admin.create_org(name, plan)
    out.print(f"created organisation {org.name} ({org.id}) on plan {org.plan}")


@orgs_app.command("list")
def orgs_list(db: Optional[str] = DbOpt, project: Optional[Path] = ProjectOpt):
    """List organisations."""
    table = Table("name", Column("id", no_wrap=True), "plan", "created")
    for org in open_accounts(db, project).admin.orgs():
        table.add_row(org.name, org.id, org.plan, _when(org.created_at))
    out.print(table)


# -- keys -------------------------------------------------------------------------------------

def parse_expiry(text: str, now: datetime) -> datetime:
    """`30d`, `12h`, `90m` from now, or an ISO date/time (UTC when no zone is given)."""
    m = re.fullmatch(r"\s*(\d+)\s*([dhm])\s*", text)
    if m:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[m.group(2)]
        return now + timedelta(**{unit: int(m.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise PerseaError(f"--expires {text!r}: expected a duration such as 30d, 12h, 90m or "
                          "a date such as 2026-12-31 or 2026-12-31T18:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@keys_app.command("create")
def keys_create(org: str = OrgOpt,
                name: str = typer.Option("", "--name", help="A label to tell keys apart."),
                expires: Optional[str] = typer.Option(
                    None, "--expires", help="30d, 12h, 90m, or a date/time (UTC)."),
                model: Optional[list[str]] = typer.Option(
                    None, "--model", help="Only this model (repeatable); default: every "
                                          "model of the plan."),
                db: Optional[str] = DbOpt, project: Optional[Path] = ProjectOpt):
    """Create an API key and print it ONCE (only its hash is stored)."""
    accounts = open_accounts(db, project)
    expires_at = parse_expiry(expires, accounts.clock()) if expires else None
    new = accounts.admin.create_key(org, name=name, expires_at=expires_at, models=model or None)
    k = new.info
    err.print(f"created key {k.id} for {org}; expires: {_when(k.expires_at)}; models: "
              f"{', '.join(k.allowed_models) if k.allowed_models else 'all of the plan'}")
    err.print("[yellow]the key is shown once and cannot be recovered; store it now:[/yellow]")
    print(new.raw_key)


@keys_app.command("list")
def keys_list(org: Optional[str] = typer.Option(None, "--org", help="Only this organisation."),
              db: Optional[str] = DbOpt, project: Optional[Path] = ProjectOpt):
    """List API keys (id, display prefix, limits and state; never the key)."""
    accounts = open_accounts(db, project)
    names = {o.id: o.name for o in accounts.admin.orgs()}
    now = accounts.clock()
    table = Table(Column("id", no_wrap=True), "org", "name", Column("prefix", no_wrap=True),
                  "models", Column("expires", no_wrap=True), Column("state", no_wrap=True))
    for k in accounts.admin.keys(org):
        state = ("revoked" if k.revoked_at else
                 "expired" if k.expires_at and k.expires_at <= now else "active")
        table.add_row(k.id, names.get(k.org_id, k.org_id), k.name, k.prefix + "…",
                      ", ".join(k.allowed_models) if k.allowed_models else "all",
                      k.expires_at.strftime("%Y-%m-%d") if k.expires_at else "-", state)
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key's id (see `persea keys list`)."),
                db: Optional[str] = DbOpt, project: Optional[Path] = ProjectOpt):
    """Revoke an API key."""
    key = open_accounts(db, project).admin.revoke_key(key_id)
    out.print(f"revoked {key.id} ({key.prefix}…)")


# -- plans ------------------------------------------------------------------------------------

def _prices(values: list[str] | None) -> dict:
    prices = {}
    for text in values or []:
        try:
            model, price = parse_price(text)
        except ValueError as e:
            raise PerseaError(f"--price: {e}") from None
        prices[model] = price
    return prices


def _budget(text: Optional[str]):
    if text is None or text.strip().lower() in ("none", "unlimited"):
        return None
    try:
        return parse_amount(text, "--budget")
    except ValueError as e:
        raise PerseaError(str(e)) from None


PriceOpt = typer.Option(None, "--price", help="MODEL=IN/OUT: money per million input/output "
                                              "tokens, e.g. persea-small=0.50/1.50 (repeatable).")


@plans_app.command("create")
def plans_create(name: str = typer.Argument(..., help="Plan name."),
                 price: Optional[list[str]] = PriceOpt,
                 rpm: Optional[int] = typer.Option(None, help="Requests per minute."),
                 tpm: Optional[int] = typer.Option(None, help="Tokens per minute."),
                 budget: Optional[str] = typer.Option(None, "--budget",
                                                      help="Monthly budget (money)."),
                 logprobs: int = typer.Option(0, "--logprobs", help="Allow logprobs, with at "
                                              "most this many top_logprobs (0: not allowed)."),
                 db: Optional[str] = DbOpt, project: Optional[Path] = ProjectOpt):
    """Create a plan."""
    prices = _prices(price)
    if not prices:
        raise PerseaError("a plan needs at least one --price MODEL=IN/OUT")
    plan = open_accounts(db, project).admin.create_plan(
        name, prices, rpm=rpm, tpm=tpm, monthly_budget=_budget(budget),
        allow_logprobs=logprobs > 0, max_top_logprobs=logprobs)
    out.print(f"created plan {plan.name}: {len(plan.prices)} model(s), monthly budget "
              f"{_money(plan.monthly_budget)}")


@plans_app.command("update")
def plans_update(name: str = typer.Argument(..., help="Plan name."),
                 price: Optional[list[str]] = PriceOpt,
                 drop_model: Optional[list[str]] = typer.Option(
                     None, "--drop-model", help="Stop selling this model (repeatable)."),
                 rpm: Optional[int] = typer.Option(None, help="Requests per minute (0: no limit)."),
                 tpm: Optional[int] = typer.Option(None, help="Tokens per minute (0: no limit)."),
                 budget: Optional[str] = typer.Option(None, "--budget",
                                                      help="Monthly budget, or 'none'."),
                 logprobs: Optional[int] = typer.Option(None, "--logprobs"),
                 db: Optional[str] = DbOpt, project: Optional[Path] = ProjectOpt):
    """Change a plan's prices, limits or budget (only what is given)."""
    unlimited_if_zero = lambda v: UNSET if v is None else (v or None)  # noqa: E731
    given = {"rpm": unlimited_if_zero(rpm), "tpm": unlimited_if_zero(tpm),
             "monthly_budget": UNSET if budget is None else _budget(budget),
             "allow_logprobs": UNSET if logprobs is None else logprobs > 0,
             "max_top_logprobs": UNSET if logprobs is None else logprobs}
    plan = open_accounts(db, project).admin.update_plan(name, prices=_prices(price),
                                                  drop_models=drop_model or (), **given)
    out.print(f"updated plan {plan.name}")


@plans_app.command("list")
def plans_list(db: Optional[str] = DbOpt, project: Optional[Path] = ProjectOpt):
    """List plans with their prices (per million tokens), limits and budget."""
    table = Table("plan", Column("model", no_wrap=True), *(
        Column(c, justify="right") for c in ("in/Mtok", "out/Mtok", "rpm", "tpm", "budget")),
        "logprobs")
    for plan in open_accounts(db, project).admin.plans():
        for i, (model, p) in enumerate(sorted(plan.prices.items())):
            first = i == 0
            table.add_row(plan.name if first else "", model, _money(p.input_per_mtok),
                          _money(p.output_per_mtok),
                          str(plan.rpm or "-") if first else "",
                          str(plan.tpm or "-") if first else "",
                          _money(plan.monthly_budget) if first else "",
                          (str(plan.max_top_logprobs) if plan.allow_logprobs else "no")
                          if first else "")
    out.print(table)


@plans_app.command("set")
def plans_set(plan: str = typer.Argument(..., help="The plan to put the organisation on."),
              org: str = OrgOpt, db: Optional[str] = DbOpt,
              project: Optional[Path] = ProjectOpt):
    """Put an organisation on a plan."""
    info = open_accounts(db, project).admin.set_org_plan(org, plan)
    out.print(f"organisation {info.name} is now on plan {info.plan}")


# -- usage, billing, audit -------------------------------------------------------------------

def usage(org: str = OrgOpt,
          month: Optional[str] = typer.Option(None, "--month", help="YYYY-MM (default: now)."),
          db: Optional[str] = DbOpt, project: Optional[Path] = ProjectOpt):
    """An organisation's usage in a month: per model, and against its budget."""
    summary = month_usage(open_accounts(db, project), org, _month(month))
    inv = summary.invoice
    table = Table("model", "requests", "prompt tokens", "completion tokens", "cost",
                  title=f"usage of {inv.org_name} in {inv.month} ({inv.currency})")
    for x in inv.lines:
        table.add_row(x.model, f"{x.requests:,}", f"{x.prompt_tokens:,}",
                      f"{x.completion_tokens:,}", _money(x.amount))
    out.print(table)
    out.print(f"spent {_money(inv.total)}, held for requests in flight "
              f"{_money(summary.reserved)}, budget {_money(summary.budget)}, left "
              f"{_money(summary.left)}")


@billing_app.command("invoice")
def billing_invoice(org: str = OrgOpt,
                    month: str = typer.Option(..., "--month", help="YYYY-MM"),
                    as_json: bool = typer.Option(False, "--json", help="JSON instead of Markdown."),
                    db: Optional[str] = DbOpt, project: Optional[Path] = ProjectOpt):
    """An organisation's invoice for a month: lines per model, the exact total."""
    inv = invoice(open_accounts(db, project), org, _month(month))
    print(json.dumps(inv.to_json(), indent=2) if as_json else inv.to_markdown(), end="\n")


def _describe(details: dict) -> str:
    """Audit details in short: for a change, only the fields that changed (before -> after)."""
    if set(details) == {"before", "after"}:
        before, after = details["before"], details["after"]
        return "; ".join(f"{k}: {json.dumps(before.get(k))} -> {json.dumps(after.get(k))}"
                         for k in sorted(set(before) | set(after))
                         if before.get(k) != after.get(k)) or "(no change)"
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(details.items()))


def audit(limit: int = typer.Option(50, help="How many of the newest entries."),
          target: Optional[str] = typer.Option(None, help="Only entries about this id/name."),
          db: Optional[str] = DbOpt, project: Optional[Path] = ProjectOpt):
    """The audit log of admin actions, newest first."""
    accounts = open_accounts(db, project)
    table = Table("when", "actor", "action", Column("target", no_wrap=True), "details")
    for e in audit_log.entries(accounts.engine, target, limit):
        table.add_row(_when(e.at), e.actor, e.action, e.target, _describe(e.details))
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add the admin commands to the `persea` app."""
    app.add_typer(orgs_app, name="orgs")
    app.add_typer(keys_app, name="keys")
    app.add_typer(plans_app, name="plans")
    app.add_typer(billing_app, name="billing")
    app.command("usage")(usage)
    app.command("audit")(audit)
