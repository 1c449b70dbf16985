"""Taking the archive column away again (a downgrade) leaves every debtor's whole state in `state`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from alembic import command
from sqlalchemy import text

from services.ledger import state_codec, store
from services.ledger.domain import evolve
from services.runtime.database import make_engine
from services.runtime.migrations import _config, upgrade
from tests.unit import given, invoice, payment, reversed_


async def test_a_downgrade_merges_the_archive_back_into_the_state(
    new_database: Callable[[], Awaitable[str]],
) -> None:
    archived = given(
        *(invoice(f"I{n}", 100, issued=f"2024-01-{n + 1:02d}") for n in range(6)),
        *(payment(f"P{n}", 100, on=f"2024-02-{n + 1:02d}") for n in range(6)),
    )
    _, archive, _ = state_codec.encode_stored(archived)
    # changed since: an archived invoice reopened (its archived copy is stale) and a new one
    state = evolve(evolve(archived, reversed_("P2", on="2024-03-05")).state, invoice("I9", 50)).state
    working, unchanged, _ = state_codec.encode_stored(state)
    assert archive is not None and unchanged is None
    assert set(state_codec.decode_ledger(working).invoices) == {"I2", "I9"}
    engine = make_engine(await new_database())
    try:
        await upgrade(engine, "ledger")
        async with engine.begin() as connection:
            await connection.execute(
                store.debtor_ledgers.insert().values(
                    tenant_id="t1", debtor_id="D1", state=working, archive=archive
                )
            )
        async with engine.begin() as connection:
            await connection.run_sync(lambda c: command.downgrade(_config("ledger", c), "0004"))
        async with engine.connect() as connection:
            (raw,) = (await connection.execute(text("SELECT state FROM ledger.debtor_ledgers"))).one()
    finally:
        await engine.dispose()
    assert state_codec.decode_ledger(raw) == state
