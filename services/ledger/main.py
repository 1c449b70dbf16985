"""Wiring of the ledger service: migrations, consumer, outbox relay and HTTP app on shared resources."""

from __future__ import annotations

import os
from collections.abc import Sequence

from fastapi import APIRouter

from services.ledger import store
from services.ledger.api import router
from services.ledger.projection import DEFAULT_STATE_CACHE, LedgerProjection
from services.runtime.process import Resources
from services.runtime.service import Service

NAME = "ledger"
STATE_CACHE_VARIABLE = "ARREARS_LEDGER_STATE_CACHE"
"""Debtor states the ledger's consumer keeps decoded between batches (0: none)."""


def state_cache_size() -> int:
    return int(os.environ.get(STATE_CACHE_VARIABLE, DEFAULT_STATE_CACHE))


class LedgerService(Service):
    def __init__(self, resources: Resources) -> None:
        super().__init__(NAME, resources, store.runtime, LedgerProjection(state_cache_size()))

    def routers(self) -> Sequence[APIRouter]:
        return (router(self.resources.settings),)
