"""The admin API under `/admin/...`: plans, orgs, keys and usage, behind the admin token.

The admin credential is separate from every API key (`--admin-token` or PERSEA_ADMIN_TOKEN)
and compared in constant time; without one configured, the whole admin API answers 404, as
if it did not exist. Each operation calls the same `Accounts` admin method the CLI uses, so
each writes its audit row. A new key's raw value is in the answer to its creation and
nowhere else. Money travels as decimal strings, never floats.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from decimal import Decimal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from persea.errors import PerseaError
from persea.serve.errors import ApiError, validation_error
from persea.accounts.admin import MAX_PER_MINUTE
from persea.accounts.money import MONEY_PLACES, PRICE_PLACES, Price, money_json, month_of, \
    parse_amount, parse_month

router = APIRouter(prefix="/admin")


class PriceIn(BaseModel):
    input_per_mtok: str
    output_per_mtok: str


class PlanIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    prices: dict[str, PriceIn]
    rpm: int | None = Field(default=None, ge=1, le=MAX_PER_MINUTE)
    tpm: int | None = Field(default=None, ge=1, le=MAX_PER_MINUTE)
    monthly_budget: str | None = None
    allow_logprobs: bool = False
    max_top_logprobs: int = Field(default=0, ge=0, le=20)


class OrgIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    plan: str


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = ""
    models: list[str] | None = None
    expires_at: datetime | None = None


class PlanChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: str


def _check_admin(request: Request) -> None:
    token = request.app.state.admin_token
    if not token:
        raise ApiError(404, "the admin API is off: start the gateway with --admin-token or "
                       "PERSEA_ADMIN_TOKEN", code="not_found")
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(),
                                                             token.encode()):
        raise ApiError(401, "admin token missing or wrong", code="invalid_admin_token")


async def _body(request: Request, kind):
    _check_admin(request)
    try:
        return kind.model_validate_json(await request.body())
    except ValidationError as err:
        raise validation_error(err) from None


async def _call(request: Request, fn, *args, **kwargs):
    gw = request.app.state.gateway
    try:
        return await gw.db(lambda: fn(*args, **kwargs), write=True)
    except (PerseaError, ValueError) as err:
        text = str(err)
        status = 404 if text.startswith("no ") else 400
        raise ApiError(status, text, code="not_found" if status == 404 else "invalid_value"
                       ) from None


def _money(text: str | None, what: str, places: int = MONEY_PLACES) -> Decimal | None:
    if text is None:
        return None
    try:
        return parse_amount(text, what, places)
    except ValueError as err:
        raise ApiError(400, str(err), param=what) from None


def _plan_json(terms) -> dict:
    return {"name": terms.name, "rpm": terms.rpm, "tpm": terms.tpm,
            "monthly_budget": money_json(terms.monthly_budget)
            if terms.monthly_budget is not None else None,
            "allow_logprobs": terms.allow_logprobs, "max_top_logprobs": terms.max_top_logprobs,
            "prices": {m: {"input_per_mtok": money_json(p.input_per_mtok),
                           "output_per_mtok": money_json(p.output_per_mtok)}
                       for m, p in terms.prices.items()}}


def _org_json(org) -> dict:
    return {"id": org.id, "name": org.name, "plan": org.plan,
            "created_at": org.created_at.isoformat()}


def _key_json(info) -> dict:
    return {"id": info.id, "org_id": info.org_id, "name": info.name, "prefix": info.prefix,
            "models": list(info.allowed_models) if info.allowed_models is not None else None,
            "created_at": info.created_at.isoformat(),
            "expires_at": info.expires_at.isoformat() if info.expires_at else None,
            "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None}


@router.post("/plans", status_code=201)
async def create_plan(request: Request):
    body = await _body(request, PlanIn)
    prices = {m: Price(_money(p.input_per_mtok, f"prices.{m}.input_per_mtok", PRICE_PLACES),
                       _money(p.output_per_mtok, f"prices.{m}.output_per_mtok", PRICE_PLACES))
              for m, p in body.prices.items()}
    admin = request.app.state.gateway.accounts.admin
    terms = await _call(request, admin.create_plan, body.name, prices, rpm=body.rpm, tpm=body.tpm,
                        monthly_budget=_money(body.monthly_budget, "monthly_budget"),
                        allow_logprobs=body.allow_logprobs,
                        max_top_logprobs=body.max_top_logprobs, actor="admin-api")
    return JSONResponse(_plan_json(terms), status_code=201)


@router.post("/orgs", status_code=201)
async def create_org(request: Request):
    body = await _body(request, OrgIn)
    acc = request.app.state.gateway.accounts
    org = await _call(request, acc.admin.create_org, body.name, body.plan, actor="admin-api")
    return JSONResponse(_org_json(org), status_code=201)


@router.put("/orgs/{org}/plan")
async def set_plan(org: str, request: Request):
    body = await _body(request, PlanChange)
    admin = request.app.state.gateway.accounts.admin
    return _org_json(await _call(request, admin.set_org_plan, org, body.plan, actor="admin-api"))


@router.post("/orgs/{org}/keys", status_code=201)
async def create_key(org: str, request: Request):
    body = await _body(request, KeyIn)
    acc = request.app.state.gateway.accounts
    new = await _call(request, acc.admin.create_key, org, name=body.name,
                      expires_at=body.expires_at, models=body.models, actor="admin-api")
    return JSONResponse({**_key_json(new.info), "key": new.raw_key}, status_code=201)


@router.get("/orgs/{org}/keys")
async def list_keys(org: str, request: Request):
    _check_admin(request)
    acc = request.app.state.gateway.accounts
    return {"data": [_key_json(k) for k in await _call(request, acc.admin.keys, org)]}


@router.post("/keys/{key_id}/revoke")
async def revoke_key(key_id: str, request: Request):
    _check_admin(request)
    acc = request.app.state.gateway.accounts
    return _key_json(await _call(request, acc.admin.revoke_key, key_id, actor="admin-api"))


@router.get("/orgs/{org}/usage")
async def usage(org: str, request: Request, month: str | None = None):
    _check_admin(request)
    acc = request.app.state.gateway.accounts
    try:
        month = parse_month(month) if month else month_of(acc.clock())
    except ValueError as err:
        raise ApiError(400, str(err), param="month") from None
    info = await _call(request, acc.admin.org, org)
    spent, reserved = await _call(request, acc.balance, info.id, month)
    plan = await _call(request, acc.admin.plan, info.plan)
    budget = plan.monthly_budget
    return {"org": _org_json(info), "month": month, "spent": money_json(spent),
            "reserved": money_json(reserved),
            "monthly_budget": money_json(budget) if budget is not None else None,
            "left": money_json(budget - spent - reserved) if budget is not None else None}
