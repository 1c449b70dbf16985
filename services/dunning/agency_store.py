"""The reads behind an agency's view of a case: its state, the debtor's profile and the policy in force,
the documents sent (the debtor's record) and the recoveries of its current placement (the KPI facts)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.journal import DebtorProfile
from contracts.policy import DunningPolicy, policy_in_force
from services.dunning import store
from services.dunning.domain import Case, load_case_json
from services.dunning.kpi_store import PLACEMENTS, RECOVERIES
from services.dunning.kpis import AGENCY, LEDGER
from services.dunning.record import debtor_timeline
from services.runtime.database import driver_connection

DELIVERED = "delivery.delivered"
TO_THE_DEBTOR = ("letter", "email", "sms", "messenger")
"""Channels that reach the debtor (a call is a task for the team, a webhook goes to the ERP or an agency)."""


async def case_state(session: AsyncSession, tenant: str, case_id: str) -> Case | None:
    state = await session.scalar(
        select(store.cases.c.state).where(store.cases.c.tenant_id == tenant, store.cases.c.case_id == case_id)
    )
    return None if state is None else load_case_json(state)


async def profiles(session: AsyncSession, tenant: str, debtor_ids: Sequence[str]) -> dict[str, DebtorProfile]:
    return await store.load_profiles(session, tenant, sorted(set(debtor_ids)))


async def policy(session: AsyncSession, tenant: str, day: dt.date) -> DunningPolicy | None:
    versions = (await store.load_policies(session, [tenant])).get(tenant, [])
    published = policy_in_force(versions, day)
    return None if published is None else published.document


async def documents_sent(session: AsyncSession, tenant: str, debtor_id: str, case_id: str) -> Sequence[Any]:
    t = debtor_timeline
    rows = await session.execute(
        select(t.c.business_date, t.c.channel, t.c.document, t.c.sentence)
        .where(
            t.c.tenant_id == tenant,
            t.c.debtor_id == debtor_id,
            t.c.case_id == case_id,
            t.c.kind == DELIVERED,
            t.c.channel.in_(TO_THE_DEBTOR),
            t.c.document.is_not(None),
        )
        .order_by(t.c.seq)
    )
    return rows.all()


async def recoveries(session: AsyncSession, tenant: str, case_id: str, agency_id: str) -> tuple[int, int]:
    """(recovered as the ledger shows it, reported by the agency) on the case's latest placement with
    the agency; (0, 0) when there is none on record."""
    connection = await driver_connection(session)
    row = await connection.fetchrow(
        "WITH placement AS ("
        f" SELECT placement_id FROM {PLACEMENTS} WHERE tenant_id = $1 AND case_id = $2 AND agency_id = $3"
        " ORDER BY placed_on DESC, placement_id DESC LIMIT 1)"
        f" SELECT coalesce(sum(amount_minor) FILTER (WHERE source = '{LEDGER}'), 0) AS ledger,"
        f" coalesce(sum(amount_minor) FILTER (WHERE source = '{AGENCY}'), 0) AS agency"
        f" FROM {RECOVERIES} WHERE tenant_id = $1 AND case_id = $2"
        " AND placement_id = (SELECT placement_id FROM placement)",
        tenant,
        case_id,
        agency_id,
    )
    return (int(row["ledger"]), int(row["agency"])) if row else (0, 0)
