"""Every event type Arrears knows, and how an envelope is parsed from and encoded to bytes."""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Union, cast

import orjson
from pydantic import Discriminator, Tag, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from contracts import clock, collections, journal, policy, receivables, scores, topics
from contracts.envelope import Envelope, EventData
from contracts.scalars import PATTERN_MEANINGS

DATA_MODELS: tuple[type[EventData], ...] = (
    journal.DebtorProfile,
    journal.InvoiceIssued,
    journal.InvoiceAdjusted,
    journal.InvoiceCancelled,
    journal.CreditNoteIssued,
    journal.PaymentReceived,
    journal.PaymentAllocated,
    journal.PaymentReversed,
    journal.WriteOffPosted,
    journal.DiscountGranted,
    receivables.ReceivableBalance,
    clock.BusinessDayStarted,
    collections.CollectionCommand,
    collections.CommandCancelled,
    collections.CaseEvent,
    collections.ContactResult,
    collections.PromiseToPay,
    collections.SettlementAgreed,
    collections.DisputeChanged,
    collections.PaymentPlanAgreed,
    collections.HoldChanged,
    collections.CaseNote,
    collections.AgencyOutcome,
    policy.PolicyPublished,
    scores.ScoreChanged,
)

MODEL_BY_TYPE: dict[str, type[EventData]] = {t: m for m in DATA_MODELS for t in m.TYPES}
ERP_TYPES: frozenset[str] = frozenset(
    t for t, m in MODEL_BY_TYPE.items() if m.TOPIC in (topics.JOURNAL.name, topics.DEBTORS.name)
)
"""What an ERP may post to the ledger: the journal and debtor master data, nothing derived."""


def envelope_of(model: type[EventData]) -> type[Envelope[Any]]:
    return Envelope[model]  # type: ignore[valid-type]


ENVELOPE_BY_TYPE: dict[str, type[Envelope[Any]]] = {t: envelope_of(m) for t, m in MODEL_BY_TYPE.items()}


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class ContractError(ValueError):
    """A record or request that breaks its contract; `errors` name each wrong field."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))


def _dotted(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _field_errors(exc: ValidationError) -> list[FieldError]:
    return [FieldError(_dotted(e["loc"]) or "(envelope)", _message(e)) for e in exc.errors()]


def _message(error: ErrorDetails) -> str:
    """Pydantic's message, but a text pattern said in words rather than as its regular expression."""
    if error["type"] == "string_pattern_mismatch":
        meaning = PATTERN_MEANINGS.get(str(error.get("ctx", {}).get("pattern")))
        if meaning is not None:
            return meaning
    return error["msg"]


def parse_event(raw: Mapping[str, Any], accepted: Collection[str] | None = None) -> Envelope[Any]:
    """Validate a decoded envelope against the schema its `type` names (one of `accepted`, if given)."""
    event_type = raw.get("type")
    wrong_type = _type_error(event_type, accepted)
    if wrong_type is not None:
        raise ContractError([wrong_type])
    try:
        envelope = ENVELOPE_BY_TYPE[cast(str, event_type)].model_validate(raw)
    except ValidationError as exc:
        raise ContractError(_field_errors(exc)) from None
    wrong_debtor = _debtor_error(envelope)
    if wrong_debtor is not None:
        raise ContractError([wrong_debtor])
    return envelope


def _type_error(event_type: Any, accepted: Collection[str] | None) -> FieldError | None:
    if not isinstance(event_type, str) or event_type not in ENVELOPE_BY_TYPE:
        return FieldError("type", f"unknown event type {event_type!r}")
    if accepted is not None and event_type not in accepted:
        return FieldError("type", f"{event_type} is not accepted here")
    return None


def _debtor_error(envelope: Envelope[Any]) -> FieldError | None:
    if envelope.data.NEEDS_DEBTOR and not envelope.debtorid:
        return FieldError("debtorid", f"{envelope.type} needs a debtorid")
    if not envelope.data.NEEDS_DEBTOR and envelope.debtorid:
        return FieldError("debtorid", f"{envelope.type} takes no debtorid")
    return None


class BatchError(ValueError):
    """Events of a batch that break their contracts: (the event's index, a wrong field) for each,
    and the id every event of the batch was sent with (None where it has none)."""

    def __init__(self, errors: list[tuple[int, FieldError]], ids: list[Any]) -> None:
        self.errors = errors
        self.ids = ids
        super().__init__("; ".join(f"event {i}: {e.field}: {e.message}" for i, e in errors))


def parse_batch(body: bytes, accepted: frozenset[str]) -> list[Envelope[Any]]:
    """Validate a JSON array of envelopes, each against the schema its `type` names (one of
    `accepted`), straight from the bytes: the same checks as `parse_event` for each element, without
    building the decoded dicts first. A body that is not a JSON array raises `ContractError` (field
    "(body)"); wrong events raise `BatchError`, naming every wrong field of every event."""
    try:
        envelopes = _batch_adapter(accepted).validate_json(body)
    except ValidationError as exc:
        whole = [p for p in exc.errors() if not p["loc"]]
        if whole and whole[0]["type"] == "json_invalid":
            raise ContractError([FieldError("(body)", f"not JSON: {whole[0]['msg']}")]) from None
        if whole:
            raise ContractError([FieldError("(body)", "expected a JSON array of event envelopes")]) from None
        # Rare, so each event is parsed alone: the errors are exactly the ones it would have alone.
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError as error:  # JSON to pydantic's parser, not to orjson's
            raise ContractError([FieldError("(body)", f"not JSON: {error}")]) from None
        ids = [item.get("id") if isinstance(item, dict) else None for item in items]
        raise BatchError(_event_errors(items, accepted), ids) from None
    errors = [(i, e) for i, envelope in enumerate(envelopes) if (e := _debtor_error(envelope)) is not None]
    if errors:
        raise BatchError(errors, [envelope.id for envelope in envelopes])
    return envelopes


def _event_errors(items: list[Any], accepted: frozenset[str]) -> list[tuple[int, FieldError]]:
    errors: list[tuple[int, FieldError]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append((index, FieldError("(event)", "an event envelope must be a JSON object")))
            continue
        try:
            parse_event(item, accepted)
        except ContractError as exc:
            errors.extend((index, e) for e in exc.errors)
    return errors


def _type_tag(value: Any) -> str | None:
    tag = value.get("type") if isinstance(value, dict) else None
    return tag if isinstance(tag, str) else None


@functools.cache
def _batch_adapter(accepted: frozenset[str]) -> TypeAdapter[list[Envelope[Any]]]:
    choices = tuple(Annotated[ENVELOPE_BY_TYPE[t], Tag(t)] for t in sorted(accepted))
    if len(choices) < 2:
        raise ValueError("a batch accepts at least two event types")
    one_of = Annotated[Union[choices], Discriminator(_type_tag)]  # type: ignore[valid-type]  # noqa: UP007
    return TypeAdapter(list[one_of])


_TYPE_ATTRIBUTE = re.compile(rb'"type":"([A-Za-z0-9._-]{1,200})"')


def decode_event(value: bytes) -> Envelope[Any]:
    """Parse a record. The common case, an envelope as `encode_event` writes it, is validated
    straight from the bytes by the model its `type` names; anything else (and any envelope that
    fails) takes the general path, whose errors are the ones reported."""
    found = _TYPE_ATTRIBUTE.search(value)
    event_type = found.group(1).decode() if found else None
    if event_type is not None and event_type in ENVELOPE_BY_TYPE:
        try:
            envelope = ENVELOPE_BY_TYPE[event_type].model_validate_json(value)
        except ValueError:
            pass
        else:
            # The `type` found must be the envelope's own (not a nested one) and the debtor rules
            # must hold; otherwise the general path decides.
            needs_debtor: bool = envelope.data.NEEDS_DEBTOR
            if envelope.type == event_type and needs_debtor == bool(envelope.debtorid):
                return envelope
    return _decode_event(value)


def _decode_event(value: bytes) -> Envelope[Any]:
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ContractError([FieldError("(record)", f"not JSON: {exc}")]) from None
    if not isinstance(raw, dict):
        raise ContractError([FieldError("(record)", "an envelope must be a JSON object")])
    return parse_event(raw)


def encode_event(envelope: Envelope[Any]) -> bytes:
    return orjson.dumps(envelope.model_dump(mode="json", exclude_none=True))


def topic_of(envelope: Envelope[Any]) -> str:
    topic: str = envelope.data.TOPIC
    return topic


def make_event(
    event_type: str,
    data: EventData,
    *,
    event_id: str,
    tenant_id: str,
    source: str,
    time: dt.datetime,
    debtor_id: str | None = None,
    causation_id: str | None = None,
    correlation_id: str | None = None,
) -> Envelope[Any]:
    if event_type not in data.TYPES:
        raise ValueError(f"{type(data).__name__} does not carry {event_type}")
    return envelope_of(type(data))(
        id=event_id,
        source=source,
        type=event_type,
        time=time,
        tenantid=tenant_id,
        debtorid=debtor_id,
        causationid=causation_id,
        correlationid=correlation_id,
        data=data,
    )
