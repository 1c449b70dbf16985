"""Builders for the dunning tests: a debtor's books producing balance facts, contact records, and a
simulation of business days that applies facts and decides the way the shell does."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from contracts.collections import (
    AgencyOutcome,
    CaseEvent,
    CaseNote,
    CollectionCommand,
    CommandCancelled,
    ContactOutcome,
    ContactResult,
    DisputeChanged,
    HoldChanged,
    HoldKind,
    InputRef,
    Instalment,
    PaymentPlanAgreed,
    PromiseToPay,
    Recorded,
    SettlementAgreed,
)
from contracts.journal import DebtorProfile
from contracts.money import Money
from contracts.policy import DunningPolicy, PolicyPublished
from contracts.receivables import ReceivableBalance, ReceivableStatus
from services.dunning.domain import Case, DebtorFacts, Decision, Entry, Fact, decide, evolve, new_case
from services.dunning.policies import default_policy

from . import Day, day

DEFAULT = default_policy()
POLICY = PolicyPublished(version=1, effective_from=dt.date(2020, 1, 1), document=DEFAULT)
DEBTOR = "D-1"


def policy(**changes: Any) -> PolicyPublished:
    """The default policy with top-level fields replaced (given as plain data, validated)."""
    raw = DEFAULT.model_dump(mode="json")
    raw.update(changes)
    return PolicyPublished(
        version=2, effective_from=dt.date(2020, 1, 1), document=DunningPolicy.model_validate(raw)
    )


def steps(*names: str) -> list[dict[str, Any]]:
    """The default ladder's steps of these names, as plain data."""
    return [s.model_dump(mode="json") for s in DEFAULT.steps if s.name in names]


def ref(n: int, topic: str = "ar.receivables.v1") -> InputRef:
    return InputRef(topic=topic, partition=0, offset=n, event_id=f"evt-{n}")


@dataclass
class Books:
    """A debtor's invoices in one currency, as the ledger would publish their balances."""

    currency: str = "EUR"
    invoices: dict[str, tuple[dt.date, dt.date, int, int]] = field(default_factory=dict)
    offset: int = 0

    def _fact(
        self, kind: str, invoice_id: str, change: int, on: Day, cause: str, status: ReceivableStatus
    ) -> Fact:
        issue, due, amount, outstanding = self.invoices[invoice_id]
        self.offset += 1
        data = ReceivableBalance(
            invoice_id=invoice_id,
            issue_date=issue,
            due_date=due,
            amount=Money(amount_minor=amount, currency=self.currency),
            outstanding=Money(amount_minor=outstanding, currency=self.currency),
            change=Money(amount_minor=change, currency=self.currency),
            status=status,
            effective_date=day(on),
            cause_type=cause,
            cause_id=f"cause-{self.offset}",
        )
        return Fact(f"ar.receivable.{kind}.v1", data, ref(self.offset))

    def issue(self, invoice_id: str, amount: int, due: Day, issued: Day | None = None) -> Fact:
        due_date = day(due)
        issue_date = day(issued) if issued else due_date - dt.timedelta(days=30)
        self.invoices[invoice_id] = (issue_date, due_date, amount, amount)
        return self._fact("opened", invoice_id, amount, issue_date, "ar.invoice.issued.v1", "open")

    def pay(self, invoice_id: str, amount: int, on: Day) -> Fact:
        issue, due, total, outstanding = self.invoices[invoice_id]
        paid = min(amount, outstanding)
        self.invoices[invoice_id] = (issue, due, total, outstanding - paid)
        settled = outstanding - paid == 0
        kind, status = ("settled", "settled") if settled else ("changed", "open")
        return self._fact(kind, invoice_id, -paid, on, "ar.payment.received.v1", status)  # type: ignore[arg-type]

    def reverse(self, invoice_id: str, amount: int, on: Day) -> Fact:
        issue, due, total, outstanding = self.invoices[invoice_id]
        self.invoices[invoice_id] = (issue, due, total, outstanding + amount)
        kind = "reopened" if outstanding == 0 else "changed"
        return self._fact(kind, invoice_id, amount, on, "ar.payment.reversed.v1", "open")

    def write_off(self, invoice_id: str, on: Day) -> Fact:
        issue, due, total, outstanding = self.invoices[invoice_id]
        self.invoices[invoice_id] = (issue, due, total, 0)
        return self._fact("writtenoff", invoice_id, -outstanding, on, "ar.writeoff.posted.v1", "written_off")

    def discount(self, invoice_id: str, amount: int, on: Day) -> Fact:
        """The ledger applying a discount dunning (or the ERP) posted."""
        issue, due, total, outstanding = self.invoices[invoice_id]
        closed = min(amount, outstanding)
        self.invoices[invoice_id] = (issue, due, total, outstanding - closed)
        settled = outstanding - closed == 0
        kind, status = ("settled", "settled") if settled else ("changed", "open")
        return self._fact(kind, invoice_id, -closed, on, "ar.discount.granted.v1", status)  # type: ignore[arg-type]

    def outstanding(self) -> dict[str, int]:
        return {i: v[3] for i, v in self.invoices.items() if v[3] > 0}


def recorded(on: Day) -> Recorded:
    return Recorded(recorded_by="collector-1", business_date=day(on))


def promise(amount: int, by: Day, on: Day, promise_id: str = "PR-1", currency: str = "EUR") -> Fact:
    data = PromiseToPay(
        promise_id=promise_id,
        amount=Money(amount_minor=amount, currency=currency),
        promised_date=day(by),
        recorded=recorded(on),
    )
    return Fact("ar.promise.made.v1", data, ref(1000, "ar.contacts.v1"))


def settlement(
    amount: int,
    by: Day,
    on: Day,
    invoices: Iterable[str] = (),
    settlement_id: str = "ST-1",
    currency: str = "EUR",
) -> Fact:
    data = SettlementAgreed(
        settlement_id=settlement_id,
        amount=Money(amount_minor=amount, currency="EUR"),
        pay_by=day(by),
        invoice_ids=list(invoices),
        recorded=recorded(on),
    )
    return Fact("ar.settlement.agreed.v1", data, ref(1001, "ar.contacts.v1"))


def dispute(
    invoice_id: str, on: Day, *, opened: bool = True, dispute_id: str | None = None, owner: str | None = None
) -> Fact:
    data = DisputeChanged(
        dispute_id=dispute_id or f"DS-{invoice_id}", invoice_id=invoice_id, owner=owner, recorded=recorded(on)
    )
    return Fact(f"ar.dispute.{'opened' if opened else 'resolved'}.v1", data)


def plan(instalments: Iterable[tuple[Day, int]], on: Day, currency: str = "EUR") -> Fact:
    data = PaymentPlanAgreed(
        plan_id="PL-1",
        currency=currency,
        instalments=[
            Instalment(due_date=day(d), amount=Money(amount_minor=a, currency=currency))
            for d, a in instalments
        ],
        recorded=recorded(on),
    )
    return Fact("ar.plan.agreed.v1", data)


def hold(
    kind: HoldKind,
    on: Day,
    *,
    placed: bool = True,
    until: Day | None = None,
    hold_id: str = "H-1",
    currency: str | None = None,
    claims_deadline: Day | None = None,
    administrator: str | None = None,
) -> Fact:
    data = HoldChanged(
        hold_id=hold_id,
        kind=kind,
        currency=currency,
        until=day(until) if until else None,
        claims_deadline=day(claims_deadline) if claims_deadline else None,
        administrator=administrator,
        recorded=recorded(on),
    )
    return Fact(f"ar.hold.{'placed' if placed else 'released'}.v1", data)


def note(text: str, on: Day) -> Fact:
    return Fact("ar.case.noted.v1", CaseNote(note_id="N-1", text=text, recorded=recorded(on)))


def result(command: CollectionCommand, outcome: ContactOutcome, *, permanent: bool = False) -> Fact:
    data = ContactResult(
        command_id=command.command_id, case_id=command.case_id, outcome=outcome, permanent=permanent
    )
    return Fact(f"ar.contact.{outcome}.v1", data)


def agency_outcome(
    agency_id: str, on: Day, recovered: int | None = None, case: str = f"{DEBTOR}:EUR"
) -> Fact:
    data = AgencyOutcome(
        outcome_id=f"AO-{day(on)}",
        agency_id=agency_id,
        case_id=case,
        kind="recovered" if recovered else "contact_made",
        amount_recovered=Money(amount_minor=recovered, currency="EUR") if recovered else None,
        recorded=recorded(on),
    )
    return Fact("ar.agency.outcome.v1", data)


def profile(**fields: Any) -> DebtorProfile:
    return DebtorProfile.model_validate({"name": "Müller GmbH", **fields})


@dataclass
class Run:
    """What a simulation emitted, day by day."""

    case: Case
    commands: list[CollectionCommand] = field(default_factory=list)
    cancellations: list[CommandCancelled] = field(default_factory=list)
    events: list[CaseEvent] = field(default_factory=list)
    decisions: list[tuple[dt.date, Decision]] = field(default_factory=list)

    def postings(self) -> list[tuple[dt.date, Any]]:
        """(business date, journal entry) of every posting for the ledger, in order."""
        return [(d, p) for d, decision in self.decisions for p in decision.postings]

    def steps(self) -> list[tuple[str, str]]:
        """(business date, step) of every command, in order."""
        return [(c.business_date.isoformat(), c.step) for c in self.commands]

    def changes(self) -> list[str]:
        return [e.change for e in self.events]

    def lines(self) -> list[Entry]:
        """The timeline lines of every decision, in order."""
        return [line for _, decision in self.decisions for line in decision.notes]

    def command(self, step: str) -> CollectionCommand:
        return next(c for c in self.commands if c.step == step)


def simulate(
    facts: Mapping[str, Iterable[Fact]],
    until: Day,
    *,
    start: Day | None = None,
    policy: PolicyPublished = POLICY,
    debtor: DebtorFacts | None = None,
    case: Case | None = None,
    reply: Any = None,
) -> Run:
    """Every business day from `start` (the first fact's day) to `until`: apply that day's facts, then
    decide if the case is due. `reply(command)` may answer each command with facts for the next day."""
    by_day: dict[dt.date, list[Fact]] = {}
    for d, fs in facts.items():
        by_day.setdefault(day(d), []).extend(fs)
    current = day(start) if start else min(by_day)
    run = Run(case or new_case("acme", DEBTOR, "EUR"))
    while current <= day(until):
        for fact in by_day.get(current, []):
            run.case, events = evolve(run.case, fact)
            run.events.extend(events)
        due = run.case.next_action_date
        if due is not None and due <= current:
            decision = decide(run.case, current, policy, debtor)
            run.case = decision.case
            run.commands.extend(decision.commands)
            run.cancellations.extend(decision.cancellations)
            run.events.extend(decision.events)
            run.decisions.append((current, decision))
            if reply is not None:
                for command in decision.commands:
                    by_day.setdefault(current + dt.timedelta(days=1), []).extend(reply(command))
        current += dt.timedelta(days=1)
    return run
