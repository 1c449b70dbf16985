"""Score rows written before migration 0004 read the same after it, and after going back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from alembic import command
from sqlalchemy import select, text

from services.runtime.database import make_engine
from services.runtime.migrations import _config, upgrade
from services.scoring import store

pytestmark = pytest.mark.integration

OLD_INVOICES: list[dict[str, Any]] = [
    {
        "invoice_id": "I-1",
        "outstanding_minor": 120_000,
        "due_date": "2025-05-01",
        "p_late": 1.0,
        "expected_settle_date": "2025-06-03",
        "write_off_reasons": ["older than 365 days past due"],
    },
    {
        "invoice_id": "I-2",
        "outstanding_minor": 5_000,
        "due_date": "2025-07-01",
        "p_late": 0.2,
        "expected_settle_date": "2025-07-09",
        "write_off_reasons": [],
    },
]


def old_row(debtor: str, invoices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "tenant_id": "t1",
        "debtor_id": debtor,
        "currency": "EUR",
        "as_of": dt.date(2025, 6, 2),
        "score": 61,
        "p_late": 0.61,
        "segment": "high",
        "expected_days_to_settle": 33.0,
        "open_minor": 125_000,
        "overdue_minor": 120_000,
        "oldest_days_past_due": 32,
        "reasons": orjson.dumps(["pays 80 % of invoices late"]).decode(),
        "invoices": orjson.dumps(invoices).decode(),
        "model_kind": "scorecard",
    }


async def test_scores_written_before_the_json_migration_read_the_same_after_it_and_back(
    new_database: Callable[[], Awaitable[str]],
) -> None:
    engine = make_engine(await new_database())
    names = list(old_row("d", []))
    placeholders = ", ".join(f":{c}" for c in names)
    insert = text(f"INSERT INTO scoring.scores ({', '.join(names)}) VALUES ({placeholders})")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda c: command.upgrade(_config("scoring", c), "0003"))
            for debtor, invoices in (("two", OLD_INVOICES), ("none", [])):
                await connection.execute(insert, old_row(debtor, invoices))
        await upgrade(engine, "scoring")
        async with engine.connect() as connection:
            rows = {r.debtor_id: r for r in (await connection.execute(select(store.scores))).all()}
        async with engine.begin() as connection:
            await connection.run_sync(lambda c: command.downgrade(_config("scoring", c), "0003"))
            back: dict[str, str] = dict(
                (await connection.execute(text("SELECT debtor_id, invoices::text FROM scoring.scores"))).all()
            )
    finally:
        await engine.dispose()
    assert store.stored_invoices(rows["two"].invoices) == OLD_INVOICES
    assert rows["two"].invoices["write_off_reasons"] == {"I-1": ["older than 365 days past due"]}
    assert store.stored_invoices(rows["none"].invoices) == []
    assert rows["two"].reasons == ["pays 80 % of invoices late"] and rows["two"].write_off_reasons == []
    assert {d: orjson.loads(v) for d, v in back.items()} == {"two": OLD_INVOICES, "none": []}
