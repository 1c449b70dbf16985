"""The database engine and sessions; raw asyncpg access for bulk statements on hot paths."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.util import await_


def make_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    """A pool whose connections are checked before use, so that a connection PostgreSQL closed (a
    restart, a failover) is replaced instead of failing the first statement that gets it."""
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    engine.dialect.do_ping = _ping  # type: ignore[method-assign]
    return engine


def _ping(dbapi_connection: Any) -> bool:
    """The pool's check of a connection, in one round trip. SQLAlchemy's asyncpg ping wraps its
    empty statement in BEGIN and ROLLBACK for pgbouncer's transaction mode, which Arrears does not
    use: three round trips on every checkout, once per consumer batch and per outbox poll. When the
    short check fails, SQLAlchemy's own runs, and raises the error in the terms its pool acts on
    (a closed connection: every pooled one is replaced)."""
    try:
        await_(dbapi_connection.driver_connection.fetchrow(";"))
    except Exception:
        dbapi_connection.ping()
    return True


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
