"""Early-payment discounts in the ledger: a discount closes the rest of an invoice as paid, its own
balance fact says so, and a reversed payment takes back the discount it earned."""

from __future__ import annotations

from tests.unit import day, discounted, given, invoice, payment, reversed_, when, written_off


def test_a_discount_settles_what_the_payment_left_open() -> None:
    state = given(invoice("inv-1", 100_000, issued="2024-01-01"), payment("pay-1", 97_000, on="2024-01-08"))
    assert state.invoices["inv-1"].outstanding == 3_000

    transition = when(state, discounted("disc-1", "inv-1", 3_000, on="2024-01-08", payment_id="pay-1"))

    assert transition.rejection is None
    settled = transition.state.invoices["inv-1"]
    assert (settled.outstanding, settled.status, settled.discounted, settled.written_off) == (
        0,
        "settled",
        3_000,
        0,
    )
    (change,) = transition.changes
    assert (change.kind, change.change, change.effective_date) == ("settled", -3_000, day("2024-01-08"))


def test_a_discount_never_closes_more_than_is_outstanding() -> None:
    state = given(invoice("inv-1", 100_000), payment("pay-1", 98_500, on="2024-01-08"))

    transition = when(state, discounted("disc-1", "inv-1", 3_000, payment_id="pay-1"))

    assert transition.state.invoices["inv-1"].discounted == 1_500
    assert transition.state.invoices["inv-1"].outstanding == 0


def test_a_discount_on_a_settled_invoice_changes_nothing() -> None:
    state = given(invoice("inv-1", 100_000), payment("pay-1", 100_000, on="2024-01-08"))

    transition = when(state, discounted("disc-1", "inv-1", 3_000, payment_id="pay-1"))

    assert transition.rejection is None
    assert transition.state is state
    assert transition.changes == ()


def test_the_same_discount_twice_is_applied_once() -> None:
    state = given(
        invoice("inv-1", 100_000),
        payment("pay-1", 90_000, on="2024-01-08"),
        discounted("disc-1", "inv-1", 3_000, payment_id="pay-1"),
    )

    transition = when(state, discounted("disc-1", "inv-1", 3_000, payment_id="pay-1"))

    assert transition.state is state
    assert state.invoices["inv-1"].outstanding == 7_000


def test_reversing_the_payment_takes_the_discount_back() -> None:
    state = given(
        invoice("inv-1", 100_000),
        payment("pay-1", 97_000, on="2024-01-08"),
        discounted("disc-1", "inv-1", 3_000, on="2024-01-08", payment_id="pay-1"),
    )

    transition = when(state, reversed_("pay-1", on="2024-01-20"))

    reopened = transition.state.invoices["inv-1"]
    assert (reopened.outstanding, reopened.discounted, reopened.status) == (100_000, 0, "open")
    assert transition.state.discounts["disc-1"].taken_back_on == day("2024-01-20")
    (change,) = transition.changes
    assert (change.kind, change.change) == ("reopened", 100_000)


def test_a_discount_earned_by_a_reversed_payment_is_refused() -> None:
    state = given(invoice("inv-1", 100_000), payment("pay-1", 97_000), reversed_("pay-1"))

    transition = when(state, discounted("disc-1", "inv-1", 3_000, payment_id="pay-1"))

    assert transition.rejection is not None and "reversed" in transition.rejection
    assert transition.state is state


def test_a_discount_in_another_currency_is_refused() -> None:
    state = given(invoice("inv-1", 100_000), payment("pay-1", 97_000))

    transition = when(state, discounted("disc-1", "inv-1", 3_000, payment_id="pay-1", currency="USD"))

    assert transition.rejection is not None and "USD" in transition.rejection


def test_a_discount_before_its_invoice_waits_for_it() -> None:
    state = given(discounted("disc-1", "inv-1", 3_000))
    assert state.parked

    transition = when(state, invoice("inv-1", 100_000))

    assert transition.state.invoices["inv-1"].outstanding == 97_000
    assert not transition.state.parked


def test_a_discount_is_not_a_write_off() -> None:
    state = given(
        invoice("inv-1", 100_000),
        payment("pay-1", 96_000, on="2024-01-08"),
        discounted("disc-1", "inv-1", 3_000, payment_id="pay-1"),
    )

    transition = when(state, written_off("wo-1", "inv-1"))

    after = transition.state.invoices["inv-1"]
    assert (after.discounted, after.written_off, after.status) == (3_000, 1_000, "written_off")


def test_a_discount_that_names_no_payment_belongs_to_the_invoices_latest_payment() -> None:
    state = given(
        invoice("inv-1", 100_000),
        payment("pay-1", 50_000, on="2024-01-05"),
        payment("pay-2", 47_000, on="2024-01-08"),
        discounted("disc-1", "inv-1", 3_000, on="2024-01-08"),
    )
    assert state.discounts["disc-1"].payment_id == "pay-2"

    transition = when(state, reversed_("pay-2", on="2024-01-20"))

    assert transition.state.invoices["inv-1"].outstanding == 50_000
