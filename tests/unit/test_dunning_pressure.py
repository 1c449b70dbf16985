"""Contact pressure: caps, send windows in the debtor's time zone across DST changes, consent."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given as for_all
from hypothesis import strategies as st

from contracts.policy import ContactCap, DailyWindow
from services.dunning.policies import default_policy
from services.dunning.pressure import cap_release, permitted_channels, send_window, within_caps

from . import day
from .dunning_world import profile

CAPS = [ContactCap(max_contacts=2, period_days=7), ContactCap(max_contacts=3, period_days=30)]


def test_a_contact_fits_while_every_cap_has_room() -> None:
    assert cap_release(CAPS, [], day("2024-03-10")) is None
    assert cap_release(CAPS, [day("2024-03-09")], day("2024-03-10")) is None


def test_a_full_cap_releases_when_its_oldest_counted_contact_leaves_the_period() -> None:
    made = [day("2024-03-05"), day("2024-03-09")]
    assert cap_release(CAPS, made, day("2024-03-10")) == day("2024-03-12")
    assert cap_release(CAPS, made, day("2024-03-12")) is None
    assert cap_release(CAPS, [*made, day("2024-02-20")], day("2024-03-12")) == day("2024-03-21")


@for_all(
    st.lists(st.integers(0, 90), max_size=20),
    st.integers(0, 120),
    st.lists(st.tuples(st.integers(1, 4), st.integers(1, 30)), min_size=1, max_size=3),
)
def test_the_release_is_the_first_day_a_contact_fits(
    made: list[int], today: int, caps: list[tuple[int, int]]
) -> None:
    start = day("2024-01-01")
    limits = [ContactCap(max_contacts=n, period_days=d) for n, d in caps]
    dates = [start + dt.timedelta(days=m) for m in made if m <= today]
    on = start + dt.timedelta(days=today)

    def fits(moment: dt.date) -> bool:
        return all(
            sum(1 for d in dates if moment - dt.timedelta(days=cap.period_days) < d <= moment)
            < cap.max_contacts
            for cap in limits
        )

    first = next(on + dt.timedelta(days=n) for n in range(200) if fits(on + dt.timedelta(days=n)))
    assert cap_release(limits, dates, on) == (None if first == on else first)


def test_within_caps_checks_every_period() -> None:
    assert within_caps(CAPS, [day("2024-03-01"), day("2024-03-07")])
    assert not within_caps(CAPS, [day("2024-03-01"), day("2024-03-04"), day("2024-03-07")])
    assert not within_caps(CAPS, [day("2024-03-01"), day("2024-03-10"), day("2024-03-20"), day("2024-03-30")])


NINE_TO_SIX = DailyWindow(start=dt.time(9), end=dt.time(18))


def test_the_send_window_is_local_time_on_the_business_date() -> None:
    after, before = send_window(NINE_TO_SIX, "America/New_York", day("2024-07-01"))
    assert (after.astimezone(dt.UTC), before.astimezone(dt.UTC)) == (
        dt.datetime(2024, 7, 1, 13, tzinfo=dt.UTC),
        dt.datetime(2024, 7, 1, 22, tzinfo=dt.UTC),
    )


@pytest.mark.parametrize(
    ("window", "zone", "on", "local"),
    [
        # Spring forward in Berlin: 02:00-03:00 does not exist on 2024-03-31.
        (("02:30", "04:00"), "Europe/Berlin", "2024-03-31", ("03:30", "04:00")),
        (("01:00", "02:30"), "Europe/Berlin", "2024-03-31", ("01:00", "01:30")),
        # Fall back: 02:00-03:00 happens twice on 2024-10-27; start at the second, end at the first.
        (("02:30", "05:00"), "Europe/Berlin", "2024-10-27", ("02:30", "05:00")),
        (("00:30", "02:30"), "Europe/Berlin", "2024-10-27", ("00:30", "02:30")),
    ],
)
def test_a_dst_change_never_stretches_the_window(
    window: tuple[str, str], zone: str, on: str, local: tuple[str, str]
) -> None:
    span = DailyWindow.model_validate({"start": window[0], "end": window[1]})
    after, before = send_window(span, zone, day(on))
    assert (after.strftime("%H:%M"), before.strftime("%H:%M")) == local
    moment = after
    while moment < before:
        wall = moment.astimezone(ZoneInfo(zone)).time()
        assert span.start <= wall < span.end or wall == span.end
        moment += dt.timedelta(minutes=5)


def test_a_window_swallowed_by_a_dst_change_moves_to_the_next_day() -> None:
    span = DailyWindow(start=dt.time(2, 15), end=dt.time(2, 45))
    after, before = send_window(span, "Europe/Berlin", day("2024-03-31"))
    assert after.date() == before.date() == day("2024-04-01")


def test_channels_keep_their_order_and_need_consent_unless_consent_free() -> None:
    policy = default_policy()
    channels = ["sms", "email", "letter", "call", "webhook"]
    assert permitted_channels(policy, None, channels) == ["email", "letter", "call", "webhook"]  # type: ignore[arg-type]
    given = profile(consented_channels=["sms"])
    assert permitted_channels(policy, given, channels) == ["sms", "letter", "webhook"]  # type: ignore[arg-type]
    nothing = profile(consented_channels=[])
    assert permitted_channels(policy, nothing, ["email", "sms"]) == []
