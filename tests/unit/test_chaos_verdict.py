"""The fault scenarios' verdict on e-mails: one e-mail per Message-ID, and a repeat of the same one
only where a notifier was killed with it in flight."""

from collections import Counter

from chaos.checks import CommandVerdict
from chaos.faults import Faults
from chaos.report import Outcome


def verdict(emails_twice: list[str], emails_differing: list[str]) -> CommandVerdict:
    return CommandVerdict(
        decided=3,
        executed=3,
        statuses=Counter(sent=3),
        not_executed=[],
        emails_sent=3,
        emails_received=3,
        emails_twice=emails_twice,
        emails_differing=emails_differing,
        emails_missing=[],
    )


def outcome_after(faults: list[str], found: CommandVerdict) -> Outcome:
    outcome = Outcome("kill", seed=1, mode="short")
    outcome.commands(found)
    log = Faults()
    for what in faults:
        log.recovered(log.record(what))
    outcome.fault_log(log)
    return outcome


def test_a_repeat_of_the_same_email_after_a_notifier_kill_passes() -> None:
    outcome = outcome_after(["kill -9 ledger-1", "kill -9 notifier-1"], verdict(["<a@arrears>"], []))
    assert outcome.passed and outcome.emails_twice == 1


def test_more_repeats_than_notifier_kills_fail() -> None:
    outcome = outcome_after(["kill -9 notifier-1"], verdict(["<a@arrears>", "<b@arrears>"], []))
    assert not outcome.passed
    assert "2 e-mails received twice, more than the 1 notifier kills" in outcome.problems[0]


def test_a_repeat_without_any_notifier_kill_fails() -> None:
    outcome = outcome_after(["kill -9 dunning-1", "leave notifier (1 members)"], verdict(["<a@arrears>"], []))
    assert not outcome.passed


def test_two_different_emails_under_one_message_id_fail_even_after_a_kill() -> None:
    outcome = outcome_after(["kill -9 notifier-1"], verdict(["<a@arrears>"], ["<a@arrears>"]))
    assert outcome.problems == ["1 Message-IDs carried different e-mails: ['<a@arrears>']"]
