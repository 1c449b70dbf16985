"""A debtor state's archive beside its working part (what each holds: `state_codec.encode_stored`; the
archive is rewritten only when enough changes have gathered). Existing rows keep their whole state
in `state` until their first such rewrite.

Revision ID: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SCHEMA = "ledger"


def upgrade() -> None:
    op.add_column("debtor_ledgers", sa.Column("archive", sa.LargeBinary, nullable=True), schema=SCHEMA)


def downgrade() -> None:
    merged = "m.s"
    for part in ("invoices", "sources", "timelines"):
        merged = f"jsonb_set({merged}, '{{{part}}}', coalesce(m.a -> '{part}', '{{}}') || (m.s -> '{part}'))"
    op.execute(
        f"UPDATE {SCHEMA}.debtor_ledgers AS l SET state = convert_to(({merged})::text, 'UTF8')"
        " FROM (SELECT tenant_id, debtor_id, convert_from(state, 'UTF8')::jsonb AS s,"
        " convert_from(archive, 'UTF8')::jsonb AS a"
        f" FROM {SCHEMA}.debtor_ledgers WHERE archive IS NOT NULL) AS m"
        " WHERE l.tenant_id = m.tenant_id AND l.debtor_id = m.debtor_id"
    )
    op.drop_column("debtor_ledgers", "archive", schema=SCHEMA)
