"""The database engine and sessions; raw asyncpg access for bulk statements on hot paths."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def make_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def make_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def driver_connection(session: AsyncSession) -> Any:
    """The asyncpg connection inside the session's transaction, for COPY and array statements.

    SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its first statement: a statement sent on
    the driver connection before any SQLAlchemy statement would run outside the transaction and
    commit alone. So the transaction is started here when it has not been yet."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    adapted: Any = raw.dbapi_connection
    if connection.in_transaction() and getattr(adapted, "_transaction", False) is None:
        async with adapted._execute_mutex:
            if adapted._transaction is None:
                await adapted._start_transaction()
    return raw.driver_connection
