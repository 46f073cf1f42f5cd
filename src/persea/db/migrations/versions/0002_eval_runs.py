"""Evaluation records: runs, per-metric scores, per-item outcomes, gate verdicts, releases.

Revision ID: 0002_eval_runs
Revises: 0001_gateway
Create Date: 2026-11-23

Written out by hand, like 0001, so that it keeps meaning this revision's schema after
persea.db.schema moves on.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_eval_runs"
down_revision = "0001_gateway"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("suite", sa.String(200), nullable=False),
        sa.Column("suite_version", sa.String(64), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("n_items", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_eval_runs"),
    )
    op.create_index("ix_eval_runs_model_suite", "eval_runs", ["model", "suite"])
    op.create_table(
        "eval_scores",
        sa.Column("run_id", sa.String(200), nullable=False),
        sa.Column("metric", sa.String(200), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["eval_runs.id"], ondelete="CASCADE",
                                name="fk_eval_scores_run_id_eval_runs"),
        sa.PrimaryKeyConstraint("run_id", "metric", name="pk_eval_scores"),
    )
    op.create_table(
        "eval_items",
        sa.Column("run_id", sa.String(200), nullable=False),
        sa.Column("item_id", sa.String(200), nullable=False),
        sa.Column("item_group", sa.String(200), nullable=False),
        sa.Column("outcomes", sa.JSON(), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["eval_runs.id"], ondelete="CASCADE",
                                name="fk_eval_items_run_id_eval_runs"),
        sa.PrimaryKeyConstraint("run_id", "item_id", name="pk_eval_items"),
    )
    op.create_table(
        "gate_records",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("candidate", sa.String(200), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("verdict", sa.String(8), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gate_records"),
    )
    op.create_index("ix_gate_records_fingerprint", "gate_records", ["fingerprint"])
    op.create_table(
        "release_records",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("model_path", sa.Text(), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("who", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("gate_id", sa.String(40), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_release_records"),
    )
    op.create_index("ix_release_records_fingerprint", "release_records", ["fingerprint"])


def downgrade() -> None:
    op.drop_index("ix_release_records_fingerprint", table_name="release_records")
    op.drop_table("release_records")
    op.drop_index("ix_gate_records_fingerprint", table_name="gate_records")
    op.drop_table("gate_records")
    op.drop_table("eval_items")
    op.drop_table("eval_scores")
    op.drop_index("ix_eval_runs_model_suite", table_name="eval_runs")
    op.drop_table("eval_runs")
