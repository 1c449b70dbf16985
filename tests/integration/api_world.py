"""Every service's API on a fresh database, with a key of every role and enough recorded that requests
get past "no such case" to the checks behind it: a business day in every service and the case of the
documents' example (C-1042:EUR), placed with the agency whose key is used."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import insert

from services.dunning import store as dunning_store
from services.dunning.batch import encode_case
from services.dunning.domain import new_case
from services.ledger import store as ledger_store
from services.runtime.settings import Settings
from services.scoring import store as scoring_store
from services.stack import ALL, Stack, open_stack

ROLES = ("erp", "collector", "agency", "operations")
TODAY = dt.date(2026, 1, 5)
CASE_ID = "C-1042:EUR"
AGENCY = "agency-1"
"""The agency the case is placed with: the name of the agency key."""


@dataclass
class ApiWorld:
    stack: Stack
    keys: dict[str, str]
    """An API key of each role, valid at every service."""
    tenant: str


@contextlib.asynccontextmanager
async def api_world(database_url: str, tenant: str) -> AsyncIterator[ApiWorld]:
    """The four services on `database_url` (the PostgreSQL log, no background loops), seeded."""
    settings = Settings(database_url=database_url, kafka_bootstrap_servers=None)
    async with open_stack(settings, ALL, background=False) as stack:
        # The agency's key is named by its agency id, the one the case is placed with.
        keys = {role: await stack.create_key(tenant, f"{role}-1", role, on=ALL) for role in ROLES}
        async with stack.sessions() as session, session.begin():
            for table in (
                ledger_store.business_dates,
                dunning_store.business_dates,
                scoring_store.business_dates,
            ):
                await session.execute(insert(table).values(tenant_id=tenant, business_date=TODAY))
            await session.execute(
                insert(dunning_store.cases).values(
                    tenant_id=tenant,
                    case_id=CASE_ID,
                    debtor_id=CASE_ID.split(":")[0],
                    currency="EUR",
                    status="open",
                    step="reminder",
                    overdue_minor=10_000,
                    oldest_due_date=dt.date(2025, 12, 1),
                    next_action_date=TODAY,
                    agency_id=AGENCY,
                    version=1,
                    state=encode_case(new_case(tenant, CASE_ID.split(":")[0], "EUR")),
                )
            )
        yield ApiWorld(stack, keys, tenant)
