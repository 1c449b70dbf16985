"""Taking the held and archive columns away again (downgrades) leaves every debtor's whole state in
the columns that remain."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from alembic import command
from sqlalchemy import Connection, text

from services.ledger import store
from services.ledger.domain import evolve
from services.runtime.database import make_engine
from services.runtime.migrations import _config, upgrade
from tests.unit import given, invoice, payment, reversed_


async def test_downgrades_merge_the_held_items_and_the_archive_back_into_the_state(
    new_database: Callable[[], Awaitable[str]],
) -> None:
    stored = given(
        *(invoice(f"I{n}", 100, issued=f"2024-01-{n + 1:02d}") for n in range(7)),
        *(payment(f"P{n}", 100, on=f"2024-02-{n + 1:02d}") for n in range(6)),
    )
    written = store.encode_stored(stored)
    assert written.held is not None and written.archive is not None  # I6 held, the rest archived
    # changed since: an archived invoice reopened (its archived copy is stale) and a new one
    state = evolve(evolve(stored, reversed_("P2", on="2024-03-05")).state, invoice("I9", 50)).state
    working = store.encode_stored(state)
    assert working.held is None and working.archive is None
    assert set(store.decode_ledger(working.state).invoices) == {"I2", "I9"}
    engine = make_engine(await new_database())
    try:
        await upgrade(engine, "ledger")
        async with engine.begin() as connection:
            await connection.execute(
                store.debtor_ledgers.insert().values(
                    tenant_id="t1",
                    debtor_id="D1",
                    state=working.state,
                    held=written.held,
                    archive=written.archive,
                )
            )
        rows = []
        for revision in ("0005", "0004"):

            def downgrade(sync: Connection, revision: str = revision) -> None:
                command.downgrade(_config("ledger", sync), revision)

            async with engine.begin() as connection:
                await connection.run_sync(downgrade)
            async with engine.connect() as connection:
                columns = "state, archive" if revision == "0005" else "state, NULL"
                query = text(f"SELECT {columns} FROM ledger.debtor_ledgers")
                rows.append((await connection.execute(query)).one())
    finally:
        await engine.dispose()
    (at_0005, archive), (at_0004, _) = rows
    # as revision 0005 read a row: its archive merged whole under the working part
    as_before = {k: v for k, v in orjson.loads(at_0005).items() if not k.startswith("archived_")}
    assert store.decode_ledger(orjson.dumps(as_before), archive) == state
    assert store.decode_ledger(at_0004) == state
