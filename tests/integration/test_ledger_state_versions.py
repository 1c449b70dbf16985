"""A debtor's state is written only while its row is as the batch read it: two group members that
both hold the debtor for a moment (its journal and master-data partitions apart, or a rebalance
handing a partition over mid-batch) can never overwrite each other's update."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from itertools import count
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.registry import make_event
from services.ledger import store
from services.ledger.domain import LedgerEvent
from services.ledger.projection import LedgerProjection
from services.runtime.consumer import Delivered, StaleState
from services.runtime.database import make_engine, make_sessions
from services.runtime.log import Record
from services.runtime.migrations import upgrade
from tests.unit import invoice

pytestmark = pytest.mark.integration

TENANT, DEBTOR = "acme", "D-1"
_offsets = count()


def delivered(data: LedgerEvent) -> Delivered:
    offset = next(_offsets)
    event = make_event(
        data.TYPES[0],
        data,
        event_id=f"e-{offset}",
        tenant_id=TENANT,
        debtor_id=DEBTOR,
        source="erp",
        time=dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
    )
    return Delivered(
        Record("ar.journal.v1", 0, offset, event.key.encode(), b"", (), 1_767_600_000_000), event
    )


async def invoice_ids(sessions: async_sessionmaker[AsyncSession]) -> set[str]:
    async with sessions() as session:
        state = await store.load_ledger(session, TENANT, DEBTOR)
    return set(state.invoices) if state else set()


async def commit(
    sessions: async_sessionmaker[AsyncSession], projection: LedgerProjection, batch: Sequence[Any]
) -> None:
    async with sessions() as session, session.begin():
        await projection.apply(session, batch)
    projection.batch_committed()


@pytest.mark.parametrize("existing", [False, True], ids=["new debtor", "known debtor"])
async def test_a_second_writer_between_read_and_write_fails_the_batch_instead_of_losing_its_update(
    new_database: Callable[[], Awaitable[str]], existing: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(await new_database())
    sessions = make_sessions(engine)
    try:
        await upgrade(engine, "ledger")
        first, second = LedgerProjection(), LedgerProjection()
        if existing:
            await commit(sessions, first, [delivered(invoice("I0", 100))])

        # The first member has read the debtor when the second writes it and commits first.
        save = store.save_ledgers

        async def save_after_the_other_member(*args: Any) -> Any:
            monkeypatch.setattr(store, "save_ledgers", save)
            await commit(sessions, second, [delivered(invoice("I2", 300))])
            return await save(*args)

        monkeypatch.setattr(store, "save_ledgers", save_after_the_other_member)
        with pytest.raises(StaleState):
            await commit(sessions, first, [delivered(invoice("I1", 200))])
        first.batch_failed()

        # Read again (as the consumer loop does from the stored offsets): both invoices survive.
        await commit(sessions, first, [delivered(invoice("I1", 200))])
        assert await invoice_ids(sessions) == ({"I0"} if existing else set()) | {"I1", "I2"}
    finally:
        await engine.dispose()
