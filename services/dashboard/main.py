"""`arrears serve dashboard`: the dashboard as a process of its own, passing its API calls to the
services at ARREARS_LEDGER_URL, ARREARS_DUNNING_URL, ARREARS_SCORING_URL and ARREARS_NOTIFIER_URL."""

from __future__ import annotations

import uvicorn

from services.dashboard.app import dashboard_app
from services.dashboard.upstreams import over_http
from services.runtime.settings import Settings


async def serve(settings: Settings) -> None:
    app = dashboard_app(over_http(settings))
    config = uvicorn.Config(app, host=settings.http_host, port=settings.http_port, log_config=None)
    await uvicorn.Server(config).serve()
