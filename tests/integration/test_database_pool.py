"""The services' connection pool on a real PostgreSQL: each connection is checked before use in one
round trip, and a connection the server closed is replaced, not handed to a batch."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from services.runtime.database import make_engine
from services.runtime.embedded_postgres import sqlalchemy_to_libpq

pytestmark = pytest.mark.integration


async def _driver_connection(connection: Any) -> Any:
    raw = await connection.get_raw_connection()
    return raw.driver_connection


async def test_a_pooled_connection_is_checked_in_one_round_trip(new_database: object) -> None:
    engine = make_engine(await new_database(), pool_size=1)  # type: ignore[operator]
    sent: list[str] = []
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            (await _driver_connection(connection)).add_query_logger(lambda record: sent.append(record.query))
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT 2"))).scalar() == 2
    finally:
        await engine.dispose()
    await asyncio.sleep(0.1)  # asyncpg calls its query loggers soon after, not during, each query
    # Given back to the pool (its transaction rolled back), checked with one empty statement, then
    # the next user's statement in its transaction, and given back again.
    assert sent == ["ROLLBACK;", ";", "BEGIN;", "ROLLBACK;"]


async def test_a_connection_the_server_closed_is_replaced_before_use(new_database: object) -> None:
    url = await new_database()  # type: ignore[operator]
    engine = make_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            before = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar()
        admin = await asyncpg.connect(sqlalchemy_to_libpq(url))
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", before)
        finally:
            await admin.close()
        async with engine.connect() as connection:
            after = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar()
    finally:
        await engine.dispose()
    assert after != before
