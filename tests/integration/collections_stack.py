"""Ledger, dunning and notifier on a real broker and database, with a real SMTP server and a local
webhook receiver: the whole collections loop as a test drives it."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.dunning.policies import default_policy
from services.runtime import clock
from services.runtime.process import Resources
from services.runtime.settings import Settings
from services.stack import Outside, Stack, open_stack
from tests.integration.conftest import from_test_start


@dataclass
class CollectionsStack:
    stack: Stack
    tenant: str
    keys: dict[str, str]
    letters: Path

    @property
    def resources(self) -> Resources:
        return self.stack.resources

    @property
    def received(self) -> Outside:
        """What reached the outside world: e-mails, and webhooks by target."""
        assert self.stack.outside is not None
        return self.stack.outside

    def client(self, service: str, role: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.stack.app(service)),
            base_url=f"http://{service}",
            headers={"X-API-Key": self.keys[role]},
            timeout=30,
        )

    async def settled(self, timeout_s: float = 180) -> None:
        """Every consumer caught up and every outbox and send queue empty."""
        await self.stack.settled(timeout_s)

    async def start_day(self, day: dt.date) -> None:
        await self.settled()
        await self.stack.event_log.publish([clock.day_started(self.tenant, day, dt.datetime.now(dt.UTC))])
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


async def tenant_keys(stack: Stack, tenant: str, agencies: Mapping[str, str]) -> dict[str, str]:
    """Keys of `tenant` by role: the ERP's, a collector's, operations', and one per agency of
    `agencies` (under its key here: the agency's id)."""
    keys = {"erp": await stack.create_key(tenant, "erp", "erp", on=["ledger"])}
    keys["collector"] = await stack.create_key(tenant, "alice", "collector", on=["dunning", "notifier"])
    keys["operations"] = await stack.create_key(tenant, "ops", "operations", on=["dunning", "notifier"])
    for role, agency in agencies.items():
        keys[role] = await stack.create_key(tenant, agency, "agency", on=["dunning"])
    return keys


@contextlib.asynccontextmanager
async def collections_stack(
    settings: Settings, tenant: str, letters: Path
) -> AsyncIterator[CollectionsStack]:
    settings = settings.model_copy(update={"send_windows": "ignore", "letters_dir": letters})
    services = ("ledger", "dunning", "notifier")
    async with open_stack(settings, services, prepare=from_test_start, outside=True) as stack:
        keys = await tenant_keys(stack, tenant, {"agency": "agency-a", "agency-b": "agency-b"})
        yield CollectionsStack(stack, tenant, keys, letters)
