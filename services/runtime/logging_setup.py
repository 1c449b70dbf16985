"""How Arrears logs: stdlib `logging` everywhere, one JSON object a line (or plain text), with the
fields of what is being done bound for every line logged while doing it.

`bound(...)` binds fields (tenant, debtor, record, group, route) for the code it wraps: the consumer
binds them around a batch, the HTTP middleware around a request (and the key check adds the
tenant it admitted). Every line also carries the current trace and span ids, so a log line leads
to its trace. ARREARS_LOG_FORMAT=json|text chooses the format (`arrears serve`: json by default;
the demo and the other commands: text).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator
from typing import Literal, TextIO

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["json", "text"]

_FIELDS: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar("log_fields", default=None)


@contextlib.contextmanager
def bound(**fields: object) -> Iterator[dict[str, object]]:
    """Bind `fields` (None values left out) to every line logged inside; yields the bound fields,
    which `bind` adds to."""
    merged = {**(_FIELDS.get() or {}), **{k: v for k, v in fields.items() if v is not None}}
    token = _FIELDS.set(merged)
    try:
        yield merged
    finally:
        _FIELDS.reset(token)


def bind(**fields: object) -> None:
    """Add fields to those bound by the innermost `bound` (e.g. the tenant, once the key is
    checked); outside one, nothing."""
    current = _FIELDS.get()
    if current is not None:
        current.update({k: v for k, v in fields.items() if v is not None})


class _Context(logging.Filter):
    """Puts the bound fields and the trace context on each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_FIELDS.get() or {}).items():
            setattr(record, key, value)
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            record.trace_id = format(span.trace_id, "032x")
            record.span_id = format(span.span_id, "016x")
        return True


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",  # ISO 8601 in UTC, to the microsecond
    )


def log_handler(stream: TextIO, log_format: LogFormat) -> logging.Handler:
    """A handler writing to `stream` in `log_format`, with the bound fields and the trace context."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(_Context())
    handler.setFormatter(
        json_formatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    return handler


def configure_logging(level: str | int, log_format: LogFormat) -> None:
    """One handler on the root logger, writing to stderr in `log_format`; replaces any before it."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(log_handler(sys.stderr, log_format))
    root.setLevel(level)
