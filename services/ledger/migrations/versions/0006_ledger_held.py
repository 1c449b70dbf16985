"""A debtor state's open items stored apart from its working part (`held`, beside `archive`, which
now holds the closed items only; what each holds: `store.encode_stored`). Existing rows keep their
layout until their next rewrite of both.

Revision ID: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SCHEMA = "ledger"


def upgrade() -> None:
    op.add_column("debtor_ledgers", sa.Column("held", sa.LargeBinary, nullable=True), schema=SCHEMA)


def downgrade() -> None:
    # The held items go back into the working part (whose own items win, as when a row is read);
    # the archive, merged under both by revision 0005's reader, holds the closed items.
    merged = "m.s"
    for part in ("invoices", "sources", "timelines"):
        merged = f"jsonb_set({merged}, '{{{part}}}', coalesce(m.h -> '{part}', '{{}}') || (m.s -> '{part}'))"
    op.execute(
        f"UPDATE {SCHEMA}.debtor_ledgers AS l SET state = convert_to(({merged})::text, 'UTF8')"
        " FROM (SELECT tenant_id, debtor_id, convert_from(state, 'UTF8')::jsonb AS s,"
        " convert_from(held, 'UTF8')::jsonb AS h"
        f" FROM {SCHEMA}.debtor_ledgers WHERE held IS NOT NULL) AS m"
        " WHERE l.tenant_id = m.tenant_id AND l.debtor_id = m.debtor_id"
    )
    op.drop_column("debtor_ledgers", "held", schema=SCHEMA)
