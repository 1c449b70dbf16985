"""The dunning consumer keeps decoded cases between batches: only what committed, and never a case
whose row another writer changed since."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from itertools import count

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.registry import make_event
from services.dunning.domain import Fact, load_case_json
from services.dunning.projection import DunningProjection
from services.runtime.consumer import Delivered
from services.runtime.database import make_engine, make_sessions
from services.runtime.log import Record
from services.runtime.migrations import upgrade
from tests.unit.dunning_world import Books

pytestmark = pytest.mark.integration

TENANT, DEBTOR = "acme", "D-1"
_offsets = count()


def delivered(fact: Fact) -> Delivered:
    offset = next(_offsets)
    event = make_event(
        fact.type,
        fact.data,
        event_id=f"fact-{offset}",
        tenant_id=TENANT,
        debtor_id=DEBTOR,
        source="arrears/ledger",
        time=dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
    )
    record = Record("ar.receivables.v1", 0, offset, event.key.encode(), b"", (), 1_772_323_200_000)
    return Delivered(record, event)


async def apply(
    sessions: async_sessionmaker[AsyncSession],
    projection: DunningProjection,
    fact: Fact,
    *,
    commit: bool = True,
) -> None:
    """One batch of one fact, committed (and reported so) or rolled back (and reported failed)."""
    async with sessions() as session:
        await session.begin()
        await projection.apply(session, [delivered(fact)])
        if commit:
            await session.commit()
            projection.batch_committed()
        else:
            await session.rollback()
            projection.batch_failed()


async def open_items(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with sessions() as session:
        rows = (
            await session.execute(
                text("SELECT state FROM dunning.cases WHERE tenant_id = :t AND debtor_id = :d"),
                {"t": TENANT, "d": DEBTOR},
            )
        ).all()
    (case,) = [load_case_json(r.state) for r in rows]
    return {i.invoice_id: i.outstanding for i in case.open_items()}


async def test_cached_cases_are_committed_ones_and_a_row_changed_elsewhere_is_read_again(
    new_database: Callable[[], Awaitable[str]],
) -> None:
    engine = make_engine(await new_database(), 4)
    try:
        await upgrade(engine, "dunning")
        sessions = make_sessions(engine)
        books = Books()
        member = DunningProjection(case_cache_size=100)

        await apply(sessions, member, books.issue("I1", 100, due="2026-02-01"))
        await apply(sessions, member, books.issue("I2", 50, due="2026-02-10"))
        assert (member.cache.hits, member.cache.misses) == (1, 0)  # the case came from the cache

        # Another member of the group (or a business day's slice) writes the same case meanwhile.
        await apply(sessions, DunningProjection(), books.pay("I1", 100, on="2026-02-20"))
        await apply(sessions, member, books.issue("I3", 25, due="2026-03-01"))
        assert member.cache.misses == 1  # its row has another version now: decoded again
        assert await open_items(sessions) == {"I2": 50, "I3": 25}  # the payment is not lost

        # A batch that does not commit leaves nothing in the cache.
        await apply(sessions, member, books.pay("I2", 50, on="2026-02-21"), commit=False)
        await apply(sessions, member, books.issue("I4", 10, due="2026-03-05"))
        assert member.cache.misses == 2
        assert await open_items(sessions) == {"I2": 50, "I3": 25, "I4": 10}

        # A change of partition assignment forgets everything.
        member.partitions_changed()
        await apply(sessions, member, books.pay("I4", 10, on="2026-03-06"))
        assert member.cache.misses == 3
        assert await open_items(sessions) == {"I2": 50, "I3": 25}
    finally:
        await engine.dispose()
