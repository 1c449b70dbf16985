"""What an agency sees of a case placed with it: the debtor as far as the debtor consented to each
channel, the statement of the placed items, the documents sent so far, and what was recovered as the
ledger's payments show it beside what the agency reported. Pure: the shell reads the rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import PurePath
from typing import Any

from contracts.channels import Channel
from contracts.journal import DebtorProfile
from contracts.policy import DunningPolicy
from services.dunning.domain import Case
from services.dunning.pressure import permitted_channels

PHONE_CHANNELS: tuple[Channel, ...] = ("call", "sms", "messenger")


def debtor_details(
    debtor_id: str, profile: DebtorProfile | None, policy: DunningPolicy | None
) -> dict[str, Any]:
    """The debtor's name and registration, and each contact detail only when its channel may be used:
    the debtor's consent (or, without it, the policy's default consent) decides, as for our own
    contacts. Without a policy nothing but the letter is assumed."""
    if profile is None:
        return {"debtor_id": debtor_id, "name": None}
    allowed = (
        set(permitted_channels(policy, profile, ("letter", "email", *PHONE_CHANNELS)))
        if policy
        else {"letter"}
    )
    return {
        "debtor_id": debtor_id,
        "name": profile.name,
        "country": profile.country,
        "language": profile.language,
        "timezone": profile.timezone,
        "tax_id": profile.tax_id,
        "postal_address": list(profile.postal_address) if "letter" in allowed else [],
        "email": profile.email if "email" in allowed else None,
        "phone": profile.phone if allowed.intersection(PHONE_CHANNELS) else None,
        "channels": sorted(allowed),
    }


def statement(case: Case, day: dt.date) -> dict[str, Any]:
    """The case's open items as of `day`: each with its days past due and whether it is disputed."""
    disputed = case.disputed
    items = [
        {
            "invoice_id": i.invoice_id,
            "issue_date": i.issue_date,
            "due_date": i.due_date,
            "outstanding_minor": i.outstanding,
            "days_past_due": max(0, i.days_past_due(day)),
            "disputed": i.invoice_id in disputed,
        }
        for i in case.open_items()
    ]
    return {
        "as_of": day,
        "currency": case.currency,
        "items": items,
        "outstanding_minor": sum(i.outstanding for i in case.items.values()),
        "overdue_minor": case.overdue(day),
    }


def documents(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """The documents the debtor was sent, from the debtor's record: what, when, how, and its reference
    (a letter by its file's name, never where the server keeps it)."""
    return [
        {
            "business_date": r.business_date,
            "channel": r.channel,
            "reference": PurePath(r.document).name if r.channel == "letter" else r.document,
            "sentence": r.sentence.replace(r.document, PurePath(r.document).name)
            if r.channel == "letter"
            else r.sentence,
        }
        for r in rows
    ]


def reconciliation(ledger_minor: int, reported_minor: int) -> dict[str, Any]:
    """Recovered as the ledger's payments on the placed items show it, beside what the agency reported;
    the difference is reported less recovered (positive: the agency reports money the ledger has not seen)."""
    return {
        "recovered_minor": ledger_minor,
        "reported_minor": reported_minor,
        "difference_minor": reported_minor - ledger_minor,
        "agreed": reported_minor == ledger_minor,
    }
