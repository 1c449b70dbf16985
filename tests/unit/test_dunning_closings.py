"""What dunning closes instead of chasing: the early-payment discount a payment earned, and the rest
of an agreed settlement once it is paid (given / when / then, business day by business day)."""

from __future__ import annotations

from contracts.journal import DiscountGranted, WriteOffPosted
from services.dunning.domain import Fact
from tests.unit import day
from tests.unit.dunning_world import Books, promise, settlement, simulate

AMOUNT = 500_000
ISSUED = "2024-01-31"
DUE = "2024-03-01"


def owing(*invoices: str) -> tuple[Books, dict[str, list[Fact]]]:
    books = Books()
    return books, {ISSUED: [books.issue(i, AMOUNT, due=DUE, issued=ISSUED) for i in invoices or ("I1",)]}


# --- early-payment discounts (default policy: 3 % within 7 days of issue, 2 % within 14) --------


def test_paying_97_percent_within_the_window_earns_the_discount_and_nobody_is_chased() -> None:
    books, facts = owing()
    facts["2024-02-05"] = [books.pay("I1", 485_000, on="2024-02-05")]

    run = simulate(facts, until="2024-05-31")

    [(posted_on, posting)] = run.postings()
    assert isinstance(posting, DiscountGranted)
    assert (posted_on, posting.invoice_id, posting.amount.amount_minor) == (day("2024-02-05"), "I1", 15_000)
    assert run.commands == []
    assert "discount_granted" in run.changes()


def test_the_ledger_applying_the_discount_closes_the_case() -> None:
    books, facts = owing()
    facts["2024-02-05"] = [books.pay("I1", 485_000, on="2024-02-05")]
    facts["2024-02-06"] = [books.discount("I1", 15_000, on="2024-02-05")]

    run = simulate(facts, until="2024-03-31")

    assert run.case.status == "closed" and not run.case.items
    assert run.changes()[-2:] == ["discount_granted", "closed"]
    assert len(run.postings()) == 1


def test_the_second_tier_gives_less_so_a_97_percent_payment_on_day_10_owes_the_rest() -> None:
    books, facts = owing()
    facts["2024-02-10"] = [books.pay("I1", 485_000, on="2024-02-10")]

    run = simulate(facts, until="2024-03-05")

    assert run.postings() == []
    assert [c.step for c in run.commands] == ["courtesy_reminder", "friendly_reminder"]
    assert run.command("friendly_reminder").total.amount_minor == 15_000


def test_98_percent_on_day_10_earns_the_2_percent_tier() -> None:
    books, facts = owing()
    facts["2024-02-10"] = [books.pay("I1", 490_000, on="2024-02-10")]

    run = simulate(facts, until="2024-03-31")

    [(_, posting)] = run.postings()
    assert isinstance(posting, DiscountGranted) and posting.amount.amount_minor == 10_000
    assert run.commands == []


def test_a_payment_after_the_window_earns_no_discount() -> None:
    books, facts = owing()
    facts["2024-02-20"] = [books.pay("I1", 490_000, on="2024-02-20")]

    run = simulate(facts, until="2024-03-05")

    assert run.postings() == []
    assert run.command("courtesy_reminder").total.amount_minor == 10_000


def test_a_policy_without_discounts_grants_none() -> None:
    from tests.unit.dunning_world import policy

    books, facts = owing()
    facts["2024-02-05"] = [books.pay("I1", 485_000, on="2024-02-05")]

    run = simulate(facts, until="2024-03-05", policy=policy(discounts=[]))

    assert run.postings() == []
    assert run.command("courtesy_reminder").total.amount_minor == 15_000


def test_a_reversed_payment_reopens_the_invoice_and_the_ladder_chases_it_all() -> None:
    books, facts = owing()
    facts["2024-02-05"] = [books.pay("I1", 485_000, on="2024-02-05")]
    facts["2024-02-06"] = [books.discount("I1", 15_000, on="2024-02-05")]
    facts["2024-02-20"] = [books.reverse("I1", 500_000, on="2024-02-20")]

    run = simulate(facts, until="2024-03-05")

    assert len(run.postings()) == 1
    assert run.command("friendly_reminder").total.amount_minor == AMOUNT


# --- agreed settlements ---------------------------------------------------------------------------


def test_a_paid_settlement_writes_the_rest_off_with_the_agreement_as_reason() -> None:
    books, facts = owing()
    facts["2024-03-20"] = [settlement(300_000, by="2024-04-10", on="2024-03-20")]
    facts["2024-04-05"] = [books.pay("I1", 300_000, on="2024-04-05")]

    run = simulate(facts, until="2024-05-31")

    [(posted_on, posting)] = run.postings()
    assert isinstance(posting, WriteOffPosted)
    assert (posted_on, posting.invoice_id, posting.amount) == (day("2024-04-05"), "I1", None)
    assert posting.reason is not None and "settlement ST-1" in posting.reason and "forgiven" in posting.reason
    assert [s for s in run.steps() if s[0] >= "2024-03-20"] == []
    assert run.changes()[-2:] == ["promise_kept", "rest_forgiven"]


def test_the_ledgers_write_off_closes_the_settled_case() -> None:
    books, facts = owing()
    facts["2024-03-20"] = [settlement(300_000, by="2024-04-10", on="2024-03-20")]
    facts["2024-04-05"] = [books.pay("I1", 300_000, on="2024-04-05")]
    facts["2024-04-06"] = [books.write_off("I1", on="2024-04-05")]

    run = simulate(facts, until="2024-05-31")

    assert run.case.status == "closed"
    assert run.changes()[-1] == "closed"


def test_a_missed_settlement_is_a_broken_promise_and_escalation_resumes() -> None:
    books, facts = owing()
    facts["2024-03-20"] = [settlement(300_000, by="2024-04-10", on="2024-03-20")]
    facts["2024-04-05"] = [books.pay("I1", 100_000, on="2024-04-05")]

    run = simulate(facts, until="2024-04-30")

    assert run.postings() == []
    broken = next(e for e in run.events if e.change == "promise_broken")
    assert broken.business_date == day("2024-04-14")  # 2024-04-10 plus the 3 grace days
    assert broken.detail is not None and broken.detail.startswith("settlement ST-1")
    assert next(s for s in run.steps() if s[0] >= "2024-04-14")[0] == "2024-04-14"


def test_a_settlement_forgives_only_the_invoices_it_names() -> None:
    books, facts = owing("I1", "I2")
    facts["2024-03-20"] = [settlement(200_000, by="2024-04-10", on="2024-03-20", invoices=["I1"])]
    facts["2024-04-05"] = [books.pay("I1", 200_000, on="2024-04-05")]

    run = simulate(facts, until="2024-04-30")

    assert [(p.invoice_id, type(p).__name__) for _, p in run.postings()] == [("I1", "WriteOffPosted")]
    later = [c for c in run.commands if c.business_date >= day("2024-04-05")]
    assert later and all([i.invoice_id for i in c.items] == ["I2"] for c in later)


def test_a_plain_promise_forgives_nothing() -> None:
    books, facts = owing()
    facts["2024-03-20"] = [promise(300_000, by="2024-04-10", on="2024-03-20")]
    facts["2024-04-05"] = [books.pay("I1", 300_000, on="2024-04-05")]

    run = simulate(facts, until="2024-04-30")

    assert run.postings() == []
    assert any(c.business_date >= day("2024-04-05") for c in run.commands)


def test_deciding_again_posts_nothing_twice() -> None:
    from services.dunning.domain import decide
    from tests.unit.dunning_world import POLICY

    books, facts = owing()
    facts["2024-02-05"] = [books.pay("I1", 485_000, on="2024-02-05")]
    run = simulate(facts, until="2024-02-05")

    again = decide(run.case, day("2024-02-05"), POLICY)

    assert len(run.postings()) == 1 and again.postings == ()
