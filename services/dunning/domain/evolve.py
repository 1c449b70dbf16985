"""`evolve(case, fact)`: one record the case learns from, applied."""

from __future__ import annotations

import datetime as dt

from contracts.collections import (
    AgencyOutcome,
    CaseEvent,
    CaseNote,
    ContactResult,
    DisputeChanged,
    HoldChanged,
    InputRef,
    PaymentPlanAgreed,
    PromiseToPay,
    SettlementAgreed,
)
from contracts.receivables import ReceivableBalance, ReceivableStatus
from services.dunning.domain.case import (
    DISPUTE_OPENED,
    HOLD_PLACED,
    INPUTS_LIMIT,
    PAYMENT_CAUSES,
    Case,
    DisputeAge,
    Fact,
    Hold,
    Item,
    Plan,
    Promise,
    amount_text,
    currency_of,
    replace,
)
from services.dunning.domain.changes import Changes, emit


def evolve(case: Case, fact: Fact) -> tuple[Case, list[CaseEvent]]:
    """Apply one fact to the case. A fact for another currency or another case changes nothing."""
    data = fact.data
    fact_currency = currency_of(fact)
    if fact_currency is not None and fact_currency != case.currency:
        return case, []
    if isinstance(data, (ContactResult, AgencyOutcome)) and data.case_id != case.case_id:
        return case, []
    day = _fact_date(case, fact)
    changes = Changes(day, [fact.ref] if fact.ref else [])
    match data:
        case ReceivableBalance():
            after = _balance(case, data, fact.ref, changes)
        case ContactResult():
            after = _contact_result(case, data, changes)
        case PromiseToPay():
            after = _promise(case, data, fact.ref, changes)
        case SettlementAgreed():
            after = _settlement(case, data, fact.ref, changes)
        case DisputeChanged():
            after = _dispute(case, data, fact.type == DISPUTE_OPENED, changes)
        case PaymentPlanAgreed():
            after = _plan(case, data, fact.ref, changes)
        case HoldChanged():
            after = _hold(case, data, fact.type == HOLD_PLACED, changes)
        case CaseNote():
            changes.add("note", data.text[:2000])
            after = case
        case AgencyOutcome():
            after = _agency_outcome(case, data, changes)
    if after == case and not changes.timeline:
        return case, []
    refs = case.refs if isinstance(data, ReceivableBalance) or fact.ref is None else (*case.refs, fact.ref)
    after = replace(after, as_of=max(case.as_of or day, day), refs=refs[-INPUTS_LIMIT:])
    if changes.needs_decision or isinstance(
        data, (ReceivableBalance, PromiseToPay, SettlementAgreed, PaymentPlanAgreed)
    ):
        after = replace(after, next_action_date=min(case.next_action_date or day, day))
    return emit(after, changes, policy_version=None)


def _fact_date(case: Case, fact: Fact) -> dt.date:
    data = fact.data
    if isinstance(data, ReceivableBalance):
        return data.effective_date
    if isinstance(
        data,
        (
            PromiseToPay,
            SettlementAgreed,
            DisputeChanged,
            PaymentPlanAgreed,
            HoldChanged,
            CaseNote,
            AgencyOutcome,
        ),
    ):
        return data.recorded.business_date
    return case.as_of or dt.date.min


def _balance(case: Case, fact: ReceivableBalance, ref: InputRef | None, changes: Changes) -> Case:
    was_open = bool(case.items)
    previous = case.items.get(fact.invoice_id)
    history = previous.changes if previous else ()
    items = dict(case.items)
    status: ReceivableStatus = fact.status
    paid_now = fact.cause_type in PAYMENT_CAUSES and fact.change.amount_minor < 0
    if status == "open" and fact.outstanding.amount_minor > 0:
        items[fact.invoice_id] = Item(
            invoice_id=fact.invoice_id,
            issue_date=fact.issue_date,
            due_date=fact.due_date,
            amount=fact.amount.amount_minor,
            outstanding=fact.outstanding.amount_minor,
            changes=_add_change(history, fact.effective_date, fact.change.amount_minor),
            ref=ref,
            paid_on=fact.effective_date if paid_now else (previous.paid_on if previous else None),
            # What dunning posted to close the rest still stands unless the invoice owes more now.
            closing=previous.closing if previous and fact.change.amount_minor <= 0 else None,
        )
    else:
        items.pop(fact.invoice_id, None)
    paid = case.paid - fact.change.amount_minor if fact.cause_type in PAYMENT_CAUSES else case.paid
    after = replace(
        case,
        items=items,
        paid=paid,
        reminded=frozenset(r for r in case.reminded if r[1] in items),
        recalculate=case.recalculate or (fact.change.amount_minor < 0 and bool(items)),
    )
    label = (
        f"invoice {fact.invoice_id}: {amount_text(fact.outstanding.amount_minor, case.currency)} outstanding"
    )
    changes.note(fact.status, label)
    if not was_open and items:
        changes.add("opened", label)
    if paid > case.paid and after.placement is not None:
        after = replace(after, placement=replace(after.placement, last_recovery_on=fact.effective_date))
    promise = after.promise
    if promise is not None and not promise.settles and paid - promise.paid_before >= promise.amount:
        changes.add("promise_kept", f"promise {promise.promise_id} paid")
        after = replace(after, promise=None)
    if after.plan is not None and (paid - after.plan.paid_before >= after.plan.total):
        changes.add("plan_completed", f"payment plan {after.plan.plan_id} paid")
        after = replace(after, plan=None)
    if was_open and not items:
        changes.add("closed", "nothing outstanding")
        after = replace(after, promise=None, plan=None)
    return after


def _add_change(
    history: tuple[tuple[dt.date, int], ...], day: dt.date, delta: int
) -> tuple[tuple[dt.date, int], ...]:
    merged = dict(history)
    merged[day] = merged.get(day, 0) + delta
    return tuple(sorted((d, v) for d, v in merged.items() if v))


def _contact_result(case: Case, result: ContactResult, changes: Changes) -> Case:
    finished = result.outcome in ("delivered", "skipped") or (result.outcome == "failed" and result.permanent)
    reached = not (result.outcome == "skipped" or (result.outcome == "failed" and result.permanent))
    detail = f"{result.command_id} {result.outcome}" + (f" on {result.channel}" if result.channel else "")
    changes.note(f"contact_{result.outcome}", detail + (f": {result.reason}" if result.reason else ""))
    pending = dict(case.pending)
    if finished:
        pending.pop(result.command_id, None)
    contacts = (
        dict(case.contacts) if reached else {k: v for k, v in case.contacts.items() if k != result.command_id}
    )
    after = replace(case, pending=pending, contacts=contacts)
    placement = case.placement
    if placement is not None and placement.command_id == result.command_id and not reached:
        reason = f": {result.reason}" if result.reason else ""
        changes.add(
            "recalled", f"placement with {placement.agency_id} not delivered{reason}", placement.agency_id
        )
        # A placement the notifier skipped is tried again; one that failed for good goes elsewhere.
        tried = case.agencies_tried + ((placement.agency_id,) if result.outcome == "failed" else ())
        after = replace(after, placement=None, place_again_on=changes.day, agencies_tried=tried)
        changes.needs_decision = True
    return after


def _promise(case: Case, promise: PromiseToPay, ref: InputRef | None, changes: Changes) -> Case:
    if promise.amount.amount_minor <= 0:
        changes.note("ignored", f"promise {promise.promise_id} without an amount")
        return case
    made = Promise(
        promise_id=promise.promise_id,
        amount=promise.amount.amount_minor,
        promised_date=promise.promised_date,
        recorded_on=promise.recorded.business_date,
        paid_before=case.paid,
        ref=ref,
    )
    changes.add(
        "promise_recorded",
        f"promise {promise.promise_id}: {amount_text(made.amount, case.currency)} by {made.promised_date}"
        f" (recorded by {promise.recorded.recorded_by})",
    )
    return replace(case, promise=made)


def _settlement(case: Case, settlement: SettlementAgreed, ref: InputRef | None, changes: Changes) -> Case:
    agreed = Promise(
        promise_id=settlement.settlement_id,
        amount=settlement.amount.amount_minor,
        promised_date=settlement.pay_by,
        recorded_on=settlement.recorded.business_date,
        paid_before=case.paid,
        ref=ref,
        settles=True,
        invoice_ids=tuple(settlement.invoice_ids),
    )
    scope = ", ".join(agreed.invoice_ids) if agreed.invoice_ids else "every open invoice"
    changes.add(
        "promise_recorded",
        f"settlement {agreed.promise_id}: {amount_text(agreed.amount, case.currency)}"
        f" by {agreed.promised_date}, the rest of {scope} forgiven"
        f" (recorded by {settlement.recorded.recorded_by})",
    )
    return replace(case, promise=agreed)


def _dispute(case: Case, dispute: DisputeChanged, opened: bool, changes: Changes) -> Case:
    known = dispute.invoice_id in case.items
    if opened:
        disputes = {**case.disputes, dispute.dispute_id: dispute.invoice_id}
        owner = dispute.owner or dispute.recorded.recorded_by
        age = DisputeAge(dispute.invoice_id, dispute.recorded.business_date, owner)
        ages = {**case.dispute_ages, dispute.dispute_id: age}
        detail = f"invoice {dispute.invoice_id} disputed ({dispute.dispute_id})"
    else:
        disputes = {k: v for k, v in case.disputes.items() if k != dispute.dispute_id}
        ages = {k: v for k, v in case.dispute_ages.items() if k != dispute.dispute_id}
        detail = f"dispute {dispute.dispute_id} on invoice {dispute.invoice_id} resolved"
    if known:
        changes.add("held" if opened else "resumed", detail)
        changes.needs_decision = True
    return replace(case, disputes=disputes, dispute_ages=ages)


def _plan(case: Case, plan: PaymentPlanAgreed, ref: InputRef | None, changes: Changes) -> Case:
    agreed = Plan(
        plan_id=plan.plan_id,
        instalments=tuple((i.due_date, i.amount.amount_minor) for i in plan.instalments),
        agreed_on=plan.recorded.business_date,
        paid_before=case.paid,
        ref=ref,
    )
    changes.add(
        "plan_agreed",
        f"payment plan {plan.plan_id}: {len(agreed.instalments)} instalments of "
        f"{amount_text(agreed.total, case.currency)} in all, the last on {agreed.instalments[-1][0]}",
    )
    return replace(case, plan=agreed, promise=None)


def _hold(case: Case, hold: HoldChanged, placed: bool, changes: Changes) -> Case:
    if placed:
        held = Hold(
            hold.hold_id,
            hold.kind,
            hold.recorded.business_date,
            hold.until,
            hold.reason,
            claims_deadline=hold.claims_deadline,
            administrator=hold.administrator,
        )
        until = f" until {hold.until}" if hold.until else ""
        reason = f": {hold.reason}" if hold.reason else ""
        changes.add("held", f"{hold.kind} hold {hold.hold_id}{until}{reason}")
        changes.needs_decision = True
        return replace(case, holds={**case.holds, hold.hold_id: held})
    if hold.hold_id not in case.holds:
        return case
    changes.add("resumed", f"{hold.kind} hold {hold.hold_id} released")
    changes.needs_decision = True
    return replace(case, holds={k: v for k, v in case.holds.items() if k != hold.hold_id})


def _agency_outcome(case: Case, outcome: AgencyOutcome, changes: Changes) -> Case:
    placement = case.placement
    detail = f"agency {outcome.agency_id}: {outcome.kind}"
    if outcome.amount_recovered is not None:
        detail += f" {amount_text(outcome.amount_recovered.amount_minor, outcome.amount_recovered.currency)}"
    if outcome.detail:
        detail += f": {outcome.detail}"
    if placement is None or placement.agency_id != outcome.agency_id:
        changes.note("ignored", f"{detail} (the case is not placed with it)")
        return case
    changes.add("note", detail, agency_id=placement.agency_id)
    recovered = outcome.amount_recovered
    if outcome.kind != "recovered" or recovered is None or recovered.currency != case.currency:
        return case
    return replace(
        case,
        placement=replace(
            placement,
            recovered=placement.recovered + recovered.amount_minor,
            last_recovery_on=outcome.recorded.business_date,
        ),
    )
