"""The ladder: which step is due, taken or passed over, and the agency placements among them."""

from __future__ import annotations

import datetime as dt

from contracts.policy import DEBTOR_FACING, NOTICE_CHANNELS, LadderStep
from services.dunning.agencies import UNSCORED, amount_band, choose_agency
from services.dunning.domain.case import RECALL_STEP, Item, Placement, amount_text, replace
from services.dunning.domain.work import Work
from services.dunning.pressure import cap_release, permitted_channels


class Ladder(Work):
    """The steps after the due date, one after another, the courtesy reminders before it, and the
    agencies: placement, recall and placing again."""

    def recall(self, reason: str) -> None:
        placement = self.case.placement
        assert placement is not None
        items = self.case.eligible_items()
        version = self.changes.add(
            "recalled", f"recalled from {placement.agency_id}: {reason}", placement.agency_id, RECALL_STEP
        )
        self.command(
            action="recall_from_agency",
            step=RECALL_STEP,
            channels=["webhook"],
            template=RECALL_STEP,
            items=items,
            version=version,
            id_parts=(placement.agency_id,),
            agency_id=placement.agency_id,
        )
        self.case = replace(
            self.case, placement=None, agencies_tried=(*self.case.agencies_tried, placement.agency_id)
        )

    def shift(self, overdue: int) -> int:
        tiers = self.doc.tiers
        band = amount_band(tiers, self.case.currency, overdue)
        bands = {b.name: b.shift_days for b in tiers.amount_bands.get(self.case.currency, [])}
        return bands.get(band, 0) + tiers.segment_shifts.get(self.facts.segment or UNSCORED, 0)

    def contact_block(self) -> dt.date | None:
        made = [*self.case.contacts.values(), *self.facts.contacts_elsewhere]
        return cap_release(self.doc.contact_caps, made, self.day)

    def courtesy_reminders(self) -> None:
        for step in (s for s in self.doc.steps if s.days <= 0):
            lead = dt.timedelta(days=-step.days)
            fresh = [
                i
                for i in self.case.eligible_items()
                if (step.name, i.invoice_id) not in self.case.reminded and i.due_date >= self.day
            ]
            items = [i for i in fresh if i.due_date - lead <= self.day]
            for waiting in fresh:
                if waiting.due_date - lead > self.day:
                    self.later(waiting.due_date - lead)
            if not items:
                continue
            total = sum(i.outstanding for i in items)
            reminded = self.case.reminded | {(step.name, i.invoice_id) for i in items}
            if total < step.min_overdue.get(self.case.currency, 0):
                self.changes.note(
                    "passed", f"{step.name}: {amount_text(total, self.case.currency)} is below its minimum"
                )
                self.case = replace(self.case, reminded=reminded)
                continue
            if (release := self.contact_block()) is not None:
                self.changes.note("deferred", f"{step.name}: contact cap reached until {release}")
                self.later(release)
                continue
            channels = permitted_channels(self.doc, self.facts.profile, step.channels)
            self.case = replace(self.case, reminded=reminded)
            if not channels:
                self.changes.note("passed", f"{step.name}: no consented channel")
                continue
            version = self.changes.add(
                "escalated", f"{step.name}: {len(items)} invoice(s) fall due soon", step=step.name
            )
            self.step_command(step, items, channels, version, id_parts=tuple(i.invoice_id for i in items))

    def ladder(self) -> None:
        steps = [s for s in self.doc.steps if s.days > 0]
        index = self.next_index(steps)
        while index < len(steps):
            step = steps[index]
            eligible = self.case.eligible_items()
            if not eligible:
                return
            overdue = [i for i in eligible if i.days_past_due(self.day) > 0]
            amount = sum(i.outstanding for i in overdue)
            due_on = self.due_on(step, eligible)
            executed_on = self.case.executed_on
            if executed_on is not None and step.days == self.case.executed_days:
                due_on = executed_on  # steps of one day go together
            elif executed_on is not None:
                due_on = max(due_on, executed_on + dt.timedelta(days=self.doc.min_days_between_steps))
            if self.case.escalate_now and overdue:
                due_on = self.day
            elif step.action == "propose_writeoff" and self.case.currency in self.facts.write_off_proposed:
                # Scoring finds that recovering this debt costs more than it returns: review it as
                # soon as the steps before allow, keeping only the spacing between steps.
                spacing = dt.timedelta(days=self.doc.min_days_between_steps)
                due_on = min(due_on, max(self.day, executed_on + spacing) if executed_on else self.day)
            if due_on > self.day or not overdue:
                self.later(due_on)
                return
            if not self.take(step, overdue, amount):
                return
            index += 1

    def due_on(self, step: LadderStep, eligible: list[Item]) -> dt.date:
        """The first day from today on which the oldest eligible item is as many days past due as the
        step says, shifted by the band of the amount overdue on that day (as far as known today)."""
        anchor = eligible[0].due_date
        one = dt.timedelta(days=1)
        starts = sorted({self.day, *(i.due_date + one for i in eligible if i.due_date + one > self.day)})
        for index, start in enumerate(starts):
            amount = sum(i.outstanding for i in eligible if i.due_date < start)
            when = max(start, anchor + dt.timedelta(days=max(1, step.days + self.shift(amount))))
            if index + 1 == len(starts) or when < starts[index + 1]:
                return when
        raise AssertionError("unreachable: the last period is open-ended")

    def next_index(self, steps: list[LadderStep]) -> int:
        case = self.case
        if case.step is None:
            return 0
        names = [s.name for s in steps]
        if case.step in names:
            return names.index(case.step) + 1
        # The policy changed under the case: go on after the steps of the days already reached.
        return next((n for n, s in enumerate(steps) if s.days > (case.step_days or 0)), len(steps))

    def reach(self, step: LadderStep, *, executed: bool) -> None:
        self.case = replace(self.case, step=step.name, step_days=step.days)
        if executed:
            self.case = replace(self.case, executed_on=self.day, executed_days=step.days, escalate_now=False)

    def take(self, step: LadderStep, overdue: list[Item], amount: int) -> bool:
        """Execute (or pass over) a step that is due; False when it must wait."""
        minimum = step.min_overdue.get(self.case.currency, 0)
        if amount < minimum:
            detail = f"{step.name}: {amount_text(amount, self.case.currency)} overdue is below its minimum"
            self.changes.note("passed", detail)
            self.reach(step, executed=False)
            return True
        if step.action in DEBTOR_FACING:
            return self.contact(step, overdue)
        if step.action == "place_with_agency":
            return self.place(step, overdue, amount)
        if step.action in ("start_legal_action", "propose_writeoff") and self.case.placement is not None:
            self.recall(f"escalating to {step.name}")
        version = self.changes.add(
            "escalated", f"{step.name}: {len(overdue)} overdue invoice(s)", step=step.name
        )
        self.step_command(step, overdue, list(step.channels), version)
        self.notify_debtor(step, overdue)
        self.reach(step, executed=True)
        return True

    def notify_debtor(self, step: LadderStep, items: list[Item], agency_id: str | None = None) -> None:
        """Tell the debtor of a step taken away from them (the handover to an agency, legal action)
        by letter or e-mail as consented, when the contact caps allow; else the case says why not."""
        if step.notice_template is None:
            return
        name = f"{step.name}_notice"
        channels = permitted_channels(self.doc, self.facts.profile, NOTICE_CHANNELS)
        if not channels:
            self.changes.note("passed", f"{name}: no consented channel")
            return
        if (release := self.contact_block()) is not None:
            self.changes.note("passed", f"{name}: contact cap reached until {release}")
            return
        version = self.changes.add("notified", f"{name}: {len(items)} overdue invoice(s)", step=name)
        notice = step.model_copy(
            update={
                "name": name,
                "action": "formal_notice",
                "template": step.notice_template,
                "notice_template": None,
            }
        )
        self.step_command(notice, items, channels, version, agency_id=agency_id)

    def contact(self, step: LadderStep, overdue: list[Item]) -> bool:
        placement = self.case.placement
        if placement is not None:
            # The agency works the case; the debtor hears from it, not from us, until a recall.
            self.changes.note("deferred", f"{step.name}: placed with {placement.agency_id}")
            return False
        if (release := self.contact_block()) is not None:
            self.changes.note("deferred", f"{step.name}: contact cap reached until {release}")
            self.later(release)
            return False
        channels = permitted_channels(self.doc, self.facts.profile, step.channels)
        if not channels:
            self.changes.note("passed", f"{step.name}: no consented channel")
            self.reach(step, executed=False)
            return True
        version = self.changes.add(
            "escalated", f"{step.name}: {len(overdue)} overdue invoice(s)", step=step.name
        )
        self.step_command(step, overdue, channels, version)
        self.reach(step, executed=True)
        return True

    def place(self, step: LadderStep, overdue: list[Item], amount: int) -> bool:
        if self.case.placement is not None:
            self.changes.note("passed", f"{step.name}: already placed with {self.case.placement.agency_id}")
            self.reach(step, executed=False)
            return True
        agency_id = self.choose_agency(amount)
        if agency_id is None:
            self.changes.note("passed", f"{step.name}: no eligible agency")
            self.reach(step, executed=False)
            return True
        self.placement(step, overdue, amount, agency_id)
        self.reach(step, executed=True)
        return True

    def choose_agency(self, amount: int) -> str | None:
        rules = self.doc.agency
        if rules is None:
            return None
        return choose_agency(
            rules,
            self.facts.agencies,
            segment=self.facts.segment or UNSCORED,
            currency=self.case.currency,
            band=amount_band(self.doc.tiers, self.case.currency, amount),
            exclude=self.case.agencies_tried,
        )

    def placement(self, step: LadderStep, overdue: list[Item], amount: int, agency_id: str) -> None:
        version = self.changes.add(
            "placed",
            f"{step.name}: placed with {agency_id}, {amount_text(amount, self.case.currency)} overdue",
            agency_id,
            step.name,
        )
        command = self.step_command(step, overdue, list(step.channels), version, agency_id=agency_id)
        self.notify_debtor(step, overdue, agency_id)
        self.case = replace(
            self.case,
            placement=Placement(
                agency_id=agency_id,
                command_id=command.command_id,
                placed_on=self.day,
                step=step.name,
                overdue=amount,
                segment=self.facts.segment or UNSCORED,
                band=amount_band(self.doc.tiers, self.case.currency, amount),
            ),
            place_again_on=None,
        )

    def place_again(self) -> None:
        case = self.case
        if case.place_again_on is None or case.placement is not None:
            return
        if case.place_again_on > self.day:
            self.later(case.place_again_on)
            return
        overdue = [i for i in case.eligible_items() if i.days_past_due(self.day) > 0]
        step = next((s for s in self.doc.steps if s.action == "place_with_agency"), None)
        amount = sum(i.outstanding for i in overdue)
        agency_id = self.choose_agency(amount) if overdue and step is not None else None
        if step is None or agency_id is None:
            self.changes.note("passed", "no further agency to place the case with")
            self.case = replace(self.case, place_again_on=None)
            return
        self.placement(step, overdue, amount, agency_id)
