"""What every HTTP request leaves behind: a span continuing the caller's `traceparent`, the latency
by route template and status class, and one log line with the fields bound while it ran (the route,
the tenant its key was for, the debtor of the path).

The route is the template FastAPI matched (`/v1/debtors/{debtor_id}/statement`), never the raw path;
a path no route matches is `unmatched`. Probes (/healthz, /readyz, /metrics) are measured but make
neither a span nor a log line.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.runtime import metrics
from services.runtime.logging_setup import bound
from services.runtime.tracing import context_of_headers, tracer

log = logging.getLogger("arrears.http")

PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestTelemetry:
    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in PROBES:
            await self._measured(scope, receive, send)
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        method = scope["method"]
        parent = context_of_headers(headers)
        with (
            tracer.start_as_current_span(method, context=parent, kind=SpanKind.SERVER) as span,
            bound(service=self.service, method=method) as fields,
        ):
            status, route, elapsed = await self._measured(scope, receive, send)
            span.update_name(f"{method} {route}")
            span.set_attribute("http.request.method", method)
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            debtor = scope.get("path_params", {}).get("debtor_id")
            fields.update(route=route, status=status, duration_ms=round(elapsed * 1000, 1))
            if debtor is not None:
                fields["debtor"] = debtor
            log.info("%s %s answered %d", method, route, status)

    async def _measured(self, scope: Scope, receive: Receive, send: Send) -> tuple[int, str, float]:
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            metrics.HTTP_SECONDS.labels(
                self.service, scope["method"], route, metrics.status_class(status)
            ).observe(elapsed)
        return status, route, elapsed


def route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
