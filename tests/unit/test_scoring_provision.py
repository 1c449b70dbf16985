"""Roll rates and the provision matrix on a portfolio small enough to follow by hand."""

from __future__ import annotations

import datetime as dt

from services.scoring.features import DebtorHistory, InvoiceFact
from services.scoring.provision import bucket_at, month_ends, provision_matrix, roll_rates

D = dt.date
JAN, FEB, MAR = D(2024, 1, 31), D(2024, 2, 29), D(2024, 3, 31)


def inv(name: str, issued: D, due: D, amount: int, paid: D | None = None) -> InvoiceFact:
    return InvoiceFact(name, issued, due, amount, settled_date=paid)


# Days past due at the month ends Jan 31 / Feb 29 / Mar 31, and the bucket each is in:
PORTFOLIO = (
    inv("A", D(2023, 12, 16), D(2024, 1, 15), 1_000),  # 16 / 45 / 76: 1-30, 31-60, 61-90
    inv("B", D(2023, 12, 21), D(2024, 1, 20), 3_000, paid=D(2024, 2, 10)),  # 11: 1-30, then paid
    inv("C", D(2023, 10, 26), D(2023, 11, 25), 2_000),  # 67 / 96 / 127: 61-90, default, default
    inv("D", D(2024, 1, 10), D(2024, 2, 9), 4_000, paid=D(2024, 3, 5)),  # current, 1-30 (20), paid
    inv("E", D(2024, 3, 1), D(2024, 3, 31), 500),  # issued in March: current at Mar 31
    inv("F", D(2024, 2, 9), D(2024, 3, 10), 800, paid=D(2024, 4, 15)),  # current / 21: paid after
    inv("G", D(2023, 11, 20), D(2023, 12, 20), 1_000, paid=D(2024, 2, 15)),  # 42: 31-60, then paid
)


def test_month_ends() -> None:
    assert month_ends(MAR, 2) == [JAN, FEB, MAR]
    assert month_ends(D(2024, 3, 30), 1) == [JAN, FEB]


def test_buckets_as_of_a_date_know_nothing_later() -> None:
    f = PORTFOLIO[5]
    assert [bucket_at(f, d) for d in (JAN, FEB, MAR, D(2024, 4, 15))] == [None, "current", "1-30", None]


def test_roll_rates_by_hand() -> None:
    # Jan -> Feb: current D 4000 rolls; 1-30: A 1000 rolls, B 3000 paid; 31-60: G 1000 paid;
    #             61-90: C 2000 rolls to default.
    # Feb -> Mar: current F 800 rolls; 1-30: D 4000 paid; 31-60: A 1000 rolls.
    rates = roll_rates(PORTFOLIO, [JAN, FEB, MAR])
    assert rates == {
        "current": (4_000 + 800) / (4_000 + 800),
        "1-30": 1_000 / (1_000 + 3_000 + 4_000),
        "31-60": 1_000 / (1_000 + 1_000),
        "61-90": 2_000 / 2_000,
    }


def test_provision_matrix_by_hand() -> None:
    (matrix,) = provision_matrix([DebtorHistory("t1", "d1", "EUR", PORTFOLIO)], MAR, lookback_months=2)
    # Loss rate = product of the roll rates from the bucket to default:
    #   61-90: 1.0; 31-60: 0.5 * 1.0; 1-30: 0.125 * 0.5 = 0.0625; current: 1.0 * 0.0625; default: 1.
    # Balances at Mar 31: current E 500; 1-30 F 800 (paid only in April); 61-90 A 1000; default C 2000.
    rows = {b.bucket: (b.balance_minor, b.loss_rate, b.provision_minor) for b in matrix.buckets}
    assert rows == {
        "current": (500, 0.0625, 31),
        "1-30": (800, 0.0625, 50),
        "31-60": (0, 0.5, 0),
        "61-90": (1_000, 1.0, 1_000),
        "default": (2_000, 1.0, 2_000),
    }
    assert (matrix.balance_minor, matrix.provision_minor) == (4_300, 3_081)
    assert matrix.window == (JAN, MAR)


def test_one_matrix_per_tenant_and_currency() -> None:
    histories = [
        DebtorHistory("t1", "d1", "EUR", PORTFOLIO),
        DebtorHistory("t1", "d2", "USD", PORTFOLIO[:1]),
        DebtorHistory("t2", "d1", "EUR", PORTFOLIO[:1]),
    ]
    assert [(m.tenant_id, m.currency) for m in provision_matrix(histories, MAR)] == [
        ("t1", "EUR"),
        ("t1", "USD"),
        ("t2", "EUR"),
    ]
