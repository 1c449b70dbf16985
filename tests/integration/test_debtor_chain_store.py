"""The debtor chains in PostgreSQL: appended after the locked head by concurrent writers, and checked
in keyset pages smaller than the data, so that paging cannot hide or repeat an entry."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from services.dunning.domain.audit import Line
from services.dunning.record import append_lines, verify_tenant
from services.runtime.database import driver_connection
from services.stack import Stack, open_stack
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.conftest import settings_for

pytestmark = pytest.mark.integration

AT = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
async def stack(kafka: KafkaBroker, new_database: Callable[[], Awaitable[str]]) -> AsyncIterator[Stack]:
    settings = settings_for(await new_database(), kafka)
    async with open_stack(settings, ["dunning"], background=False) as running:
        yield running


def line(n: int) -> Line:
    return Line(dt.date(2026, 1, 1) + dt.timedelta(days=n), "note", f"note {n}", f"e-{n}", "EUR", None, n)


async def write(stack: Stack, tenant: str, debtors: list[str], lines: list[Line]) -> None:
    async with AsyncSession(stack.resources.engine) as session, session.begin():
        connection = await driver_connection(session)
        await append_lines(connection, [(tenant, d, x) for d in debtors for x in lines], AT)


async def check(stack: Stack, tenant: str, heads: int = 1_000, entries: int = 5_000) -> tuple[int, list[str]]:
    async with AsyncSession(stack.resources.engine) as session, session.begin():
        connection = await driver_connection(session)
        checked, breaks = await verify_tenant(connection, tenant, heads_page=heads, entries_page=entries)
    return checked, [f"{b.debtor_id}/{b.seq}/{b.what}" for b in breaks]


async def test_concurrent_writers_chain_one_order_and_small_pages_check_every_entry(
    stack: Stack, tenant: str
) -> None:
    debtors = [f"D{n}" for n in range(5)]
    # Three writers at once, each appending 3 lines for every debtor: 9 per debtor, 45 in all.
    await asyncio.gather(
        *(write(stack, tenant, debtors, [line(3 * w + i) for i in range(3)]) for w in range(3))
    )
    assert await check(stack, tenant) == (45, [])
    # Pages of 2 heads and 4 entries: every boundary falls inside a debtor's chain or between two.
    assert await check(stack, tenant, heads=2, entries=4) == (45, [])
    assert await check(stack, tenant, heads=5, entries=9) == (45, [])

    async with AsyncSession(stack.resources.engine) as session, session.begin():
        connection = await driver_connection(session)
        seqs = await connection.fetch(
            "SELECT seq FROM dunning.debtor_timeline WHERE tenant_id = $1 AND debtor_id = 'D3' ORDER BY seq",
            tenant,
        )
        assert [r["seq"] for r in seqs] == list(range(1, 10))
        await connection.execute(
            "UPDATE dunning.debtor_timeline SET business_date = business_date + 1"
            " WHERE tenant_id = $1 AND debtor_id = 'D3' AND seq = 7",
            tenant,
        )
        await connection.execute(
            "DELETE FROM dunning.debtor_timeline WHERE tenant_id = $1 AND debtor_id = 'D1' AND seq = 9",
            tenant,
        )
    # 45 less the one removed; D1 lost its last entry (the head says 9), D3's 7th was changed.
    assert await check(stack, tenant, heads=2, entries=4) == (44, ["D1/9/head", "D3/7/hash"])
    async with AsyncSession(stack.resources.engine) as session, session.begin():
        checked, breaks = await verify_tenant(await driver_connection(session), tenant, ["D3"])
    assert (checked, [b.seq for b in breaks]) == (9, [7])
