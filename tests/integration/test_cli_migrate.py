"""`arrears migrate` against a real PostgreSQL: every service's schema is created, dunning's and
scoring's too."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from services.runtime.embedded_postgres import sqlalchemy_to_libpq

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


async def test_arrears_migrate_creates_the_schema_of_every_service(
    new_database: Callable[[], Awaitable[str]],
) -> None:
    url = await new_database()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ARREARS_") and k != "DATABASE_URL"},
        "ARREARS_DATABASE_URL": url,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "migrate",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()
    said = stdout.decode().strip()
    assert said.startswith("migrated: "), said
    services = set(said.removeprefix("migrated: ").split(", "))
    assert services == {"ledger", "dunning", "notifier", "scoring"}, said

    connection = await asyncpg.connect(sqlalchemy_to_libpq(url))
    try:
        rows = await connection.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema IN ('ledger', 'dunning', 'notifier', 'scoring')"
        )
        heads = {
            schema: await connection.fetchval(f"SELECT version_num FROM {schema}.alembic_version")
            for schema in ("ledger", "dunning", "notifier", "scoring")
        }
    finally:
        await connection.close()
    tables = {(r["table_schema"], r["table_name"]) for r in rows}
    dunning = {name for schema, name in tables if schema == "dunning"}
    assert {
        "cases",
        "timeline",
        "agency_feed",
        "policies",
        "debtors",
        "business_dates",
        "agency_performance",
        "recorded_requests",
        "outbox",
    } <= dunning
    assert {"outbox", "api_keys"} <= {name for schema, name in tables if schema == "ledger"}
    assert {"outbox", "api_keys"} <= {name for schema, name in tables if schema == "notifier"}
    assert {"outbox", "debtors"} <= {name for schema, name in tables if schema == "scoring"}
    assert all(heads.values()), heads
