"""Admin operations on accounts: plans, organisations (tenants) and API keys.

`Accounts` (persea.accounts.service) holds one as `accounts.admin`. Every change writes one
audit row in the same transaction, never holding a secret; bad input raises `PerseaError`
with a one-line message for a person (the CLI prints it in red). A raw API key exists only
in the `NewKey` that `create_key` returns: the database keeps its SHA-256 and a display
prefix.
"""

from __future__ import annotations

import re
import secrets
from base64 import urlsafe_b64encode
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Callable, Iterable, Mapping

import sqlalchemy as sa

from persea.accounts import audit
from persea.accounts.money import PRICE_PLACES, Price, money_json, parse_amount
from persea.accounts.types import KEY_PREFIX, PlanTerms, hash_key, load_plan, new_id
from persea.db import READ_ONLY
from persea.db.schema import api_keys, orgs, plan_prices, plans
from persea.errors import PerseaError

KEY_BYTES = 32  # 256 random bits from `secrets`
DISPLAY_CHARS = 4  # random characters kept for display: 24 of the 256 bits, not a secret
MAX_TOP_LOGPROBS = 20
MAX_PER_MINUTE = 2**31 - 1  # rpm and tpm are 32-bit INTEGER columns on PostgreSQL
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
UNSET: object = object()


@dataclass(frozen=True)
class OrgInfo:
    id: str
    name: str
    plan: str
    created_at: datetime


@dataclass(frozen=True)
class KeyInfo:
    id: str
    org_id: str
    name: str
    prefix: str  # e.g. "psk-AbCd", for telling keys apart; not enough to use one
    allowed_models: tuple[str, ...] | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class NewKey:
    """A key just created. `raw_key` is shown once and stored nowhere; repr hides it."""

    info: KeyInfo
    raw_key: str = field(repr=False)


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise PerseaError(f"{kind} name {name!r}: expected 1-64 letters, digits, '.', '_' or "
                          "'-', starting with a letter or digit")
    return name


def _check_limit(what: str, value: int | None) -> int | None:
    if value is not None and (not isinstance(value, int) or not 1 <= value <= MAX_PER_MINUTE):
        raise PerseaError(f"{what} {value!r}: expected a whole number from 1 to "
                          f"{MAX_PER_MINUTE} (or none: unlimited)")
    return value


def _check_prices(prices: Mapping[str, Price]) -> dict[str, Price]:
    checked = {}
    for model, price in prices.items():
        if not model or len(model) > 200:
            raise PerseaError(f"model name {model!r}: expected 1-200 characters")
        try:
            checked[model] = Price(
                parse_amount(price.input_per_mtok, f"{model} input price", PRICE_PLACES),
                parse_amount(price.output_per_mtok, f"{model} output price", PRICE_PLACES))
        except ValueError as err:
            raise PerseaError(str(err)) from None
    return checked


def _price_details(prices: Mapping[str, Price]) -> dict[str, str]:
    return {m: f"{money_json(p.input_per_mtok)}/{money_json(p.output_per_mtok)}"
            for m, p in sorted(prices.items())}


def _key_info(row) -> KeyInfo:
    models = tuple(row.allowed_models) if row.allowed_models is not None else None
    return KeyInfo(row.id, row.org_id, row.name, row.prefix, models, row.created_at,
                   row.expires_at, row.revoked_at)


class AccountAdmin:
    """Plans, organisations and keys in the accounts database behind `engine`.

    `clock` gives the current aware UTC time, `actor` who acts (audit rows name it unless a
    call names another), and `changed` is called after a change that cached authentications
    must not outlive (a revoked key, an org on another plan)."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], datetime], actor: str,
                 changed: Callable[[], None] = lambda: None):
        self.engine = engine
        self.clock = clock
        self.actor = actor
        self._forget_cached = changed

    def _read(self) -> sa.Connection:
        return self.engine.connect().execution_options(**READ_ONLY)

    # -- plans ----------------------------------------------------------------------------

    def create_plan(self, name: str, prices: Mapping[str, Price], *, rpm: int | None = None,
                    tpm: int | None = None, monthly_budget: Decimal | None = None,
                    allow_logprobs: bool = False, max_top_logprobs: int = 0,
                    actor: str | None = None) -> PlanTerms:
        """A new plan: per-model prices (money per million tokens), limits and a budget."""
        _check_name("plan", name)
        terms = self._checked_terms(name, _check_prices(prices), rpm, tpm, monthly_budget,
                                    allow_logprobs, max_top_logprobs)
        now = self.clock()
        plan_id = new_id("plan")
        with self.engine.begin() as conn:
            if conn.execute(sa.select(plans.c.id).where(plans.c.name == name)).first():
                raise PerseaError(f"plan {name!r} already exists; change it with "
                                  "`persea plans update`")
            conn.execute(plans.insert().values(
                id=plan_id, name=name, rpm=rpm, tpm=tpm, monthly_budget=terms.monthly_budget,
                allow_logprobs=allow_logprobs, max_top_logprobs=terms.max_top_logprobs,
                created_at=now, updated_at=now))
            self._write_prices(conn, plan_id, terms.prices)
            audit.record(conn, now, actor or self.actor, "plan.created", name,
                         self._plan_details(terms))
        return terms

    def update_plan(self, name: str, *, prices: Mapping[str, Price] | None = None,
                    drop_models: Iterable[str] = (), rpm=UNSET, tpm=UNSET,
                    monthly_budget=UNSET, allow_logprobs=UNSET, max_top_logprobs=UNSET,
                    actor: str | None = None) -> PlanTerms:
        """Change a plan: `prices` adds or replaces those models' prices, `drop_models` stops
        selling models; other terms change only when given. Usage already recorded keeps the
        prices it was charged at."""
        now = self.clock()
        with self.engine.begin() as conn:
            plan_id = self._plan_id(conn, name)
            old = load_plan(conn, plan_id)
            new_prices = dict(old.prices)
            for model in drop_models:
                if model not in new_prices:
                    raise PerseaError(f"plan {name!r} does not sell model {model!r}")
                del new_prices[model]
            new_prices.update(_check_prices(prices or {}))
            given = lambda v, old_v: old_v if v is UNSET else v  # noqa: E731
            terms = self._checked_terms(
                name, new_prices, given(rpm, old.rpm), given(tpm, old.tpm),
                given(monthly_budget, old.monthly_budget),
                given(allow_logprobs, old.allow_logprobs),
                given(max_top_logprobs, old.max_top_logprobs))
            conn.execute(plans.update().where(plans.c.id == plan_id).values(
                rpm=terms.rpm, tpm=terms.tpm, monthly_budget=terms.monthly_budget,
                allow_logprobs=terms.allow_logprobs, max_top_logprobs=terms.max_top_logprobs,
                updated_at=now))
            conn.execute(plan_prices.delete().where(plan_prices.c.plan_id == plan_id))
            self._write_prices(conn, plan_id, terms.prices)
            audit.record(conn, now, actor or self.actor, "plan.changed", name,
                         {"before": self._plan_details(old),
                          "after": self._plan_details(terms)})
        self._forget_cached()
        return terms

    def plan(self, name: str) -> PlanTerms:
        with self._read() as conn:
            return load_plan(conn, self._plan_id(conn, name))

    def plans(self) -> list[PlanTerms]:
        with self._read() as conn:
            ids = conn.execute(sa.select(plans.c.id).order_by(plans.c.name)).scalars().all()
            return [load_plan(conn, i) for i in ids]

    @staticmethod
    def _checked_terms(name, prices, rpm, tpm, budget, allow_logprobs, max_top) -> PlanTerms:
        _check_limit("rpm", rpm)
        _check_limit("tpm", tpm)
        if budget is not None:
            try:
                budget = parse_amount(budget, "monthly budget")
            except ValueError as err:
                raise PerseaError(str(err)) from None
        if not isinstance(max_top, int) or not 0 <= max_top <= MAX_TOP_LOGPROBS:
            raise PerseaError(f"max_top_logprobs {max_top!r}: expected 0 to {MAX_TOP_LOGPROBS}")
        return PlanTerms(name, prices, rpm, tpm, budget, bool(allow_logprobs), max_top)

    @staticmethod
    def _write_prices(conn: sa.Connection, plan_id: str, prices: Mapping[str, Price]) -> None:
        if prices:
            conn.execute(plan_prices.insert(), [
                {"plan_id": plan_id, "model": m, "input_per_mtok": p.input_per_mtok,
                 "output_per_mtok": p.output_per_mtok} for m, p in prices.items()])

    @staticmethod
    def _plan_details(terms: PlanTerms) -> dict:
        budget = terms.monthly_budget
        return {"prices": _price_details(terms.prices), "rpm": terms.rpm, "tpm": terms.tpm,
                "monthly_budget": None if budget is None else money_json(budget),
                "allow_logprobs": terms.allow_logprobs,
                "max_top_logprobs": terms.max_top_logprobs}

    @staticmethod
    def _plan_id(conn: sa.Connection, name: str) -> str:
        plan_id = conn.execute(sa.select(plans.c.id).where(plans.c.name == name)).scalar()
        if plan_id is None:
            known = conn.execute(sa.select(plans.c.name).order_by(plans.c.name)).scalars().all()
            raise PerseaError(f"no plan named {name!r}; plans: {', '.join(known) or 'none yet'}")
        return plan_id

    # -- organisations --------------------------------------------------------------------

    def create_org(self, name: str, plan: str, actor: str | None = None) -> OrgInfo:
        """A new organisation (tenant) on `plan`."""
        _check_name("organisation", name)
        now = self.clock()
        with self.engine.begin() as conn:
            plan_id = self._plan_id(conn, plan)
            if conn.execute(sa.select(orgs.c.id).where(orgs.c.name == name)).first():
                raise PerseaError(f"organisation {name!r} already exists")
            org = OrgInfo(new_id("org"), name, plan, now)
            conn.execute(orgs.insert().values(id=org.id, name=name, plan_id=plan_id,
                                              created_at=now))
            audit.record(conn, now, actor or self.actor, "org.created", org.id,
                         {"name": name, "plan": plan})
        return org

    def set_org_plan(self, org: str, plan: str, actor: str | None = None) -> OrgInfo:
        """Move an organisation to another plan (its budget and prices apply at once)."""
        now = self.clock()
        with self.engine.begin() as conn:
            info = self._org(conn, org)
            conn.execute(orgs.update().where(orgs.c.id == info.id)
                         .values(plan_id=self._plan_id(conn, plan)))
            audit.record(conn, now, actor or self.actor, "org.plan_changed", info.id,
                         {"name": info.name, "from": info.plan, "to": plan})
        self._forget_cached()
        return OrgInfo(info.id, info.name, plan, info.created_at)

    def org(self, name_or_id: str) -> OrgInfo:
        """An organisation by name or id; PerseaError naming the known ones otherwise."""
        with self._read() as conn:
            return self._org(conn, name_or_id)

    def orgs(self) -> list[OrgInfo]:
        with self._read() as conn:
            rows = conn.execute(self._org_query().order_by(orgs.c.name)).all()
        return [OrgInfo(r.id, r.name, r.plan, r.created_at) for r in rows]

    @staticmethod
    def _org_query() -> sa.Select:
        return (sa.select(orgs.c.id, orgs.c.name, plans.c.name.label("plan"), orgs.c.created_at)
                .join(plans, plans.c.id == orgs.c.plan_id))

    def _org(self, conn: sa.Connection, name_or_id: str) -> OrgInfo:
        row = conn.execute(self._org_query().where(
            sa.or_(orgs.c.name == name_or_id, orgs.c.id == name_or_id))).first()
        if row is None:
            known = conn.execute(sa.select(orgs.c.name).order_by(orgs.c.name)
                                 .limit(20)).scalars().all()
            raise PerseaError(f"no organisation {name_or_id!r}; known: "
                              f"{', '.join(known) or 'none yet (persea orgs create NAME)'}")
        return OrgInfo(row.id, row.name, row.plan, row.created_at)

    # -- API keys -------------------------------------------------------------------------

    def create_key(self, org: str, *, name: str = "", expires_at: datetime | None = None,
                   models: Iterable[str] | None = None, actor: str | None = None) -> NewKey:
        """A new API key for `org`: `psk-` + base64url of 32 random bytes, returned once.
        `expires_at` (aware) ends it; `models` limits it to some of the plan's models."""
        now = self.clock()
        if expires_at is not None and (expires_at.tzinfo is None or expires_at <= now):
            raise PerseaError(f"key expiry {expires_at}: expected a time zone-aware moment "
                              "in the future")
        allowed = sorted(set(models)) if models is not None else None
        raw = KEY_PREFIX + urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode().rstrip("=")
        with self.engine.begin() as conn:
            info = self._org(conn, org)
            if allowed is not None:
                sold = load_plan(conn, self._plan_id(conn, info.plan)).prices
                unsold = [m for m in allowed if m not in sold]
                if unsold or not allowed:
                    raise PerseaError(f"key model limit {', '.join(unsold) or '(empty)'}: not "
                                      f"sold on plan {info.plan!r} (it sells "
                                      f"{', '.join(sorted(sold)) or 'nothing'})")
            key = KeyInfo(new_id("key"), info.id, name, raw[:len(KEY_PREFIX) + DISPLAY_CHARS],
                          tuple(allowed) if allowed is not None else None, now, expires_at,
                          None)
            conn.execute(api_keys.insert().values(
                id=key.id, org_id=info.id, name=name, prefix=key.prefix, key_hash=hash_key(raw),
                allowed_models=allowed, created_at=now, expires_at=expires_at))
            audit.record(conn, now, actor or self.actor, "key.created", key.id, {
                "org": info.name, "name": name, "models": allowed,
                "expires_at": expires_at.isoformat() if expires_at else None})
        return NewKey(key, raw)

    def revoke_key(self, key_id: str, actor: str | None = None) -> KeyInfo:
        """Revoke a key; this process refuses it at once, others within their cache time."""
        now = self.clock()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
            if row is None:
                raise PerseaError(f"no API key with id {key_id!r} (see `persea keys list`)")
            if row.revoked_at is not None:
                raise PerseaError(f"API key {key_id} was already revoked at {row.revoked_at}")
            conn.execute(api_keys.update().where(api_keys.c.id == key_id)
                         .values(revoked_at=now))
            audit.record(conn, now, actor or self.actor, "key.revoked", key_id,
                         {"org_id": row.org_id, "name": row.name})
        self._forget_cached()
        return replace(_key_info(row), revoked_at=now)

    def keys(self, org: str | None = None) -> list[KeyInfo]:
        """API keys (never their secret), of one organisation or all, oldest first."""
        with self._read() as conn:
            query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
            if org is not None:
                query = query.where(api_keys.c.org_id == self._org(conn, org).id)
            return [_key_info(r) for r in conn.execute(query)]
