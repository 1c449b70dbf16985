"""Accepting ERP events: idempotent by event id, durable before the answer.

A 202 means the event is in PostgreSQL: its id is claimed and the record to publish is written to
the ledger's outbox in ONE transaction, and the outbox relay publishes it to the log. So an accepted
event survives a crash at any line, and the API keeps accepting while the broker is away."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.envelope import Envelope
from contracts.registry import topic_of
from services.ledger import store
from services.runtime import metrics
from services.runtime.log import Message
from services.runtime.outbox import write_outbox

IngestStatus = Literal["accepted", "duplicate", "conflict"]


@dataclass(frozen=True)
class IngestResult:
    id: str
    status: IngestStatus


def content_digest(event: Envelope[Any]) -> bytes:
    """The fingerprint of what an event says; the source's timestamp of sending it is left out,
    so a re-sent event (or a re-loaded file) is a duplicate and not a conflict."""
    content = event.model_dump(mode="json", exclude={"time"})
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).digest()


def encoded_with_digest(event: Envelope[Any]) -> tuple[bytes, bytes]:
    """`(encode_event(event), content_digest(event))` from one dump of the event: the record drops
    the fields that are None (as `encode_event` does: the journal's models have no dict fields, so
    that is every None of a model), the digest drops the time (a unit test checks both)."""
    content = event.model_dump(mode="json")
    value = orjson.dumps(_without_none(content))
    del content["time"]
    return value, hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).digest()


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


class Conflicts(Exception):
    """A request refused whole: these event ids were accepted before with other content."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        super().__init__(f"{len(ids)} event id(s) accepted before with other content: {', '.join(ids[:5])}")


async def ingest(
    sessions: async_sessionmaker[AsyncSession],
    tenant_id: str,
    events: Sequence[Envelope[Any]],
    now: dt.datetime,
    *,
    all_or_nothing: bool = False,
) -> list[IngestResult]:
    """Claim the event ids and write the new events to the outbox in one transaction.

    Nothing is claimed unless everything commits, so a failed request may simply be retried.
    Same id with the same content is a duplicate; same id with other content is a conflict.
    With `all_or_nothing`, one conflict refuses the request: the transaction that found it rolls
    back and `Conflicts` names the ids, so nothing of the request is claimed or written.
    """
    encoded, content = [], []
    for event in events:
        value, digest = encoded_with_digest(event)
        encoded.append(value)
        content.append(digest)
    digests: dict[str, bytes] = {}
    for event, digest in zip(events, content, strict=True):
        digests.setdefault(event.id, digest)

    async with sessions() as session, session.begin():
        new = await store.claim_event_ids(session, tenant_id, digests, now)
        known = await store.known_digests(session, tenant_id, digests.keys() - new)
        results = _results(events, content, digests, new, known)
        conflicts = [r.id for r in results if r.status == "conflict"]
        if all_or_nothing and conflicts:
            _count(results)
            raise Conflicts(conflicts)
        written: set[str] = set()
        messages: list[Message] = []
        for event, value in zip(events, encoded, strict=True):
            if event.id in new and event.id not in written:
                written.add(event.id)
                messages.append(Message(topic_of(event), event.key.encode(), value))
        await write_outbox(session, store.runtime, messages)
    _count(results)
    return results


def _results(
    events: Sequence[Envelope[Any]],
    content: Sequence[bytes],
    digests: Mapping[str, bytes],
    new: set[str],
    known: Mapping[str, bytes],
) -> list[IngestResult]:
    results: list[IngestResult] = []
    reported: set[str] = set()
    for event, digest in zip(events, content, strict=True):
        if event.id in new and event.id not in reported:
            status: IngestStatus = "accepted"
        else:
            status = "duplicate" if known.get(event.id, digests[event.id]) == digest else "conflict"
        reported.add(event.id)
        results.append(IngestResult(event.id, status))
    return results


def _count(results: Sequence[IngestResult]) -> None:
    # One increment per status, not per event: a labelled metric's lookup is costly on this hot path.
    for status, count in Counter(r.status for r in results).items():
        metrics.INGESTED.labels(status).inc(count)
