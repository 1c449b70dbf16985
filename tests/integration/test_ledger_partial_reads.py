"""A batch reads a debtor's archive only when its events need it (`state_codec.needs_archive`): what
the ledger holds afterwards is the same either way, and a row another member wrote between reading
its working part and its archive fails the batch instead of mixing two versions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.ledger import store
from services.ledger.projection import LedgerProjection
from services.runtime.consumer import StaleState
from services.runtime.database import make_engine, make_sessions
from services.runtime.migrations import upgrade
from tests.integration.test_ledger_state_versions import DEBTOR, TENANT, commit, delivered
from tests.unit import invoice, payment

pytestmark = pytest.mark.integration

SETTLED = [
    *(delivered(invoice(f"I{n}", 100, issued=f"2024-01-{n + 1:02d}")) for n in range(6)),
    *(delivered(payment(f"P{n}", 100, on=f"2024-02-{n + 1:02d}")) for n in range(6)),
]


Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def sessions(new_database: Callable[[], Awaitable[str]]) -> AsyncIterator[Sessions]:
    """Sessions on a new database with the ledger's schema."""
    engine = make_engine(await new_database())
    try:
        await upgrade(engine, "ledger")
        yield make_sessions(engine)
    finally:
        await engine.dispose()


async def stored_row(sessions: Sessions) -> tuple[bytes, bytes | None]:
    table = store.debtor_ledgers
    async with sessions() as session:
        row = (await session.execute(select(table.c.state, table.c.archive))).one()
    return row.state, row.archive


async def test_a_new_invoice_goes_to_the_working_part_and_a_payment_sees_the_archive(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    await commit(sessions, LedgerProjection(), SETTLED)
    _, archive = await stored_row(sessions)
    assert archive is not None

    archives_read: list[int] = []
    load_archives = store.load_archives

    async def counted(session: Any, versions: Any) -> Any:
        archives_read.append(len(versions))
        return await load_archives(session, versions)

    monkeypatch.setattr(store, "load_archives", counted)
    await commit(sessions, LedgerProjection(), [delivered(invoice("I9", 70, issued="2024-03-01"))])
    working, kept = await stored_row(sessions)
    assert archives_read == [0] and kept == archive  # read and written: the working part alone
    assert b'"I9"' in working and b'"I0"' not in working

    await commit(sessions, LedgerProjection(), [delivered(payment("P9", 100, on="2024-03-10"))])
    assert archives_read == [0, 1]
    async with sessions() as session:
        state = await store.load_ledger(session, TENANT, DEBTOR)
    assert state is not None
    assert sorted(state.invoices) == [*(f"I{n}" for n in range(6)), "I9"]
    assert state.invoices["I9"].status == "settled"
    assert all(state.invoices[f"I{n}"].status == "settled" for n in range(6))
    assert state.sources["P9"].unapplied == 30  # what I9 did not need stays unapplied


async def test_a_row_written_between_its_working_part_and_its_archive_fails_the_batch(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = LedgerProjection(), LedgerProjection()
    await commit(sessions, first, SETTLED)
    load_archives = store.load_archives

    async def after_the_other_member(*args: Any) -> Any:
        monkeypatch.setattr(store, "load_archives", load_archives)
        await commit(sessions, second, [delivered(invoice("I8", 300, issued="2024-03-01"))])
        return await load_archives(*args)

    monkeypatch.setattr(store, "load_archives", after_the_other_member)
    with pytest.raises(StaleState):
        await commit(sessions, first, [delivered(payment("P9", 50, on="2024-03-10"))])
    first.batch_failed()

    await commit(sessions, first, [delivered(payment("P9", 50, on="2024-03-10"))])
    async with sessions() as session:
        state = await store.load_ledger(session, TENANT, DEBTOR)
    assert state is not None
    assert state.invoices["I8"].applied == 50 and state.sources["P9"].unapplied == 0
