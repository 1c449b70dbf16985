"""One message for a debtor's cases in several currencies: which member leads it, the key it goes
under, and the e-mail, text message and letter listing a section per currency, without I/O."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from pypdf import PdfReader

from contracts.collections import CollectionCommand, CommandItem
from contracts.money import Money
from services.notifier import bundles
from services.notifier.letters import letter_pdf, message_letter_pdf
from services.notifier.profile import TenantProfile
from services.notifier.rendering import Addressee, render, render_message

BUNDLE = ["cmd-eur", "cmd-usd"]
ACME = TenantProfile.model_validate(
    {
        "legal_name": "Acme Industrial Supplies GmbH",
        "address": ["Hauptstraße 1", "10115 Berlin"],
        "bank_account": {"iban": "DE89370400440532013000", "bic": "COBADEFFXXX"},
        "payment_reference": "AR-{debtor_id}-{currency}",
        "signatory": {"name": "Anna Schmidt", "title": "Head of Accounts Receivable"},
    }
)


def member(currency: str, amount: int, **changes: object) -> CollectionCommand:
    money = {"amount_minor": amount, "currency": currency}
    fields: dict[str, object] = {
        "command_id": f"cmd-{currency.lower()}",
        "case_id": f"D1:{currency}",
        "action": "send_reminder",
        "step": "friendly_reminder",
        "channels": ["email", "letter"],
        "template": "friendly_reminder",
        "business_date": dt.date(2026, 2, 19),
        "case_version": 3,
        "items": [
            CommandItem(
                invoice_id=f"INV-{currency}",
                issue_date=dt.date(2026, 1, 1),
                due_date=dt.date(2026, 1, 31),
                outstanding=Money.model_validate(money),
                days_past_due=19,
            )
        ],
        "total": money,
        "policy_version": 1,
        "bundle": BUNDLE,
    }
    fields.update(changes)
    return CollectionCommand.model_validate(fields)


EUR = member("EUR", 120_050)
USD = member("USD", 30_000)
# The amounts as each language writes them.
AMOUNTS = {
    "en": ("€1,200.50", "$300.00"),
    "ru": ("1\xa0200,50\xa0€", "300,00\xa0$"),
    "zh": ("€1,200.50", "US$300.00"),
}


def debtor(language: str) -> Addressee:
    return Addressee(
        "D1", "Debtor One", language=language, email="d1@example.com", postal_address=("1 Main St",)
    )


def test_the_claim_leads_a_reminder_and_the_older_item_leads_among_equals() -> None:
    claim = member("USD", 30_000, action="claim_letter", step="claim_letter", template="claim_letter")
    older = member("USD", 30_000, items=[USD.items[0].model_copy(update={"days_past_due": 40})])

    assert bundles.most_severe([EUR, claim]) is claim
    assert bundles.most_severe([claim, EUR]) is claim
    assert bundles.most_severe([older, EUR]).command_id == "cmd-usd"
    assert bundles.most_severe([USD, EUR]).command_id == "cmd-eur"  # equal: the first by id


def test_a_bundle_goes_under_its_first_command_id_whichever_members_it_carries() -> None:
    assert bundles.message_key(USD, ["cmd-usd"], all_arrived=True, sent_without=False) == "cmd-eur"
    assert bundles.message_key(USD, ["cmd-usd"], all_arrived=False, sent_without=False) == "cmd-usd"
    assert bundles.message_key(EUR, ["cmd-eur"], all_arrived=True, sent_without=True) == "cmd-eur"
    alone = EUR.model_copy(update={"bundle": []})
    assert bundles.message_key(alone, ["cmd-eur"], all_arrived=True, sent_without=False) == "cmd-eur"


def test_a_bundle_waits_for_its_members_for_a_while_only() -> None:
    first_arrival = dt.datetime(2026, 2, 19, 9, 0, tzinfo=dt.UTC)
    soon = first_arrival + dt.timedelta(seconds=5)
    late = first_arrival + bundles.WAIT_FOR_MEMBERS

    assert bundles.waiting_for(EUR, {"cmd-eur"}, first_arrival, soon) == ["cmd-usd"]
    assert bundles.waiting_for(EUR, {"cmd-eur", "cmd-usd"}, first_arrival, soon) == []
    assert bundles.waiting_for(EUR, {"cmd-eur"}, first_arrival, late) == []


@pytest.mark.parametrize("language", ["en", "ru", "zh"])
def test_one_email_lists_a_section_per_currency_with_its_items_totals_and_reference(language: str) -> None:
    mail = render_message([USD, EUR], debtor(language), "email", ACME)

    eur, usd = AMOUNTS[language]
    body = mail.body
    assert eur in mail.subject and usd in mail.subject
    colon = "：" if language == "zh" else ":"  # noqa: RUF001
    headings = [
        body.index(f"EUR{colon}\n"),
        body.index("INV-EUR"),
        body.index(f"USD{colon}\n"),
        body.index("INV-USD"),
    ]
    assert headings == sorted(headings), body
    assert body.count(eur) >= 2 and body.count(usd) >= 2, body  # the item and the section's total
    assert "AR-D1-EUR" in body and "AR-D1-USD" in body
    assert mail.language == language


def test_a_section_states_penalty_costs_discount_and_deadline_where_present() -> None:
    claim = member(
        "EUR",
        120_050,
        action="claim_letter",
        step="claim_letter",
        template="claim_letter",
        penalty={"amount_minor": 412, "currency": "EUR"},
        costs={"amount_minor": 4_000, "currency": "EUR"},
        deadline=dt.date(2026, 3, 5),
    )
    courtesy = member("USD", 30_000, discount={"amount_minor": 600, "currency": "USD"})

    body = render_message([claim, courtesy], debtor("en"), "email", ACME).body

    eur_section, usd_section = body.split("EUR:")[1].split("USD:")
    for words in (
        "Late-payment penalty: €4.12",
        "Recovery costs: €40.00",
        "Total due: €1,244.62",
        "Mar 5, 2026",
    ):
        assert words in eur_section, (words, body)
    assert "Early-payment discount if you pay now: $6.00" in usd_section
    assert "Claim for payment" in render_message([claim, courtesy], debtor("en"), "email").subject


def test_a_bundle_of_one_reads_as_the_command_alone() -> None:
    assert render_message([EUR], debtor("en"), "email", ACME) == render(EUR, debtor("en"), "email", ACME)
    assert message_letter_pdf([EUR], debtor("en"), ACME) == letter_pdf(EUR, debtor("en"), ACME)


def test_a_text_message_names_both_amounts() -> None:
    text = render_message([EUR, USD], debtor("en"), "sms", ACME).body

    assert "€1,200.50 and $300.00" in text
    assert "AR-D1-EUR for EUR and AR-D1-USD for USD" in text


@pytest.mark.parametrize(
    ("language", "heading"), [("en", "Total due"), ("ru", "Итого к оплате"), ("zh", "应付合计")]
)
def test_one_letter_lists_both_currencies(language: str, heading: str) -> None:
    pdf = message_letter_pdf([USD, EUR], debtor(language), ACME)

    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    flat = " ".join(text.split())
    eur, usd = (" ".join(a.split()) for a in AMOUNTS[language])
    assert flat.index("INV-EUR") < flat.index("INV-USD")
    assert eur in flat and usd in flat, flat
    assert flat.count(heading) == 2  # a total per currency
    assert "AR-D1-EUR" in flat and "AR-D1-USD" in flat
    assert pdf == message_letter_pdf([EUR, USD], debtor(language), ACME)
