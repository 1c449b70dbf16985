"""What dunning posts to the ledger to close what nobody should be chased for: the early-payment
discount a payment inside the policy's discount window earned, and the rest of an agreed settlement
once its amount is paid. Pure: the postings are journal entries with deterministic ids."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from contracts.journal import DiscountGranted, WriteOffPosted
from contracts.money import Money
from contracts.policy import DiscountTier
from services.dunning import penalties
from services.dunning.domain.case import Case, Item, Promise, amount_text
from services.dunning.domain.ids import posting_id


def earned_discount(item: Item, tiers: Sequence[DiscountTier]) -> int:
    """What the item's latest payment left open, when that is no more than the discount the tiers
    give for paying the invoice's amount on that payment's date; else 0."""
    if item.closing is not None or item.paid_on is None or not tiers:
        return 0
    allowed = penalties.discount(item.amount, item.issue_date, item.paid_on, tiers)
    return item.outstanding if 0 < item.outstanding <= allowed else 0


def discount_posting(case: Case, item: Item, amount: int, day: dt.date) -> DiscountGranted:
    assert item.paid_on is not None
    discount_id = posting_id(case, "discount", item.invoice_id, item.paid_on.isoformat(), str(item.amount))
    return DiscountGranted(
        discount_id=discount_id,
        invoice_id=item.invoice_id,
        posting_date=day,
        amount=Money(amount_minor=amount, currency=case.currency),
        reason=f"early-payment discount earned by the payment of {item.paid_on}",
    )


def settled_items(case: Case, settlement: Promise) -> list[Item]:
    """The open items the settlement forgives the rest of."""
    named = set(settlement.invoice_ids)
    return [
        i
        for i in case.open_items()
        if i.closing is None and (not named or i.invoice_id in named) and i.outstanding > 0
    ]


def forgiveness_postings(case: Case, settlement: Promise, day: dt.date) -> list[WriteOffPosted]:
    """A write-off of all that is outstanding on each settled item (whatever the ledger holds when it
    applies it), with the agreement as the reason."""
    reason = (
        f"settlement {settlement.promise_id} agreed on {settlement.recorded_on}: "
        f"{amount_text(settlement.amount, case.currency)} paid, the rest forgiven"
    )
    return [
        WriteOffPosted(
            writeoff_id=posting_id(case, "settlement", item.invoice_id, settlement.promise_id),
            invoice_id=item.invoice_id,
            posting_date=day,
            reason=reason[:500],
        )
        for item in settled_items(case, settlement)
    ]
