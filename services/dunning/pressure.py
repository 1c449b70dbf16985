"""Contact pressure: caps per debtor and period, send windows clear of quiet hours, channel consent."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Sequence
from zoneinfo import ZoneInfo

from contracts.channels import Channel
from contracts.journal import DebtorProfile
from contracts.policy import ContactCap, DailyWindow, DunningPolicy

UTC = dt.UTC
Instants = tuple[dt.datetime, dt.datetime]


def cap_release(caps: Sequence[ContactCap], contacts: Iterable[dt.date], day: dt.date) -> dt.date | None:
    """None when one more contact on `day` keeps every cap, else the first day on which it would.

    A cap of N contacts per D days counts the contacts in the D days ending on `day` (inclusive)."""
    made = sorted((c for c in contacts if c <= day), reverse=True)
    release: dt.date | None = None
    for cap in caps:
        window_start = day - dt.timedelta(days=cap.period_days - 1)
        in_window = [c for c in made if c >= window_start]
        if len(in_window) >= cap.max_contacts:
            # The N-th most recent contact must leave the window before another one fits.
            free_on = in_window[cap.max_contacts - 1] + dt.timedelta(days=cap.period_days)
            release = max(release or free_on, free_on)
    return release


def within_caps(caps: Sequence[ContactCap], contacts: Sequence[dt.date]) -> bool:
    """Whether a history of contact dates keeps every cap over every window."""
    for cap in caps:
        ordered = sorted(contacts)
        for index, first in enumerate(ordered):
            last = first + dt.timedelta(days=cap.period_days - 1)
            if sum(1 for c in ordered[index:] if c <= last) > cap.max_contacts:
                return False
    return True


def _instant(day: dt.date, moment: dt.time, zone: ZoneInfo, *, latest: bool) -> dt.datetime:
    """The instant `day` at local `moment`. Across a DST change a local time can exist twice or not
    at all: `latest` picks the later reading (for a window's start), otherwise the earlier (its end),
    so that the local time between the two never leaves the window."""
    readings = [dt.datetime.combine(day, moment, zone).replace(fold=fold).astimezone(UTC) for fold in (0, 1)]
    chosen = max(readings) if latest else min(readings)
    return chosen.astimezone(zone)


def send_window(window: DailyWindow, timezone: str, day: dt.date) -> Instants:
    """The (send_after, send_before) instants of the window on `day` in the debtor's time zone.

    On a day when a DST change swallows the window, the next day's window."""
    return _send_window(window.start, window.end, timezone, day)


@functools.lru_cache(maxsize=4096)
def _send_window(
    start: dt.time, end: dt.time, timezone: str, day: dt.date
) -> tuple[dt.datetime, dt.datetime]:
    # A business day's commands share a few windows and zones: each is worked out once.
    zone = ZoneInfo(timezone)
    for offset in range(7):
        date = day + dt.timedelta(days=offset)
        after = _instant(date, start, zone, latest=True)
        before = _instant(date, end, zone, latest=False)
        if (
            after < before
            and after.date() == before.date() == date
            and start <= after.time() < end
            and start < before.time() <= end
        ):
            return after, before
    raise ValueError(f"no send window {start}-{end} in {timezone} near {day}")


def permitted_channels(
    policy: DunningPolicy, profile: DebtorProfile | None, channels: Sequence[Channel]
) -> list[Channel]:
    """The step's channels, in its order, that the debtor consented to or that need no consent."""
    consented = profile.consented_channels if profile and profile.consented_channels is not None else None
    allowed = set(policy.default_consent if consented is None else consented)
    allowed |= set(policy.consent_free_channels)
    return [c for c in channels if c in allowed]
