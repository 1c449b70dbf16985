"""Executing deliveries: claim, last look, send on the first channel that works, record the outcome.

A delivery is claimed (status `sending`, committed) before anything leaves, and its outcome is
committed with the contact record for `ar.contacts.v1` in the same transaction. A notifier killed
mid-send leaves the delivery `sending`; after the lease expires another claim re-sends it with the
same Message-ID, file name or Idempotency-Key, so the receiving side sees it once.

A bundle (`bundles`: the debtor's cases in several currencies, one message) is claimed as one: the
delivery that falls due claims every member still to be executed, once all have arrived, and they are
sent, renewed and finished together, under the bundle's key, each with its own contact record.
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
from sqlalchemy import Row, and_, func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.channels import Channel
from contracts.collections import CollectionCommand, ContactOutcome, ContactResult
from contracts.envelope import Envelope
from contracts.registry import decode_event, encode_event, make_event
from contracts.topics import CONTACTS
from services.notifier import bundles, store
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
from services.notifier.letters import message_letter_pdf
from services.notifier.profile import TenantProfile, in_force
from services.notifier.rendering import Addressee, render, render_message
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
class Send:
    """The deliveries that go out as one message: one command, or the members of a bundle still to be
    executed (each claimed), sent under `key` (Message-ID, letter file, Idempotency-Key)."""

    members: tuple[Claimed, ...]
    key: str


class _TakenOver(Exception):
    """A delivery of a send was claimed by another notifier meanwhile: its outcome is that one's."""


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
        for send in claimed:
            # A batch can outlast the lease (a slow relay): each delivery's claim is renewed right
            # before it is sent, and one another notifier took over meanwhile is left to it.
            renewed = await self._renew(send)
            if renewed is None:
                continue
            outcomes = await self._execute(renewed)
            await self._finish(renewed, outcomes)
            self.executed += len(renewed.members)
        return sum(len(send.members) for send in claimed)

    async def _claim(self) -> list[Send]:
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
            sends: list[tuple[str, list[Any], str]] = []
            taken: set[tuple[str, str]] = set()
            for row in rows:
                if (row.tenant_id, row.command_id) in taken:
                    continue
                members, key = await self._members(session, row, now)
                taken.update((row.tenant_id, m.command_id) for m in members)
                if members:
                    sends.append((row.tenant_id, members, key))
            if not taken:
                return []
            await session.execute(
                update(d)
                .where(tuple_(d.c.tenant_id, d.c.command_id).in_(list(taken)))
                .values(status="sending", claimed_at=now, attempts=d.c.attempts + 1, updated_at=now)
            )
        return [
            Send(
                tuple(
                    Claimed(tenant, m.debtor_id, m.attempts + 1, decode_event(m.command), now)
                    for m in members
                ),
                key,
            )
            for tenant, members, key in sends
        ]

    async def _members(self, session: AsyncSession, row: Any, now: dt.datetime) -> tuple[list[Any], str]:
        """The deliveries to claim with a due one, and the key they are sent under: the delivery alone,
        or the members of its bundle still to be executed. None (an empty list) while a member has
        not arrived or another notifier is at the bundle."""
        command: CollectionCommand = decode_event(row.command).data
        if not bundles.is_bundled(command):
            return [row], command.command_id
        d = store.deliveries
        of_bundle = and_(d.c.tenant_id == row.tenant_id, d.c.command_id.in_(command.bundle))
        arrived = set(await session.scalars(select(d.c.command_id).where(of_bundle)))
        locked = (
            await session.execute(
                select(
                    d.c.command_id,
                    d.c.debtor_id,
                    d.c.attempts,
                    d.c.command,
                    d.c.status,
                    d.c.claimed_at,
                    d.c.updated_at,
                    func.now().label("db_now"),
                )
                .where(of_bundle)
                .order_by(d.c.command_id)
                .with_for_update(skip_locked=True)
            )
        ).all()
        if {m.command_id for m in locked} != arrived:
            return [], ""  # another notifier is claiming or finishing a member right now
        if any(m.status == "sent" for m in locked):
            # It arrived after its bundle went without it: it goes on its own.
            return [row], bundles.message_key(command, [row.command_id], all_arrived=True, sent_without=True)
        # Waited for since the first member arrived, by the database's clock that stamped its row.
        first_arrival = min(m.updated_at for m in locked)
        if bundles.waiting_for(command, arrived, first_arrival, locked[0].db_now):
            await session.execute(
                update(d)
                .where(d.c.tenant_id == row.tenant_id, d.c.command_id == row.command_id)
                .values(status="pending", next_attempt_at=now + bundles.RECHECK)
            )
            return [], ""
        lease = dt.timedelta(seconds=self._settings.send_lease_s)
        if any(m.status == "sending" and m.claimed_at >= now - lease for m in locked):
            return [], ""  # being sent by another notifier
        live = [m for m in locked if m.status in ("pending", "sending")]
        carried = [m.command_id for m in live]
        return live, bundles.message_key(
            command, carried, all_arrived=arrived.issuperset(command.bundle), sent_without=False
        )

    def _still_ours(self, delivery: Claimed) -> Any:
        d = store.deliveries
        return and_(
            d.c.tenant_id == delivery.tenant_id,
            d.c.command_id == delivery.command.command_id,
            d.c.status == "sending",
            d.c.claimed_at == delivery.claimed_at,
        )

    async def _renew(self, send: Send) -> Send | None:
        """The send with its claims renewed, or None when they are no longer this notifier's."""
        now = self._clock()
        try:
            async with self._sessions() as session, session.begin():
                renewed = await session.execute(
                    update(store.deliveries)
                    .where(or_(*(self._still_ours(m) for m in send.members)))
                    .values(claimed_at=now)
                )
                if renewed.rowcount != len(send.members):  # type: ignore[attr-defined]
                    raise _TakenOver
        except _TakenOver:
            log.info("delivery %s was taken over by another notifier", send.key)
            return None
        return Send(tuple(dataclasses.replace(m, claimed_at=now) for m in send.members), send.key)

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

    async def _execute(self, send: Send) -> dict[str, Outcome]:
        """The outcome of each member: skipped when the last look says no, else that of the one
        message the others are sent in."""
        outcomes: dict[str, Outcome] = {}
        live: list[Claimed] = []
        addressee: Addressee | None = None
        creditor: TenantProfile | None = None
        for member in send.members:
            situation, addressee, creditor = await self._situation(member)
            reason = last_look(member.command, situation)
            if reason is not None:
                outcomes[member.command.command_id] = Outcome("skipped", "skipped", reason=reason)
            else:
                live.append(member)
        if live:
            outcome = await self._deliver(send, live, addressee, creditor)
            outcomes.update((m.command.command_id, outcome) for m in live)
        return outcomes

    async def _deliver(
        self, send: Send, live: list[Claimed], addressee: Addressee | None, creditor: TenantProfile | None
    ) -> Outcome:
        lead = _lead(live)
        command = lead.command
        if command.action in WEBHOOK_ACTIONS:
            return await self._attempt(send.key, live, ["webhook"], addressee, creditor)
        if command.action in TASK_ACTIONS and command.action != "start_legal_action":
            return await self._attempt(send.key, live, ["call"], addressee, creditor)
        channels = usable_channels(command, addressee)
        if not channels and address_wanted(command, addressee):
            # No letter goes out without an address: the team is asked to find one, and the step is
            # recorded on the case as not reached, with the reason.
            someone = addressee or Addressee(lead.debtor_id, lead.debtor_id, command.language)
            task = await self._add_task(lead, someone, kind=FIND_ADDRESS)
            return Outcome(
                "failed",
                "failed",
                reason=f"no postal address for a letter and no other usable channel: {task} to find it",
                permanent=True,
            )
        if not channels:
            return Outcome("failed", "failed", reason="no usable channel for this debtor", permanent=True)
        return await self._attempt(send.key, live, channels, addressee, creditor)

    async def _attempt(
        self,
        key: str,
        live: list[Claimed],
        channels: Sequence[Channel],
        addressee: Addressee | None,
        creditor: TenantProfile | None,
    ) -> Outcome:
        attempts = max(m.attempts for m in live)
        failures: list[str] = []
        for channel in channels:
            try:
                reference = await self._send(key, live, channel, addressee, creditor)
            except PermanentFailure as exc:
                failures.append(f"{channel}: {exc}")
                continue
            except TransientFailure as exc:
                if attempts >= self._settings.send_attempts:
                    return Outcome(
                        "failed",
                        "failed",
                        channel,
                        reason=f"gave up after {attempts} attempts: {exc}",
                        permanent=True,
                    )
                retry_at = self._clock() + retry_delay(attempts)
                return Outcome("pending", "attempted", channel, reason=str(exc), retry_at=retry_at)
            return Outcome("sent", "delivered", channel, reference=reference)
        return Outcome("failed", "failed", reason="; ".join(failures), permanent=True)

    async def _send(
        self,
        key: str,
        live: list[Claimed],
        channel: Channel,
        addressee: Addressee | None,
        creditor: TenantProfile | None,
    ) -> str:
        """Send the message of the live members (one command, or a bundle's) under `key`."""
        lead = _lead(live)
        command = lead.command
        commands = [m.command for m in live]
        someone = addressee or Addressee(lead.debtor_id, lead.debtor_id, command.language)
        if channel == "email":
            assert someone.email
            return await self._email.send(
                key, someone.email, render_message(commands, someone, "email", creditor)
            )
        if channel in ("sms", "messenger"):
            assert someone.phone
            return await self._gateway.send(
                key, channel, someone.phone, render_message(commands, someone, channel, creditor)
            )
        if channel == "letter":
            pdf = await asyncio.to_thread(message_letter_pdf, commands, someone, creditor)
            return str(await asyncio.to_thread(self._letters.write, lead.tenant_id, key, pdf))
        if channel == "webhook":
            target = "erp" if command.action == "request_credit_hold" else f"agency:{command.agency_id}"
            payload = lead.event.model_dump(mode="json", exclude_none=True)
            return await self._webhooks.send(command.command_id, target, payload)
        if channel == "call":
            return await self._add_task(lead, someone)
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

    async def _finish(self, send: Send, outcomes: dict[str, Outcome]) -> None:
        d = store.deliveries
        now = self._clock()
        try:
            async with self._sessions() as session, session.begin():
                records = []
                for member in send.members:
                    outcome = outcomes[member.command.command_id]
                    values: dict[str, Any] = {
                        "status": outcome.status,
                        "channel": outcome.channel,
                        "reference": outcome.reference,
                        "reason": outcome.reason,
                        "updated_at": now,
                    }
                    if outcome.retry_at is not None:
                        values["next_attempt_at"] = outcome.retry_at
                    finished = await session.execute(
                        update(d).where(self._still_ours(member)).values(**values)
                    )
                    if finished.rowcount != 1:  # type: ignore[attr-defined]
                        raise _TakenOver
                    records.append(self._contact_record(member, outcome, now))
                await write_outbox(session, store.runtime, records)
        except _TakenOver:
            # Another notifier took the send over while this one sent it (a send longer than the
            # lease): the same Message-ID, file or key made it one at the far end, and the outcome is
            # that notifier's to record.
            log.warning("delivery %s was taken over while being sent", send.key)
            return
        for member in send.members:
            outcome = outcomes[member.command.command_id]
            metrics.DELIVERIES.labels(outcome.channel or "none", _METRIC_OUTCOMES[outcome.status]).inc()
            if outcome.status == "failed":
                log.warning("command %s failed for good: %s", member.command.command_id, outcome.reason)

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


def _lead(live: Sequence[Claimed]) -> Claimed:
    """The member whose step the message speaks in (the only one, for a command of its own)."""
    lead = bundles.most_severe([m.command for m in live])
    return next(m for m in live if m.command is lead)


def _case_seen(row: Row[Any] | None) -> CaseSeen | None:
    return None if row is None else CaseSeen(row.version, row.status, row.change)
