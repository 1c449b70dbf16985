"""The facts the collections KPIs are aggregated from: promises to pay and their outcomes, disputes,
case episodes (opened to closed), agency placements and the recoveries on them.

Revision ID: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SCHEMA = "dunning"


def _case_key() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("case_id", sa.String(200), primary_key=True),
    ]


def upgrade() -> None:
    op.create_table(
        "kpi_promises",
        *_case_key(),
        sa.Column("promise_id", sa.String(256), primary_key=True),
        sa.Column("debtor_id", sa.String(128), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("made_on", sa.Date, nullable=False),
        sa.Column("due_on", sa.Date, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("outcome_on", sa.Date, nullable=True),
        schema=SCHEMA,
    )
    op.create_index("kpi_promises_made", "kpi_promises", ["tenant_id", "made_on"], schema=SCHEMA)
    op.create_index("kpi_promises_due", "kpi_promises", ["tenant_id", "due_on"], schema=SCHEMA)
    op.create_table(
        "kpi_disputes",
        *_case_key(),
        sa.Column("dispute_id", sa.String(256), primary_key=True),
        sa.Column("debtor_id", sa.String(128), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("invoice_id", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("opened_on", sa.Date, nullable=False),
        sa.Column("resolved_on", sa.Date, nullable=True),
        schema=SCHEMA,
    )
    op.create_index("kpi_disputes_opened", "kpi_disputes", ["tenant_id", "opened_on"], schema=SCHEMA)
    op.create_table(
        "kpi_episodes",
        *_case_key(),
        sa.Column("opened_version", sa.Integer, primary_key=True),
        sa.Column("debtor_id", sa.String(128), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("opened_on", sa.Date, nullable=False),
        sa.Column("placed", sa.Boolean, nullable=False),
        sa.Column("last_step", sa.String(64), nullable=True),
        sa.Column("last_step_on", sa.Date, nullable=True),
        sa.Column("closed_on", sa.Date, nullable=True),
        sa.Column("closed_by_payment", sa.Boolean, nullable=True),
        schema=SCHEMA,
    )
    op.create_index("kpi_episodes_closed", "kpi_episodes", ["tenant_id", "closed_on"], schema=SCHEMA)
    op.create_table(
        "kpi_placements",
        *_case_key(),
        sa.Column("placement_id", sa.String(256), primary_key=True),
        sa.Column("agency_id", sa.String(128), nullable=False),
        sa.Column("segment", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("placed_on", sa.Date, nullable=False),
        sa.Column("placed_minor", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "kpi_recoveries",
        *_case_key(),
        sa.Column("placement_id", sa.String(256), primary_key=True),
        sa.Column("source", sa.String(8), primary_key=True),
        sa.Column("recovery_id", sa.String(600), primary_key=True),
        sa.Column("recovered_on", sa.Date, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in ("kpi_recoveries", "kpi_placements", "kpi_episodes", "kpi_disputes", "kpi_promises"):
        op.drop_table(table, schema=SCHEMA)
