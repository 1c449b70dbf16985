"""A real PostgreSQL for a test session: DATABASE_URL if set, else the embedded wheel in a temp folder."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.runtime.embedded_postgres import (
    EmbeddedPostgres,
    check_database,
    libpq_to_sqlalchemy,
    sqlalchemy_to_libpq,
    start_embedded_postgres,
)


@dataclass
class PostgresServer:
    url: str
    """SQLAlchemy URL (postgresql+asyncpg://...)."""
    external: bool
    """True when DATABASE_URL named the server: shared, so tests must not assume it is empty."""
    started_in_s: float
    _embedded: EmbeddedPostgres | None = field(default=None, repr=False)
    _temp_dir: Path | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path | None:
        """The embedded server's data directory (its postmaster.pid names the server process)."""
        return self._embedded.data_dir if self._embedded is not None else None

    @property
    def dsn(self) -> str:
        """The libpq form of the URL, for asyncpg.connect()."""
        return sqlalchemy_to_libpq(self.url)

    def stop(self) -> None:
        atexit.unregister(self.stop)
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def start_postgres(timeout_s: float = 30.0, settings: Mapping[str, str] | None = None) -> PostgresServer:
    """Check DATABASE_URL answers, or start an embedded server (with `settings` beside Arrears' own);
    return once ``select 1`` works."""
    started = time.monotonic()
    external = os.environ.get("DATABASE_URL")
    if external:
        url = libpq_to_sqlalchemy(external)
        _run_blocking(check_database(url, timeout_s))
        return PostgresServer(url, external=True, started_in_s=time.monotonic() - started)

    temp_dir = Path(tempfile.mkdtemp(prefix="arrears-pg-"))
    try:
        embedded = start_embedded_postgres(temp_dir / "pg", settings)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    server = PostgresServer(embedded.url, False, 0.0, _embedded=embedded, _temp_dir=temp_dir)
    atexit.register(server.stop)
    try:
        _run_blocking(check_database(embedded.url, timeout_s))
    except BaseException:
        server.stop()
        raise
    server.started_in_s = time.monotonic() - started
    return server


def _run_blocking(coroutine: Coroutine[Any, Any, None]) -> None:
    # A thread of its own, so that this works from sync code and from inside a running event loop alike.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coroutine).result()
