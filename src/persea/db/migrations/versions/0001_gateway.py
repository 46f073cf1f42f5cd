"""The gateway's tables: plans, prices, orgs, API keys, balances, reservations, usage, audit.

Revision ID: 0001_gateway
Revises:
Create Date: 2026-11-23

Written out by hand (not imported from persea.db.schema) so that it keeps meaning this
revision's schema after the schema module moves on. Money: NUMERIC(38, 12) on PostgreSQL,
integer 10^-12 units on SQLite (see persea.db.types).
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_gateway"
down_revision = None
branch_labels = None
depends_on = None


def _money():
    return sa.BigInteger().with_variant(sa.Numeric(38, 12), "postgresql")


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("tpm", sa.Integer(), nullable=True),
        sa.Column("monthly_budget", _money(), nullable=True),
        sa.Column("allow_logprobs", sa.Boolean(), nullable=False),
        sa.Column("max_top_logprobs", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_plans"),
        sa.UniqueConstraint("name", name="uq_plans_name"),
    )
    op.create_table(
        "plan_prices",
        sa.Column("plan_id", sa.String(40), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("input_per_mtok", _money(), nullable=False),
        sa.Column("output_per_mtok", _money(), nullable=False),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"], ondelete="CASCADE",
                                name="fk_plan_prices_plan_id_plans"),
        sa.PrimaryKeyConstraint("plan_id", "model", name="pk_plan_prices"),
    )
    op.create_table(
        "orgs",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("plan_id", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"], name="fk_orgs_plan_id_plans"),
        sa.PrimaryKeyConstraint("id", name="pk_orgs"),
        sa.UniqueConstraint("name", name="uq_orgs_name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("allowed_models", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name="fk_api_keys_org_id_orgs"),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_org_id", "api_keys", ["org_id"])
    op.create_table(
        "balances",
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("spent", _money(), nullable=False),
        sa.Column("reserved", _money(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name="fk_balances_org_id_orgs"),
        sa.PrimaryKeyConstraint("org_id", "month", name="pk_balances"),
    )
    op.create_table(
        "reservations",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("amount", _money(), nullable=False),
        sa.Column("input_per_mtok", _money(), nullable=False),
        sa.Column("output_per_mtok", _money(), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name="fk_reservations_org_id_orgs"),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"],
                                name="fk_reservations_key_id_api_keys"),
        sa.PrimaryKeyConstraint("id", name="pk_reservations"),
        sa.UniqueConstraint("request_id", name="uq_reservations_request_id"),
    )
    op.create_index("ix_reservations_state_expires_at", "reservations", ["state", "expires_at"])
    op.create_table(
        "usage_records",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("input_per_mtok", _money(), nullable=False),
        sa.Column("output_per_mtok", _money(), nullable=False),
        sa.Column("input_cost", _money(), nullable=False),
        sa.Column("output_cost", _money(), nullable=False),
        sa.Column("cost", _money(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name="fk_usage_records_org_id_orgs"),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"],
                                name="fk_usage_records_key_id_api_keys"),
        sa.PrimaryKeyConstraint("id", name="pk_usage_records"),
        sa.UniqueConstraint("request_id", name="uq_usage_records_request_id"),
    )
    op.create_index("ix_usage_records_org_id_month", "usage_records", ["org_id", "month"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )


def downgrade() -> None:
    for index, table in (("ix_usage_records_org_id_month", "usage_records"),
                         ("ix_reservations_state_expires_at", "reservations"),
                         ("ix_api_keys_org_id", "api_keys")):
        op.drop_index(index, table_name=table)
    for table in ("audit_log", "usage_records", "reservations", "balances", "api_keys",
                  "orgs", "plan_prices", "plans"):
        op.drop_table(table)
