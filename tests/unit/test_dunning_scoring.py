"""What dunning takes from scoring: the risk segment of each case's own currency, and the write-off
proposal, which brings a debt's write-off review forward to as soon as the steps before it allow."""

from __future__ import annotations

from services.dunning.domain import DebtorFacts, Fact, new_case
from tests.unit import day
from tests.unit.dunning_world import DEBTOR, Books, simulate


def owing(amount: int, currency: str = "EUR") -> dict[str, list[Fact]]:
    books = Books(currency=currency)
    return {"2024-01-31": [books.issue("I1", amount, due="2024-03-01", issued="2024-01-31")]}


def test_each_case_takes_the_segment_of_its_own_currency() -> None:
    # Scored high in EUR and low in USD (and "medium" as a debtor-wide fallback): the EUR case's
    # formal notice comes five days before the unscored date (Mar 16), the USD case's five after.
    debtor = DebtorFacts(segment="medium", segments={"EUR": "high", "USD": "low"})
    eur = simulate(owing(500_000), until="2024-04-01", debtor=debtor)
    usd = simulate(
        owing(500_000, "USD"), until="2024-04-01", debtor=debtor, case=new_case("acme", DEBTOR, "USD")
    )
    other = simulate(
        owing(500_000, "GBP"), until="2024-04-01", debtor=debtor, case=new_case("acme", DEBTOR, "GBP")
    )
    assert eur.command("formal_notice").business_date == day("2024-03-11")
    assert usd.command("formal_notice").business_date == day("2024-03-21")
    assert other.command("formal_notice").business_date == day("2024-03-16")  # the fallback


def test_a_debt_scoring_proposes_for_write_off_is_reviewed_once_the_steps_before_are_done() -> None:
    # EUR 50.00 due Mar 1: too small for an agency (EUR 100.00) or legal action (EUR 1,000.00),
    # which are passed over on their days. Without a proposal the write-off review waits for its
    # 365 days (+3 for a small amount); with scoring's proposal it comes on the day legal action
    # is passed over, the last step before it.
    plain = simulate(owing(5_000), until="2025-04-01")
    proposed = simulate(
        owing(5_000), until="2025-04-01", debtor=DebtorFacts(write_off_proposed=frozenset({"EUR"}))
    )
    assert plain.command("writeoff_proposal").business_date == day("2025-03-04")
    assert proposed.command("writeoff_proposal").business_date == day("2024-07-02")
    assert [s for _, s in proposed.steps()] == [s for _, s in plain.steps()]
    # A proposal in another currency changes nothing for this case.
    usd_only = simulate(
        owing(5_000), until="2025-04-01", debtor=DebtorFacts(write_off_proposed=frozenset({"USD"}))
    )
    assert usd_only.steps() == plain.steps()
