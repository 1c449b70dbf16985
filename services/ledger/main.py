"""Wiring of the ledger service: migrations, consumer, outbox relay and HTTP app on shared resources."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from services.ledger import kpi_api, store
from services.ledger.api import router
from services.ledger.projection import LedgerProjection
from services.runtime.process import Resources
from services.runtime.service import Service

NAME = "ledger"


class LedgerService(Service):
    def __init__(self, resources: Resources) -> None:
        super().__init__(
            NAME, resources, store.runtime, LedgerProjection(resources.settings.ledger_state_cache)
        )

    def routers(self) -> Sequence[APIRouter]:
        return (router(self.resources.settings), kpi_api.router())
