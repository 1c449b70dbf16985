"""The shell every service shares: its schema's migrations, one consumer loop, the outbox relay,
optional extra background loops, and a FastAPI app whose lifespan runs them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from fastapi import APIRouter, FastAPI

from services.runtime.consumer import ConsumerLoop, Projection
from services.runtime.http import install_error_handler, install_health
from services.runtime.migrations import upgrade
from services.runtime.outbox import OutboxRelay
from services.runtime.process import Resources
from services.runtime.readiness import Readiness
from services.runtime.request_telemetry import RequestTelemetry
from services.runtime.supervisor import BackgroundTasks, Loop
from services.runtime.tables import RuntimeTables


class Service:
    def __init__(
        self,
        name: str,
        resources: Resources,
        tables: RuntimeTables,
        projection: Projection,
        *,
        on_committed: Callable[[], None] | None = None,
        max_records: int | None = None,
    ) -> None:
        """`max_records`: records per consumer batch, when not the settings' `consumer_max_records`."""
        settings = resources.settings
        self.name = name
        self.resources = resources
        self.relay = OutboxRelay(
            resources.sessions,
            tables,
            resources.event_log,
            batch_size=settings.outbox_batch,
            poll_interval_s=settings.outbox_poll_ms / 1000,
        )
        self.consumer = ConsumerLoop(
            projection,
            resources.sessions,
            tables,
            resources.event_log,
            max_records=max_records or settings.consumer_max_records,
            fetch_timeout_ms=settings.consumer_fetch_timeout_ms,
            on_committed=on_committed or self.relay.wake.set,
        )
        self.background = BackgroundTasks()

    def loops(self) -> Sequence[tuple[str, Loop]]:
        """The background loops: the consumer and the relay, and whatever a service adds."""
        return ((f"{self.name}-consumer", self.consumer.run), (f"{self.name}-outbox", self.relay.run))

    def routers(self) -> Sequence[APIRouter]:
        return ()

    async def migrate(self) -> None:
        await upgrade(self.resources.engine, self.name)

    async def start_background(self) -> None:
        for name, loop in self.loops():
            self.background.start(name, loop)

    async def stop_background(self) -> None:
        await self.background.stop()

    def readiness(self) -> Readiness:
        return Readiness(
            self.resources.sessions,
            self.resources.event_log,
            self.background,
            [self.consumer],
            max_lag=self.resources.settings.ready_max_lag_records,
        )

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

        app = FastAPI(
            title=f"Arrears {self.name}",
            version="1",
            lifespan=lifespan,
            # Requests are traced, measured and logged by RequestTelemetry, the same with any FastAPI
            # version; FastAPI's own OpenTelemetry spans would trace each request twice.
            telemetry={"tracing": False, "metrics": False, "logs": False},
        )
        app.state.sessions = self.resources.sessions
        app.state.event_log = self.resources.event_log
        app.state.background = self.background
        app.state.outbox_written = self.relay.wake.set
        install_error_handler(app)
        install_health(app, self.readiness())
        app.add_middleware(RequestTelemetry, service=self.name)
        for router in self.routers():
            app.include_router(router)
        return app
