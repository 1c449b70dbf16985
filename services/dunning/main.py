"""Wiring of the dunning service: migrations, the consumer of facts and business days, the outbox
relay, and the HTTP API for the collections team and agencies."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from services.dunning import store
from services.dunning.api import router
from services.dunning.projection import DunningProjection
from services.runtime.consumer import ConsumerLoop
from services.runtime.http import install_error_handler, install_health
from services.runtime.migrations import upgrade
from services.runtime.outbox import OutboxRelay
from services.runtime.process import BackgroundTasks, Resources

NAME = "dunning"


class DunningService:
    def __init__(self, resources: Resources) -> None:
        settings = resources.settings
        self.resources = resources
        self.relay = OutboxRelay(
            resources.sessions,
            store.runtime,
            resources.event_log,
            batch_size=settings.outbox_batch,
            poll_interval_s=settings.outbox_poll_ms / 1000,
        )
        self.consumer = ConsumerLoop(
            DunningProjection(),
            resources.sessions,
            store.runtime,
            resources.event_log,
            max_records=settings.consumer_max_records,
            fetch_timeout_ms=settings.consumer_fetch_timeout_ms,
            on_committed=self.relay.wake.set,
        )
        self.background = BackgroundTasks()

    async def migrate(self) -> None:
        await upgrade(self.resources.engine, NAME)

    async def start_background(self) -> None:
        self.background.start("dunning-consumer", self.consumer.run)
        self.background.start("dunning-outbox", self.relay.run)

    async def stop_background(self) -> None:
        await self.background.stop()

    def app(self, *, run_background: bool = True) -> FastAPI:
        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            if run_background:
                await self.start_background()
            try:
                yield
            finally:
                if run_background:
                    await self.stop_background()

        app = FastAPI(title="Arrears dunning", version="1", lifespan=lifespan)
        app.state.sessions = self.resources.sessions
        app.state.event_log = self.resources.event_log
        install_error_handler(app)
        install_health(app)
        app.include_router(router())
        return app
