"""Wiring of the dunning service: migrations, the consumer of facts and business days, the outbox
relay, and the HTTP API for the collections team and agencies."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from services.dunning import store
from services.dunning.api import router
from services.dunning.projection import DunningProjection, warm_worker
from services.dunning.record_api import router as record_router
from services.runtime.process import Resources
from services.runtime.service import Service

NAME = "dunning"


class DunningService(Service):
    def __init__(self, resources: Resources) -> None:
        settings = resources.settings
        self.projection = DunningProjection(settings.dunning_case_cache, workers=settings.dunning_workers)
        super().__init__(NAME, resources, store.runtime, self.projection)

    async def start_background(self) -> None:
        self.projection.workers.start(warm_worker)
        await super().start_background()

    async def stop_background(self) -> None:
        await super().stop_background()
        self.projection.workers.close()

    def routers(self) -> Sequence[APIRouter]:
        return (router(), record_router())
