"""Turning a command into words: Jinja2 templates per template name, channel and language.

A template is looked up as `<language>/<template>.<kind>.j2`, then `<language>/default.<kind>.j2`, then
the same in English: a debtor is never written to in another language because one step's template is
missing in theirs. A step's template extends the default of its kind and replaces only the blocks that
make the step what it is (the title, the opening sentence, the request and its deadline). A bundle
(one message for the debtor's cases in several currencies) fills `sections`, one per member, which
the default templates list in place of the items. Money and
dates are formatted for the debtor's locale with Babel; amounts stay integers until this last step.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from babel.dates import format_date
from babel.numbers import format_currency
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, TemplateNotFound

from contracts.channels import Channel
from contracts.collections import CollectionCommand
from contracts.money import Money, minor_unit_exponent
from services.notifier.bundles import most_severe
from services.notifier.profile import TenantProfile

TEMPLATES = Path(__file__).resolve().parent / "templates"
LANGUAGES = ("en", "ru", "zh")
FALLBACK_LANGUAGE = "en"
KIND_OF_CHANNEL: dict[Channel, str] = {
    "email": "email",
    "sms": "sms",
    "messenger": "sms",
    "letter": "letter",
    "call": "call",
}


@dataclass(frozen=True)
class Addressee:
    """What the notifier knows of a debtor, from `ar.debtors.v1`."""

    debtor_id: str
    name: str
    language: str = "en"
    email: str | None = None
    phone: str | None = None
    postal_address: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rendered:
    language: str
    subject: str
    body: str
    blocks: dict[str, str]


@cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        autoescape=False,
        trim_blocks=False,
        keep_trailing_newline=False,
    )


def language_of(tag: str) -> str:
    primary = tag.split("-")[0].lower()
    return primary if primary in LANGUAGES else FALLBACK_LANGUAGE


def format_money(money: Money, language: str) -> str:
    major = Decimal(money.amount_minor).scaleb(-minor_unit_exponent(money.currency))
    return str(format_currency(major, money.currency, locale=language))


def _date(value: dt.date | None, language: str) -> str | None:
    return None if value is None else str(format_date(value, format="medium", locale=language))


def _template(template: str, kind: str, language: str) -> Template:
    environment = _environment()
    for lang in dict.fromkeys((language, FALLBACK_LANGUAGE)):
        for name in (f"{template}.{kind}.j2", f"default.{kind}.j2"):
            try:
                return environment.get_template(f"{lang}/{name}")
            except TemplateNotFound:
                continue
    raise TemplateNotFound(f"{template}.{kind}.j2")


def amount_due(command: CollectionCommand) -> Money:
    """What the debtor is asked to pay: the principal, the penalty stated and the costs claimed."""
    extra = sum(m.amount_minor for m in (command.penalty, command.costs) if m is not None)
    return command.total.model_copy(update={"amount_minor": command.total.amount_minor + extra})


def presentation(command: CollectionCommand, language: str) -> dict[str, Any]:
    """The command as the templates see it: every amount and date already formatted."""

    def money(value: Money | None) -> str | None:
        return None if value is None else format_money(value, language)

    return {
        "action": command.action,
        "step": command.step,
        "items": [
            {
                "invoice_id": i.invoice_id,
                "issue_date": _date(i.issue_date, language),
                "due_date": _date(i.due_date, language),
                "outstanding": money(i.outstanding),
                "days_past_due": i.days_past_due,
                "penalty": money(i.penalty),
            }
            for i in command.items
        ],
        "total": money(command.total),
        "penalty": money(command.penalty),
        "discount": money(command.discount),
        "costs": money(command.costs),
        "amount_due": money(amount_due(command)),
        "deadline": _date(command.deadline, language),
        "assignee": command.assignee,
        "agency_id": command.agency_id,
        "agency_name": command.agency_name,
        "business_date": _date(command.business_date, language),
    }


def creditor_view(
    profile: TenantProfile, command: CollectionCommand, debtor_id: str, language: str = FALLBACK_LANGUAGE
) -> SimpleNamespace:
    """The creditor as the templates see it, with the payment reference of this debtor and case."""
    bank = profile.bank_account
    return SimpleNamespace(
        legal_name=profile.legal_name,
        address=list(profile.address),
        registrations=[f"{r.label} {r.value}" for r in profile.registrations],
        bank=SimpleNamespace(
            holder=bank.holder or profile.legal_name, iban=bank.iban, bic=bank.bic, bank_name=bank.bank_name
        ),
        reference=profile.reference(debtor_id, command.case_id, command.total.currency),
        email=profile.email,
        phone=profile.phone,
        signatory=profile.signatory,
        legal_basis=profile.legal_basis.get(language),
    )


def render(
    command: CollectionCommand, addressee: Addressee, channel: Channel, creditor: TenantProfile | None = None
) -> Rendered:
    """The message of `channel` for the command, from `creditor` (the tenant's profile in force on the
    command's business date; without one, from its accounts receivable department, unnamed)."""
    return render_message([command], addressee, channel, creditor)


def render_message(
    commands: Sequence[CollectionCommand],
    addressee: Addressee,
    channel: Channel,
    creditor: TenantProfile | None = None,
) -> Rendered:
    """One message for one command or for a bundle of them (the debtor's cases in several currencies):
    a bundle speaks in the template of its most severe member, lists a section per member (its
    currency, items and amounts) and asks for the amounts of all of them, each with its reference."""
    kind = KIND_OF_CHANNEL.get(channel)
    if kind is None:
        raise ValueError(f"{channel} messages are not rendered from templates")
    lead = most_severe(commands)
    language = language_of(addressee.language or lead.language)
    template = _template(lead.template, kind, language)
    shown = message_presentation(commands, language)
    shown["items"] = [SimpleNamespace(**item) for item in shown["items"]]
    sections = [
        SimpleNamespace(**{**s, "items": [SimpleNamespace(**i) for i in s["items"]]})
        for s in shown.pop("sections")
    ]
    items = [i for c in commands for i in c.items]
    view = creditor_view(creditor, lead, addressee.debtor_id, language) if creditor else None
    if view is not None and creditor is not None and sections:
        view.reference = references_text(
            [(s.currency, creditor.reference(addressee.debtor_id, s.case_id, s.currency)) for s in sections],
            language,
        )
    variables = {
        # a namespace, not a dict: in a template `command.items` must be the items, not dict.items
        "command": SimpleNamespace(**shown),
        "sections": sections,
        "debtor": addressee,
        "overdue": any(i.days_past_due > 0 for i in items),
        "oldest_days": max((i.days_past_due for i in items), default=0),
        "creditor": view,
    }
    context = template.new_context(variables)
    whole = "".join(template.root_render_func(context)).strip()
    # Rendering the whole stacked the blocks of the templates it extends: each name's first is its last word.
    blocks = {name: "".join(stack[0](context)).strip() for name, stack in context.blocks.items()}
    body = blocks.get("body") or whole
    return Rendered(language, blocks.get("subject", ""), body, blocks)


# How a message lists several amounts or references: (between, before the last).
LISTS = {"en": (", ", " and "), "ru": (", ", " и "), "zh": ("、", " 和 ")}
REFERENCE = {
    "en": "{reference} for {currency}",
    "ru": "{reference} для {currency}",
    "zh": "{reference}\uff08{currency} 款项\uff09",
}


def listed(values: Sequence[str], language: str) -> str:
    between, last = LISTS.get(language, LISTS[FALLBACK_LANGUAGE])
    if len(values) < 2:
        return "".join(values)
    return between.join(values[:-1]) + last + values[-1]


def references_text(references: Sequence[tuple[str, str]], language: str) -> str:
    """The payment reference of each currency of a bundle, in one phrase."""
    pattern = REFERENCE.get(language, REFERENCE[FALLBACK_LANGUAGE])
    return listed([pattern.format(reference=r, currency=c) for c, r in references], language)


def message_presentation(commands: Sequence[CollectionCommand], language: str) -> dict[str, Any]:
    """`presentation` of one command, or of a bundle: the most severe member's action and step, the
    items of all members, each amount listed per currency ("€1.00 and US$2.00"), the earliest deadline,
    and `sections`, one per member in currency order (none for a single command)."""
    lead = most_severe(commands)
    shown = presentation(lead, language)
    if len(commands) < 2:
        return {**shown, "sections": []}
    members = sorted(commands, key=lambda c: (c.total.currency, c.command_id))
    sections = [
        {**presentation(c, language), "currency": c.total.currency, "case_id": c.case_id} for c in members
    ]
    deadlines = [c.deadline for c in members if c.deadline is not None]
    return {
        **shown,
        "items": [i for s in sections for i in s["items"]],
        **{
            name: listed([s[name] for s in sections if s[name] is not None], language) or None
            for name in ("total", "penalty", "discount", "costs", "amount_due")
        },
        "deadline": _date(min(deadlines), language) if deadlines else None,
        "sections": sections,
    }
