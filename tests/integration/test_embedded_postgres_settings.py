"""The project's own PostgreSQL runs with the settings Arrears gives it, from its first start on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from services.runtime.embedded_postgres import (
    server_settings,
    start_embedded_postgres,
    stop_embedded_postgres,
    usable_memory_bytes,
)

pytestmark = pytest.mark.integration


async def as_wanted(dsn: str, wanted: dict[str, str]) -> dict[str, bool]:
    """Whether the server runs with each setting (sizes compared in bytes: SHOW says 4096MB as 4GB)."""
    connection = await asyncpg.connect(dsn)
    try:
        same = {}
        for name, value in wanted.items():
            unit = await connection.fetchval("SELECT unit FROM pg_settings WHERE name = $1", name)
            same[name] = await connection.fetchval(
                "SELECT pg_size_bytes(current_setting($1)) = pg_size_bytes($2)"
                if unit and unit.endswith("B")
                else "SELECT current_setting($1) = $2",
                name,
                value,
            )
        return same
    finally:
        await connection.close()


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def test_a_new_server_runs_with_the_settings_and_a_second_start_finds_it_as_it_is(tmp_path: Path) -> None:
    data_dir = tmp_path / "postgres"
    wanted = server_settings(usable_memory_bytes())
    try:
        server = start_embedded_postgres(data_dir)
        assert asyncio.run(as_wanted(server.dsn, wanted)) == dict.fromkeys(wanted, True)
        first = postmaster_pid(data_dir)
        again = start_embedded_postgres(data_dir)
        assert postmaster_pid(data_dir) == first, "a configured, running server is not restarted"
        assert asyncio.run(as_wanted(again.dsn, wanted)) == dict.fromkeys(wanted, True)
    finally:
        stop_embedded_postgres(data_dir)
