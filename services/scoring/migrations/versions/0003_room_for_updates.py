"""Room in the pages of scores and debtor rows for their next versions: a business day rewrites every
score and debtor row it scores again, and a new version that fits on its row's page (and changes no
indexed column) is written without new index entries (a heap-only tuple).

Revision ID: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "scoring"
FILLFACTOR = {"scores": 50, "debtors": 50}
"""Per cent of each page filled by inserts: the rest is kept for the rows' next versions."""


def upgrade() -> None:
    for table, percent in FILLFACTOR.items():
        op.execute(f"ALTER TABLE {SCHEMA}.{table} SET (fillfactor = {percent})")


def downgrade() -> None:
    for table in FILLFACTOR:
        op.execute(f"ALTER TABLE {SCHEMA}.{table} RESET (fillfactor)")
