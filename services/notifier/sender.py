"""Executing deliveries: claim, last look, send on the first channel that works, record the outcome.

A delivery is claimed (status `sending`, committed) before anything leaves, and its outcome is
committed with the contact record for `ar.contacts.v1` in the same transaction. A notifier killed
mid-send leaves the delivery `sending`; after the lease expires another claim re-sends it with the
same Message-ID, file name or Idempotency-Key, so the receiving side sees it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import Row, and_, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.channels import Channel
from contracts.collections import CollectionCommand, ContactOutcome, ContactResult
from contracts.envelope import Envelope
from contracts.registry import decode_event, encode_event, make_event
from contracts.topics import CONTACTS
from services.notifier import store
from services.notifier.channels import (
    Email,
    Gateway,
    LetterFolder,
    PermanentFailure,
    TransientFailure,
    Webhooks,
)
from services.notifier.domain import (
    CaseSeen,
    Situation,
    address_wanted,
    last_look,
    retry_delay,
    usable_channels,
)
from services.notifier.letters import letter_pdf
from services.notifier.profile import TenantProfile, in_force
from services.notifier.rendering import Addressee, render
from services.runtime import metrics
from services.runtime.log import Message
from services.runtime.outbox import write_outbox
from services.runtime.settings import Settings
from services.runtime.supervisor import Health

log = logging.getLogger(__name__)
SOURCE = "arrears/notifier"
WEBHOOK_ACTIONS = {"request_credit_hold", "place_with_agency", "recall_from_agency"}
TASK_ACTIONS = {
    "schedule_call": "call",
    "propose_writeoff": "writeoff_review",
    "start_legal_action": "legal",
    "escalate_dispute": "dispute",
}
FIND_ADDRESS = "find_address"
"""The task raised for a letter that cannot go out for want of a postal address (also its template)."""


@dataclass(frozen=True)
class Claimed:
    tenant_id: str
    debtor_id: str
    attempts: int
    event: Envelope[Any]
    claimed_at: dt.datetime
    """When this notifier's claim was taken or last renewed: the claim is its own while the row
    still says so."""

    @property
    def command(self) -> CollectionCommand:
        command: CollectionCommand = self.event.data
        return command


@dataclass(frozen=True)
class Outcome:
    status: str  # sent | skipped | failed | pending
    contact: ContactOutcome
    channel: Channel | None = None
    reference: str | None = None
    reason: str | None = None
    permanent: bool = False
    retry_at: dt.datetime | None = None


def _addressee(debtor_id: str, profile: dict[str, Any] | None) -> Addressee | None:
    if profile is None:
        return None
    return Addressee(
        debtor_id=debtor_id,
        name=profile.get("name") or debtor_id,
        language=profile.get("language") or "en",
        email=profile.get("email"),
        phone=profile.get("phone"),
        postal_address=tuple(profile.get("postal_address") or ()),
    )


class Sender:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        batch_size: int = 50,
        poll_interval_s: float = 0.2,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._clock = clock
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._client = httpx.AsyncClient(timeout=30)
        self._email = Email(settings)
        self._gateway = Gateway(settings, self._client)
        self._webhooks = Webhooks(settings, self._client)
        self._letters = LetterFolder(settings.letters_dir)
        self.wake = asyncio.Event()
        self.executed = 0

    async def close(self) -> None:
        await self._client.aclose()

    async def run(self, stopping: asyncio.Event, health: Health | None = None) -> None:
        health = health or Health(running=True)
        try:
            while not stopping.is_set():
                try:
                    done = await self.send_due()
                    health.recover()
                except Exception as exc:
                    log.exception("notifier sender failed; retrying")
                    health.fail(f"{type(exc).__name__}: {exc}")
                    done = 0
                    await asyncio.sleep(1)
                if done == 0:
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), self._poll_interval_s)
        finally:
            await self.close()

    async def send_due(self) -> int:
        claimed = await self._claim()
        for delivery in claimed:
            # A batch can outlast the lease (a slow relay): each delivery's claim is renewed right
            # before it is sent, and one another notifier took over meanwhile is left to it.
            renewed = await self._renew(delivery)
            if renewed is None:
                continue
            outcome = await self._execute(renewed)
            await self._finish(renewed, outcome)
            self.executed += 1
        return len(claimed)

    async def _claim(self) -> list[Claimed]:
        d = store.deliveries
        now = self._clock()
        due = or_(
            and_(d.c.status == "pending", d.c.next_attempt_at <= now),
            and_(
                d.c.status == "sending",
                d.c.claimed_at < now - dt.timedelta(seconds=self._settings.send_lease_s),
            ),
        )
        async with self._sessions() as session, session.begin():
            rows = (
                await session.execute(
                    select(d.c.tenant_id, d.c.command_id, d.c.debtor_id, d.c.attempts, d.c.command)
                    .where(due)
                    .order_by(d.c.next_attempt_at)
                    .limit(self._batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return []
            await session.execute(
                update(d)
                .where(tuple_(d.c.tenant_id, d.c.command_id).in_([(r.tenant_id, r.command_id) for r in rows]))
                .values(status="sending", claimed_at=now, attempts=d.c.attempts + 1, updated_at=now)
            )
        return [Claimed(r.tenant_id, r.debtor_id, r.attempts + 1, decode_event(r.command), now) for r in rows]

    def _still_ours(self, delivery: Claimed) -> Any:
        d = store.deliveries
        return and_(
            d.c.tenant_id == delivery.tenant_id,
            d.c.command_id == delivery.command.command_id,
            d.c.status == "sending",
            d.c.claimed_at == delivery.claimed_at,
        )

    async def _renew(self, delivery: Claimed) -> Claimed | None:
        """The delivery with its claim renewed, or None when the claim is no longer this notifier's."""
        now = self._clock()
        async with self._sessions() as session, session.begin():
            renewed = await session.execute(
                update(store.deliveries).where(self._still_ours(delivery)).values(claimed_at=now)
            )
        if renewed.rowcount != 1:  # type: ignore[attr-defined]
            log.info("delivery %s was taken over by another notifier", delivery.command.command_id)
            return None
        return dataclasses.replace(delivery, claimed_at=now)

    async def _situation(self, delivery: Claimed) -> tuple[Situation, Addressee | None, TenantProfile | None]:
        command = delivery.command
        tenant, debtor = delivery.tenant_id, delivery.debtor_id
        invoices = [i.invoice_id for i in command.items]
        async with self._sessions() as session:
            balances = await session.execute(
                select(store.item_balances.c.invoice_id, store.item_balances.c.outstanding).where(
                    store.item_balances.c.tenant_id == tenant,
                    store.item_balances.c.debtor_id == debtor,
                    store.item_balances.c.invoice_id.in_(invoices),
                )
            )
            disputed = await session.scalars(
                select(store.disputes.c.invoice_id).where(
                    store.disputes.c.tenant_id == tenant,
                    store.disputes.c.debtor_id == debtor,
                    store.disputes.c.invoice_id.in_(invoices),
                    store.disputes.c.open.is_(True),
                )
            )
            case = (
                await session.execute(
                    select(store.case_states).where(
                        store.case_states.c.tenant_id == tenant,
                        store.case_states.c.case_id == command.case_id,
                    )
                )
            ).first()
            cancelled = await session.scalar(
                select(store.cancellations.c.reason).where(
                    store.cancellations.c.tenant_id == tenant,
                    store.cancellations.c.command_id == command.command_id,
                )
            )
            profile = await session.scalar(
                select(store.addressees.c.profile).where(
                    store.addressees.c.tenant_id == tenant, store.addressees.c.debtor_id == debtor
                )
            )
            creditor = in_force(await store.profile_versions(session, tenant), command.business_date)
        situation = Situation(
            outstanding={r.invoice_id: r.outstanding for r in balances},
            disputed=frozenset(disputed),
            case=_case_seen(case),
            cancelled_because=cancelled,
        )
        return situation, _addressee(debtor, profile), creditor.profile if creditor else None

    async def _execute(self, delivery: Claimed) -> Outcome:
        command = delivery.command
        situation, addressee, creditor = await self._situation(delivery)
        reason = last_look(command, situation)
        if reason is not None:
            return Outcome("skipped", "skipped", reason=reason)
        if command.action in WEBHOOK_ACTIONS:
            return await self._attempt(delivery, ["webhook"], addressee, creditor)
        if command.action in TASK_ACTIONS and command.action != "start_legal_action":
            return await self._attempt(delivery, ["call"], addressee, creditor)
        channels = usable_channels(command, addressee)
        if not channels and address_wanted(command, addressee):
            # No letter goes out without an address: the team is asked to find one, and the step is
            # recorded on the case as not reached, with the reason.
            someone = addressee or Addressee(delivery.debtor_id, delivery.debtor_id, command.language)
            task = await self._add_task(delivery, someone, kind=FIND_ADDRESS)
            return Outcome(
                "failed",
                "failed",
                reason=f"no postal address for a letter and no other usable channel: {task} to find it",
                permanent=True,
            )
        if not channels:
            return Outcome("failed", "failed", reason="no usable channel for this debtor", permanent=True)
        return await self._attempt(delivery, channels, addressee, creditor)

    async def _attempt(
        self,
        delivery: Claimed,
        channels: Sequence[Channel],
        addressee: Addressee | None,
        creditor: TenantProfile | None,
    ) -> Outcome:
        failures: list[str] = []
        for channel in channels:
            try:
                reference = await self._send(delivery, channel, addressee, creditor)
            except PermanentFailure as exc:
                failures.append(f"{channel}: {exc}")
                continue
            except TransientFailure as exc:
                if delivery.attempts >= self._settings.send_attempts:
                    return Outcome(
                        "failed",
                        "failed",
                        channel,
                        reason=f"gave up after {delivery.attempts} attempts: {exc}",
                        permanent=True,
                    )
                retry_at = self._clock() + retry_delay(delivery.attempts)
                return Outcome("pending", "attempted", channel, reason=str(exc), retry_at=retry_at)
            return Outcome("sent", "delivered", channel, reference=reference)
        return Outcome("failed", "failed", reason="; ".join(failures), permanent=True)

    async def _send(
        self, delivery: Claimed, channel: Channel, addressee: Addressee | None, creditor: TenantProfile | None
    ) -> str:
        command = delivery.command
        someone = addressee or Addressee(delivery.debtor_id, delivery.debtor_id, command.language)
        if channel == "email":
            assert someone.email
            return await self._email.send(
                command.command_id, someone.email, render(command, someone, "email", creditor)
            )
        if channel in ("sms", "messenger"):
            assert someone.phone
            return await self._gateway.send(
                command.command_id, channel, someone.phone, render(command, someone, channel, creditor)
            )
        if channel == "letter":
            pdf = await asyncio.to_thread(letter_pdf, command, someone, creditor)
            return str(
                await asyncio.to_thread(self._letters.write, delivery.tenant_id, command.command_id, pdf)
            )
        if channel == "webhook":
            target = "erp" if command.action == "request_credit_hold" else f"agency:{command.agency_id}"
            payload = delivery.event.model_dump(mode="json", exclude_none=True)
            return await self._webhooks.send(command.command_id, target, payload)
        if channel == "call":
            return await self._add_task(delivery, someone)
        raise PermanentFailure(f"unknown channel {channel}")

    async def _add_task(self, delivery: Claimed, addressee: Addressee, kind: str | None = None) -> str:
        command = delivery.command
        kind = kind or TASK_ACTIONS.get(command.action, "call")
        shown = command if kind != FIND_ADDRESS else command.model_copy(update={"template": FIND_ADDRESS})
        script = render(shown, addressee, "call").body
        async with self._sessions() as session, session.begin():
            await session.execute(
                pg_insert(store.tasks)
                .values(
                    tenant_id=delivery.tenant_id,
                    command_id=command.command_id,
                    debtor_id=delivery.debtor_id,
                    case_id=command.case_id,
                    kind=kind,
                    script=script,
                    due_on=self._clock(),
                )
                .on_conflict_do_nothing()
            )
        return f"task:{kind}:{command.command_id}"

    async def _finish(self, delivery: Claimed, outcome: Outcome) -> None:
        d = store.deliveries
        now = self._clock()
        values: dict[str, Any] = {
            "status": outcome.status,
            "channel": outcome.channel,
            "reference": outcome.reference,
            "reason": outcome.reason,
            "updated_at": now,
        }
        if outcome.retry_at is not None:
            values["next_attempt_at"] = outcome.retry_at
        async with self._sessions() as session, session.begin():
            finished = await session.execute(update(d).where(self._still_ours(delivery)).values(**values))
            if finished.rowcount != 1:  # type: ignore[attr-defined]
                # Another notifier took the delivery over while this one sent it (a send longer than
                # the lease): the same Message-ID, file or key made it one at the far end, and the
                # outcome is that notifier's to record.
                log.warning("delivery %s was taken over while being sent", delivery.command.command_id)
                return
            await write_outbox(session, store.runtime, [self._contact_record(delivery, outcome, now)])
        metrics.DELIVERIES.labels(outcome.channel or "none", _METRIC_OUTCOMES[outcome.status]).inc()
        if outcome.status == "failed":
            log.warning("command %s failed for good: %s", delivery.command.command_id, outcome.reason)

    def _contact_record(self, delivery: Claimed, outcome: Outcome, now: dt.datetime) -> Message:
        command = delivery.command
        event = make_event(
            f"ar.contact.{outcome.contact}.v1",
            ContactResult(
                command_id=command.command_id,
                case_id=command.case_id,
                outcome=outcome.contact,
                channel=outcome.channel,
                reason=outcome.reason[:2000] if outcome.reason else None,
                permanent=outcome.permanent,
                attempt=delivery.attempts,
                reference=outcome.reference[:500] if outcome.reference else None,
            ),
            event_id=f"contact:{command.command_id}:{outcome.contact}:{delivery.attempts}",
            tenant_id=delivery.tenant_id,
            debtor_id=delivery.debtor_id,
            source=SOURCE,
            time=now,
            causation_id=delivery.event.id,
            correlation_id=delivery.event.correlationid or delivery.event.id,
        )
        return Message(CONTACTS.name, event.key.encode(), encode_event(event))


_METRIC_OUTCOMES = {"sent": "sent", "failed": "failed", "pending": "retrying", "skipped": "suppressed"}


def _case_seen(row: Row[Any] | None) -> CaseSeen | None:
    return None if row is None else CaseSeen(row.version, row.status, row.change)
