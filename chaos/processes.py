"""Real processes for fault runs: `arrears serve ledger|dunning|notifier|scoring` subprocesses that a
run starts, stops, kills with SIGKILL and restarts on the same port; the broker and PostgreSQL
stopped and started in place; fresh databases and empty topics for a run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from contracts.topics import catalogue
from services.runtime.embedded_postgres import sqlalchemy_to_libpq
from services.runtime.kafka_admin import ensure_topics
from tests.infra.kafka_broker import KAFKA_SH, KafkaBroker, _env, free_ports

REPO = Path(__file__).resolve().parents[1]


def now() -> float:
    return time.monotonic()


class Steps:
    """A test's timeline, printed as it goes (pytest shows it with a failure) and kept for messages."""

    def __init__(self) -> None:
        self.start = now()
        self.lines: list[str] = []

    def __call__(self, what: str) -> None:
        line = f"+{now() - self.start:5.1f} s {what}"
        self.lines.append(line)
        print(line, flush=True)

    def __str__(self) -> str:
        return "timeline:\n  " + "\n  ".join(self.lines)


def arrears_command() -> list[str]:
    """The venv's `arrears` script next to this interpreter (never a bare python3 from the PATH)."""
    script = Path(sys.executable).parent / "arrears"
    return [str(script)] if script.exists() else [sys.executable, "-m", "services.cli"]


# --- processes -------------------------------------------------------------------------------------


class ServiceProcess:
    """One `arrears serve SERVICE` (`--api-only`: the HTTP API alone), always on the same port, its
    output appended to a log file."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        log_dir: Path,
        service: str = "ledger",
        api_only: bool = False,
    ) -> None:
        (self.port,) = free_ports(1)
        self.name = name
        self.service = service
        self.api_only = api_only
        self.env = {**env, "ARREARS_HTTP_PORT": str(self.port)}
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [*arrears_command(), "serve", self.service, *(["--api-only"] if self.api_only else [])],
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def healthy(self, timeout_s: float = 45.0) -> None:
        """Wait until `/healthz` answers 200."""
        deadline = now() + timeout_s
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if self.process is None or self.process.poll() is not None:
                    code = None if self.process is None else self.process.returncode
                    raise RuntimeError(
                        f"{self.name} exited ({code}) before it was healthy:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return
                if now() > deadline:
                    raise TimeoutError(f"{self.name} not healthy in {timeout_s:.0f} s:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL, by the process's own pid."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            self.kills += 1
        process.wait(30)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (uvicorn shuts down, the consumer leaves its group), SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_count(self, needle: str) -> int:
        try:
            return self.log_path.read_text(errors="replace").count(needle)
        except FileNotFoundError:
            return 0


LedgerProcess = ServiceProcess
"""The name the ledger's fault tests know it by."""


def service_env(
    database_url: str, bootstrap_servers: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of a run's service processes: this one's, with the run's database and broker
    and short polling intervals (a fault run wants to see recovery quickly)."""
    return {
        **os.environ,
        "ARREARS_DATABASE_URL": database_url,
        "ARREARS_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "ARREARS_CONSUMER_FETCH_TIMEOUT_MS": "50",
        "ARREARS_OUTBOX_POLL_MS": "20",
        "ARREARS_LOG_LEVEL": "WARNING",
        **(extra or {}),
    }


async def create_key(env: dict[str, str], tenant: str, role: str = "erp", name: str = "fault-test") -> str:
    """`arrears keys create --tenant T --role R` in the processes' environment (it migrates first)."""
    process = await asyncio.create_subprocess_exec(
        *arrears_command(),
        "keys",
        "create",
        "--tenant",
        tenant,
        "--name",
        name,
        "--role",
        role,
        env=env,
        cwd=REPO,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    keys = [line for line in out.decode().splitlines() if line.startswith("ark_")]
    if process.returncode != 0 or not keys:
        raise RuntimeError(
            f"arrears keys create failed ({process.returncode}):\n{out.decode()}{err.decode()}"
        )
    return keys[-1]


class Ledgers:
    """`count` ledger processes on one database and one broker (one consumer group).

    Use as `async with Ledgers(...) as ledgers:`; leaving the block stops every process, whatever
    happened."""

    def __init__(
        self,
        database_url: str,
        bootstrap_servers: str,
        log_dir: Path,
        count: int = 1,
        env: dict[str, str] | None = None,
    ) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.env = service_env(database_url, bootstrap_servers, env)
        self.database_url = database_url
        self.bootstrap_servers = bootstrap_servers
        self.processes = [ServiceProcess(f"ledger-{i}", self.env, log_dir) for i in range(count)]

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.processes]

    async def create_key(self, tenant: str) -> str:
        """`arrears keys create --tenant T` in the processes' environment (it migrates first)."""
        return await create_key(self.env, tenant)

    async def start(self) -> None:
        for p in self.processes:
            p.start()
        await asyncio.gather(*(p.healthy() for p in self.processes))

    def kill(self, index: int = 0) -> None:
        self.processes[index].kill()

    async def restart(self, index: int = 0) -> None:
        self.processes[index].start()
        await self.processes[index].healthy()

    def stop(self) -> None:
        for p in self.processes:
            p.stop()

    def log_count(self, needle: str) -> int:
        return sum(p.log_count(needle) for p in self.processes)

    async def __aenter__(self) -> Ledgers:
        return self

    async def __aexit__(self, *_: object) -> None:
        await asyncio.to_thread(self.stop)


# --- infrastructure faults ---------------------------------------------------------------------


async def reset_topics(bootstrap_servers: str, timeout_s: float = 60.0) -> None:
    """Delete every topic of the catalogue and create it again, empty: a test's ledgers, on a fresh
    database, then do not replay what the module's earlier tests posted."""
    names = [name for name, _, _ in catalogue()]
    deadline = now() + timeout_s
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=30_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        if existing & set(names):
            await admin.delete_topics([n for n in names if n in existing], timeout_ms=30_000)
        while set(await admin.list_topics()) & set(names):
            if now() > deadline:
                raise TimeoutError("the topics were not deleted")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    while True:
        try:
            await ensure_topics(bootstrap_servers, catalogue())
            return
        except KafkaError:
            if now() > deadline:
                raise
            await asyncio.sleep(0.5)


def kafka_sh(broker: KafkaBroker, command: str, timeout_s: float = 120) -> None:
    """`deploy/local/kafka.sh stop|start` on the broker's data dir and ports (blocking: use a thread)."""
    env = {**_env(broker.data_dir, broker.port, broker.controller_port), "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(KAFKA_SH), command],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kafka.sh {command} failed:\n{result.stdout}")


async def create_database(server_url: str) -> str:
    """A fresh database on the server of `server_url` (SQLAlchemy form); returns its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(sqlalchemy_to_libpq(server_url))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    base, _, query = server_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
