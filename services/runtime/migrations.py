"""Alembic migrations, one history per service schema, run at service start or by `arrears migrate`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

SERVICES_DIR = Path(__file__).resolve().parent.parent


def _config(service: str, connection: Any) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    config.attributes["connection"] = connection
    config.attributes["schema"] = service
    return config


def _upgrade(connection: Any, service: str) -> None:
    command.upgrade(_config(service, connection), "head")


async def upgrade(engine: AsyncEngine, service: str) -> None:
    async with engine.begin() as connection:
        # Two instances starting at once must not both run the same migration.
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": f"migrate:{service}"}
        )
        await connection.run_sync(_upgrade, service)


def run_env() -> None:
    """The body of every service's migrations/env.py."""
    connection = context.config.attributes["connection"]
    schema = context.config.attributes["schema"]
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    context.configure(connection=connection, version_table_schema=schema, include_schemas=True)
    with context.begin_transaction():
        context.run_migrations()
