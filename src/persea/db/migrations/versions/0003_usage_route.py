"""Usage records name the route a request asked for and how many models were tried.

Revision ID: 0003_usage_route
Revises: 0002_eval_runs
Create Date: 2026-11-24

`model` stays the model that answered (what is charged); `route` is NULL for a request that
named a model; `attempts` is 1 for every record written before routes existed.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_usage_route"
down_revision = "0002_eval_runs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("route", sa.String(200), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False,
                                   server_default=sa.text("1")))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("attempts")
        batch.drop_column("route")
