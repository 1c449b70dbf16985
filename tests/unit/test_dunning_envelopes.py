"""Dunning's records are made without the contracts' envelope model, and are its bytes all the same."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from contracts.collections import CollectionCommand, CommandCancelled, case_type, command_type
from contracts.registry import decode_event, encode_event, make_event
from services.dunning.domain import cancellation_id, case_event_id
from services.dunning.publishing import SOURCE, envelope
from tests.unit.dunning_world import Books, Run, dispute, hold, promise, simulate


def contract_bytes(event_type: str, data: Any, event_id: str, run: Run, cause: str | None) -> bytes:
    event = make_event(
        event_type,
        data,
        event_id=event_id,
        tenant_id=run.case.tenant_id,
        debtor_id=run.case.debtor_id,
        source=SOURCE,
        time=dt.datetime.combine(data.business_date, dt.time(), dt.UTC),
        causation_id=cause,
    )
    return encode_event(event)


def a_busy_case() -> Run:
    """Two invoices climbing the ladder, a dispute, a promise kept in part, a hold: commands,
    cancellations and case events of every common kind, with and without inputs."""
    books = Books()
    return simulate(
        {
            "2024-01-31": [
                books.issue("I1", 250_000, due="2024-02-20"),
                books.issue("I2", 80_000, due="2024-03-01"),
            ],
            "2024-03-10": [dispute("I2", on="2024-03-10")],
            "2024-03-20": [promise(100_000, by="2024-04-05", on="2024-03-20")],
            "2024-04-01": [books.pay("I1", 100_000, on="2024-04-01")],
            "2024-05-02": [hold("manual", on="2024-05-02")],
        },
        until="2024-09-01",
    )


def test_every_record_is_the_contracts_bytes() -> None:
    run = a_busy_case()
    assert run.commands and run.cancellations and len({e.change for e in run.events}) >= 5
    case = run.case
    made = 0
    for command in run.commands:
        cause = command.inputs[-1].event_id if command.inputs else None
        kind = command_type(command.action)
        record = envelope(kind, command, command.command_id, case, cause)
        assert record.value == contract_bytes(kind, command, command.command_id, run, cause)
        assert record.key == f"{case.tenant_id}:{case.debtor_id}".encode()
        made += 1
    for cancellation in run.cancellations:
        event_id = cancellation_id(case.tenant_id, cancellation.command_id)
        kind = "collections.command.cancelled.v1"
        record = envelope(kind, cancellation, event_id, case, None)
        assert record.value == contract_bytes(kind, cancellation, event_id, run, None)
        made += 1
    for event in run.events:
        event_id = case_event_id(case.tenant_id, event)
        cause = event.inputs[-1].event_id if event.inputs else None
        record = envelope(case_type(event.change), event, event_id, case, cause)
        assert record.value == contract_bytes(case_type(event.change), event, event_id, run, cause)
        assert decode_event(record.value).data == event
        made += 1
    assert made > 20


def test_a_type_the_data_does_not_carry_is_refused() -> None:
    command = a_busy_case().commands[0]
    assert isinstance(command, CollectionCommand) and not isinstance(command, CommandCancelled)
    with pytest.raises(ValueError, match="does not carry"):
        envelope("collections.case.opened.v1", command, "x", a_busy_case().case, None)
