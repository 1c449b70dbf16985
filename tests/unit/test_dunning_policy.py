"""The dunning policy document: what the default says, what is accepted and what is refused."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from contracts.policy import (
    DailyWindow,
    DunningPolicy,
    PolicyPublished,
    QuietHours,
    load_policy,
    policy_in_force,
)
from contracts.registry import decode_event, encode_event, make_event, parse_event
from services.dunning.policies import DEFAULT, default_policy


def raw(**changes: Any) -> dict[str, Any]:
    document = default_policy().model_dump(mode="json")
    document.update(changes)
    return document


def refused(document: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        DunningPolicy.model_validate(document)
    return str(caught.value)


def test_the_default_policy_is_the_ladder_of_the_design() -> None:
    policy = default_policy()
    assert [(s.name, s.days, s.action) for s in policy.steps] == [
        ("courtesy_reminder", -3, "send_reminder"),
        ("friendly_reminder", 1, "send_reminder"),
        ("formal_notice", 15, "formal_notice"),
        ("phone_call", 15, "schedule_call"),
        ("claim_letter", 30, "claim_letter"),
        ("final_demand", 45, "claim_letter"),
        ("credit_hold", 45, "request_credit_hold"),
        ("agency_placement", 60, "place_with_agency"),
        ("legal_action", 120, "start_legal_action"),
        ("writeoff_proposal", 365, "propose_writeoff"),
    ]
    assert policy.quiet_hours == QuietHours(start=dt.time(20), end=dt.time(8))
    assert policy.penalty is not None and policy.penalty.rate == "0.08"
    assert [(d.within_days, d.rate) for d in policy.discounts] == [(7, "0.03"), (14, "0.02")]


def test_a_policy_loads_from_a_file_from_yaml_text_and_from_json_text() -> None:
    from_file = load_policy(DEFAULT)
    assert load_policy(DEFAULT.read_text()) == from_file
    assert load_policy(json.dumps(from_file.model_dump(mode="json"))) == from_file


def test_a_policy_survives_publishing_through_the_registry() -> None:
    published = PolicyPublished(version=3, effective_from=dt.date(2024, 1, 1), document=default_policy())
    event = make_event(
        "collections.policy.published.v1",
        published,
        event_id="policy-3",
        tenant_id="acme",
        source="arrears/dunning",
        time=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    )
    assert decode_event(encode_event(event)) == event
    assert event.key == "acme"
    assert b'"start":"20:00"' in encode_event(event)


def test_a_policy_event_takes_no_debtor() -> None:
    published = PolicyPublished(version=1, effective_from=dt.date(2024, 1, 1), document=default_policy())
    raw_event = {
        "id": "p-1",
        "source": "x",
        "type": "collections.policy.published.v1",
        "time": "2024-01-01T00:00:00Z",
        "tenantid": "acme",
        "debtorid": "D-1",
        "data": published.model_dump(mode="json"),
    }
    with pytest.raises(ValueError, match="takes no debtorid"):
        parse_event(raw_event)


def test_the_version_in_force_is_the_highest_already_effective() -> None:
    document = default_policy()
    versions = [
        PolicyPublished(version=1, effective_from=dt.date(2024, 1, 1), document=document),
        PolicyPublished(version=2, effective_from=dt.date(2024, 6, 1), document=document),
        PolicyPublished(version=3, effective_from=dt.date(2024, 3, 1), document=document),
    ]
    assert policy_in_force(versions, dt.date(2023, 12, 31)) is None
    assert [policy_in_force(versions, dt.date(2024, m, 1)).version for m in (1, 3, 7)] == [1, 3, 3]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": list(reversed(raw()["steps"]))}, "ordered by days"),
        ({"steps": [*raw()["steps"], raw()["steps"][-1]]}, "unique"),
        ({"steps": [{**raw()["steps"][1], "channels": ["pigeon"]}]}, "channels.0"),
        ({"steps": [{**raw()["steps"][1], "channels": ["email", "email"]}]}, "listed twice"),
        ({"steps": [{**raw()["steps"][1], "action": "send_flowers"}]}, "action"),
        ({"steps": [{**raw()["steps"][2], "days": -1}]}, "before the due date"),
        ({"steps": [{**raw()["steps"][2], "min_overdue": {"EURO": 1}}]}, "min_overdue"),
        ({"steps": [{**raw()["steps"][2], "min_overdue": {"EUR": -1}}]}, "min_overdue"),
        ({"penalty": {"rate": "8%"}}, "penalty.rate"),
        ({"penalty": {"rate": 0.08}}, "penalty.rate"),
        ({"penalty": {"grace_days": 3}}, "a rate, a fixed fee"),
        ({"discounts": [{"within_days": 7, "rate": "1.5"}]}, "between 0 and 1"),
        ({"discounts": [{"within_days": 14, "rate": "0.03"}, {"within_days": 7, "rate": "0.02"}]}, "ascend"),
        ({"quiet_hours": {"start": "17:00", "end": "08:00"}}, "send window overlaps"),
        ({"quiet_hours": {"start": "10:00", "end": "11:00"}}, "send window overlaps"),
        ({"quiet_hours": {"start": 1200, "end": "08:00"}}, "quoted"),
        ({"send_window": {"start": "18:00", "end": "09:00"}}, "start before it ends"),
        ({"agency": None}, "agency rules"),
        ({"agency": {**raw()["agency"], "fallback": ["agency-z"]}}, "unknown agencies"),
        ({"tiers": {"amount_bands": {"EUR": [{"name": "big", "from_minor": 100}]}}}, "start at 0"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_an_invalid_policy_is_refused_naming_why(change: dict[str, Any], message: str) -> None:
    assert message in refused(raw(**change))


def test_an_unquoted_yaml_time_is_refused_rather_than_misread() -> None:
    text = DEFAULT.read_text().replace('{start: "20:00", end: "08:00"}', "{start: 20:00, end: 08:00}")
    with pytest.raises(ValidationError, match="quoted"):
        load_policy(text)


def test_a_policy_is_a_mapping() -> None:
    with pytest.raises(ValueError, match="mapping"):
        load_policy("- just\n- a list\n")


def test_a_step_may_have_its_own_send_window_clear_of_quiet_hours() -> None:
    steps = raw()["steps"]
    steps[1] = {**steps[1], "send_window": {"start": "19:00", "end": "21:00"}}
    assert "step friendly_reminder overlaps" in refused(raw(steps=steps))
    steps[1] = {**steps[1], "send_window": {"start": "10:00", "end": "12:00"}}
    assert DunningPolicy.model_validate(raw(steps=steps)).steps[1].send_window == DailyWindow(
        start=dt.time(10), end=dt.time(12)
    )


@pytest.mark.parametrize(
    ("quiet", "moment", "inside"),
    [
        (("20:00", "08:00"), "07:59", True),
        (("20:00", "08:00"), "08:00", False),
        (("20:00", "08:00"), "20:00", True),
        (("20:00", "08:00"), "12:00", False),
        (("01:00", "05:00"), "03:00", True),
        (("01:00", "05:00"), "05:00", False),
    ],
)
def test_quiet_hours_may_span_midnight(quiet: tuple[str, str], moment: str, inside: bool) -> None:
    hours = QuietHours.model_validate({"start": quiet[0], "end": quiet[1]})
    assert hours.contains(dt.time.fromisoformat(moment)) is inside


def test_the_shipped_policy_file_is_where_the_package_says() -> None:
    assert (
        Path(__file__).resolve().parents[2] / "services" / "dunning" / "policies" / "default.yaml" == DEFAULT
    )
