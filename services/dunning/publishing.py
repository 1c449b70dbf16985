"""What dunning publishes about a decision: commands, cancellations and case events to the outbox, with
their timeline rows, the agency feed and the lines of the debtor's record."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from contracts.collections import CaseEvent, CollectionCommand, CommandCancelled, InputRef, case_type
from contracts.collections import command_type as command_type_of
from contracts.envelope import Envelope
from contracts.journal import DiscountGranted, WriteOffPosted
from contracts.registry import encode_event, make_event
from contracts.topics import CASES, COMMANDS, JOURNAL
from services.dunning.agencies import record_placement
from services.dunning.batch import Batch, moved
from services.dunning.domain import Case, Decision, agency_key, cancellation_id, case_event_id
from services.dunning.domain.record import cancellation_line, case_event_line, command_line, decided_notes
from services.dunning.kpis import observe
from services.runtime.log import Message

SOURCE = "arrears/dunning"


def publish_decision(work: Batch, decision: Decision, day: dt.date, tick: InputRef | None) -> None:
    case = decision.case
    if not (
        decision.commands or decision.cancellations or decision.events or decision.postings
    ) and not moved(work, case):
        return
    before = work.cases.get((case.tenant_id, case.debtor_id), {}).get(case.case_id)
    if before is not None:
        observe(work.kpi, before, case, decision.events, decision.commands)
    work.put(case)
    for command in decision.commands:
        publish_command(work, case, command)
    for cancellation in decision.cancellations:
        publish_cancellation(work, case, cancellation)
    publish_events(work, case, list(decision.events))
    for posting in decision.postings:
        publish_posting(work, case, posting)
    notes = decided_notes(decision, day, before)
    work.record.extend((case.tenant_id, case.debtor_id, line) for line in notes)


def envelope(
    event_type: str,
    data: CollectionCommand | CommandCancelled | CaseEvent,
    event_id: str,
    case: Case,
    cause: str | None,
) -> Message:
    """The record of a command, cancellation or case event: the bytes `encode_event` gives the
    contracts' envelope (`tests/unit/test_dunning_envelopes.py` holds them equal), made without
    building and validating an envelope around data validated when it was made."""
    if event_type not in data.TYPES:
        raise ValueError(f"{type(data).__name__} does not carry {event_type}")
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": SOURCE,
        "type": event_type,
        # midnight UTC of the business date it was decided on: a replay publishes the same bytes
        "time": f"{data.business_date.isoformat()}T00:00:00Z",
        "datacontenttype": "application/json",
        "tenantid": case.tenant_id,
        "debtorid": case.debtor_id,
    }
    if cause is not None:
        body["causationid"] = cause
    # The data is serialized by pydantic straight to JSON and set in as the envelope's last member.
    data_json = data.__pydantic_serializer__.to_json(data, exclude_none=True)
    value = b"".join((orjson.dumps(body)[:-1], b',"data":', data_json, b"}"))
    topic = COMMANDS.name if isinstance(data, CollectionCommand | CommandCancelled) else CASES.name
    return Message(topic, f"{case.tenant_id}:{case.debtor_id}".encode(), value)


def publish_posting(work: Batch, case: Case, posting: DiscountGranted | WriteOffPosted) -> None:
    """A journal entry for the ledger, keyed like the debtor's journal; its id is the posting's own
    (deterministic), so a replayed decision is applied once."""
    event_id = posting.discount_id if isinstance(posting, DiscountGranted) else posting.writeoff_id
    event: Envelope[Any] = make_event(
        posting.TYPES[0],
        posting,
        event_id=event_id,
        tenant_id=case.tenant_id,
        debtor_id=case.debtor_id,
        source=SOURCE,
        time=dt.datetime.combine(posting.posting_date, dt.time(), dt.UTC),
    )
    work.messages.append(Message(JOURNAL.name, event.key.encode(), encode_event(event)))


def publish_command(work: Batch, case: Case, command: CollectionCommand) -> None:
    cause = command.inputs[-1].event_id if command.inputs else None
    work.messages.append(envelope(command_type_of(command.action), command, command.command_id, case, cause))
    work.record.append((case.tenant_id, case.debtor_id, command_line(command)))
    work.timeline.append(
        timeline_row(
            case,
            command.business_date,
            f"command.{command.action}",
            command.command_id,
            {
                "step": command.step,
                "channels": command.channels,
                "items": [i.invoice_id for i in command.items],
                "total_minor": command.total.amount_minor,
                "penalty_minor": command.penalty.amount_minor if command.penalty else None,
                "discount_minor": command.discount.amount_minor if command.discount else None,
                "deadline": command.deadline.isoformat() if command.deadline else None,
                "policy_version": command.policy_version,
                "inputs": command.inputs,
            },
        )
    )


def publish_cancellation(work: Batch, case: Case, cancellation: CommandCancelled) -> None:
    event_id = cancellation_id(case.tenant_id, cancellation.command_id)
    work.messages.append(envelope("collections.command.cancelled.v1", cancellation, event_id, case, None))
    work.record.append((case.tenant_id, case.debtor_id, cancellation_line(cancellation, event_id, case)))
    work.timeline.append(
        timeline_row(
            case,
            cancellation.business_date,
            "command.cancelled",
            event_id,
            {"command_id": cancellation.command_id, "reason": cancellation.reason},
        )
    )


def publish_events(
    work: Batch, case: Case, events: list[CaseEvent], restated: frozenset[str] = frozenset()
) -> None:
    """Case events to the outbox, the timeline and the feed; to the debtor's record all but the
    `restated` changes (a fact's line says them)."""
    for event in events:
        event_id = case_event_id(case.tenant_id, event)
        cause = event.inputs[-1].event_id if event.inputs else None
        work.messages.append(envelope(case_type(event.change), event, event_id, case, cause))
        if event.change not in restated:
            work.record.append((case.tenant_id, case.debtor_id, case_event_line(event, event_id)))
        work.timeline.append(
            timeline_row(
                case,
                event.business_date,
                event.change,
                event_id,
                {
                    "version": event.version,
                    "status": event.status,
                    "step": event.step,
                    "overdue_minor": event.overdue.amount_minor,
                    "detail": event.detail,
                    "policy_version": event.policy_version,
                    "inputs": event.inputs,
                },
            )
        )
        if event.change in ("placed", "recalled") and event.agency_id:
            # Whatever ends a placement (a recall, a placement not delivered or cancelled before
            # it was) is a recall in the agency's feed, in the order of the case's events.
            work.feed.append(feed_row(case, event.agency_id, event.change, event.business_date))
        if event.change == "placed" and event.agency_id:
            key = agency_key(case)
            if key is not None:
                tenant = case.tenant_id
                performance = work.performance.get(tenant, {})
                work.count(tenant, key, record_placement(performance, key, event.overdue.amount_minor))
        elif case.placement is not None and event.change not in ("placed", "recalled", "note", "notified"):
            work.feed.append(feed_row(case, case.placement.agency_id, "updated", event.business_date))


def timeline_row(case: Case, day: dt.date, kind: str, event_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "tenant_id": case.tenant_id,
        "case_id": case.case_id,
        "business_date": day,
        "kind": kind,
        "event_id": event_id,
        "entry": entry,
    }


def feed_row(case: Case, agency_id: str, kind: str, day: dt.date) -> dict[str, Any]:
    """What an agency sees of a case: the debt, the debtor's contact data is added by the API."""
    return {
        "tenant_id": case.tenant_id,
        "agency_id": agency_id,
        "case_id": case.case_id,
        "kind": kind,
        "entry": {
            "business_date": day.isoformat(),
            "debtor_id": case.debtor_id,
            "currency": case.currency,
            "overdue_minor": case.overdue(day),
            "items": [
                {
                    "invoice_id": i.invoice_id,
                    "issue_date": i.issue_date.isoformat(),
                    "due_date": i.due_date.isoformat(),
                    "outstanding_minor": i.outstanding,
                }
                for i in case.open_items()
            ],
        },
    }
