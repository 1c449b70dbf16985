"""Ledger, dunning and notifier on a real broker and database, with a real SMTP server and a local
webhook receiver: the whole collections loop as a test drives it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.policy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from aiosmtpd.controller import Controller
from fastapi import FastAPI, Request
from sqlalchemy import func, select

from services.dunning import store as dunning_store
from services.dunning.main import DunningService
from services.dunning.policies import default_policy
from services.ledger import store as ledger_store
from services.ledger.main import LedgerService
from services.notifier import store as notifier_store
from services.notifier.main import NotifierService
from services.runtime import clock
from services.runtime.auth import create_key
from services.runtime.consumer import ConsumerLoop
from services.runtime.process import Resources, open_resources
from services.runtime.settings import Settings
from tests.infra.kafka_broker import free_ports
from tests.integration.conftest import begin_at_test_start


@dataclass
class Received:
    """What reached the outside world: e-mails by Message-ID, webhooks by target."""

    emails: list[email.message.EmailMessage] = field(default_factory=list)
    webhooks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        self.emails.append(message)
        return "250 OK"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [m for m in self.emails if m["To"] == address]

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/{target}")
        async def receive(target: str, request: Request) -> dict[str, str]:
            self.webhooks.append((target, await request.json()))
            return {"status": "received"}

        return app


@dataclass
class CollectionsStack:
    resources: Resources
    ledger: LedgerService
    dunning: DunningService
    notifier: NotifierService
    received: Received
    tenant: str
    keys: dict[str, str]
    letters: Path

    def client(self, service: str, role: str) -> httpx.AsyncClient:
        apps = {
            "ledger": lambda: self.ledger.app(run_background=False),
            "dunning": lambda: self.dunning.app(run_background=False),
            "notifier": lambda: self.notifier.app(run_background=False),
        }
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=apps[service]()),
            base_url=f"http://{service}",
            headers={"X-API-Key": self.keys[role]},
            timeout=30,
        )

    async def settled(self, timeout_s: float = 180) -> None:
        """Every consumer caught up and every outbox and send queue empty."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        consumers: list[ConsumerLoop] = [self.ledger.consumer, self.dunning.consumer, self.notifier.consumer]
        # Until a consumer has its partitions its lag reads 0; a clock tick published before then
        # could be applied before the facts of its day.
        for consumer in consumers:
            await asyncio.wait_for(consumer.started.wait(), timeout_s)
        quiet = 0
        while True:
            async with self.resources.sessions() as session:
                waiting = 0
                for outbox in (
                    ledger_store.runtime.outbox,
                    dunning_store.runtime.outbox,
                    notifier_store.runtime.outbox,
                ):
                    waiting += await session.scalar(select(func.count()).select_from(outbox)) or 0
                d = notifier_store.deliveries
                waiting += (
                    await session.scalar(
                        select(func.count()).select_from(d).where(d.c.status.in_(("pending", "sending")))
                    )
                    or 0
                )
            # After the outboxes: what they held before is in the log by now, so the lag counts it.
            lag = sum([await c.lag() for c in consumers])
            quiet = quiet + 1 if lag == 0 and waiting == 0 else 0
            if quiet == 2:  # twice in a row: nothing a consumer wrote meanwhile is still in flight
                return
            if loop.time() > deadline:
                raise TimeoutError(f"not settled: lag {lag}, waiting {waiting}")
            await asyncio.sleep(0.02)

    async def start_day(self, day: dt.date) -> None:
        await self.settled()
        await self.resources.event_log.publish([clock.day_started(self.tenant, day, dt.datetime.now(dt.UTC))])
        await self.settled()

    async def run_days(self, first: dt.date, last: dt.date) -> None:
        day = first
        while day <= last:
            await self.start_day(day)
            day += dt.timedelta(days=1)

    async def publish_policy(self, effective_from: dt.date, version: int = 1) -> None:
        document = default_policy().model_dump(mode="json")
        async with self.client("dunning", "operations") as api:
            response = await api.put(
                f"/v1/policies/{version}",
                json={"effective_from": effective_from.isoformat(), "document": document},
            )
            assert response.status_code == 202, response.text


@contextlib.asynccontextmanager
async def collections_stack(
    settings: Settings, tenant: str, letters: Path
) -> AsyncIterator[CollectionsStack]:
    received = Received()
    (smtp_port,) = free_ports(1)
    smtp = Controller(received, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    (webhook_port,) = free_ports(1)
    server = uvicorn.Server(
        uvicorn.Config(received.app(), host="127.0.0.1", port=webhook_port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.02)
    settings = settings.model_copy(
        update={
            "smtp_port": smtp_port,
            "send_windows": "ignore",
            "letters_dir": letters,
            "webhook_urls": {
                "erp": f"http://127.0.0.1:{webhook_port}/erp",
                "agency": f"http://127.0.0.1:{webhook_port}/agency",
            },
        }
    )
    try:
        async with open_resources(settings) as resources:
            services = (LedgerService(resources), DunningService(resources), NotifierService(resources))
            for service in services:
                await service.migrate()
            await begin_at_test_start(resources, list(services))
            keys = {}
            async with resources.sessions() as session, session.begin():
                keys["erp"] = await create_key(session, ledger_store.runtime, tenant, "erp", "erp")
                for role, name in (
                    ("collector", "alice"),
                    ("operations", "ops"),
                    ("agency", "agency-a"),
                    ("agency-b", "agency-b"),
                ):
                    tables = [dunning_store.runtime]
                    if not role.startswith("agency"):
                        tables.append(notifier_store.runtime)
                    keys[role] = await create_key(
                        session, tables, tenant, name, "agency" if role.startswith("agency") else role
                    )
            for service in services:
                await service.start_background()
            try:
                yield CollectionsStack(resources, *services, received, tenant, keys, letters)
            finally:
                for service in reversed(services):
                    await service.stop_background()
    finally:
        server.should_exit = True
        await serving
        smtp.stop()
