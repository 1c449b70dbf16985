"""What every `python -m bench...` command does before it measures."""

from __future__ import annotations

import logging

from services.runtime.collector import settle as settle_collector


def prepare(*, settle: bool = True) -> None:
    """Log warnings and above; silence aiokafka (a new consumer group asks for its coordinator
    before the broker has one: noise, not a failure); and, with `settle`, settle the collector as
    `arrears serve` does, for the services that run in this process."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    if settle:
        settle_collector()
