"""The composition root: a running Arrears stack, built from Settings.

`open_stack` opens the database and the log (`open_resources`: Kafka by ARREARS_KAFKA_BOOTSTRAP_SERVERS,
else the PostgreSQL log in the services' database), builds the services asked for, migrates their
schemas and, unless the stack serves the API only, starts their background loops (consumers, outbox
relays, the notifier's sender, scoring's workers); leaving it stops everything in the reverse order.
Every way Arrears runs is assembled here: `arrears serve`, `migrate` and `keys create`, `arrears demo`,
the integration tests and the benchmark.

What a caller may change beyond Settings: the log (`event_log`), what runs between the migrations
and the start of the loops (`prepare`), and the outside world the notifier talks to (`outside`: an SMTP
server and a webhook receiver in this process, which the settings are pointed at).
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, TypeVar

import uvicorn
from aiosmtpd.controller import Controller
from fastapi import FastAPI, Request
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.dashboard.app import dashboard_app
from services.dashboard.upstreams import in_process
from services.dunning.main import DunningService
from services.ledger.main import LedgerService
from services.notifier import store as notifier_store
from services.notifier.main import NotifierService
from services.runtime.auth import create_key
from services.runtime.log import EventLog
from services.runtime.process import Resources, open_resources
from services.runtime.service import Service
from services.runtime.settings import Settings
from services.scoring.main import ScoringService

SERVICES: dict[str, Callable[[Resources], Service]] = {
    "ledger": LedgerService,
    "dunning": DunningService,
    "notifier": NotifierService,
    "scoring": ScoringService,
}
"""Every service by name, in the order work moves through them."""
ALL = tuple(SERVICES)

S = TypeVar("S", bound=Service)


@dataclass
class Outside:
    """The far ends of the notifier's channels, in this process: an SMTP server that keeps every
    e-mail, and an HTTP receiver that keeps every webhook (the ERP's and the agencies') by target."""

    emails: list[EmailMessage] = field(default_factory=list)
    webhooks: list[tuple[str, Any]] = field(default_factory=list)

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.emails if m["To"] == address]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.emails.append(message)
        return "250 OK"

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/{target}")
        async def receive(target: str, request: Request) -> dict[str, str]:
            self.webhooks.append((target, await request.json()))
            return {"status": "received"}

        return app


@dataclass
class Stack:
    """The services of one process on shared resources, and the outside world if it has one."""

    resources: Resources
    services: dict[str, Service]
    outside: Outside | None = None
    running: bool = field(default=False, init=False)

    @property
    def settings(self) -> Settings:
        return self.resources.settings

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self.resources.sessions

    @property
    def event_log(self) -> EventLog:
        return self.resources.event_log

    @property
    def ledger(self) -> LedgerService:
        return self._service("ledger", LedgerService)

    @property
    def dunning(self) -> DunningService:
        return self._service("dunning", DunningService)

    @property
    def notifier(self) -> NotifierService:
        return self._service("notifier", NotifierService)

    @property
    def scoring(self) -> ScoringService:
        return self._service("scoring", ScoringService)

    def _service(self, name: str, kind: type[S]) -> S:
        service = self.services[name]
        assert isinstance(service, kind)
        return service

    def app(self, name: str) -> FastAPI:
        """The HTTP API of a service of the stack; its loops are the stack's to run."""
        return self.services[name].app(run_background=False)

    def dashboard(self) -> FastAPI:
        """The operations dashboard, passing its API calls to this stack's services in the process."""
        return dashboard_app(in_process({name: self.app(name) for name in self.services}))

    async def start_background(self) -> None:
        for service in self.services.values():
            await service.start_background()
        self.running = True

    async def stop_background(self) -> None:
        if self.running:
            self.running = False
            for service in reversed(self.services.values()):
                await service.stop_background()

    async def create_key(self, tenant: str, name: str, role: str, on: Sequence[str]) -> str:
        """A new API key of `role` for `tenant`, valid at the services named in `on`."""
        tables = [self.services[service].consumer.tables for service in on]
        async with self.sessions() as session, session.begin():
            return await create_key(session, tables, tenant, name, role)

    async def settled(self, timeout_s: float = 180, poll_s: float = 0.02) -> None:
        """Wait until every consumer applied everything, every outbox is published and every due
        send is made."""
        deadline = time.monotonic() + timeout_s
        services = list(self.services.values())
        # Until a consumer has its partitions its lag reads 0; a clock tick published before then
        # could be applied before the facts of its day.
        for service in services:
            await asyncio.wait_for(service.consumer.started.wait(), timeout_s)
        quiet = 0
        while True:
            # Read in the order work moves, so a move between two reads is seen by the later one: a
            # consumer's commit takes records off its lag (read first) into the deliveries and outboxes,
            # the sender takes deliveries into the notifier's outbox, a relay takes outbox rows into the
            # log (the lags, read again last).
            # Concurrently: each lag is a request to the broker that waits behind the consumer's fetch.
            lag = sum(await asyncio.gather(*(s.consumer.lag() for s in services)))
            waiting = await self._waiting()
            lag += sum(await asyncio.gather(*(s.consumer.lag() for s in services)))
            quiet = quiet + 1 if lag == 0 and waiting == 0 else 0
            if quiet == 2:  # twice in a row: nothing a consumer wrote meanwhile is still in flight
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not settled: lag {lag}, waiting {waiting}")
            for service in services:
                service.relay.wake.set()
            await asyncio.sleep(poll_s)

    async def _waiting(self) -> int:
        """Rows in the outboxes, and sends not made yet."""
        async with self.sessions() as session:
            waiting = 0
            for service in self.services.values():
                outbox = service.consumer.tables.outbox
                waiting += await session.scalar(select(func.count()).select_from(outbox)) or 0
            if "notifier" in self.services:
                d = notifier_store.deliveries
                pending = select(func.count()).select_from(d).where(d.c.status.in_(("pending", "sending")))
                waiting += await session.scalar(pending) or 0
        return waiting


@contextlib.asynccontextmanager
async def open_stack(
    settings: Settings,
    services: Sequence[str] = ALL,
    *,
    background: bool = True,
    migrate: bool = True,
    event_log: EventLog | None = None,
    prepare: Callable[[Stack], Awaitable[None]] | None = None,
    outside: bool = False,
) -> AsyncIterator[Stack]:
    """The `services` (names of SERVICES) on the resources of `settings`, their schemas migrated
    (unless `migrate` is false), then `prepare` run (e.g. stored offsets set), then their background
    loops started (unless `background` is false: the API only, or loops the caller starts itself).

    `event_log`: a log of the caller's instead of the one the settings name. `outside`: an SMTP server
    and a webhook receiver (targets `erp` and `agency`) in this process, with the settings pointed at
    them; what they receive is `Stack.outside`."""
    unknown = [name for name in services if name not in SERVICES]
    if unknown:
        raise ValueError(f"unknown service {unknown[0]!r}; one of {', '.join(SERVICES)}")
    async with contextlib.AsyncExitStack() as exits:
        world = None
        if outside:
            world = Outside()
            settings = await exits.enter_async_context(_outside_world(world, settings))
        resources = await exits.enter_async_context(open_resources(settings, event_log))
        stack = Stack(resources, {name: SERVICES[name](resources) for name in services}, world)
        if migrate:
            for service in stack.services.values():
                await service.migrate()
        if prepare is not None:
            await prepare(stack)
        exits.push_async_callback(stack.stop_background)
        if background:
            await stack.start_background()
        yield stack


async def migrate(settings: Settings, services: Sequence[str] = ALL) -> list[str]:
    """Create or upgrade the schemas of `services`; their names, in the order migrated."""
    async with open_stack(settings, services, background=False) as stack:
        return list(stack.services)


@contextlib.asynccontextmanager
async def _outside_world(world: Outside, settings: Settings) -> AsyncIterator[Settings]:
    smtp = Controller(world, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        async with serving(world.app()) as webhooks:
            yield settings.model_copy(
                update={
                    "smtp_port": smtp.port,
                    "webhook_urls": {"erp": f"{webhooks}/erp", "agency": f"{webhooks}/agency"},
                }
            )
    finally:
        smtp.stop()


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """`app` served over real HTTP on a free loopback port; its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
