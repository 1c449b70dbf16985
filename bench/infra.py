"""The broker and database the benchmark runs on, fresh databases on it, and what machine this is.

The harness starts its own single-node Kafka broker (KRaft) and PostgreSQL with the test session's
helpers (`tests.infra`), or runs on ones it is handed (the smoke test passes the session's fixtures).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from contracts.topics import catalogue
from services.runtime.embedded_postgres import sqlalchemy_to_libpq
from services.runtime.kafka_admin import ensure_topics
from tests.infra import KafkaBroker, PostgresServer, start_kafka_broker, start_postgres

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Infrastructure:
    kafka: KafkaBroker
    postgres: PostgresServer
    run_id: str
    """Names this run's databases and scratch topic apart from anything else on the servers."""

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka.bootstrap_servers

    def broker_pid(self) -> int | None:
        return _pid_from(self.kafka.data_dir / "broker.pid")

    def postmaster_pid(self) -> int | None:
        data_dir = self.postgres.data_dir
        return _pid_from(data_dir / "postmaster.pid") if data_dir else None

    async def create_database(self, label: str) -> str:
        """A new, empty database on the server; returns its SQLAlchemy URL."""
        name = f"bench_{self.run_id}_{label}"
        connection = await asyncpg.connect(self.postgres.dsn)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        base, _, query = self.postgres.url.partition("?")
        return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")

    async def prepare_topics(self) -> None:
        await ensure_topics(self.bootstrap_servers, catalogue())


@contextlib.contextmanager
def own_infrastructure(postgres_settings: Mapping[str, str] | None = None) -> Iterator[Infrastructure]:
    """Start a broker and a database for this run, and stop them at the end."""
    kafka = start_kafka_broker()
    try:
        postgres = start_postgres(settings=postgres_settings)
        try:
            yield Infrastructure(kafka, postgres, new_run_id())
        finally:
            postgres.stop()
    finally:
        kafka.stop()


def new_run_id() -> str:
    return uuid.uuid4().hex[:8]


def _pid_from(path: Path) -> int | None:
    try:
        first = path.read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(first) if first.isdigit() else None


# --- what machine this is -----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_total_bytes": _meminfo_bytes("MemTotal"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "kafka": _kafka_version(),
        "load_average_at_start": list(os.getloadavg()),
    }


async def postgres_version(infra: Infrastructure) -> str:
    connection = await asyncpg.connect(infra.postgres.dsn)
    try:
        version: str = await connection.fetchval("SHOW server_version")
    finally:
        await connection.close()
    return version


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _meminfo_bytes(field: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def _kafka_version() -> str | None:
    pom = REPO / "deploy" / "local" / "kafka" / "pom.xml"
    with contextlib.suppress(OSError):
        found = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom.read_text())
        return found.group(1) if found else None
    return None


def libpq(url: str) -> str:
    return sqlalchemy_to_libpq(url)
