"""Write-off proposals: expected recovery below the cost of the next action, or older than the
maximum age, for a debtor's overdue debt and for each overdue invoice on its own."""

from __future__ import annotations

import datetime as dt

from services.scoring.model import DebtorScore, InvoiceScore, segment_of
from services.scoring.writeoff import WriteOffRule, propose

D = dt.date
AS_OF = D(2026, 6, 30)


def invoice(ident: str, outstanding: int, due: D) -> InvoiceScore:
    return InvoiceScore(ident, outstanding, due, 1.0, AS_OF + dt.timedelta(days=1))


def score(p_late: float, invoices: tuple[InvoiceScore, ...]) -> DebtorScore:
    overdue = [i for i in invoices if i.due_date < AS_OF]
    return DebtorScore(
        tenant_id="t1",
        debtor_id="D1",
        currency="EUR",
        as_of=AS_OF,
        score=round(100 * p_late),
        p_late=p_late,
        segment=segment_of(p_late),
        expected_days_to_settle=90.0,
        reasons=(),
        open_minor=sum(i.outstanding_minor for i in invoices),
        overdue_minor=sum(i.outstanding_minor for i in overdue),
        oldest_days_past_due=max((AS_OF - i.due_date).days for i in overdue) if overdue else 0,
        invoices=invoices,
        model_kind="scorecard",
    )


# A: EUR 300.00, 30 days past due (a reminder, EUR 0.50); B: EUR 200.00, 395 days past due (an
# agency placement, EUR 50.00); C: EUR 100.00, not yet due.
INVOICES = (
    invoice("A", 30_000, D(2026, 5, 31)),
    invoice("B", 20_000, D(2025, 5, 31)),
    invoice("C", 10_000, D(2026, 7, 31)),
)


def test_worked_example_older_than_the_maximum_age() -> None:
    # Paying late 90 %: recovery 0.1 x EUR 500.00 = EUR 50.00, not below the agency's EUR 50.00;
    # but B is 395 days past due, more than 365: the debtor's debt is proposed for its age.
    proposal = propose(score(0.9, INVOICES))
    assert proposal is not None and proposal.proposed
    assert (proposal.expected_recovery_minor, proposal.cost_minor) == (5_000, 5_000)
    assert proposal.reasons == ("395 days past due, more than the maximum of 365",)
    # On its own, A (EUR 30.00 expected against a EUR 0.50 reminder, 30 days) is worth chasing;
    # B is proposed twice over; C is not due.
    (b,) = proposal.invoices
    assert (b.invoice_id, b.days_past_due) == ("B", 395)
    assert b.reasons == (
        "expected recovery EUR 20.00 (10% of EUR 200.00) is below the cost of the next action"
        " (agency, EUR 50.00)",
        "395 days past due, more than the maximum of 365",
    )


def test_worked_example_recovery_below_cost() -> None:
    # Paying late 95 %: recovery 0.05 x EUR 500.00 = EUR 25.00 < EUR 50.00; with a maximum of two
    # years the age alone would not propose it.
    proposal = propose(score(0.95, INVOICES), WriteOffRule(max_days_past_due=730))
    assert proposal is not None and proposal.proposed
    assert proposal.reasons == (
        "expected recovery EUR 25.00 (5% of EUR 500.00) is below the cost of the next action"
        " (agency, EUR 50.00)",
    )
    assert [i.invoice_id for i in proposal.invoices] == ["B"]


def test_a_debt_worth_chasing_is_not_proposed_and_nothing_overdue_proposes_nothing() -> None:
    recent = (invoice("A", 30_000, D(2026, 5, 31)),)
    proposal = propose(score(0.5, recent))
    assert proposal is not None and not proposal.proposed and proposal.invoices == ()
    assert propose(score(0.99, (invoice("C", 10_000, D(2026, 7, 31)),))) is None
