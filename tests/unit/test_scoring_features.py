"""Point-in-time features: what a debtor's history says at a business date, and nothing later."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from hypothesis import given as for_all
from hypothesis import settings
from hypothesis import strategies as st

from services.scoring.features import DebtorHistory, InvoiceFact, features_at, known_on

START = dt.date(2024, 1, 1)


def day(n: int) -> dt.date:
    return START + dt.timedelta(days=n)


def invoice(n: int, issued: int, amount: int, paid: int | None, disputed: int | None = None) -> InvoiceFact:
    return InvoiceFact(
        invoice_id=f"i{n}",
        issue_date=day(issued),
        due_date=day(issued + 30),
        amount_minor=amount,
        settled_date=None if paid is None else day(paid),
        disputed_date=None if disputed is None else day(disputed),
    )


def history(*invoices: InvoiceFact, limit: int | None = None) -> DebtorHistory:
    return DebtorHistory("t1", "d1", "EUR", tuple(invoices), paperless=True, credit_limit_minor=limit)


def test_an_invoice_paid_after_the_date_is_open_and_its_lateness_unknown() -> None:
    h = history(
        invoice(1, 0, 10_000, paid=20),  # on time
        invoice(2, 10, 20_000, paid=50),  # 10 days late
        invoice(3, 20, 30_000, paid=90),  # paid after the date: open and overdue at day 60
        limit=100_000,
    )
    f = features_at(h, day(60))
    assert f.invoice_count == 3 and f.settled_count == 2
    assert f.late_share == 0.5
    assert f.mean_days_late == 5.0
    assert f.mean_days_to_settle == (20 + 40) / 2
    assert f.days_since_last_payment == 10
    assert (f.open_count, f.overdue_count) == (1, 1)
    assert f.overdue_amount == 300.0
    assert f.overdue_share_of_limit == 0.3
    assert f.paperless == 1.0


def test_an_invoice_is_not_part_of_its_own_history() -> None:
    first, second = invoice(1, 0, 10_000, paid=40), invoice(2, 30, 40_000, paid=None)
    f = features_at(history(first, second), second.issue_date, second)
    assert f.invoice_count == 1
    assert f.amount_ratio == 4.0
    assert f.terms_days == 30


def test_a_trend_compares_the_latest_payments_with_all_of_them() -> None:
    on_time = [invoice(i, 10 * i, 1_000, paid=10 * i + 30) for i in range(3)]
    late = [invoice(i, 10 * i, 1_000, paid=10 * i + 50) for i in range(3, 6)]
    f = features_at(history(*on_time, *late), day(200))
    assert f.mean_days_late == 10.0
    assert f.days_late_trend == 20.0 - 10.0


def test_a_debtor_without_history_has_unknowns_not_zeros() -> None:
    f = features_at(history(), day(0))
    assert f.late_share is None and f.days_since_last_payment is None and f.amount_ratio is None
    assert f.invoice_count == 0


@st.composite
def histories_and_dates(draw: st.DrawFn) -> tuple[DebtorHistory, DebtorHistory, dt.date]:
    """A history, the same history with everything after D changed, and D."""
    as_of = draw(st.integers(0, 200))
    original, changed = [], []
    for n in range(draw(st.integers(0, 12))):
        issued = draw(st.integers(0, 240))
        amount = draw(st.integers(1, 10**7))
        paid = draw(st.none() | st.integers(issued, issued + 120))
        disputed = draw(st.none() | st.integers(issued, issued + 60))
        inv = invoice(n, issued, amount, paid, disputed)
        original.append(inv)
        if issued > as_of:
            if draw(st.booleans()):
                later = draw(st.integers(as_of + 1, 400))
                changed.append(replace(inv, issue_date=day(later), due_date=day(later + 14), amount_minor=7))
            continue

        def after(d: dt.date | None) -> dt.date | None:
            if d is None or d <= day(as_of):
                return d
            return draw(st.none() | st.integers(as_of + 1, 500).map(day))

        changed.append(
            replace(inv, settled_date=after(inv.settled_date), disputed_date=after(inv.disputed_date))
        )
    extra = draw(st.integers(0, 3))
    changed += [invoice(100 + k, as_of + 1 + k, 99, paid=as_of + 5) for k in range(extra)]
    return history(*original, limit=50_000), history(*changed, limit=50_000), day(as_of)


@settings(max_examples=300, deadline=None)
@for_all(histories_and_dates())
def test_events_after_the_date_never_change_features_at_the_date(
    case: tuple[DebtorHistory, DebtorHistory, dt.date],
) -> None:
    original, changed, as_of = case
    assert features_at(original, as_of) == features_at(changed, as_of)
    for inv in original.invoices:
        if inv.issue_date <= as_of:
            assert features_at(original, as_of, inv) == features_at(changed, as_of, inv)
    assert features_at(known_on(original, as_of), as_of) == features_at(original, as_of)
