"""The notifier's last look, send windows, templates and letters, without I/O."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pypdf import PdfReader

from contracts.collections import CollectionCommand, CommandItem
from contracts.money import Money
from services.notifier.domain import (
    CaseSeen,
    Situation,
    address_wanted,
    last_look,
    next_send_time,
    usable_channels,
)
from services.notifier.letters import letter_pdf
from services.notifier.profile import ProfileVersion, TenantProfile, in_force
from services.notifier.rendering import Addressee, render

UTC = dt.UTC


def eur(minor: int) -> Money:
    return Money(amount_minor=minor, currency="EUR")


def command(action: str = "send_reminder", **changes: object) -> CollectionCommand:
    items = [
        CommandItem(
            invoice_id="INV-1",
            issue_date=dt.date(2026, 1, 1),
            due_date=dt.date(2026, 1, 31),
            outstanding=eur(120_050),
            days_past_due=20,
        ),
        CommandItem(
            invoice_id="INV-2",
            issue_date=dt.date(2026, 1, 10),
            due_date=dt.date(2026, 2, 9),
            outstanding=eur(30_000),
            days_past_due=10,
            penalty=eur(412),
        ),
    ]
    fields: dict[str, object] = {
        "command_id": "cmd-1",
        "case_id": "D1:EUR",
        "action": action,
        "step": "friendly_reminder",
        "channels": ["email", "sms", "letter"],
        "template": "reminder",
        "business_date": dt.date(2026, 2, 19),
        "case_version": 3,
        "items": items,
        "total": eur(150_050),
        "policy_version": 1,
    }
    fields.update(changes)
    return CollectionCommand.model_validate(fields)


NOTHING_NEW = Situation(
    outstanding={"INV-1": 120_050, "INV-2": 30_000}, disputed=frozenset(), case=None, cancelled_because=None
)


def test_nothing_new_means_go_ahead() -> None:
    assert last_look(command(), NOTHING_NEW) is None


@pytest.mark.parametrize(
    ("situation", "reason"),
    [
        (Situation({"INV-1": 100_000, "INV-2": 30_000}, frozenset(), None, None), "paid since"),
        (Situation({"INV-1": 0, "INV-2": 0}, frozenset(), None, None), "paid since"),
        (Situation(NOTHING_NEW.outstanding, frozenset({"INV-2"}), None, None), "disputed"),
        (Situation(NOTHING_NEW.outstanding, frozenset(), CaseSeen(4, "closed", "closed"), None), "closed"),
        (
            Situation(NOTHING_NEW.outstanding, frozenset(), CaseSeen(5, "held", "promise_recorded"), None),
            "hold",
        ),
        (Situation(NOTHING_NEW.outstanding, frozenset(), None, "full payment"), "cancelled"),
    ],
)
def test_the_last_look_drops_a_send_that_became_wrong(situation: Situation, reason: str) -> None:
    found = last_look(command(), situation)
    assert found is not None and reason in found


def test_a_case_event_the_command_already_knew_of_does_not_stop_it() -> None:
    assert (
        last_look(
            command(), Situation(NOTHING_NEW.outstanding, frozenset(), CaseSeen(3, "held", "held"), None)
        )
        is None
    )


def test_a_new_invoice_of_the_debtor_does_not_stop_a_reminder() -> None:
    grown = Situation({**NOTHING_NEW.outstanding, "INV-3": 5_000}, frozenset(), None, None)
    assert last_look(command(), grown) is None


def test_channels_the_debtor_cannot_be_reached_on_are_left_out() -> None:
    no_email = Addressee("D1", "Acme", phone="+49 30 1234567", postal_address=("1 Main St",))
    assert usable_channels(command(), no_email) == ["sms", "letter"]
    assert usable_channels(command(), None) == []  # a debtor the notifier never heard of: no address


moments = st.datetimes(
    min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 1, 1), timezones=st.just(UTC)
)


@given(now=moments, opening_hour=st.integers(0, 23), hours_open=st.integers(1, 23))
def test_sends_happen_only_inside_the_daily_window(
    now: dt.datetime, opening_hour: int, hours_open: int
) -> None:
    after = dt.datetime(2024, 5, 6, opening_hour, tzinfo=UTC)
    before = after + dt.timedelta(hours=hours_open)
    at = next_send_time(now, after, before)
    assert at >= now and at >= after
    offset = (at - after) % dt.timedelta(days=1)
    assert offset < dt.timedelta(hours=hours_open), "outside the window"
    if now >= after:
        assert at - now <= dt.timedelta(days=1)


@pytest.mark.parametrize(
    ("language", "words"),
    [
        ("en", ["Dear Acme GmbH", "INV-1", "€1,200.50", "Payment reminder"]),
        ("ru-RU", ["Уважаемый(ая) Acme GmbH", "INV-1", "1\xa0200,50\xa0€", "Напоминание"]),
        ("zh", ["尊敬的 Acme GmbH", "INV-1", "€1,200.50", "付款提醒"]),
        ("fr", ["Dear Acme GmbH"]),
    ],
)
def test_emails_speak_the_debtors_language(language: str, words: list[str]) -> None:
    rendered = render(command(), Addressee("D1", "Acme GmbH", language=language), "email")
    text = rendered.subject + "\n" + rendered.body
    for word in words:
        assert word in text


def test_one_reminder_lists_every_overdue_item_and_the_total() -> None:
    body = render(command(), Addressee("D1", "Acme GmbH"), "email").body
    assert body.count("Invoice INV-") == 2
    assert "€1,500.50" in body
    assert "€4.12" in body


def test_the_claim_letter_is_a_pdf_listing_the_items_and_the_deadline() -> None:
    claim = command("claim_letter", template="claim_letter", deadline=dt.date(2026, 3, 5), penalty=eur(412))
    for language in ("en", "ru", "zh"):
        pdf = letter_pdf(
            claim, Addressee("D1", "Acme GmbH", language=language, postal_address=("1 Main St",))
        )
        assert pdf.startswith(b"%PDF-")
        assert len(pdf) > 1000
    assert letter_pdf(claim, Addressee("D1", "Acme GmbH")) == letter_pdf(claim, Addressee("D1", "Acme GmbH"))


def _text_and_fonts(pdf: bytes) -> tuple[str, dict[str, bool]]:
    """The text a reader extracts from the letter, and each font it uses with whether it is embedded."""
    reader = PdfReader(io.BytesIO(pdf))
    fonts: dict[str, bool] = {}
    for page in reader.pages:
        resources: Any = page["/Resources"]
        for reference in resources["/Font"].values():
            font: Any = reference.get_object()
            descriptor = font.get("/FontDescriptor")
            if descriptor is None and "/DescendantFonts" in font:
                descriptor = font["/DescendantFonts"][0].get_object().get("/FontDescriptor")
            found = descriptor.get_object() if descriptor is not None else {}
            fonts[str(font["/BaseFont"])] = any(k in found for k in ("/FontFile", "/FontFile2", "/FontFile3"))
    return "".join(page.extract_text() for page in reader.pages), fonts


@pytest.mark.parametrize(
    ("language", "debtor", "expected"),
    [
        ("zh", "上海明华贸易有限公司", ["应付合计", "发票", "上海明华贸易有限公司", "INV-1"]),
        ("ru", "ООО «Ромашка»", ["Итого к оплате", "Неустойка", "ООО «Ромашка»", "INV-2"]),  # noqa: RUF001
        ("en", "Müller & Søn ApS", ["Total due", "Müller & Søn ApS", "INV-1"]),
    ],
)
def test_a_letter_embeds_its_font_and_its_text_reads_back(
    language: str, debtor: str, expected: list[str]
) -> None:
    # A letter set in a font the reader's machine lacks prints boxes: every font must travel inside.
    claim = command("claim_letter", template="claim_letter", deadline=dt.date(2026, 3, 5), penalty=eur(412))
    pdf = letter_pdf(claim, Addressee("D1", debtor, language=language, postal_address=("1 Main St",)))
    text, fonts = _text_and_fonts(pdf)
    for words in expected:
        assert words in text
    assert fonts, "the letter names no font"
    assert all(fonts.values()), (
        f"fonts not embedded: {[name for name, embedded in fonts.items() if not embedded]}"
    )


ACME = TenantProfile.model_validate(
    {
        "legal_name": "Acme Industrial Supplies GmbH",
        "address": ["Hauptstraße 1", "10115 Berlin"],
        "registrations": [{"label": "VAT", "value": "DE123456789"}],
        "bank_account": {"iban": "DE89370400440532013000", "bic": "COBADEFFXXX", "bank_name": "Commerzbank"},
        "payment_reference": "AR-{debtor_id}",
        "email": "ar@acme.example",
        "signatory": {"name": "Anna Schmidt", "title": "Head of Accounts Receivable"},
    }
)


@pytest.mark.parametrize("language", ["en", "ru", "zh"])
def test_letters_and_emails_carry_the_creditor_the_bank_details_and_the_reference(language: str) -> None:
    claim = command("claim_letter", template="claim_letter", deadline=dt.date(2026, 3, 5), penalty=eur(412))
    debtor = Addressee("D1", "Debtor One", language=language, postal_address=("1 Main St",))
    wanted = [
        "Acme Industrial Supplies GmbH",
        "DE89370400440532013000",
        "COBADEFFXXX",
        "AR-D1",
        "Anna Schmidt",
    ]
    mail = render(claim, debtor, "email", ACME).body
    for words in [*wanted, "Head of Accounts Receivable", "Hauptstraße 1", "VAT DE123456789"]:
        assert words in mail, (words, mail)
    text, _ = _text_and_fonts(letter_pdf(claim, debtor, ACME))
    flat = " ".join(text.split())
    for words in [*wanted, "10115 Berlin", "VAT DE123456789"]:
        assert words in flat, (words, flat)
    # The creditor's block comes before the debtor's address; the signatory closes the letter.
    assert flat.index("Acme Industrial Supplies GmbH") < flat.index("Debtor One")
    assert flat.rindex("Anna Schmidt") > flat.index("DE89370400440532013000")


def test_without_a_profile_the_letter_is_signed_by_the_department_and_names_no_bank() -> None:
    text, _ = _text_and_fonts(
        letter_pdf(command("claim_letter", template="claim_letter"), Addressee("D1", "X"))
    )
    assert "Accounts Receivable" in text
    assert "IBAN" not in text


def test_a_payment_reference_names_only_what_the_erp_can_match() -> None:
    assert ACME.reference("D-7", "D-7:EUR", "EUR") == "AR-D-7"
    for bad in ("{invoice}", "{debtor_id!r}", "{debtor_id:>9}", "{}", "{0}"):
        with pytest.raises(ValueError, match="may name only"):
            TenantProfile.model_validate({**ACME.model_dump(), "payment_reference": bad})


def test_the_profile_in_force_is_the_latest_to_take_effect_by_the_day() -> None:
    first = ProfileVersion(version=1, effective_from=dt.date(2026, 1, 1), profile=ACME)
    moved = ACME.model_copy(update={"address": ["Neue Straße 5", "10117 Berlin"]})
    second = ProfileVersion(version=2, effective_from=dt.date(2026, 3, 1), profile=moved)
    assert in_force([first, second], dt.date(2025, 12, 31)) is None
    assert in_force([second, first], dt.date(2026, 2, 28)) == first
    assert in_force([first, second], dt.date(2026, 3, 1)) == second


def test_an_address_that_starts_with_the_name_names_the_debtor_once() -> None:
    debtor = Addressee("D1", "Acme GmbH", postal_address=("Acme GmbH", "Hauptstraße 1", "10115 Berlin"))
    text, _ = _text_and_fonts(letter_pdf(command("claim_letter", template="claim_letter"), debtor))
    head = text[: text.index("10115 Berlin")]
    assert head.count("Acme GmbH") == 1, head


@pytest.mark.parametrize("channel", ["email", "sms"])
def test_a_russian_deadline_ends_its_sentence_once(channel: str) -> None:
    # A Russian date ends in the abbreviation of "year" and its full stop: the sentence's is not added.
    year = "\u0433."
    notice = command("formal_notice", deadline=dt.date(2026, 3, 5))
    body = render(notice, Addressee("D1", "Debtor", language="ru"), channel).body  # type: ignore[arg-type]
    assert f"2026\u202f{year}" in body
    assert f"{year}." not in body


# --- one template per step ------------------------------------------------------------------------

STEP_WORDS = {
    ("courtesy_reminder", "send_reminder", "email"): {
        "en": "courtesy reminder",
        "ru": "скоро наступает",
        "zh": "即将到期",
    },
    ("friendly_reminder", "send_reminder", "email"): {
        "en": "simply been overlooked",
        "ru": "недосмотр",
        "zh": "疏忽",
    },
    ("formal_notice", "formal_notice", "letter"): {
        "en": "Formal notice of overdue payment",
        "ru": "Официальное уведомление",
        "zh": "逾期付款正式通知",
    },
    ("claim_letter", "claim_letter", "letter"): {
        "en": "Claim for payment",
        "ru": "Претензия",
        "zh": "付款索赔函",
    },
    ("final_demand", "claim_letter", "letter"): {
        "en": "Final demand before legal action",
        "ru": "Последнее требование",
        "zh": "最后催告",
    },
    ("final_demand", "claim_letter", "email"): {
        "en": "final demand",
        "ru": "последнее требование",
        "zh": "最后催告",
    },
    ("agency_handover", "formal_notice", "letter"): {
        "en": "handover to a collection agency",
        "ru": "передаче задолженности агентству",
        "zh": "移交催收机构通知",
    },
    ("legal_action_notice", "formal_notice", "letter"): {
        "en": "Notice of legal action",
        "ru": "обращении в суд",
        "zh": "法律行动通知",
    },
}


@pytest.mark.parametrize("language", ["en", "ru", "zh"])
@pytest.mark.parametrize(("template", "action", "channel"), list(STEP_WORDS))
def test_each_step_speaks_in_its_own_words(template: str, action: str, channel: str, language: str) -> None:
    step = command(action, template=template, step=template, deadline=dt.date(2026, 3, 5), penalty=eur(412))
    debtor = Addressee("D1", "Debtor One", language=language, postal_address=("1 Main St",))
    if channel == "letter":
        text, _ = _text_and_fonts(letter_pdf(step, debtor, ACME))
    else:
        rendered = render(step, debtor, "email", ACME)
        text = f"{rendered.subject}\n{rendered.body}"
    flat = " ".join(text.split()).lower()
    assert STEP_WORDS[(template, action, channel)][language].lower() in flat
    # A step may recall the steps before it, never speak as one that comes later.
    keys = list(STEP_WORDS)
    later = keys[keys.index((template, action, channel)) + 1 :]
    assert not any(STEP_WORDS[k][language].lower() in flat for k in later if k[0] != template)


@pytest.mark.parametrize(
    ("language", "amounts", "basis"),
    [
        (
            "en",
            ["Principal", "€1,500.50", "€4.12", "Recovery costs", "€25.00", "€1,529.62"],
            "general terms of sale",
        ),
        (
            "ru",
            ["Основной долг", "1 500,50 €", "4,12 €", "Расходы на взыскание", "25,00 €", "1 529,62 €"],
            "договор",
        ),
        ("zh", ["本金", "€1,500.50", "€4.12", "追收费用", "€25.00", "€1,529.62"], "合同"),
    ],
)
def test_a_claim_states_principal_penalty_costs_the_total_and_its_basis(
    language: str, amounts: list[str], basis: str
) -> None:
    # 1,500.50 principal + 4.12 penalty + 25.00 costs = 1,529.62 asked for, in the letter and the e-mail.
    creditor = TenantProfile.model_validate(
        {**ACME.model_dump(), "legal_basis": {"en": "our general terms of sale of 1 January 2026, section 7"}}
    )
    claim = command(
        "claim_letter",
        template="claim_letter",
        deadline=dt.date(2026, 3, 5),
        penalty=eur(412),
        costs=eur(2_500),
    )
    debtor = Addressee("D1", "Debtor One", language=language, postal_address=("1 Main St",))
    letter, _ = _text_and_fonts(letter_pdf(claim, debtor, creditor))
    mail = render(claim, debtor, "email", creditor)
    for text in (_spaced(letter), _spaced(mail.body)):
        for words in [*amounts, basis]:
            assert words in text, (words, text)
    assert amounts[-1] in _spaced(mail.subject)


def _spaced(text: str) -> str:
    """Text with its runs of white space (Babel's no-break spaces in amounts too) as single spaces."""
    return " ".join(text.replace("\u00a0", " ").replace("\u202f", " ").split())


def test_a_language_without_a_steps_template_keeps_to_its_own_default() -> None:
    rendered = render(
        command(template="seasonal_greeting"), Addressee("D1", "Должник", language="ru"), "email"
    )
    assert "Уважаемый" in rendered.body and "Dear" not in rendered.body


@pytest.mark.parametrize("language", ["en", "ru", "zh"])
def test_legal_action_and_write_off_tasks_carry_their_instructions_not_the_call_script(language: str) -> None:
    debtor = Addressee("D1", "Debtor One", language=language)
    call = render(command("schedule_call", template="overdue_call"), debtor, "call").body
    legal = render(
        command("start_legal_action", template="legal_action", penalty=eur(412)), debtor, "call"
    ).body
    writeoff = render(command("propose_writeoff", template="writeoff_proposal"), debtor, "call").body
    words = {
        "en": ("limitation period", "administrator", "evidence", "Ask for a payment date"),
        "ru": ("исковой давности", "управляющ", "невозможность взыскания", "Узнать дату оплаты"),
        "zh": ("诉讼时效", "管理人", "无法收回", "询问付款日期"),
    }[language]
    limitation, insolvency, evidence, script = words
    assert script in call
    assert limitation in legal and insolvency in legal and script not in legal
    assert evidence in writeoff and script not in writeoff


def test_every_step_of_the_default_policy_has_its_own_template_in_every_language() -> None:
    from services.dunning.policies import default_policy
    from services.notifier.rendering import KIND_OF_CHANNEL, TEMPLATES

    missing = [
        f"{language}/{step.template}.{KIND_OF_CHANNEL[channel]}.j2"
        for step in default_policy().steps
        if step.template != "overdue_call"  # the phone script is the default call template
        for channel in step.channels
        if channel in KIND_OF_CHANNEL
        for language in ("en", "ru", "zh")
        if not (TEMPLATES / language / f"{step.template}.{KIND_OF_CHANNEL[channel]}.j2").exists()
    ]
    notices = [s.notice_template for s in default_policy().steps if s.notice_template]
    assert notices == ["agency_handover", "legal_action_notice"]
    missing += [
        f"{language}/{notice}.{kind}.j2"
        for notice in notices
        for kind in ("letter", "email")
        for language in ("en", "ru", "zh")
        if not (TEMPLATES / language / f"{notice}.{kind}.j2").exists()
    ]
    assert missing == []


@pytest.mark.parametrize("language", ["en", "ru", "zh"])
def test_no_letter_without_a_postal_address_and_a_task_to_find_one(language: str) -> None:
    emailable = Addressee("D1", "Acme GmbH", language=language, email="ap@acme.example")
    posted = Addressee("D1", "Acme GmbH", language=language, postal_address=("Hauptstraße 1", "10115 Berlin"))
    letter_first = command("claim_letter", channels=["letter", "email"])
    letter_only = command("formal_notice", channels=["letter"])
    assert usable_channels(letter_first, emailable) == ["email"]
    assert (usable_channels(letter_only, emailable), address_wanted(letter_only, emailable)) == ([], True)
    assert (usable_channels(letter_only, posted), address_wanted(letter_only, posted)) == (["letter"], False)
    assert address_wanted(letter_only, None)
    task = render(command("formal_notice", template="find_address"), emailable, "call").body
    assert "Acme GmbH" in task and "D1" in task
    assert {"en": "postal address", "ru": "почтовый адрес", "zh": "邮寄地址"}[language] in task


@pytest.mark.parametrize("language", ["en", "ru", "zh"])
def test_the_insolvency_claim_is_lodged_although_the_case_is_held(language: str) -> None:
    claim = command(
        "start_legal_action",
        step="insolvency_claim",
        template="insolvency_claim",
        deadline=dt.date(2026, 3, 20),
    )
    held_since = Situation(NOTHING_NEW.outstanding, frozenset(), CaseSeen(5, "held", "note"), None)
    assert last_look(claim, held_since) is None
    assert last_look(command(), held_since) is not None  # any other command waits for the hold
    task = render(claim, Addressee("D1", "Acme GmbH", language=language), "call").body
    assert "Acme GmbH" in task and any(total in _spaced(task) for total in ("€1,500.50", "1 500,50 €"))
    assert {"en": "administrator", "ru": "управляющ", "zh": "管理人"}[language] in task


@pytest.mark.parametrize("language", ["en", "ru", "zh"])
def test_a_dispute_escalation_is_a_task_for_its_owner_naming_the_invoice(language: str) -> None:
    escalation = command(
        "escalate_dispute", step="dispute_escalation", template="dispute_escalation", assignee="maria"
    ).model_copy(update={"items": command().items[:1]})
    held_since = Situation(NOTHING_NEW.outstanding, frozenset({"INV-1"}), CaseSeen(5, "held", "note"), None)
    assert last_look(escalation, held_since) is None  # neither the dispute nor a hold stops it
    task = render(escalation, Addressee("D1", "Acme GmbH", language=language), "call").body
    assert "maria" in task and "INV-1" in task and "INV-2" not in task


@pytest.mark.parametrize("language", ["en", "ru", "zh"])
@pytest.mark.parametrize("channel", ["letter", "email"])
def test_the_handover_notice_names_the_agency_as_the_policy_calls_it(language: str, channel: str) -> None:
    notice = command(
        "formal_notice",
        template="agency_handover",
        step="agency_placement_notice",
        agency_id="agency-a",
        agency_name="Nordic Recovery AB",
    )
    debtor = Addressee("D1", "Debtor One", language=language, postal_address=("1 Main St",))
    if channel == "letter":
        text, _ = _text_and_fonts(letter_pdf(notice, debtor, ACME))
    else:
        rendered = render(notice, debtor, "email", ACME)
        text = f"{rendered.subject}\n{rendered.body}"
    flat = " ".join(text.split())
    assert "Nordic Recovery AB" in flat and "agency-a" not in flat
