"""Wiring of the notifier: migrations, the consumer of commands and facts, the sender, the outbox
relay, and over HTTP the team's task queue and the creditor profile."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from services.notifier import profile_api, store
from services.notifier.api import router
from services.notifier.projection import NotifierProjection
from services.notifier.sender import Sender
from services.runtime.process import Resources
from services.runtime.service import Service
from services.runtime.supervisor import Loop

NAME = "notifier"


class NotifierService(Service):
    def __init__(self, resources: Resources) -> None:
        settings = resources.settings
        self.sender = Sender(resources.sessions, settings)
        super().__init__(
            NAME,
            resources,
            store.runtime,
            NotifierProjection(honour_send_windows=settings.send_windows == "honour"),
            on_committed=self.sender.wake.set,
        )

    def loops(self) -> Sequence[tuple[str, Loop]]:
        return (*super().loops(), (f"{NAME}-sender", self.sender.run))

    def routers(self) -> Sequence[APIRouter]:
        return (router(), profile_api.router())
