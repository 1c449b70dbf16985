"""Wiring of the notifier: migrations, the consumer of commands and facts, the sender, the outbox relay."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from services.notifier import store
from services.notifier.api import router
from services.notifier.projection import NotifierProjection
from services.notifier.sender import Sender
from services.runtime.consumer import ConsumerLoop
from services.runtime.http import install_error_handler, install_health
from services.runtime.migrations import upgrade
from services.runtime.outbox import OutboxRelay
from services.runtime.process import BackgroundTasks, Resources

NAME = "notifier"


class NotifierService:
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
        self.sender = Sender(resources.sessions, settings)
        self.consumer = ConsumerLoop(
            NotifierProjection(honour_send_windows=settings.send_windows == "honour"),
            resources.sessions,
            store.runtime,
            resources.event_log,
            max_records=settings.consumer_max_records,
            fetch_timeout_ms=settings.consumer_fetch_timeout_ms,
            on_committed=self.sender.wake.set,
        )
        self.background = BackgroundTasks()

    async def migrate(self) -> None:
        await upgrade(self.resources.engine, NAME)

    async def start_background(self) -> None:
        self.background.start("notifier-consumer", self.consumer.run)
        self.background.start("notifier-sender", self.sender.run)
        self.background.start("notifier-outbox", self.relay.run)

    async def stop_background(self) -> None:
        await self.background.stop()

    def app(self, *, run_background: bool = True) -> FastAPI:
        """The team's task queue, health and metrics; sending is all in the background."""

        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            if run_background:
                await self.start_background()
            try:
                yield
            finally:
                if run_background:
                    await self.stop_background()

        app = FastAPI(title="Arrears notifier", version="1", lifespan=lifespan)
        app.state.sessions = self.resources.sessions
        app.state.event_log = self.resources.event_log
        install_error_handler(app)
        install_health(app)
        app.include_router(router())
        return app
