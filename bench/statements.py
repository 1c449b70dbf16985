"""What PostgreSQL spent on each statement during a measure (`pg_stat_statements`), for the bench's
own embedded server started with `SETTINGS`: the database side of a profile, beside py-spy's."""

from __future__ import annotations

import re
from typing import Any

import asyncpg

from bench.infra import libpq

SETTINGS = {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all"}
"""The server settings that record every statement (a server must be started with them)."""


async def reset(url: str) -> None:
    """Forget what was recorded so far, server-wide (create the extension's view in this database)."""
    connection = await asyncpg.connect(libpq(url))
    try:
        await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await connection.execute("SELECT pg_stat_statements_reset()")
    finally:
        await connection.close()


async def recorded(url: str, top: int = 15) -> list[dict[str, Any]]:
    """The `top` statements by execution time since `reset`, in the database of `url`: calls, rows,
    seconds executing (wall time: on a busy machine it includes waiting for a core), each one's share
    of all statements' time, buffers touched per call and WAL written."""
    connection = await asyncpg.connect(libpq(url))
    try:
        rows = await connection.fetch(
            "SELECT query, calls, rows, total_exec_time / 1000 AS seconds,"
            " (shared_blks_hit + shared_blks_read)::float8 / greatest(calls, 1) AS buffers_per_call,"
            " wal_bytes::float8 AS wal_bytes, total_exec_time / sum(total_exec_time) OVER () AS share"
            " FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " ORDER BY total_exec_time DESC LIMIT $1",
            top,
        )
    finally:
        await connection.close()
    return [{**dict(row), "query": re.sub(r"\s+", " ", row["query"]).strip()} for row in rows]


def summary_lines(statements: list[dict[str, Any]], width: int = 70) -> list[str]:
    if not statements:
        return []
    lines = [
        "      PostgreSQL, by statement: share of execution time, seconds, calls, rows, buffers per call"
    ]
    for s in statements:
        lines.append(
            f"      {s['share']:6.1%} {s['seconds']:8.2f} s {s['calls']:>7,} {s['rows']:>10,}"
            f" {s['buffers_per_call']:>8,.0f}  {s['query'][:width]}"
        )
    return lines
