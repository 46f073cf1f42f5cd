"""The database schema: every table persea keeps, in one module.

The gateway's tables come first (tenants, keys, plans, budgets, reservations, usage, audit);
later stages (evaluation records) add their tables here too, each with a migration beside
it in `persea/db/migrations/versions/`. Money columns are `Money` (exact Decimal) and
timestamps `UTCDateTime` (aware UTC); see `persea.db.types`.

How the gateway tables fit together:

- `plans` and `plan_prices`: what an organisation buys (per-model prices per million
  tokens, rate limits, a monthly budget);
- `orgs` (tenants) each on one plan; `api_keys` belong to an org and are stored as a
  SHA-256 hash plus a short display prefix, never the raw key;
- `balances`: one row per (org, calendar month in UTC) with `spent` and `reserved`; the
  budget check is one conditional UPDATE of this row;
- `reservations`: money held for a request in flight, until settled, released or expired;
- `usage_records`: one row per finished request, with a unique `request_id` (the
  idempotency key), exact token counts and the prices that were applied; `model` is the
  model that answered, `route` the route asked for (if any) and `attempts` how many models
  were tried;
- `audit_log`: one row per admin action; never a secret.
"""

from __future__ import annotations

import sqlalchemy as sa

from persea.db.types import Money, UTCDateTime

metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

plans = sa.Table(
    "plans", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("rpm", sa.Integer, nullable=True),  # requests per minute; NULL: unlimited
    sa.Column("tpm", sa.Integer, nullable=True),  # tokens per minute; NULL: unlimited
    sa.Column("monthly_budget", Money, nullable=True),  # NULL: unlimited
    sa.Column("allow_logprobs", sa.Boolean, nullable=False, default=False),
    sa.Column("max_top_logprobs", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

plan_prices = sa.Table(
    "plan_prices", metadata,
    sa.Column("plan_id", sa.String(40), sa.ForeignKey("plans.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("input_per_mtok", Money, nullable=False),
    sa.Column("output_per_mtok", Money, nullable=False),
)

orgs = sa.Table(
    "orgs", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("plan_id", sa.String(40), sa.ForeignKey("plans.id"), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("orgs.id"), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False, default=""),
    sa.Column("prefix", sa.String(16), nullable=False),  # for display only, not secret
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),  # SHA-256, hex
    sa.Column("allowed_models", sa.JSON, nullable=True),  # list of names; NULL: every model
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

balances = sa.Table(
    "balances", metadata,
    sa.Column("org_id", sa.String(40), sa.ForeignKey("orgs.id"), primary_key=True),
    sa.Column("month", sa.String(7), primary_key=True),  # YYYY-MM, UTC
    sa.Column("spent", Money, nullable=False),
    sa.Column("reserved", Money, nullable=False),
)

reservations = sa.Table(
    "reservations", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("request_id", sa.String(200), nullable=False, unique=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("orgs.id"), nullable=False),
    sa.Column("key_id", sa.String(40), sa.ForeignKey("api_keys.id"), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("month", sa.String(7), nullable=False),  # the balance row it holds money in
    sa.Column("amount", Money, nullable=False),
    sa.Column("input_per_mtok", Money, nullable=False),  # prices fixed at reservation
    sa.Column("output_per_mtok", Money, nullable=False),
    # held -> settled | released | expired (expired may still be settled, late)
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Index(None, "state", "expires_at"),
)

usage_records = sa.Table(
    "usage_records", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("request_id", sa.String(200), nullable=False, unique=True),  # idempotency key
    sa.Column("org_id", sa.String(40), sa.ForeignKey("orgs.id"), nullable=False),
    sa.Column("key_id", sa.String(40), sa.ForeignKey("api_keys.id"), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("month", sa.String(7), nullable=False),  # billing month, UTC
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("input_per_mtok", Money, nullable=False),
    sa.Column("output_per_mtok", Money, nullable=False),
    sa.Column("input_cost", Money, nullable=False),
    sa.Column("output_cost", Money, nullable=False),
    sa.Column("cost", Money, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # the route the caller asked for (NULL: it named the model), and how many models were
    # tried before `model` answered (failed attempts are not charged)
    sa.Column("route", sa.String(200), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("1")),
    sa.Index(None, "org_id", "month"),
)

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(200), nullable=False),  # e.g. org id, key id, plan name
    sa.Column("details", sa.JSON, nullable=False),
)

# -- evaluation: runs, their scores and per-item outcomes; gate verdicts; releases ---------
# The files under <project>/evals/<run-id>/ are written first; these rows mirror a run once
# it is complete, so that runs can be queried and compared from the database too.

eval_runs = sa.Table(
    "eval_runs", metadata,
    sa.Column("id", sa.String(200), primary_key=True),  # the run id (its directory name)
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),  # SHA-256 of the weights
    sa.Column("suite", sa.String(200), nullable=False),
    sa.Column("suite_version", sa.String(64), nullable=False),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("status", sa.String(12), nullable=False),  # complete (only these are mirrored)
    sa.Column("n_items", sa.Integer, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Index(None, "model", "suite"),
)

eval_scores = sa.Table(
    "eval_scores", metadata,
    sa.Column("run_id", sa.String(200), sa.ForeignKey("eval_runs.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("metric", sa.String(200), primary_key=True),  # e.g. toyworld/addition
    sa.Column("value", sa.Float, nullable=False),  # the mean over the metric's items
    sa.Column("n", sa.Integer, nullable=False),  # how many items it is the mean of
)

eval_items = sa.Table(
    "eval_items", metadata,
    sa.Column("run_id", sa.String(200), sa.ForeignKey("eval_runs.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("item_id", sa.String(200), primary_key=True),
    sa.Column("item_group", sa.String(200), nullable=False),  # the skill or lm-eval task
    sa.Column("outcomes", sa.JSON, nullable=False),  # {metric: value} for this item
    sa.Column("output", sa.Text, nullable=False),  # what the model answered
)

gate_records = sa.Table(
    "gate_records", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("candidate", sa.String(200), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False, index=True),
    sa.Column("verdict", sa.String(8), nullable=False),  # passed | failed
    sa.Column("policy", sa.JSON, nullable=False),
    sa.Column("results", sa.JSON, nullable=False),  # each rule, its numbers and verdict
    sa.Column("created_at", UTCDateTime, nullable=False),
)

release_records = sa.Table(
    "release_records", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False, index=True),
    sa.Column("model_path", sa.Text, nullable=False),
    sa.Column("forced", sa.Boolean, nullable=False),
    sa.Column("who", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),  # required when forced
    sa.Column("gate_id", sa.String(40), nullable=True),  # the passing gate, when not forced
    sa.Column("created_at", UTCDateTime, nullable=False),
)
