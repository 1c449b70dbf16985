"""The ledger's HTTP API in a process of its own, as deployed: uvicorn, no background consumer.

`python -m bench.server --port N` serves the ledger app configured by the ARREARS_* variables;
`LedgerServer` starts that process for a measurement and stops it again. A process of its own keeps
the load generator's CPU and event loop apart from the server's, and lets `--profile` attach py-spy to
exactly the server.
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
    """Start the API server on a free port; yield once /readyz answers; stop it at the end."""
    (port,) = free_ports(1)
    env = {
        **os.environ,
        "ARREARS_DATABASE_URL": database_url,
        "ARREARS_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "ARREARS_DB_POOL_SIZE": str(pool_size),
        "ARREARS_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.server", "--port", str(port), cwd=REPO, env=env, stdin=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(url, process)
        processes.add("api_server", lambda: [process.pid] if process.returncode is None else [])
        with profiler.attach(process.pid, profile_name) if profiler else contextlib.nullcontext():
            yield LedgerServer(url, process.pid)
        processes.forget("api_server")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _wait_ready(url: str, process: asyncio.subprocess.Process, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"the ledger API server exited with {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the ledger API server at {url} was not ready in {timeout_s:.0f} s")
            await asyncio.sleep(0.1)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from services.ledger.main import LedgerService
    from services.runtime.process import open_resources
    from services.runtime.settings import Settings

    parser = argparse.ArgumentParser(description="Serve the ledger API without its background consumer.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
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
        async with open_resources(settings) as resources:
            app = LedgerService(resources).app(run_background=False)
            config = uvicorn.Config(
                app, host=args.host, port=args.port, log_level="warning", access_log=False
            )
            server = Server(config)
            stop = functools.partial(setattr, server, "should_exit", True)
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
            await server.serve()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
