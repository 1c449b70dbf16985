"""OpenTelemetry trace context through Arrears: W3C `traceparent` in, on every record out.

An API request is a span continuing the caller's `traceparent` (or starting a trace). What the
request writes to the outbox carries the request's context in the record's headers. A consumer
batch is a span linked to the context of every record it holds; a record it produces carries the
context of the record that caused it (its envelope's `causationid`), or the batch's own when the
cause cannot be told. So one payment can be followed from the ERP's POST to the notifier by its
trace id, in the records' headers and in the spans.

Exporting is off unless the standard OTEL_* variables ask for OTLP (OTEL_TRACES_EXPORTER=otlp or
OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT): OTLP/HTTP, with opentelemetry-exporter-otlp-proto-http
installed beside Arrears. Spans are made either way, so the context flows without an exporter.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanContext

from services.runtime.log import Headers, Message, Record

TRACEPARENT = "traceparent"
tracer = trace.get_tracer("arrears")
log = logging.getLogger(__name__)


def configure_tracing(service: str) -> TracerProvider:
    """The process's tracer provider (made once), exporting by OTLP only when OTEL_* asks for it."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider(resource=Resource.create({"service.name": f"arrears-{service}"}))
    if _otlp_wanted(os.environ):
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter,
            )
        except ImportError:
            log.warning("OTEL_* asks for OTLP: install opentelemetry-exporter-otlp-proto-http")
        else:
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def _otlp_wanted(env: Mapping[str, str]) -> bool:
    return env.get("OTEL_TRACES_EXPORTER", "").lower() == "otlp" or any(
        env.get(name) for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def context_of_headers(headers: Iterable[tuple[str, str]]) -> Context:
    """The trace context an HTTP request or a record's headers carry (an empty one if none)."""
    return extract({k.lower(): v for k, v in headers if k.lower() == TRACEPARENT})


def current_traceparent() -> bytes | None:
    """The current span's context as a W3C traceparent, or None outside a valid span."""
    carrier: dict[str, str] = {}
    inject(carrier)
    found = carrier.get(TRACEPARENT)
    return found.encode() if found else None


def traceparent_of(record: Record) -> bytes | None:
    return record.header(TRACEPARENT)


MAX_LINKS = 128
"""The SDK keeps this many links of a span (its default limit) and drops the rest."""


def links_of(records: Sequence[Record]) -> list[Link]:
    """A link to the context of each record that carries one (once per distinct context, at most
    `MAX_LINKS`)."""
    seen: dict[bytes, Link] = {}
    for record in records:
        parent = traceparent_of(record)
        if parent is None or parent in seen:
            continue
        if len(seen) == MAX_LINKS:
            break
        context = trace.get_current_span(context_of_headers([(TRACEPARENT, parent.decode())]))
        span_context: SpanContext = context.get_span_context()
        if span_context.is_valid:
            seen[parent] = Link(span_context)
    return list(seen.values())


def with_traceparent(message: Message, traceparent: bytes | None) -> Message:
    """The message with `traceparent` in its headers, unless it has one or there is none to give."""
    if traceparent is None or any(k == TRACEPARENT for k, _ in message.headers):
        return message
    headers: Headers = (*message.headers, (TRACEPARENT, traceparent))
    return Message(message.topic, message.key, message.value, headers, message.timestamp_ms)


def carry_causes(
    messages: list[Message], causes: Mapping[tuple[str, str], bytes], inputs: int, fallback: bytes | None
) -> list[Message]:
    """Each produced message with the traceparent of the input that caused it, or `fallback` (the
    batch's). `causes`: the traceparent of each of the batch's `inputs` that has one, by tenant and
    event id. When every input carries the same context that is the cause's; otherwise the cause is
    found by the produced envelope's tenant and `causationid`."""
    if not messages:
        return messages
    distinct = set(causes.values())
    if not distinct:
        return [with_traceparent(m, fallback) for m in messages]
    if len(distinct) == 1 and len(causes) == inputs:
        only = next(iter(distinct))
        return [with_traceparent(m, only) for m in messages]
    out = []
    for message in messages:
        parent = fallback
        if not any(k == TRACEPARENT for k, _ in message.headers):
            parent = causes.get(_cause_of(message), fallback)
        out.append(with_traceparent(message, parent))
    return out


def _cause_of(message: Message) -> tuple[str, str]:
    """The envelope's tenant and causation id, read without parsing the record: both are
    identifiers (no quote, no escape), written by orjson without spaces."""
    return (_attribute(message.value, b'"tenantid":"'), _attribute(message.value, b'"causationid":"'))


def _attribute(value: bytes, opening: bytes) -> str:
    start = value.find(opening)
    if start < 0:
        return ""
    start += len(opening)
    end = value.find(b'"', start)
    return value[start:end].decode(errors="replace") if end > 0 else ""
