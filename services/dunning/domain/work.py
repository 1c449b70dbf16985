"""One decision being built: the case as it moves, and the commands and cancellations to publish."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

from contracts.channels import Channel
from contracts.collections import (
    KEPT_WHILE_HELD,
    Action,
    CollectionCommand,
    CommandCancelled,
    InputRef,
)
from contracts.journal import DiscountGranted, WriteOffPosted
from contracts.policy import DEBTOR_FACING, DailyWindow, DunningPolicy, LadderStep, Penalty, PolicyPublished
from services.dunning import penalties
from services.dunning.domain.case import INPUTS_LIMIT, Case, DebtorFacts, Item, Pending, replace
from services.dunning.domain.changes import Changes
from services.dunning.domain.ids import command_id
from services.dunning.pressure import send_window


class Work:
    """One decision being built: the case as it moves, and what to publish."""

    def __init__(
        self, case: Case, day: dt.date, policy: PolicyPublished, facts: DebtorFacts, tick: InputRef | None
    ) -> None:
        self.case = case
        self.start = case
        self.day = day
        self.policy = policy
        self.doc: DunningPolicy = policy.document
        self.facts = facts
        self.tick = tick
        self.changes = Changes(day, self.provenance(case.refs))
        self.commands: list[CollectionCommand] = []
        self.broken: list[InputRef | None] = []
        """The promise or plan whose breaking escalates: provenance of the commands."""
        self.cancellations: list[CommandCancelled] = []
        self.postings: list[DiscountGranted | WriteOffPosted] = []
        self.dates: list[dt.date] = []
        profile = facts.profile
        self.timezone = profile.timezone if profile else "UTC"
        self.language = profile.language if profile else "en"

    # -- bookkeeping

    def provenance(self, refs: Iterable[InputRef | None]) -> list[InputRef]:
        seen: dict[tuple[str, int, int, str], InputRef] = {}
        for ref in (self.tick, *refs):
            if ref is not None:
                seen.setdefault((ref.topic, ref.partition, ref.offset, ref.event_id), ref)
        return list(seen.values())[:INPUTS_LIMIT]

    def agency_name(self, agency_id: str | None) -> str | None:
        """The name the policy gives the agency, for what the debtor reads."""
        rules = self.doc.agency
        if agency_id is None or rules is None:
            return None
        return next((a.name for a in rules.agencies if a.agency_id == agency_id), None)

    def later(self, day: dt.date | None) -> None:
        if day is not None:
            self.dates.append(max(day, self.day + dt.timedelta(days=1)))

    def cancel(self, which: Callable[[Pending], bool], reason: str) -> None:
        before = self.case.pending
        pending = dict(before)
        contacts = dict(self.case.contacts)
        # Sorted, so that a case stored without key order (JSONB) cancels in the same order.
        for command_id_, command in sorted(before.items(), key=lambda p: (p[1].business_date, p[0])):
            if not which(command):
                continue
            self.cancellations.append(
                CommandCancelled(
                    command_id=command_id_,
                    case_id=self.case.case_id,
                    business_date=self.day,
                    reason=reason[:500],
                )
            )
            self.changes.note("cancelled", f"{command.step} {command_id_}: {reason}")
            pending.pop(command_id_)
            contacts.pop(command_id_, None)
        self.case = replace(self.case, pending=pending, contacts=contacts)
        placement = self.case.placement
        cancelled = set(before) - set(pending)
        if placement is not None and placement.command_id in cancelled:
            # The agency never heard of the case: place it again once the ladder may.
            detail = f"placement with {placement.agency_id} cancelled: {reason}"
            self.changes.add("recalled", detail, placement.agency_id)
            self.case = replace(self.case, placement=None, place_again_on=self.day)

    def cancel_unwanted(self, reason: str) -> None:
        """Cancel everything pending but recalls (an agency must hear that the case left it) and an
        insolvency claim (decided because of the hold)."""
        self.cancel(lambda p: p.action != "recall_from_agency" and p.step not in KEPT_WHILE_HELD, reason)

    def cancel_settled(self) -> None:
        """Cancel pending commands none of whose invoices is still open."""
        open_items = set(self.case.items)
        self.cancel(
            lambda p: p.action != "recall_from_agency" and not open_items.intersection(p.invoice_ids),
            "paid",
        )

    # -- commands

    def step_command(
        self,
        step: LadderStep,
        items: list[Item],
        channels: list[Channel],
        version: int,
        *,
        id_parts: tuple[str, ...] = (),
        agency_id: str | None = None,
    ) -> CollectionCommand:
        terms = self.doc.penalty if step.with_penalty else None
        discount = (
            sum(penalties.discount(i.outstanding, i.issue_date, self.day, self.doc.discounts) for i in items)
            if step.offer_discount
            else 0
        )
        return self.command(
            action=step.action,
            step=step.name,
            channels=channels,
            template=step.template,
            items=items,
            version=version,
            id_parts=id_parts,
            agency_id=agency_id,
            terms_of=terms,
            discount=discount,
            deadline=self.day + dt.timedelta(days=step.deadline_days) if step.deadline_days else None,
            costs=step.recovery_costs.get(self.case.currency, 0),
            window=(step.send_window or self.doc.send_window) if step.action in DEBTOR_FACING else None,
        )

    def command(
        self,
        *,
        action: Action,
        step: str,
        channels: list[Channel],
        template: str,
        items: list[Item],
        version: int,
        id_parts: tuple[str, ...] = (),
        agency_id: str | None = None,
        terms_of: Penalty | None = None,
        discount: int = 0,
        deadline: dt.date | None = None,
        costs: int = 0,
        window: DailyWindow | None = None,
        assignee: str | None = None,
    ) -> CollectionCommand:
        currency = self.case.currency
        # Validated as one model: its items and amounts as plain data, not a model each.
        command_items = []
        penalty_total = 0
        for item in items:
            accrued = (
                penalties.penalty(item.changes, item.due_date, item.outstanding, currency, self.day, terms_of)
                if terms_of is not None
                else None
            )
            penalty_total += accrued or 0
            command_items.append(
                {
                    "invoice_id": item.invoice_id,
                    "issue_date": item.issue_date,
                    "due_date": item.due_date,
                    "outstanding": _money(item.outstanding, currency),
                    "days_past_due": item.days_past_due(self.day),
                    "penalty": _money(accrued, currency) if accrued is not None else None,
                }
            )
        send_after, send_before = send_window(window, self.timezone, self.day) if window else (None, None)
        command = CollectionCommand.model_validate(
            {
                "command_id": command_id(self.case, step, self.day, *id_parts),
                "case_id": self.case.case_id,
                "action": action,
                "step": step,
                "channels": channels,
                "template": template,
                "language": self.language,
                "business_date": self.day,
                "case_version": self.start.version + version,
                "items": command_items,
                "total": _money(sum(i.outstanding for i in items), currency),
                "penalty": _money(penalty_total, currency) if terms_of is not None else None,
                "discount": _money(discount, currency) if discount > 0 else None,
                "costs": _money(costs, currency) if costs > 0 else None,
                "deadline": deadline,
                "agency_id": agency_id,
                "agency_name": self.agency_name(agency_id),
                "assignee": assignee,
                "send_after": send_after,
                "send_before": send_before,
                "policy_version": self.policy.version,
                "inputs": self.provenance([*(i.ref for i in items), *self.case.refs, *self.broken]),
            }
        )
        self.commands.append(command)
        pending = Pending(command.command_id, action, step, self.day, tuple(i.invoice_id for i in items))
        contacts = dict(self.case.contacts)
        if action in DEBTOR_FACING:
            contacts[command.command_id] = self.day
        self.case = replace(
            self.case, pending={**self.case.pending, command.command_id: pending}, contacts=contacts
        )
        return command


def _money(amount_minor: int, currency: str) -> dict[str, Any]:
    return {"amount_minor": amount_minor, "currency": currency}
