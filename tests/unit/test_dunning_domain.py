"""The dunning decider, one given / when / then at a time, on the default policy.

The standard debtor owes invoice I1 of 5,000.00 EUR (the medium amount band: no shift), issued on
2024-01-31 and due on 2024-03-01; nobody scored them (no segment shift)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from dataclasses import replace

import orjson
import pytest

from bench.dunning_day import build_templates, tenants_for
from contracts.collections import CollectionCommand, ContactOutcome
from contracts.policy import PolicyPublished
from services.dunning.agencies import AgencyKey, AgencyRecord
from services.dunning.batch import encode_case
from services.dunning.domain import (
    Case,
    DebtorFacts,
    Fact,
    agency_key,
    command_id,
    decide,
    decide_debtor,
    due_cases,
    dump_case,
    evolve,
    load_case,
    load_case_json,
    new_case,
)
from services.dunning.domain import replace as domain_replace
from services.dunning.policies import default_policy

from . import day
from .dunning_world import (
    POLICY,
    Books,
    agency_outcome,
    dispute,
    hold,
    note,
    plan,
    policy,
    profile,
    promise,
    recorded,
    result,
    simulate,
    steps,
)

AMOUNT = 500_000
DUE = "2024-03-01"


def owing(amount: int = AMOUNT, due: str = DUE) -> tuple[Books, dict[str, list[Fact]]]:
    books = Books()
    return books, {"2024-01-31": [books.issue("I1", amount, due=due, issued="2024-01-31")]}


# --- the ladder ----------------------------------------------------------------------------------

LADDER = [
    ("courtesy_reminder", "2024-02-27", "send_reminder", ["email"]),
    ("friendly_reminder", "2024-03-02", "send_reminder", ["email"]),
    ("formal_notice", "2024-03-16", "formal_notice", ["email", "letter"]),
    ("phone_call", "2024-03-16", "schedule_call", ["call"]),
    ("claim_letter", "2024-03-31", "claim_letter", ["letter", "email"]),
    ("final_demand", "2024-04-15", "claim_letter", ["letter", "email"]),
    ("credit_hold", "2024-04-15", "request_credit_hold", ["webhook"]),
    ("agency_placement", "2024-04-30", "place_with_agency", ["webhook"]),
    ("legal_action", "2024-06-29", "start_legal_action", ["call"]),
    ("writeoff_proposal", "2025-03-01", "propose_writeoff", ["call"]),
]


NOTICES = ("agency_placement_notice", "legal_action_notice")
"""What the debtor is told of the steps taken away from them."""


@pytest.fixture(scope="module")
def unpaid() -> list[CollectionCommand]:
    _, facts = owing()
    return simulate(facts, until="2025-06-01").commands


@pytest.mark.parametrize(("step", "on", "action", "channels"), LADDER)
def test_an_unpaid_invoice_climbs_every_step_on_its_day(
    unpaid: list[CollectionCommand], step: str, on: str, action: str, channels: list[str]
) -> None:
    [command] = [c for c in unpaid if c.step == step]
    assert (command.business_date, command.action, command.channels) == (day(on), action, channels)
    assert [i.invoice_id for i in command.items] == ["I1"]
    assert command.total.amount_minor == AMOUNT
    assert command.policy_version == POLICY.version


def test_the_ladder_is_climbed_in_order_once_and_stops_at_its_end(unpaid: list[CollectionCommand]) -> None:
    steps_taken = [c.step for c in unpaid if c.action != "recall_from_agency" and c.step not in NOTICES]
    assert steps_taken == [name for name, *_ in LADDER]


def test_the_debtor_is_told_of_the_handover_to_an_agency_and_of_legal_action(
    unpaid: list[CollectionCommand],
) -> None:
    notices = [(c.step, c.business_date, c.action, c.template) for c in unpaid if c.step in NOTICES]
    assert notices == [
        ("agency_placement_notice", day("2024-04-30"), "formal_notice", "agency_handover"),
        ("legal_action_notice", day("2024-06-29"), "formal_notice", "legal_action_notice"),
    ]
    handover = next(c for c in unpaid if c.step == "agency_placement_notice")
    assert handover.channels == ["letter", "email"] and handover.send_after is not None
    assert handover.agency_id == "agency-a"  # the debtor learns who collects from now on
    assert handover.penalty is not None  # the amount due is what the agency collects


def test_a_notice_is_not_sent_past_the_contact_caps() -> None:
    # Given two contacts with the debtor in another currency just before the placement on 2024-04-30,
    # and a cap of two contacts in five days,
    _, facts = owing()
    capped = policy(contact_caps=[{"max_contacts": 2, "period_days": 5}])
    elsewhere = DebtorFacts(contacts_elsewhere=(day("2024-04-28"), day("2024-04-29")))
    # the case is still placed, but the debtor is not told that day: the case says why.
    run = simulate(facts, until="2024-05-05", policy=capped, debtor=elsewhere)
    steps_taken = [c.step for c in run.commands]
    assert "agency_placement" in steps_taken and "agency_placement_notice" not in steps_taken
    assert any(e.detail.startswith("agency_placement_notice: contact cap reached") for e in run.lines())


def test_legal_action_recalls_the_agency_first(unpaid: list[CollectionCommand]) -> None:
    on_the_day = [(c.action, c.agency_id) for c in unpaid if c.business_date == day("2024-06-29")]
    assert on_the_day == [
        ("recall_from_agency", "agency-a"),
        ("start_legal_action", None),
        ("formal_notice", None),
    ]


def test_claim_letters_state_the_penalty_and_a_deadline(unpaid: list[CollectionCommand]) -> None:
    claim = next(c for c in unpaid if c.step == "claim_letter")
    # 30 days at 8 % a year on 5,000.00 is 32.876..., rounded half up, plus the fixed 40.00 fee.
    assert claim.penalty is not None and claim.penalty.amount_minor == 3_288 + 4_000
    assert [i.penalty.amount_minor for i in claim.items if i.penalty] == [7_288]
    assert claim.deadline == day("2024-04-14")
    reminder = next(c for c in unpaid if c.step == "friendly_reminder")
    assert reminder.penalty is None and reminder.deadline is None


def test_the_formal_notice_names_its_deadline(unpaid: list[CollectionCommand]) -> None:
    notice = next(c for c in unpaid if c.step == "formal_notice")
    assert notice.deadline == day("2024-03-26")  # sent on 2024-03-16, ten days to pay


def test_a_step_claims_its_recovery_costs_in_the_case_currency_only() -> None:
    given = [
        {**s, "recovery_costs": {"EUR": 2_500}} if s["name"] == "claim_letter" else s
        for s in (step.model_dump(mode="json") for step in POLICY.document.steps)
    ]
    _, facts = owing()
    run = simulate(facts, until="2024-04-20", policy=policy(steps=given))
    claim, final = run.command("claim_letter"), run.command("final_demand")
    assert claim.costs is not None and (claim.costs.amount_minor, claim.costs.currency) == (2_500, "EUR")
    assert final.costs is None  # the costs belong to the step that claims them
    in_dollars = [
        {**s, "recovery_costs": {"USD": 2_500}} if s["name"] == "claim_letter" else s for s in given
    ]
    assert (
        simulate(facts, until="2024-04-01", policy=policy(steps=in_dollars)).command("claim_letter").costs
        is None
    )


def test_debtor_contacts_have_a_send_window_and_other_commands_none(unpaid: list[CollectionCommand]) -> None:
    for command in unpaid:
        facing = command.action in ("send_reminder", "formal_notice", "claim_letter", "schedule_call")
        assert (command.send_after is not None) == facing
        if command.send_after and command.send_before:
            assert (command.send_after.time(), command.send_before.time()) == (dt.time(9), dt.time(18))


def test_one_command_per_step_lists_every_overdue_item() -> None:
    books = Books()
    facts = {
        "2024-01-31": [
            books.issue("I1", 200_000, due="2024-03-01"),
            books.issue("I2", 300_000, due="2024-03-10"),
        ],
        "2024-02-01": [books.issue("I3", 100_000, due="2024-04-30")],
    }
    run = simulate(facts, until="2024-03-20", policy=policy(contact_caps=[]))
    listed = {c.step: [i.invoice_id for i in c.items] for c in run.commands if c.step != "courtesy_reminder"}
    assert listed == {"friendly_reminder": ["I1"], "formal_notice": ["I1", "I2"], "phone_call": ["I1", "I2"]}
    assert run.command("formal_notice").total.amount_minor == 500_000
    courtesy = [
        (c.business_date.isoformat(), [i.invoice_id for i in c.items])
        for c in run.commands
        if c.step == "courtesy_reminder"
    ]
    assert courtesy == [("2024-02-27", ["I1"]), ("2024-03-07", ["I2"])]


def test_a_courtesy_reminder_offers_the_early_payment_discount() -> None:
    books = Books()
    facts = {"2024-02-20": [books.issue("I1", AMOUNT, due="2024-03-01", issued="2024-02-20")]}
    run = simulate(facts, until="2024-02-28")
    courtesy = run.command("courtesy_reminder")
    assert courtesy.business_date == day("2024-02-27")
    assert courtesy.discount is not None and courtesy.discount.amount_minor == 15_000  # 3 % within 7 days


# --- tiers and segments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "segment", "formal_notice_on"),
    [
        (AMOUNT, None, "2024-03-16"),
        (AMOUNT, "medium", "2024-03-16"),
        (AMOUNT, "high", "2024-03-11"),
        (AMOUNT, "low", "2024-03-21"),
        (50_000, None, "2024-03-19"),
        (2_000_000, "high", "2024-03-09"),  # +5, but a week after the friendly reminder at the earliest
    ],
)
def test_the_amount_band_and_the_risk_segment_shift_the_steps(
    amount: int, segment: str | None, formal_notice_on: str
) -> None:
    _, facts = owing(amount)
    run = simulate(facts, until="2024-04-01", debtor=DebtorFacts(segment=segment))
    assert run.command("formal_notice").business_date == day(formal_notice_on)
    assert run.command("friendly_reminder").business_date >= day("2024-03-02")


# --- holds ---------------------------------------------------------------------------------------


def test_a_disputed_invoice_is_left_out_of_every_command() -> None:
    books = Books()
    facts = {
        "2024-01-31": [
            books.issue("I1", 200_000, due="2024-03-01"),
            books.issue("I2", 300_000, due="2024-03-01"),
        ],
        "2024-02-25": [dispute("I1", on="2024-02-25")],
    }
    run = simulate(facts, until="2024-04-01")
    contacts = [c for c in run.commands if c.action != "escalate_dispute"]
    assert contacts and all([i.invoice_id for i in c.items] == ["I2"] for c in contacts)
    assert [i.invoice_id for i in run.command("dispute_escalation").items] == ["I1"]
    assert run.command("claim_letter").total.amount_minor == 300_000


def test_a_dispute_of_the_only_invoice_holds_it_until_resolved() -> None:
    _, facts = owing()
    facts["2024-02-20"] = [dispute("I1", on="2024-02-20")]
    facts["2024-04-10"] = [dispute("I1", on="2024-04-10", opened=False)]
    run = simulate(facts, until="2024-04-20")
    assert run.steps() == [
        ("2024-03-22", "dispute_escalation"),  # open for more than the policy's 30 days
        ("2024-04-10", "friendly_reminder"),
        ("2024-04-17", "formal_notice"),
        ("2024-04-17", "phone_call"),
    ]
    assert "held" in run.changes() and "resumed" in run.changes()


def test_a_dispute_open_longer_than_the_policy_allows_goes_to_its_owner_once() -> None:
    # Given I1 disputed on 2024-02-20 with Maria as its owner, and the policy's 30 days for a dispute,
    _, facts = owing()
    facts["2024-02-20"] = [dispute("I1", on="2024-02-20", owner="maria")]
    # when nobody resolves it,
    run = simulate(facts, until="2024-06-01", reply=delivered)
    # then on day 31 one task goes to Maria, naming the invoice, and nothing else is sent meanwhile.
    escalations = [c for c in run.commands if c.step == "dispute_escalation"]
    assert [
        (c.business_date, c.action, c.assignee, [i.invoice_id for i in c.items]) for c in escalations
    ] == [(day("2024-03-22"), "escalate_dispute", "maria", ["I1"])]
    assert [c.step for c in run.commands] == ["dispute_escalation"]


def test_a_dispute_resolved_in_time_is_not_escalated_and_its_owner_defaults_to_who_recorded_it() -> None:
    _, facts = owing()
    facts["2024-02-20"] = [dispute("I1", on="2024-02-20")]
    facts["2024-03-21"] = [dispute("I1", on="2024-03-21", opened=False)]
    assert "dispute_escalation" not in [c.step for c in simulate(facts, until="2024-04-30").commands]
    facts.pop("2024-03-21")
    late = simulate(facts, until="2024-04-30").command("dispute_escalation")
    assert late.assignee == recorded("2024-02-20").recorded_by


def test_a_dispute_cancels_the_pending_commands_naming_the_invoice() -> None:
    _, facts = owing()
    facts["2024-03-03"] = [dispute("I1", on="2024-03-03")]
    run = simulate(facts, until="2024-03-20")
    friendly = run.command("friendly_reminder")
    assert [(c.command_id, c.reason) for c in run.cancellations if c.command_id == friendly.command_id] == [
        (friendly.command_id, "disputed: I1")
    ]


def test_a_promise_holds_the_case_and_a_kept_promise_ends_it() -> None:
    books, facts = owing()
    facts["2024-03-05"] = [promise(AMOUNT, by="2024-03-20", on="2024-03-05")]
    facts["2024-03-19"] = [books.pay("I1", AMOUNT, on="2024-03-19")]
    run = simulate(facts, until="2024-05-01")
    assert run.steps() == [("2024-02-27", "courtesy_reminder"), ("2024-03-02", "friendly_reminder")]
    assert {c.command_id for c in run.cancellations} == {c.command_id for c in run.commands}
    assert run.changes()[-3:] == ["promise_recorded", "promise_kept", "closed"]
    assert run.case.status == "closed" and run.case.next_action_date is None


def test_a_broken_promise_resumes_the_ladder_at_once_one_step_further() -> None:
    books, facts = owing()
    facts["2024-04-01"] = [promise(AMOUNT, by="2024-04-05", on="2024-04-01")]
    facts["2024-04-04"] = [books.pay("I1", 100_000, on="2024-04-04")]
    run = simulate(facts, until="2024-04-30")
    after_claim = [s for s in run.steps() if s[0] > "2024-03-31"]
    # Grace of 3 days: broken on 2024-04-09, then the final demand at once instead of on 2024-04-15.
    assert after_claim[:2] == [("2024-04-09", "final_demand"), ("2024-04-09", "credit_hold")]
    broken = next(e for e in run.events if e.change == "promise_broken")
    assert broken.business_date == day("2024-04-09")
    assert any(r.topic == "ar.contacts.v1" for r in run.command("final_demand").inputs)


def test_a_payment_plan_holds_the_case_and_a_missed_instalment_breaks_it() -> None:
    books, facts = owing()
    facts["2024-03-05"] = [plan([("2024-03-15", 250_000), ("2024-04-15", 250_000)], on="2024-03-05")]
    facts["2024-03-15"] = [books.pay("I1", 250_000, on="2024-03-15")]
    run = simulate(facts, until="2024-05-01")
    # The second instalment is missed: broken after the 5 grace days, and the formal notice goes out.
    assert [s for s in run.steps() if s[0] > "2024-03-02"][:2] == [
        ("2024-04-21", "formal_notice"),
        ("2024-04-21", "phone_call"),
    ]
    assert "plan_broken" in run.changes()


def test_a_payment_plan_paid_in_full_completes_and_closes_the_case() -> None:
    books, facts = owing()
    facts["2024-03-05"] = [plan([("2024-03-15", 250_000), ("2024-04-15", 250_000)], on="2024-03-05")]
    facts["2024-03-15"] = [books.pay("I1", 250_000, on="2024-03-15")]
    facts["2024-04-14"] = [books.pay("I1", 250_000, on="2024-04-14")]
    run = simulate(facts, until="2024-06-01")
    assert [s for s in run.steps() if s[0] > "2024-03-02"] == []
    assert run.changes()[-2:] == ["plan_completed", "closed"]


@pytest.mark.parametrize("kind", ["insolvency", "manual", "paused"])
def test_a_case_hold_stops_everything_until_released(kind: str) -> None:
    _, facts = owing()
    facts["2024-03-05"] = [hold(kind, on="2024-03-05")]  # type: ignore[arg-type]
    facts["2024-05-01"] = [hold(kind, on="2024-05-01", placed=False)]  # type: ignore[arg-type]
    run = simulate(facts, until="2024-05-10")
    ladder = [s for s in run.steps() if s[0] > "2024-03-02" and s[1] != "insolvency_claim"]
    assert ladder[:3] == [
        ("2024-05-01", "formal_notice"),
        ("2024-05-01", "phone_call"),
        ("2024-05-08", "claim_letter"),
    ]
    assert [c.reason for c in run.cancellations] == [f"held: {kind} hold H-1"] * 2


def test_insolvency_holds_the_ladder_and_lodges_the_claim_once_by_the_deadline() -> None:
    # Given the unpaid invoice, placed with an agency on 2024-04-30, when the debtor's insolvency is
    # recorded on 2024-05-10 with claims due by 2024-06-15,
    _, facts = owing()
    insolvent = hold("insolvency", "2024-05-10", claims_deadline="2024-06-15", administrator="A. Smith")
    run = simulate({**facts, "2024-05-10": [insolvent]}, until="2024-08-01", reply=delivered)
    # then the agency is recalled and one legal task lodges every item with the penalty accrued,
    claims = [c for c in run.commands if c.step == "insolvency_claim"]
    assert [(c.business_date, c.action, c.channels, c.deadline) for c in claims] == [
        (day("2024-05-10"), "start_legal_action", ["call"], day("2024-06-15"))
    ]
    assert [i.invoice_id for i in claims[0].items] == ["I1"] and claims[0].penalty is not None
    recalls = [c for c in run.commands if c.action == "recall_from_agency"]
    assert [c.business_date for c in recalls] == [day("2024-05-10")]
    # and the ladder stays held: no legal action, no write-off proposal, nothing cancelled the claim.
    assert not [c for c in run.commands if c.business_date > day("2024-05-10")]
    assert claims[0].command_id not in {c.command_id for c in run.cancellations}


def delivered(command: CollectionCommand) -> list[Fact]:
    return [result(command, "delivered")]


def test_an_insolvency_without_a_claims_deadline_takes_the_policys_days() -> None:
    _, facts = owing()
    run = simulate({**facts, "2024-03-05": [hold("insolvency", "2024-03-05")]}, until="2024-03-20")
    assert run.command("insolvency_claim").deadline == day("2024-04-04")  # 30 days after the hold


def test_a_manual_hold_expires_after_its_date() -> None:
    _, facts = owing()
    facts["2024-03-05"] = [hold("manual", on="2024-03-05", until="2024-03-20")]
    run = simulate(facts, until="2024-03-25")
    assert [s for s in run.steps() if s[0] > "2024-03-02"] == [
        ("2024-03-21", "formal_notice"),
        ("2024-03-21", "phone_call"),
    ]
    assert "resumed" in run.changes()


def test_a_hold_in_another_currency_does_not_hold_this_case() -> None:
    _, facts = owing()
    facts["2024-03-05"] = [hold("manual", on="2024-03-05", currency="USD")]
    run = simulate(facts, until="2024-03-20")
    assert ("2024-03-16", "formal_notice") in run.steps()


# --- payments ------------------------------------------------------------------------------------


def test_full_payment_closes_the_case_and_cancels_what_was_not_executed() -> None:
    books, facts = owing()
    facts["2024-03-03"] = [books.pay("I1", AMOUNT, on="2024-03-03")]
    run = simulate(facts, until="2024-12-31")
    assert run.steps() == [("2024-02-27", "courtesy_reminder"), ("2024-03-02", "friendly_reminder")]
    assert sorted(c.command_id for c in run.cancellations) == sorted(c.command_id for c in run.commands)
    assert {c.reason for c in run.cancellations} == {"nothing outstanding"}
    assert run.case.status == "closed" and run.case.pending == {}


def test_a_pending_command_whose_invoices_are_all_paid_is_cancelled() -> None:
    books = Books()
    facts = {
        "2024-01-31": [books.issue("I1", AMOUNT, due="2024-03-01")],
        "2024-03-04": [books.issue("I2", AMOUNT, due="2024-04-30", issued="2024-03-04")],
    }
    facts["2024-03-05"] = [books.pay("I1", AMOUNT, on="2024-03-05")]
    run = simulate(facts, until="2024-03-06")
    friendly = run.command("friendly_reminder")
    assert [(c.command_id, c.reason) for c in run.cancellations] == [
        (run.command("courtesy_reminder").command_id, "paid"),
        (friendly.command_id, "paid"),
    ]
    assert run.case.status == "open"


def test_executed_commands_are_not_cancelled() -> None:
    books, facts = owing()
    facts["2024-03-03"] = [books.pay("I1", AMOUNT, on="2024-03-03")]
    run = simulate(facts, until="2024-03-10", reply=lambda c: [result(c, "delivered")])
    assert run.cancellations == []


def test_a_partial_payment_re_anchors_the_ladder_on_the_invoices_still_overdue() -> None:
    books = Books()
    facts = {
        "2024-01-31": [
            books.issue("I1", 100_000, due="2024-03-01"),
            books.issue("I2", 500_000, due="2024-03-20"),
        ],
        "2024-04-02": [],
    }
    facts["2024-04-02"] = [books.pay("I1", 100_000, on="2024-04-02")]
    run = simulate(facts, until="2024-05-10")
    overdue_steps = [s for s in run.steps() if s[1] != "courtesy_reminder"]
    assert overdue_steps == [
        ("2024-03-02", "friendly_reminder"),
        ("2024-03-16", "formal_notice"),
        ("2024-03-16", "phone_call"),
        ("2024-03-31", "claim_letter"),
        ("2024-05-04", "final_demand"),  # I2, due 2024-03-20, is 45 days past due
        ("2024-05-04", "credit_hold"),
    ]
    assert "recalculated" in run.changes()
    assert [i.invoice_id for i in run.command("final_demand").items] == ["I2"]


def test_when_nothing_is_overdue_any_more_the_ladder_starts_over() -> None:
    books = Books()
    facts = {
        "2024-01-31": [books.issue("I1", AMOUNT, due="2024-03-01")],
        "2024-03-05": [books.issue("I2", AMOUNT, due="2024-04-30", issued="2024-03-05")],
        "2024-03-06": [books.pay("I1", AMOUNT, on="2024-03-06")],
    }
    run = simulate(facts, until="2024-05-02")
    assert [s for s in run.steps() if s[1] == "friendly_reminder"] == [
        ("2024-03-02", "friendly_reminder"),
        ("2024-05-01", "friendly_reminder"),
    ]
    first, second = [c for c in run.commands if c.step == "friendly_reminder"]
    assert first.command_id != second.command_id


def test_a_write_off_of_the_last_item_closes_the_case() -> None:
    books, facts = owing()
    facts["2024-03-20"] = [books.write_off("I1", on="2024-03-20")]
    run = simulate(facts, until="2024-06-01")
    assert run.case.status == "closed"
    assert all(c.business_date < day("2024-03-20") for c in run.commands)


# --- contact pressure ----------------------------------------------------------------------------


def test_contact_caps_defer_steps_without_skipping_them() -> None:
    _, facts = owing()
    capped = policy(contact_caps=[{"max_contacts": 1, "period_days": 30}])
    run = simulate(facts, until="2024-08-01", policy=capped)
    facing = [(c.business_date, c.step) for c in run.commands if c.send_after is not None]
    assert [s for _, s in facing][:4] == [
        "courtesy_reminder",
        "friendly_reminder",
        "formal_notice",
        "phone_call",
    ]
    assert all((b - a).days >= 30 for (a, _), (b, _) in itertools.pairwise(facing))


def test_caps_count_the_contacts_of_the_debtors_other_cases() -> None:
    _, facts = owing()
    capped = policy(contact_caps=[{"max_contacts": 1, "period_days": 7}])
    elsewhere = (day("2024-02-26"),)
    run = simulate(facts, until="2024-03-05", policy=capped, debtor=DebtorFacts(contacts_elsewhere=elsewhere))
    # The courtesy reminder waits for the cap until the invoice is due: too late, it is never sent.
    assert run.steps()[0] == ("2024-03-04", "friendly_reminder")


def test_decide_debtor_shares_the_caps_between_currencies() -> None:
    # One contact in seven days. EUR's friendly reminder goes on 2024-03-01; USD's, due on 2024-03-02,
    # waits until the EUR one is seven days old. (Two currencies contacting on the same day go as one
    # message: tests/unit/test_dunning_bundles.py.)
    ladder = steps("friendly_reminder", "formal_notice")
    capped = policy(contact_caps=[{"max_contacts": 1, "period_days": 7}], steps=ladder)
    cases = []
    for books, due in ((Books("EUR"), "2024-02-29"), (Books("USD"), "2024-03-01")):
        case = new_case("acme", "D-1", books.currency)
        case, _ = evolve(case, books.issue("I-" + books.currency, AMOUNT, due=due))
        cases.append(case)
    first = decide_debtor(cases, day("2024-03-01"), capped)
    assert [len(d.commands) for d in first] == [1, 0]

    second = decide_debtor([d.case for d in first], day("2024-03-02"), capped)

    assert [len(d.commands) for d in second] == [0, 0]
    assert second[1].case.next_action_date == day("2024-03-08")


def test_skipped_contacts_do_not_count_against_the_caps() -> None:
    _, facts = owing()
    capped = policy(contact_caps=[{"max_contacts": 1, "period_days": 30}])
    run = simulate(facts, until="2024-03-03", policy=capped, reply=lambda c: [result(c, "skipped")])
    assert run.steps() == [("2024-02-27", "courtesy_reminder"), ("2024-03-02", "friendly_reminder")]


def test_only_consented_channels_are_used_and_a_step_without_one_is_passed() -> None:
    _, facts = owing()
    run = simulate(facts, until="2024-03-20", debtor=DebtorFacts(profile=profile(consented_channels=["sms"])))
    channels = {c.step: c.channels for c in run.commands}
    assert channels == {"friendly_reminder": ["sms"], "formal_notice": ["letter"]}
    assert any(e.detail == "courtesy_reminder: no consented channel" for e in run.lines())


def test_the_send_window_is_in_the_debtors_time_zone_outside_quiet_hours() -> None:
    _, facts = owing()
    debtor = DebtorFacts(profile=profile(timezone="Asia/Tokyo", language="ja"))
    run = simulate(facts, until="2024-03-03", debtor=debtor)
    friendly = run.command("friendly_reminder")
    assert friendly.send_after == dt.datetime(2024, 3, 2, 0, 0, tzinfo=dt.UTC)
    assert friendly.send_before == dt.datetime(2024, 3, 2, 9, 0, tzinfo=dt.UTC)
    assert friendly.language == "ja"


# --- agencies ------------------------------------------------------------------------------------

NO_LEGAL = policy(steps=steps(*(name for name, *_ in LADDER if name != "legal_action")))


def test_the_agency_with_the_best_recovery_for_the_kind_of_case_gets_it() -> None:
    _, facts = owing()
    history = {
        AgencyKey("agency-a", "high", "EUR", "medium"): AgencyRecord(10, 1_000_000, 300_000),
        AgencyKey("agency-b", "high", "EUR", "medium"): AgencyRecord(10, 1_000_000, 600_000),
        AgencyKey("agency-a", "low", "EUR", "medium"): AgencyRecord(10, 1_000_000, 900_000),
    }
    run = simulate(facts, until="2024-05-01", debtor=DebtorFacts(segment="high", agencies=history))
    assert run.command("agency_placement").agency_id == "agency-b"


def test_a_placement_names_the_kind_of_case_its_performance_counts_for() -> None:
    _, facts = owing()
    run = simulate(facts, until="2024-05-01", debtor=DebtorFacts(segment="high"))
    assert agency_key(run.case) == AgencyKey("agency-a", "high", "EUR", "medium")
    assert agency_key(new_case("acme", "D-1", "EUR")) is None


def test_without_enough_history_the_fallback_order_decides() -> None:
    _, facts = owing()
    history = {AgencyKey("agency-b", "unscored", "EUR", "medium"): AgencyRecord(2, 1_000, 1_000)}
    run = simulate(facts, until="2024-05-01", debtor=DebtorFacts(agencies=history))
    assert run.command("agency_placement").agency_id == "agency-a"


def test_an_agency_without_recovery_is_recalled_and_the_next_one_placed() -> None:
    _, facts = owing()
    run = simulate(facts, until="2024-11-30", policy=NO_LEGAL)
    agency_commands = [
        (c.business_date.isoformat(), c.action, c.agency_id) for c in run.commands if c.agency_id is not None
    ]
    assert agency_commands == [
        ("2024-04-30", "place_with_agency", "agency-a"),
        ("2024-04-30", "formal_notice", "agency-a"),  # the debtor is told who collects now
        ("2024-07-29", "recall_from_agency", "agency-a"),
        ("2024-07-30", "place_with_agency", "agency-b"),
        ("2024-07-30", "formal_notice", "agency-b"),
        ("2024-10-28", "recall_from_agency", "agency-b"),
    ]
    assert "no further agency" in run.lines()[-1].detail


def test_a_recovery_restarts_the_recall_period() -> None:
    _, facts = owing()
    facts["2024-06-01"] = [agency_outcome("agency-a", on="2024-06-01", recovered=10_000)]
    run = simulate(facts, until="2024-09-30", policy=NO_LEGAL)
    recall = next(c for c in run.commands if c.action == "recall_from_agency")
    assert recall.business_date == day("2024-08-30")
    assert run.case.agencies_tried == ("agency-a",)


def test_a_hold_cancels_a_pending_placement_and_the_case_is_placed_again_after_it() -> None:
    _, facts = owing()
    facts["2024-05-02"] = [hold("manual", on="2024-05-02")]
    facts["2024-05-10"] = [hold("manual", on="2024-05-10", placed=False)]
    run = simulate(facts, until="2024-05-11", policy=NO_LEGAL)
    placements = [
        (c.business_date.isoformat(), c.agency_id) for c in run.commands if c.action == "place_with_agency"
    ]
    assert placements == [("2024-04-30", "agency-a"), ("2024-05-10", "agency-a")]
    assert [e.change for e in run.events if e.change in ("placed", "recalled")] == [
        "placed",
        "recalled",
        "placed",
    ]


def test_a_hold_does_not_cancel_a_pending_recall() -> None:
    _, facts = owing()
    facts["2024-07-30"] = [hold("manual", on="2024-07-30")]

    def reply(command: CollectionCommand) -> list[Fact]:
        return [] if command.action == "recall_from_agency" else [result(command, "delivered")]

    run = simulate(facts, until="2024-08-05", policy=NO_LEGAL, reply=reply)
    recall = next(c for c in run.commands if c.action == "recall_from_agency")
    assert recall.business_date == day("2024-07-29")
    assert recall.command_id in run.case.pending
    assert run.cancellations == []


def test_an_outcome_from_an_agency_not_holding_the_case_is_ignored() -> None:
    _, facts = owing()
    facts["2024-06-01"] = [agency_outcome("agency-b", on="2024-06-01", recovered=10_000)]
    run = simulate(facts, until="2024-06-02", policy=NO_LEGAL)
    assert run.case.placement is not None and run.case.placement.recovered == 0


@pytest.mark.parametrize(
    ("outcome", "second"), [("skipped", "agency-a"), ("failed", "agency-b")], ids=["skipped", "failed"]
)
def test_a_placement_that_did_not_happen_is_tried_again(outcome: ContactOutcome, second: str) -> None:
    _, facts = owing()

    def reply(command: CollectionCommand) -> list[Fact]:
        first_placement = command.action == "place_with_agency" and command.business_date == day("2024-04-30")
        return [result(command, outcome, permanent=True)] if first_placement else []

    run = simulate(facts, until="2024-05-03", policy=NO_LEGAL, reply=reply)
    placements = [
        (c.business_date.isoformat(), c.agency_id) for c in run.commands if c.action == "place_with_agency"
    ]
    assert placements == [("2024-04-30", "agency-a"), ("2024-05-01", second)]
    assert [e.change for e in run.events if e.change in ("placed", "recalled")] == [
        "placed",
        "recalled",
        "placed",
    ]


# --- evolve --------------------------------------------------------------------------------------


def test_facts_of_another_currency_or_case_change_nothing() -> None:
    usd = Books("USD")
    case = new_case("acme", "D-1", "EUR")
    assert evolve(case, usd.issue("I1", 100, due="2024-03-01")) == (case, [])
    assert evolve(case, promise(100, by="2024-03-01", on="2024-02-01", currency="USD")) == (case, [])


def test_a_note_is_a_case_event_with_its_text() -> None:
    _, facts = owing()
    case, _ = evolve(new_case("acme", "D-1", "EUR"), facts["2024-01-31"][0])
    case, events = evolve(case, note("called, will pay Friday", on="2024-03-04"))
    assert [(e.change, e.detail, e.version) for e in events] == [("note", "called, will pay Friday", 2)]


def test_case_events_carry_the_version_status_and_overdue_amount() -> None:
    _, facts = owing()
    facts["2024-03-05"] = [hold("manual", on="2024-03-05")]
    run = simulate(facts, until="2024-03-06")
    assert [e.version for e in run.events] == list(range(1, len(run.events) + 1))
    held = next(e for e in run.events if e.change == "held")
    assert (held.status, held.overdue.amount_minor) == ("held", AMOUNT)


# --- determinism, selection, storage -------------------------------------------------------------


def test_command_ids_are_deterministic() -> None:
    _, facts = owing()
    first = simulate(facts, until="2024-05-01").commands
    _, facts = owing()
    again = simulate(facts, until="2024-05-01").commands
    assert [c.command_id for c in first] == [c.command_id for c in again]
    assert len({c.command_id for c in first}) == len(first)
    case = new_case("acme", "D-1", "EUR")
    assert command_id(case, "friendly_reminder", day("2024-03-02")) != command_id(
        case, "friendly_reminder", day("2024-03-03")
    )
    other_tenant = new_case("globex", "D-1", "EUR")
    assert command_id(case, "x", day("2024-03-02")) != command_id(other_tenant, "x", day("2024-03-02"))


def test_deciding_twice_on_the_same_day_emits_nothing_the_second_time() -> None:
    _, facts = owing()
    run = simulate(facts, until="2024-03-16")
    again = decide(run.case, day("2024-03-16"), POLICY)
    assert (again.commands, again.cancellations, again.events) == ((), (), ())


def test_due_cases_are_those_whose_next_action_date_has_come() -> None:
    def case(debtor: str, next_action: str | None) -> Case:
        return replace(
            new_case("acme", debtor, "EUR"), next_action_date=day(next_action) if next_action else None
        )

    cases = [case("A", None), case("C", "2024-03-01"), case("B", "2024-03-02"), case("D", "2024-03-03")]
    assert [c.debtor_id for c in due_cases(cases, day("2024-03-02"))] == ["B", "C"]


def test_a_case_survives_storage_unchanged() -> None:
    books, facts = owing()
    facts["2024-01-31"].append(books.issue("I2", AMOUNT, due="2024-03-01"))
    facts["2024-02-01"] = [dispute("I2", on="2024-02-01")]
    run = simulate(facts, until="2024-03-10", reply=lambda c: [result(c, "attempted")])
    case, _ = evolve(run.case, promise(AMOUNT, by="2024-03-30", on="2024-03-10"))
    assert case.disputes and case.promise and case.pending and case.contacts and case.reminded
    assert load_case(dump_case(case)) == case
    assert load_case_json(orjson.dumps(dump_case(case))) == case
    assert encode_case(case) == orjson.dumps(dump_case(case))


def test_cases_of_every_kind_read_back_through_the_fast_path_unchanged() -> None:
    """The bench's template debtors: placements, holds, promises, disputes, pending commands."""
    policy = PolicyPublished(version=1, effective_from=dt.date(2020, 1, 1), document=default_policy())
    templates = build_templates(150, tenants_for("t"), policy, seed=7)
    cases = [c for t in templates for c in t.cases]
    assert any(c.placement for c in cases) and any(c.holds for c in cases) and any(c.pending for c in cases)
    for case in cases:
        assert load_case_json(orjson.dumps(dump_case(case))) == case
        assert encode_case(case) == orjson.dumps(dump_case(case))  # the store's fast encoder


def test_the_domains_replace_makes_the_case_dataclasses_replace_makes() -> None:
    _, facts = owing()
    case = simulate(facts, until="2024-03-20").case
    changes = {"paid": 7, "step": "formal_notice", "next_action_date": day("2024-04-01")}
    made = domain_replace(case, **changes)
    plain = dataclasses.replace(case, **changes)  # type: ignore[arg-type]
    assert made == plain
    names = [f.name for f in dataclasses.fields(case)]
    assert [made.__dict__[n] for n in names] == [plain.__dict__[n] for n in names]
    assert made.__dict__.keys() - set(names) <= {"_open_items"}  # the memo of the sorted items only
    assert case.paid == 0 and made is not case
    with pytest.raises(TypeError):
        domain_replace(case, no_such_field=1)


def test_a_case_sorts_its_open_items_once_and_a_replace_of_the_items_sorts_them_again() -> None:
    _, facts = owing()
    case = simulate(facts, until="2024-03-20").case
    first = case.open_items()
    assert case.open_items() is first
    assert domain_replace(case, step=None).open_items() is first  # the same items
    oldest = first[0]
    later = dataclasses.replace(oldest, invoice_id="I0", due_date=oldest.due_date + dt.timedelta(days=400))
    added = domain_replace(case, items={**case.items, "I0": later})
    assert added.open_items() == (*first, later)
    assert domain_replace(case, items={}).open_items() == ()
    assert encode_case(added) == orjson.dumps(dump_case(added))  # the memo is not stored


def test_the_handover_notice_carries_the_agency_name_from_the_policy() -> None:
    _, facts = owing()
    run = simulate(facts, until="2024-05-15")
    handover = run.command("agency_placement_notice")
    assert (handover.agency_id, handover.agency_name) == ("agency-a", "Agency A")
