"""Where the dashboard's pass-through finds each service: its ASGI app in the same process, or its
base URL."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from fastapi import FastAPI

from services.runtime.settings import Settings

TIMEOUT = httpx.Timeout(30.0, connect=5.0)


def in_process(apps: Mapping[str, FastAPI]) -> dict[str, httpx.AsyncClient]:
    return {
        name: httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=f"http://{name}", timeout=TIMEOUT
        )
        for name, app in apps.items()
    }


def over_http(settings: Settings) -> dict[str, httpx.AsyncClient]:
    """The services at ARREARS_LEDGER_URL, ARREARS_DUNNING_URL, ARREARS_SCORING_URL and
    ARREARS_NOTIFIER_URL."""
    urls = {
        "ledger": settings.ledger_url,
        "dunning": settings.dunning_url,
        "scoring": settings.scoring_url,
        "notifier": settings.notifier_url,
    }
    return {name: httpx.AsyncClient(base_url=url, timeout=TIMEOUT) for name, url in urls.items()}
