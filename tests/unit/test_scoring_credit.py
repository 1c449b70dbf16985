"""The recommended credit limit: usual monthly billing x terms factor x (1 - probability of paying
late), rounded down to two significant figures in steps of at least 100 currency units."""

from __future__ import annotations

import datetime as dt

from services.scoring.credit import CreditLimit, recommend, round_down, usual_monthly_billing
from services.scoring.features import DebtorHistory, InvoiceFact
from services.scoring.model import default_scorecard, score_debtors

D = dt.date
AS_OF = D(2026, 1, 15)


def monthly(first: D, months: int, amount: int, terms: int, currency: str = "EUR") -> DebtorHistory:
    invoices = []
    for n in range(months):
        issued = D(first.year + (first.month - 1 + n) // 12, (first.month - 1 + n) % 12 + 1, 1)
        invoices.append(InvoiceFact(f"I{n}", issued, issued + dt.timedelta(days=terms), amount))
    return DebtorHistory("t1", "D1", currency, tuple(invoices))


def test_worked_example_of_a_customer_of_more_than_a_year() -> None:
    # EUR 1,000.00 on the 1st of every month since Jan 2025, 30 days' terms. On Jan 15, 2026 the
    # last 365 days hold the twelve invoices of Feb 2025 to Jan 2026: EUR 12,000.00 over twelve
    # months (the relationship is older than a year), EUR 1,000.00 a month. Terms factor
    # 1 + 30 / 30 = 2. At 27.18 % late: 1,000.00 x 2 x 0.7282 = 1,456.40, down to two
    # significant figures: EUR 1,400.00.
    history = monthly(D(2025, 1, 1), 13, 100_000, 30)
    assert usual_monthly_billing(history, AS_OF) == 100_000
    assert recommend(history, AS_OF, 0.2718) == CreditLimit(100_000, 2.0, 140_000)


def test_worked_example_of_a_new_customer_on_longer_terms() -> None:
    # EUR 500.00 on Nov 1, Dec 1 and Jan 1, 60 days' terms: 75 days a customer is three months
    # begun, so EUR 1,500.00 / 3 = EUR 500.00 a month; terms factor 1 + 60 / 30 = 3; at 10 % late
    # 500.00 x 3 x 0.9 = 1,350.00, down to EUR 1,300.00.
    history = monthly(D(2025, 11, 1), 3, 50_000, 60)
    assert recommend(history, AS_OF, 0.1) == CreditLimit(50_000, 3.0, 130_000)


def test_rounding_keeps_two_significant_figures_in_steps_of_at_least_100_units() -> None:
    assert round_down(12_345_678, "EUR") == 12_000_000
    assert round_down(145_640, "EUR") == 140_000
    assert round_down(9_999, "EUR") == 0  # below EUR 100.00: nothing to recommend
    assert round_down(1_234, "JPY") == 1_200
    assert round_down(0, "EUR") == 0


def test_no_invoice_in_the_last_year_no_recommendation_and_the_score_carries_it() -> None:
    old = monthly(D(2023, 1, 1), 3, 100_000, 30)
    assert recommend(old, AS_OF, 0.1) is None
    current = monthly(D(2025, 1, 1), 13, 100_000, 30)
    (stale, fresh) = score_debtors(default_scorecard(), [old, current], AS_OF)
    assert stale.recommended_limit_minor is None
    expected = recommend(current, AS_OF, fresh.p_late)
    assert expected is not None
    assert fresh.usual_monthly_billing_minor == 100_000
    assert fresh.recommended_limit_minor == expected.recommended_minor > 0
