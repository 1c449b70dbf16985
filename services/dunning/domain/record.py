"""The debtor's record: one line for every fact dunning learns about a debtor (invoices, payments,
allocations, disputes, holds, promises, plans, notes, agency outcomes, delivery outcomes) and for
everything it decides (commands, cancellations, case events, steps deferred or passed over), each in
a sentence a collector reads, with its business date, amount and source."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from contracts.collections import (
    AgencyOutcome,
    CaseEvent,
    CaseNote,
    CollectionCommand,
    CommandCancelled,
    ContactResult,
    DisputeChanged,
    HoldChanged,
    PaymentPlanAgreed,
    PromiseToPay,
    SettlementAgreed,
)
from contracts.receivables import RECEIVABLE_OPENED, ReceivableBalance
from services.dunning.domain.audit import Line
from services.dunning.domain.case import (
    DISPUTE_OPENED,
    HOLD_PLACED,
    Case,
    Decision,
    Fact,
    amount_text,
    case_id,
    currency_of,
)

RESTATED = frozenset({"promise_recorded", "plan_agreed", "note", "held", "resumed"})
"""Case events that only restate the fact that caused them: the fact's own line says it."""
DECIDED_NOTES = {"deferred": "step.deferred", "passed": "step.passed"}
"""The decider's notes that are lines of their own: a step waiting (contact cap, agency) or passed
over (no consented channel, below its minimum)."""
BALANCE_KINDS = {
    "ar.payment.received.v1": "payment",
    "ar.payment.allocated.v1": "allocation",
    "ar.payment.reversed.v1": "payment_reversed",
    "ar.creditnote.issued.v1": "credit_note",
    "ar.invoice.adjusted.v1": "invoice_adjusted",
    "ar.invoice.cancelled.v1": "invoice_cancelled",
    "ar.writeoff.posted.v1": "write_off",
}


def case_of(fact: Fact, debtor_id: str, cases: Mapping[str, Case]) -> Case | None:
    """The debtor's case (of `cases`, by id) a fact is about: the one of its currency, the one it
    names, or the one holding the invoice it disputes; None for a fact about all or none."""
    data = fact.data
    if isinstance(data, ContactResult | AgencyOutcome):
        return cases.get(data.case_id)
    if isinstance(data, DisputeChanged):
        return next((c for _, c in sorted(cases.items()) if data.invoice_id in c.items), None)
    currency = currency_of(fact)
    return cases.get(case_id(debtor_id, currency)) if currency is not None else None


def fact_line(fact: Fact, source_id: str, case: Case | None) -> Line | None:
    """The line of a fact; `case` is the case it belongs to, if any (its date for a delivery outcome,
    which carries none). None for a fact about no case of the debtor."""
    data = fact.data
    match data:
        case ReceivableBalance():
            return _balance(data, fact.type, source_id, case.case_id if case else None)
        case ContactResult():
            return _delivery(data, source_id, case)
        case PromiseToPay():
            return Line(
                data.recorded.business_date,
                "promise",
                f"promise {data.promise_id}: {amount_text(data.amount.amount_minor, data.amount.currency)}"
                f" by {data.promised_date} (recorded by {data.recorded.recorded_by})",
                source_id,
                data.amount.currency,
                case.case_id if case else None,
                data.amount.amount_minor,
            )
        case SettlementAgreed():
            settled = ", ".join(data.invoice_ids) if data.invoice_ids else "every open invoice"
            return Line(
                data.recorded.business_date,
                "settlement",
                f"settlement {data.settlement_id}: "
                f"{amount_text(data.amount.amount_minor, data.amount.currency)} by {data.pay_by}, "
                f"the rest of {settled} forgiven (recorded by {data.recorded.recorded_by})",
                source_id,
                data.amount.currency,
                case.case_id if case else None,
                data.amount.amount_minor,
            )
        case DisputeChanged():
            opened = fact.type == DISPUTE_OPENED
            what = "disputed" if opened else "dispute resolved"
            reason = f": {data.reason}" if data.reason else ""
            return Line(
                data.recorded.business_date,
                "dispute_opened" if opened else "dispute_resolved",
                f"invoice {data.invoice_id} {what} ({data.dispute_id}){reason}",
                source_id,
                case.currency if case else None,
                case.case_id if case else None,
            )
        case PaymentPlanAgreed():
            total = sum(i.amount.amount_minor for i in data.instalments)
            return Line(
                data.recorded.business_date,
                "plan",
                f"payment plan {data.plan_id}: {len(data.instalments)} instalments of"
                f" {amount_text(total, data.currency)} in all, the last on {data.instalments[-1].due_date}",
                source_id,
                data.currency,
                case.case_id if case else None,
                total,
            )
        case HoldChanged():
            placed = fact.type == HOLD_PLACED
            until = f" until {data.until}" if placed and data.until else ""
            reason = f": {data.reason}" if data.reason else ""
            return Line(
                data.recorded.business_date,
                "hold_placed" if placed else "hold_released",
                f"{data.kind} hold {data.hold_id} {'placed' if placed else 'released'}{until}{reason}",
                source_id,
                data.currency,
            )
        case CaseNote():
            return Line(data.recorded.business_date, "note", data.text[:2000], source_id, data.currency)
        case AgencyOutcome():
            recovered = data.amount_recovered
            amount = f" {amount_text(recovered.amount_minor, recovered.currency)}" if recovered else ""
            detail = f": {data.detail}" if data.detail else ""
            return Line(
                data.recorded.business_date,
                f"agency.{data.kind}",
                f"agency {data.agency_id} reports {data.kind}{amount}{detail}",
                source_id,
                data.case_id.rsplit(":", 1)[-1],
                data.case_id,
                recovered.amount_minor if recovered else None,
            )


def _balance(fact: ReceivableBalance, fact_type: str, source_id: str, case_id: str | None) -> Line:
    currency = fact.outstanding.currency
    outstanding = amount_text(fact.outstanding.amount_minor, currency)
    if fact_type == RECEIVABLE_OPENED and fact.cause_type == "ar.invoice.issued.v1":
        kind = "invoice"
        sentence = (
            f"invoice {fact.invoice_id} issued on {fact.issue_date} for"
            f" {amount_text(fact.amount.amount_minor, currency)}, due {fact.due_date}"
        )
        amount = fact.amount.amount_minor
    else:
        kind = BALANCE_KINDS.get(fact.cause_type, "balance_changed")
        change = fact.change.amount_minor
        moved = "off" if change < 0 else "added to"
        sentence = (
            f"{kind.replace('_', ' ')} {fact.cause_id}: {amount_text(abs(change), currency)} {moved}"
            f" invoice {fact.invoice_id}, {outstanding} outstanding ({fact.status})"
        )
        amount = abs(change)
    return Line(fact.effective_date, kind, sentence, source_id, currency, case_id, amount)


def _delivery(result: ContactResult, source_id: str, case: Case | None) -> Line:
    pending = case.pending.get(result.command_id) if case else None
    what = f"{pending.step} ({result.command_id})" if pending else f"command {result.command_id}"
    channel = f" by {result.channel}" if result.channel else ""
    document = f" as {result.reference}" if result.reference else ""
    if result.outcome == "deferred" and result.not_before is not None:
        why = f"held for the send window until {result.not_before.isoformat()}"
    else:
        why = result.reason or ""
    sentence = f"{what} {result.outcome}{channel}{document}" + (f": {why}" if why else "")
    return Line(
        case.as_of if case and case.as_of else dt.date.min,
        f"delivery.{result.outcome}",
        sentence,
        source_id,
        result.case_id.rsplit(":", 1)[-1],
        result.case_id,
        channel=result.channel,
        document=result.reference,
    )


def command_line(command: CollectionCommand) -> Line:
    total = command.total
    channels = " or ".join(command.channels)
    agency = f" with {command.agency_id}" if command.agency_id else ""
    invoices = ", ".join(i.invoice_id for i in command.items) or "no invoice"
    return Line(
        command.business_date,
        f"command.{command.action}",
        f"{command.action.replace('_', ' ')} ({command.step}){agency}: {invoices},"
        f" {amount_text(total.amount_minor, total.currency)}, by {channels}",
        command.command_id,
        total.currency,
        command.case_id,
        total.amount_minor,
    )


def cancellation_line(cancellation: CommandCancelled, event_id: str, case: Case) -> Line:
    return Line(
        cancellation.business_date,
        "command.cancelled",
        f"command {cancellation.command_id} cancelled: {cancellation.reason}",
        event_id,
        case.currency,
        case.case_id,
    )


def case_event_line(event: CaseEvent, event_id: str) -> Line:
    overdue = event.overdue
    return Line(
        event.business_date,
        f"case.{event.change}",
        f"case {event.case_id} {event.change.replace('_', ' ')}: {event.detail or event.status}"
        f" ({amount_text(overdue.amount_minor, overdue.currency)} overdue)",
        event_id,
        overdue.currency,
        event.case_id,
        overdue.amount_minor,
    )


def decided_notes(decision: Decision, day: dt.date, before: Case | None) -> list[Line]:
    """The decider's notes on a step deferred or passed over, each a line; not one the case already
    noted on that day (the case decided again after a fact the same day)."""
    case = decision.case
    noted = set(before.timeline) if before is not None else set()
    return [
        Line(
            note.business_date,
            DECIDED_NOTES[note.kind],
            note.detail,
            f"decision:{case.case_id}:{day.isoformat()}:{index}",
            case.currency,
            case.case_id,
        )
        for index, note in enumerate(decision.notes, start=1)
        if note.kind in DECIDED_NOTES and note not in noted
    ]
