"""API keys and callers: 256-bit keys stored only as a hash, refused when revoked, expired or
unknown, limited to models; every admin action audited without key material."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from persea.db.schema import metadata
from persea.errors import Kind, PerseaError
from persea.accounts import audit
from persea.accounts import InvalidKey, ModelNotAllowed, Price

PRICES = {"persea-small": Price(Decimal("0.50"), Decimal("1.50")),
          "persea-large": Price(Decimal("3"), Decimal("15"))}


@pytest.fixture
def org(accounts):
    accounts.admin.create_plan("pro", PRICES, rpm=60, tpm=100_000, monthly_budget=Decimal("100"),
                         allow_logprobs=True, max_top_logprobs=5)
    return accounts.admin.create_org("acme", "pro")


def _every_stored_value(engine) -> str:
    """Every value in every table, as text (what someone with a copy of the database sees)."""
    parts = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(sa.text(f"SELECT * FROM {table.name}")):
                parts.extend(str(v) for v in row)
    return "\n".join(parts)


def test_key_has_256_random_bits_and_is_never_stored(accounts, org, migrated_url, tmp_path):
    new = accounts.admin.create_key("acme", name="ci")
    raw = new.raw_key
    assert raw.startswith("psk-")
    assert len(base64.urlsafe_b64decode(raw[4:] + "=")) == 32  # 256 bits
    assert raw not in repr(new)  # printing the result by mistake does not leak it
    assert new.info.prefix == raw[:8]  # display prefix: 4 of the 43 random characters
    assert accounts.admin.create_key("acme").raw_key != raw
    stored = _every_stored_value(accounts.engine)
    assert raw not in stored and raw[4:] not in stored
    if migrated_url.startswith("sqlite"):  # the file itself, journal included
        blob = b"".join(p.read_bytes() for p in tmp_path.glob("persea.db*"))
        assert raw.encode() not in blob and raw[4:].encode() not in blob
    caller = accounts.authenticate(raw)
    assert (caller.org_name, caller.key_id, caller.allowed_models) == ("acme", new.info.id, None)
    assert caller.plan.prices == PRICES and caller.plan.monthly_budget == Decimal("100")
    assert (caller.plan.rpm, caller.plan.tpm, caller.plan.max_top_logprobs) == (60, 100_000, 5)


@pytest.mark.parametrize("raw", ["", None, "psk-nope", "Bearer x"])
def test_unknown_or_missing_key_is_refused(accounts, org, raw):
    with pytest.raises(InvalidKey) as err:
        accounts.authenticate(raw)
    assert err.value.kind == Kind.UNAUTHENTICATED and err.value.code == "invalid_api_key"


def test_a_key_one_character_off_is_refused(accounts, org):
    raw = accounts.admin.create_key("acme").raw_key
    twin = raw[:-1] + ("A" if raw[-1] != "A" else "B")
    with pytest.raises(InvalidKey):
        accounts.authenticate(twin)


def test_revoked_key_is_refused_at_once_despite_the_cache(accounts, org):
    new = accounts.admin.create_key("acme")
    accounts.authenticate(new.raw_key)  # now cached
    accounts.admin.revoke_key(new.info.id)
    with pytest.raises(InvalidKey, match="revoked"):
        accounts.authenticate(new.raw_key)
    with pytest.raises(PerseaError, match="already revoked"):
        accounts.admin.revoke_key(new.info.id)


def test_expired_key_is_refused(accounts, org, clock):
    new = accounts.admin.create_key("acme", expires_at=clock.now + timedelta(hours=1))
    accounts.authenticate(new.raw_key)
    clock.advance(minutes=59)
    accounts.authenticate(new.raw_key)
    clock.advance(minutes=1)
    with pytest.raises(InvalidKey, match="expired"):  # cached or not
        accounts.authenticate(new.raw_key)
    accounts._forget_cached()
    with pytest.raises(InvalidKey, match="expired"):
        accounts.authenticate(new.raw_key)
    with pytest.raises(PerseaError, match="future"):
        accounts.admin.create_key("acme", expires_at=clock.now - timedelta(seconds=1))


def test_model_limits(accounts, org):
    key = accounts.admin.create_key("acme", models=["persea-small"])
    caller = accounts.authenticate(key.raw_key)
    assert caller.allowed_models == frozenset({"persea-small"})
    assert accounts.check_model(caller, "persea-small") == PRICES["persea-small"]
    with pytest.raises(ModelNotAllowed) as err:
        accounts.check_model(caller, "persea-large")
    assert err.value.kind == Kind.FORBIDDEN and err.value.code == "model_not_allowed"
    with pytest.raises(ModelNotAllowed):
        accounts.check_model(caller, "gpt-unknown")
    assert accounts.models_for(caller) == ["persea-small"]
    everything = accounts.authenticate(accounts.admin.create_key("acme").raw_key)
    assert accounts.models_for(everything) == ["persea-large", "persea-small"]
    with pytest.raises(PerseaError, match="not sold on plan 'pro'"):
        accounts.admin.create_key("acme", models=["gpt-unknown"])


def test_plan_change_reaches_callers_of_this_process_at_once(accounts, org):
    raw = accounts.admin.create_key("acme").raw_key
    accounts.authenticate(raw)
    accounts.admin.update_plan("pro", drop_models=["persea-large"])
    caller = accounts.authenticate(raw)
    assert accounts.models_for(caller) == ["persea-small"]
    accounts.admin.create_plan("free", {"persea-small": Price(Decimal(0), Decimal(0))})
    accounts.admin.set_org_plan("acme", "free")
    assert accounts.authenticate(raw).plan.name == "free"


def test_admin_actions_are_audited_without_key_material(accounts, org):
    keys = [accounts.admin.create_key("acme", name=n) for n in ("a", "b")]
    accounts.admin.revoke_key(keys[0].info.id)
    accounts.admin.update_plan("pro", monthly_budget=Decimal("250.5"))
    accounts.admin.create_plan("basic", {"persea-small": PRICES["persea-small"]})
    accounts.admin.set_org_plan("acme", "basic")
    log = audit.entries(accounts.engine)
    assert [e.action for e in reversed(log)] == [
        "plan.created", "org.created", "key.created", "key.created", "key.revoked",
        "plan.changed", "plan.created", "org.plan_changed"]
    assert all(e.actor == "test" for e in log)
    changed = next(e for e in log if e.action == "plan.changed")
    assert (changed.details["before"]["monthly_budget"],
            changed.details["after"]["monthly_budget"]) == ("100", "250.5")
    text = json.dumps([e.details for e in log]) + " ".join(e.target for e in log)
    for new in keys:
        assert new.raw_key not in text and new.raw_key[4:] not in text
        assert new.info.prefix not in text
    from persea.accounts.types import hash_key
    assert not any(hash_key(k.raw_key) in text for k in keys)


def test_audit_refuses_secret_looking_details(accounts):
    with accounts.engine.begin() as conn, pytest.raises(ValueError, match="key material"):
        audit.record(conn, accounts.clock(), "t", "key.created", "k", {"note": "psk-abc"})


@pytest.mark.parametrize("call, message", [
    (lambda a: a.admin.create_org("acme", "pro"), "already exists"),
    (lambda a: a.admin.create_org("new", "nope"), "no plan named 'nope'"),
    (lambda a: a.admin.create_org("bad name", "pro"), "organisation name 'bad name'"),
    (lambda a: a.admin.create_key("ghost"), "no organisation 'ghost'"),
    (lambda a: a.admin.revoke_key("key_nope"), "no API key with id"),
    (lambda a: a.admin.create_plan("pro", PRICES), "already exists"),
    (lambda a: a.admin.create_plan("x", {"m": Price(Decimal("0.0000001"), Decimal(1))}),
     "more than 6 decimal places"),
    (lambda a: a.admin.create_plan("x", PRICES, rpm=0), "rpm 0"),
    (lambda a: a.admin.update_plan("pro", max_top_logprobs=99), "max_top_logprobs 99"),
])
def test_bad_admin_input_is_one_readable_error(accounts, org, call, message):
    with pytest.raises(PerseaError, match=message):
        call(accounts)


def test_listing(accounts, org):
    accounts.admin.create_key("acme", name="one")
    assert [o.name for o in accounts.admin.orgs()] == ["acme"]
    assert accounts.admin.org(org.id).name == "acme" and accounts.admin.org("acme").plan == "pro"
    assert [k.name for k in accounts.admin.keys("acme")] == ["one"]
    assert [p.name for p in accounts.admin.plans()] == ["pro"]
