"""`decide(case, business_date, policy, facts)`: what to do about a case on a business day."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from contracts.collections import DISPUTE_ESCALATION, INSOLVENCY_CLAIM, InputRef
from contracts.policy import PolicyPublished
from services.dunning.domain import closings
from services.dunning.domain.bundles import bundle
from services.dunning.domain.case import Case, DebtorFacts, Decision, amount_text, case_holds, replace
from services.dunning.domain.changes import emit
from services.dunning.domain.ladder import Ladder


def decide(
    case: Case,
    business_date: dt.date,
    policy: PolicyPublished,
    facts: DebtorFacts | None = None,
    *,
    tick: InputRef | None = None,
) -> Decision:
    """What to do about the case on `business_date` under `policy`; `tick` is the clock record that
    asked (provenance). Deciding twice on the same date emits nothing the second time."""
    facts = facts or DebtorFacts()
    if case.currency in facts.segments:
        facts = replace(facts, segment=facts.segments[case.currency])
    work = Decider(case, business_date, policy, facts, tick)
    work.replanned()
    work.expire_holds()
    work.grant_discounts()
    work.check_settlement()
    work.check_promise()
    work.check_plan()
    work.escalate_old_disputes()
    if not work.case.items:
        work.close()
    elif reasons := case_holds(work.case, business_date):
        work.cancel_unwanted("held: " + "; ".join(reasons))
        work.lodge_insolvency_claims()
        work.wait_for_holds()
    else:
        work.cancel_settled()
        work.cancel_disputed()
        work.check_placement()
        work.start_over_if_cured()
        work.courtesy_reminders()
        work.ladder()
        work.place_again()
    work.recalculated()
    return work.finish()


def decide_debtor(
    cases: Sequence[Case],
    business_date: dt.date,
    policy: PolicyPublished,
    facts: DebtorFacts | None = None,
    *,
    tick: InputRef | None = None,
) -> list[Decision]:
    """`decide` for all cases of one debtor (one per currency), in case id order, so that contact
    caps count every contact with the debtor; the messages the cases send the debtor on the same day
    on the same channels are then bundled into one (`bundles.bundle`). A contact another case makes
    in this same decision does not count against a case: it goes out with it as one message (or, on
    other channels, as a second message the same day, which the caps then let through)."""
    base = facts or DebtorFacts()
    current = {c.case_id: c for c in cases}
    decisions: list[Decision] = []
    for key in sorted(current):
        made_now = {command.command_id for d in decisions for command in d.commands}
        elsewhere = [
            d
            for k, c in current.items()
            if k != key
            for command_id, d in c.contacts.items()
            if command_id not in made_now
        ]
        decision = decide(
            current[key],
            business_date,
            policy,
            replace(base, contacts_elsewhere=(*base.contacts_elsewhere, *elsewhere)),
            tick=tick,
        )
        current[key] = decision.case
        decisions.append(decision)
    return bundle(decisions)


class Decider(Ladder):
    """A decision on a business day: holds, promises, plans and agencies checked, then the ladder."""

    def replanned(self) -> None:
        planned_under = self.case.planned_under
        if planned_under is not None and planned_under != self.policy.version and self.case.items:
            detail = f"policy version {self.policy.version} in force: planned again (was {planned_under})"
            self.changes.note("replanned", detail)

    def expire_holds(self) -> None:
        expired = [h for h in self.case.holds.values() if h.until is not None and h.until < self.day]
        for hold in sorted(expired, key=lambda h: h.hold_id):
            self.changes.add("resumed", f"{hold.kind} hold {hold.hold_id} expired on {hold.until}")
        if expired:
            gone = {h.hold_id for h in expired}
            self.case = replace(self.case, holds={k: v for k, v in self.case.holds.items() if k not in gone})

    def grant_discounts(self) -> None:
        """Post the discount a payment inside the discount window earned; the item is not chased
        while the ledger applies it."""
        items = dict(self.case.items)
        granted = False
        for item in self.case.open_items():
            amount = closings.earned_discount(item, self.doc.discounts)
            if not amount:
                continue
            granted = True
            posting = closings.discount_posting(self.case, item, amount, self.day)
            self.postings.append(posting)
            items[item.invoice_id] = replace(item, closing=posting.discount_id)
            self.changes.add(
                "discount_granted",
                f"invoice {item.invoice_id}: early-payment discount of "
                f"{amount_text(amount, self.case.currency)} for the payment of {item.paid_on}",
            )
        if granted:
            self.case = replace(self.case, items=items)

    def check_settlement(self) -> None:
        """A settlement paid: forgive the rest of its invoices and lift its hold."""
        settlement = self.case.promise
        if settlement is None or not settlement.settles:
            return
        paid = self.case.paid - settlement.paid_before
        if paid < settlement.amount:
            return
        forgiven = closings.forgiveness_postings(self.case, settlement, self.day)
        items = dict(self.case.items)
        for posting in forgiven:
            items[posting.invoice_id] = replace(items[posting.invoice_id], closing=posting.writeoff_id)
        rest = sum(self.case.items[p.invoice_id].outstanding for p in forgiven)
        self.postings.extend(forgiven)
        self.changes.add(
            "promise_kept",
            f"settlement {settlement.promise_id}: {amount_text(paid, self.case.currency)} paid",
        )
        if forgiven:
            self.changes.add(
                "rest_forgiven",
                f"settlement {settlement.promise_id}: {amount_text(rest, self.case.currency)} of "
                f"{', '.join(p.invoice_id for p in forgiven)} written off as agreed",
            )
        self.case = replace(self.case, promise=None, items=items)

    def check_promise(self) -> None:
        promise = self.case.promise
        if promise is None:
            return
        deadline = promise.promised_date + dt.timedelta(days=self.doc.promise_grace_days)
        if self.day <= deadline:
            return
        paid = self.case.paid - promise.paid_before
        if paid >= promise.amount or self.case.overdue(self.day) == 0:
            self.changes.add("promise_kept", f"promise {promise.promise_id} kept")
            self.case = replace(self.case, promise=None)
            return
        self.broken.append(promise.ref)
        self.changes.inputs = self.provenance([*self.changes.inputs, promise.ref])
        self.changes.add(
            "promise_broken",
            f"{'settlement' if promise.settles else 'promise'} {promise.promise_id} of "
            f"{amount_text(promise.amount, self.case.currency)} by {promise.promised_date}: "
            f"{amount_text(max(paid, 0), self.case.currency)} paid; escalation resumes",
        )
        self.case = replace(self.case, promise=None, escalate_now=True)

    def check_plan(self) -> None:
        plan = self.case.plan
        if plan is None:
            return
        paid = self.case.paid - plan.paid_before
        due = 0
        for due_date, amount in plan.instalments:
            due += amount
            if paid < due and self.day > due_date + dt.timedelta(days=self.doc.plan_grace_days):
                self.broken.append(plan.ref)
                self.changes.inputs = self.provenance([*self.changes.inputs, plan.ref])
                self.changes.add(
                    "plan_broken",
                    f"payment plan {plan.plan_id}: the instalment due {due_date} is unpaid "
                    f"({amount_text(max(paid, 0), self.case.currency)} of "
                    f"{amount_text(due, self.case.currency)} paid); escalation resumes",
                )
                self.case = replace(self.case, plan=None, escalate_now=True)
                return

    def check_placement(self) -> None:
        placement = self.case.placement
        rules = self.doc.agency
        if placement is None or rules is None:
            return
        recall_on = (placement.last_recovery_on or placement.placed_on) + dt.timedelta(
            days=rules.recall_after_days
        )
        if self.day < recall_on:
            return
        self.recall(f"no recovery for {rules.recall_after_days} days")
        if rules.replace_on_recall:
            self.case = replace(self.case, place_again_on=self.day + dt.timedelta(days=1))

    def escalate_old_disputes(self) -> None:
        """A dispute open longer than the policy allows goes to its owner, once, as a task naming the
        invoice; until then the case is decided again on the day it would be overdue."""
        limit = dt.timedelta(days=self.doc.dispute_limit_days)
        for dispute_id, age in sorted(self.case.dispute_ages.items()):
            if age.escalated or dispute_id not in self.case.disputes:
                continue
            if self.day <= age.opened_on + limit:
                self.later(age.opened_on + limit + dt.timedelta(days=1))
                continue
            item = self.case.items.get(age.invoice_id)
            if item is None:  # settled or unknown: nothing left to chase
                continue
            version = self.changes.add(
                "escalated",
                f"dispute {dispute_id} on invoice {age.invoice_id} open since {age.opened_on}, longer than "
                f"{self.doc.dispute_limit_days} days: escalated to {age.owner}",
                step=DISPUTE_ESCALATION,
            )
            self.command(
                action="escalate_dispute",
                step=DISPUTE_ESCALATION,
                channels=["call"],
                template=DISPUTE_ESCALATION,
                items=[item],
                version=version,
                id_parts=(dispute_id,),
                assignee=age.owner,
            )
            ages = {**self.case.dispute_ages, dispute_id: replace(age, escalated=True)}
            self.case = replace(self.case, dispute_ages=ages)

    def lodge_insolvency_claims(self) -> None:
        """Insolvency stops the ladder; the debt is claimed from the administrator instead: once per
        insolvency hold, a legal task for every open item with the penalty accrued, due by the
        proceedings' deadline (or the policy's days from the hold). An agency holding the case is
        recalled first."""
        for hold in sorted(self.case.holds.values(), key=lambda h: h.hold_id):
            if hold.kind != "insolvency" or hold.claim_lodged or (hold.until and hold.until < self.day):
                continue
            if self.case.placement is not None:
                self.recall("insolvency: the claim goes to the administrator")
            deadline = hold.claims_deadline or hold.placed_on + dt.timedelta(
                days=self.doc.insolvency_claim_days
            )
            items = sorted(self.case.items.values(), key=lambda i: (i.due_date, i.invoice_id))
            administrator = f" with {hold.administrator}" if hold.administrator else ""
            version = self.changes.add(
                "escalated",
                f"lodge the claim for {len(items)} invoice(s){administrator} by {deadline}",
                step=INSOLVENCY_CLAIM,
            )
            self.command(
                action="start_legal_action",
                step=INSOLVENCY_CLAIM,
                channels=["call"],
                template=INSOLVENCY_CLAIM,
                items=items,
                version=version,
                id_parts=(hold.hold_id,),
                terms_of=self.doc.penalty,
                deadline=deadline,
            )
            holds = {**self.case.holds, hold.hold_id: replace(hold, claim_lodged=True)}
            self.case = replace(self.case, holds=holds)

    def wait_for_holds(self) -> None:
        case = self.case
        for hold in case.holds.values():
            self.later(hold.until + dt.timedelta(days=1) if hold.until else None)
        if case.promise is not None:
            grace = dt.timedelta(days=self.doc.promise_grace_days + 1)
            self.later(case.promise.promised_date + grace)
        if case.plan is not None:
            paid, due = case.paid - case.plan.paid_before, 0
            for due_date, amount in case.plan.instalments:
                due += amount
                if paid < due:
                    self.later(due_date + dt.timedelta(days=self.doc.plan_grace_days + 1))
                    break

    def close(self) -> None:
        self.cancel(lambda _: True, "nothing outstanding")
        self.case = replace(
            self.case,
            step=None,
            step_days=None,
            executed_on=None,
            executed_days=None,
            round=self.case.round + (1 if self.case.step is not None else 0),
            reminded=frozenset(),
            promise=None,
            plan=None,
            placement=None,
            place_again_on=None,
            escalate_now=False,
            recalculate=False,
        )

    def cancel_disputed(self) -> None:
        disputed = self.case.disputed
        if disputed:
            self.cancel(
                lambda p: (
                    p.action not in ("recall_from_agency", "escalate_dispute")
                    and bool(disputed.intersection(p.invoice_ids))
                ),
                "disputed: " + ", ".join(sorted(disputed)),
            )

    def start_over_if_cured(self) -> None:
        case = self.case
        if case.step is None or any(i.days_past_due(self.day) > 0 for i in case.items.values()):
            return
        self.changes.add("recalculated", "nothing is overdue any more: the ladder starts over")
        self.case = replace(
            case,
            step=None,
            step_days=None,
            executed_on=None,
            executed_days=None,
            round=case.round + 1,
            escalate_now=False,
        )

    # -- the end

    def recalculated(self) -> None:
        case = self.case
        chased = [i.outstanding for i in case.items.values() if i.closing is None]
        if case.recalculate and chased and not case_holds(case, self.day):
            self.changes.add("recalculated", f"paid down to {amount_text(sum(chased), case.currency)}")
        self.case = replace(self.case, recalculate=False)

    def finish(self) -> Decision:
        placement, rules = self.case.placement, self.doc.agency
        if (
            placement is not None
            and rules is not None
            and self.case.items
            and not case_holds(self.case, self.day)
        ):
            last = placement.last_recovery_on or placement.placed_on
            self.later(last + dt.timedelta(days=rules.recall_after_days))
        longest = max((c.period_days for c in self.doc.contact_caps), default=0)
        horizon = self.day - dt.timedelta(days=longest)
        case = replace(
            self.case,
            next_action_date=min(self.dates, default=None),
            planned_under=self.policy.version,
            as_of=max(self.case.as_of or self.day, self.day),
            refs=(),
            contacts={k: v for k, v in self.case.contacts.items() if v > horizon or k in self.case.pending},
        )
        case, events = emit(case, self.changes, self.policy.version)
        return Decision(
            case,
            tuple(self.commands),
            tuple(self.cancellations),
            tuple(events),
            tuple(self.changes.timeline),
            tuple(self.postings),
        )
