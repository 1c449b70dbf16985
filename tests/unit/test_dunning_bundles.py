"""One message per debtor and day: a debtor's cases in several currencies contacting them on the same
business day on the same channels are bundled (`decide_debtor`, `bundles.bundle`)."""

from __future__ import annotations

import dataclasses

from contracts.collections import CollectionCommand
from contracts.policy import PolicyPublished
from services.dunning.domain import Case, DebtorFacts, Decision, decide_debtor, evolve, new_case
from services.dunning.domain.bundles import bundle

from . import Day, day
from .dunning_world import POLICY, Books, policy, profile

AMOUNT = 500_000


def debtor_owing(*dues: tuple[str, Day]) -> list[Case]:
    """Given: one open invoice per currency, due on the day given."""
    cases = []
    for currency, due in dues:
        case = new_case("acme", "D-1", currency)
        case, _ = evolve(case, Books(currency).issue(f"I-{currency}", AMOUNT, due=due))
        cases.append(case)
    return cases


def decided(
    cases: list[Case], on: Day, under: PolicyPublished = POLICY, facts: DebtorFacts | None = None
) -> list[Decision]:
    return decide_debtor(cases, day(on), under, facts)


def commands(decisions: list[Decision]) -> list[CollectionCommand]:
    return [c for d in decisions for c in d.commands]


def test_two_currencies_escalating_the_same_day_on_the_same_channels_are_one_bundle() -> None:
    cases = debtor_owing(("EUR", "2024-03-01"), ("USD", "2024-03-01"))

    sent = commands(decided(cases, "2024-03-02"))

    assert [(c.case_id, c.step) for c in sent] == [
        ("D-1:EUR", "friendly_reminder"),
        ("D-1:USD", "friendly_reminder"),
    ]
    ids = sorted(c.command_id for c in sent)
    assert [c.bundle for c in sent] == [ids, ids]


def test_each_case_keeps_its_own_command_and_pending_state() -> None:
    cases = debtor_owing(("EUR", "2024-03-01"), ("USD", "2024-03-01"))

    decisions = decided(cases, "2024-03-02")

    for decision in decisions:
        (command,) = decision.commands
        assert command.case_id == decision.case.case_id
        assert list(decision.case.pending) == [command.command_id]
        assert command.total.currency == decision.case.currency


def test_messages_on_different_channels_the_same_day_are_not_bundled() -> None:
    # EUR is a day overdue (friendly reminder: e-mail, SMS, messenger); USD falls due in three days
    # (courtesy reminder: e-mail only). The debtor agreed to e-mail and SMS.
    cases = debtor_owing(("EUR", "2024-03-01"), ("USD", "2024-03-05"))
    debtor = DebtorFacts(profile=profile(consented_channels=["email", "sms"]))

    sent = commands(decided(cases, "2024-03-02", facts=debtor))

    assert [(c.case_id, c.step, c.channels) for c in sent] == [
        ("D-1:EUR", "friendly_reminder", ["email", "sms"]),
        ("D-1:USD", "courtesy_reminder", ["email"]),
    ]
    assert [c.bundle for c in sent] == [[], []]


def test_messages_on_different_days_are_not_bundled() -> None:
    cases = debtor_owing(("EUR", "2024-03-01"), ("USD", "2024-03-10"))

    first = decided(cases, "2024-03-02")
    second = decided([d.case for d in first], "2024-03-07")

    assert [(c.case_id, c.step, str(c.business_date)) for c in commands(first) + commands(second)] == [
        ("D-1:EUR", "friendly_reminder", "2024-03-02"),
        ("D-1:USD", "courtesy_reminder", "2024-03-07"),
    ]
    assert all(c.bundle == [] for c in commands(first) + commands(second))


def test_a_reminder_and_a_courtesy_reminder_on_the_same_channel_are_one_message() -> None:
    cases = debtor_owing(("EUR", "2024-03-01"), ("USD", "2024-03-05"))

    sent = commands(decided(cases, "2024-03-02"))

    assert [(c.step, c.channels) for c in sent] == [
        ("friendly_reminder", ["email"]),
        ("courtesy_reminder", ["email"]),
    ]
    assert sent[0].bundle == sent[1].bundle == sorted(c.command_id for c in sent)


def test_a_single_case_is_a_message_of_its_own() -> None:
    (sent,) = commands(decided(debtor_owing(("EUR", "2024-03-01")), "2024-03-02"))

    assert sent.step == "friendly_reminder"
    assert sent.bundle == []


def test_call_tasks_are_not_bundled_but_the_notices_of_the_same_day_are() -> None:
    uncapped = policy(contact_caps=[])
    cases = debtor_owing(("EUR", "2024-03-01"), ("USD", "2024-03-01"))
    reminded = decided(cases, "2024-03-02", uncapped)

    sent = commands(decided([d.case for d in reminded], "2024-03-16", uncapped))

    by_step = {(c.case_id, c.step): c for c in sent}
    assert sorted(by_step) == [
        ("D-1:EUR", "formal_notice"),
        ("D-1:EUR", "phone_call"),
        ("D-1:USD", "formal_notice"),
        ("D-1:USD", "phone_call"),
    ]
    notices = sorted(by_step[(case_id, "formal_notice")].command_id for case_id in ("D-1:EUR", "D-1:USD"))
    assert by_step[("D-1:EUR", "formal_notice")].bundle == notices
    assert by_step[("D-1:USD", "formal_notice")].bundle == notices
    assert by_step[("D-1:EUR", "phone_call")].bundle == []
    assert by_step[("D-1:USD", "phone_call")].bundle == []


def test_bundles_are_the_same_on_every_replay() -> None:
    cases = debtor_owing(("EUR", "2024-03-01"), ("USD", "2024-03-01"), ("GBP", "2024-03-01"))
    uncapped = policy(contact_caps=[])

    once = commands(decided(cases, "2024-03-02", uncapped))
    again = commands(decided(cases, "2024-03-02", uncapped))

    assert len(once) == 3
    assert [c.bundle for c in once] == [c.bundle for c in again]
    assert once == again
    assert once[0].bundle == sorted(c.command_id for c in once)


def test_notices_naming_different_agencies_are_not_one_message() -> None:
    cases = debtor_owing(("EUR", "2024-03-01"), ("USD", "2024-03-01"))
    decisions = decide_debtor(cases, day("2024-03-02"), POLICY)

    # As an agency handover notice names the agency each case was placed with.
    handed_over = [
        dataclasses.replace(
            d,
            commands=tuple(
                c.model_copy(update={"action": "formal_notice", "agency_id": agency, "bundle": []})
                for c in d.commands
            ),
        )
        for d, agency in zip(decisions, ("agency-a", "agency-b"), strict=True)
    ]
    same_agency = [
        dataclasses.replace(
            d, commands=tuple(c.model_copy(update={"agency_id": "agency-a"}) for c in d.commands)
        )
        for d in handed_over
    ]

    assert [c.bundle for c in commands(bundle(handed_over))] == [[], []]
    assert all(len(c.bundle) == 2 for c in commands(bundle(same_agency)))


def test_a_bundled_message_counts_once_against_the_contact_caps() -> None:
    # Default caps: two contacts in seven days. The courtesy reminders of both currencies go out as
    # one message on 2024-03-02, so the friendly reminders four days later still fit under the cap.
    capped = policy(contact_caps=[{"max_contacts": 2, "period_days": 7}])
    cases = debtor_owing(("EUR", "2024-03-05"), ("USD", "2024-03-05"))
    courtesy = decided(cases, "2024-03-02", capped)
    assert [c.step for c in commands(courtesy)] == ["courtesy_reminder", "courtesy_reminder"]

    friendly = commands(decided([d.case for d in courtesy], "2024-03-06", capped))

    assert [(c.case_id, c.step) for c in friendly] == [
        ("D-1:EUR", "friendly_reminder"),
        ("D-1:USD", "friendly_reminder"),
    ]
    assert friendly[0].bundle == friendly[1].bundle != []


def test_a_contact_the_other_case_makes_the_same_day_leaves_room_for_its_bundle() -> None:
    # One contact of the last seven days left room for one more: both currencies' friendly
    # reminders go, as one message.
    capped = policy(contact_caps=[{"max_contacts": 2, "period_days": 7}])
    cases = debtor_owing(("EUR", "2024-03-01"), ("USD", "2024-03-01"))
    earlier = DebtorFacts(contacts_elsewhere=(day("2024-02-28"),))

    sent = commands(decided(cases, "2024-03-02", capped, earlier))

    assert [c.case_id for c in sent] == ["D-1:EUR", "D-1:USD"]
    assert sent[0].bundle == sent[1].bundle != []
