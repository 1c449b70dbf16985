"""A service in a process of its own, as deployed: uvicorn, with or without its background loops.

`python -m bench.server --port N` serves the ledger app configured by the ARREARS_* variables, without
its consumer; `--service dunning` serves the dunning app instead, and `--background` also runs the
service's consumer loop and outbox relay in that process (a worker as `arrears serve` runs it, the
schema migrated beforehand). `ledger_server` / `service_server` start such a process for a
measurement and stop it again. A process of its own keeps the load generator's CPU and event loop
apart from the server's, and lets `--profile` attach py-spy to exactly the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx

from bench.infra import REPO
from bench.processes import Processes
from bench.profiling import Profiler
from tests.infra.kafka_broker import free_ports


@dataclass
class LedgerServer:
    url: str
    pid: int


SERVICES = ("ledger", "dunning")


@contextlib.asynccontextmanager
async def ledger_server(
    database_url: str,
    bootstrap_servers: str,
    *,
    processes: Processes,
    pool_size: int = 10,
    profiler: Profiler | None = None,
    profile_name: str = "server",
) -> AsyncIterator[LedgerServer]:
    """Start the ledger API server on a free port; yield once /readyz answers; stop it at the end."""
    async with service_server(
        database_url,
        bootstrap_servers,
        processes=processes,
        pool_size=pool_size,
        profiler=profiler,
        profile_name=profile_name,
    ) as server:
        yield server


@contextlib.asynccontextmanager
async def service_server(
    database_url: str,
    bootstrap_servers: str,
    *,
    processes: Processes,
    service: str = "ledger",
    background: bool = False,
    group: str = "api_server",
    pool_size: int = 10,
    environment: dict[str, str] | None = None,
    profiler: Profiler | None = None,
    profile_name: str = "server",
) -> AsyncIterator[LedgerServer]:
    """Start `service` (its HTTP API; with `background` its consumer and relay too) in a process on a
    free port, counted as the process group `group`; yield once /readyz answers; stop it at the end.
    `environment` adds ARREARS_* settings (e.g. the consumer's fetch timeout) for that process."""
    (port,) = free_ports(1)
    env = {
        **os.environ,
        "ARREARS_DATABASE_URL": database_url,
        "ARREARS_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "ARREARS_DB_POOL_SIZE": str(pool_size),
        "ARREARS_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO),
        **(environment or {}),
    }
    arguments = ["--port", str(port), "--service", service] + (["--background"] if background else [])
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.server", *arguments, cwd=REPO, env=env, stdin=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(url, process, service)
        processes.add(group, lambda: [process.pid] if process.returncode is None else [])
        with profiler.attach(process.pid, profile_name) if profiler else contextlib.nullcontext():
            yield LedgerServer(url, process.pid)
        processes.forget(group)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _wait_ready(
    url: str, process: asyncio.subprocess.Process, service: str = "ledger", timeout_s: float = 60
) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"the {service} server exited with {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {service} server at {url} was not ready in {timeout_s:.0f} s")
            await asyncio.sleep(0.1)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from services.runtime.collector import settle as settle_collector
    from services.runtime.settings import Settings
    from services.stack import open_stack

    parser = argparse.ArgumentParser(
        description="Serve a service's API, by default without its background loops."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--service", choices=SERVICES, default="ledger")
    parser.add_argument("--background", action="store_true", help="run the consumer and the outbox relay too")
    args = parser.parse_args(argv)
    settings = Settings()
    if settings.database_url is None or not settings.kafka_bootstrap_servers:
        sys.exit("set ARREARS_DATABASE_URL and ARREARS_KAFKA_BOOTSTRAP_SERVERS")

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # SIGTERM (below) ends the server; uvicorn's own handling would re-raise the signal
            # afterwards and end the process before the database and the producer are closed.
            yield

    async def serve() -> None:
        async with open_stack(settings, [args.service], background=args.background, migrate=False) as stack:
            config = uvicorn.Config(
                stack.app(args.service), host=args.host, port=args.port, log_level="warning", access_log=False
            )
            server = Server(config)
            stop = functools.partial(setattr, server, "should_exit", True)
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
            await server.serve()

    settle_collector()  # as `arrears serve` does
    asyncio.run(serve())


if __name__ == "__main__":
    main()
