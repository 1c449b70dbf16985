"""Wiring of the scoring service: migrations, the consumer of balance facts, disputes, debtor data and
business days, the outbox relay of score events, and the HTTP API."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from services.runtime.process import Resources
from services.runtime.service import Service
from services.scoring import store
from services.scoring.api import router
from services.scoring.models_on_disk import ModelSource
from services.scoring.projection import ScoringProjection
from services.scoring.writeoff import WriteOffRule

NAME = "scoring"


class ScoringService(Service):
    def __init__(self, resources: Resources) -> None:
        self.models = ModelSource(resources.settings.scoring_model_dir)
        rule = WriteOffRule(max_days_past_due=resources.settings.scoring_write_off_max_days)
        self.projection = ScoringProjection(
            self.models, write_off=rule, workers=resources.settings.scoring_workers
        )
        super().__init__(
            NAME,
            resources,
            store.runtime,
            self.projection,
            max_records=resources.settings.scoring_max_records,
        )

    async def start_background(self) -> None:
        self.projection.start_workers()
        await super().start_background()

    async def stop_background(self) -> None:
        await super().stop_background()
        self.projection.close()

    def routers(self) -> Sequence[APIRouter]:
        return (router(),)
