"""Turning a command into words: Jinja2 templates per template name, channel and language.

A template is looked up as `<language>/<template>.<kind>.j2`, then `<language>/default.<kind>.j2`, then
the same in English: a debtor is never written to in another language because one step's template is
missing in theirs. A step's template extends the default of its kind and replaces only the blocks that
make the step what it is (the title, the opening sentence, the request and its deadline). Money and
dates are formatted for the debtor's locale with Babel; amounts stay integers until this last step.
"""

from __future__ import annotations

import datetime as dt
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
    kind = KIND_OF_CHANNEL.get(channel)
    if kind is None:
        raise ValueError(f"{channel} messages are not rendered from templates")
    language = language_of(addressee.language or command.language)
    template = _template(command.template, kind, language)
    shown = presentation(command, language)
    shown["items"] = [SimpleNamespace(**item) for item in shown["items"]]
    variables = {
        # a namespace, not a dict: in a template `command.items` must be the items, not dict.items
        "command": SimpleNamespace(**shown),
        "debtor": addressee,
        "overdue": any(i.days_past_due > 0 for i in command.items),
        "oldest_days": max((i.days_past_due for i in command.items), default=0),
        "creditor": creditor_view(creditor, command, addressee.debtor_id, language) if creditor else None,
    }
    context = template.new_context(variables)
    whole = "".join(template.root_render_func(context)).strip()
    # Rendering the whole stacked the blocks of the templates it extends: each name's first is its last word.
    blocks = {name: "".join(stack[0](context)).strip() for name, stack in context.blocks.items()}
    body = blocks.get("body") or whole
    return Rendered(language, blocks.get("subject", ""), body, blocks)
