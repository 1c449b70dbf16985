"""Tables every service keeps in its own schema: consumed offsets, applied event ids, the outbox,
API keys. Each service's first migration creates them with `create_runtime_tables`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB


def _columns() -> dict[str, list[Column[Any]]]:
    return {
        "consumer_offsets": [
            Column("group_id", String(200), primary_key=True),
            Column("topic", String(249), primary_key=True),
            Column("partition", Integer, primary_key=True),
            Column("next_offset", BigInteger, nullable=False),
            Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        ],
        "processed_events": [
            Column("tenant_id", String(64), primary_key=True),
            Column("event_id", String(256), primary_key=True),
        ],
        "outbox": [
            Column("id", BigInteger, primary_key=True, autoincrement=True),
            Column("topic", String(249), nullable=False),
            Column("key", LargeBinary, nullable=True),
            Column("value", LargeBinary, nullable=False),
            Column("headers", JSONB, nullable=False, server_default="[]"),
            Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        ],
        "api_keys": [
            Column("key_id", String(32), primary_key=True),
            Column("tenant_id", String(64), nullable=False),
            Column("principal", String(200), nullable=False),
            Column("role", String(32), nullable=False),
            Column("secret_sha256", LargeBinary, nullable=False),
            Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
            Column("revoked_at", DateTime(timezone=True), nullable=True),
        ],
    }


class RuntimeTables:
    def __init__(self, metadata: MetaData, schema: str) -> None:
        columns = _columns()
        self.schema = schema
        self.consumer_offsets = Table(
            "consumer_offsets", metadata, *columns["consumer_offsets"], schema=schema
        )
        self.processed_events = Table(
            "processed_events", metadata, *columns["processed_events"], schema=schema
        )
        self.outbox = Table("outbox", metadata, *columns["outbox"], schema=schema)
        self.api_keys = Table("api_keys", metadata, *columns["api_keys"], schema=schema)


def create_runtime_tables(op: Any, schema: str) -> None:
    """Called from a service's first Alembic migration."""
    for name, columns in _columns().items():
        op.create_table(name, *columns, schema=schema)
