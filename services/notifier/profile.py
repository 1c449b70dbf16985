"""The creditor a tenant's letters and e-mails come from: legal name, address, registration numbers,
the bank account with the payment reference the ERP matches incoming payments by, a contact and the
signatory. Versioned like the dunning policy: each version is in force from a business date, never
changed once recorded, and a command is rendered with the version in force on its business date, so
a letter sent again after a crash is the letter that was sent."""

from __future__ import annotations

import datetime as dt
import re
import string
from collections.abc import Iterable
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from contracts.scalars import BusinessDate, Language, Line, Text, Version

Short = Annotated[Line, Field(min_length=1, max_length=140)]

REFERENCE_FIELDS = ("debtor_id", "case_id", "currency")
"""What a payment reference format may name: `{debtor_id}`, `{case_id}`, `{currency}`."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BankAccount(_Strict):
    holder: Short | None = Field(default=None, description="Account holder, when not the legal name")
    iban: Annotated[
        str, Field(pattern=r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{10,30}$", examples=["DE89370400440532013000"])
    ]
    bic: (
        Annotated[str, Field(pattern=r"^[A-Z]{6}[A-Z0-9]{2}([A-Z0-9]{3})?$", examples=["COBADEFFXXX"])] | None
    ) = None
    bank_name: Short | None = None


class Registration(_Strict):
    label: Short = Field(examples=["VAT"])
    value: Short = Field(examples=["DE123456789"])


class Signatory(_Strict):
    name: Short = Field(examples=["Anna Schmidt"])
    title: Short = Field(examples=["Head of Accounts Receivable"])


class TenantProfile(_Strict):
    legal_name: Short = Field(examples=["Acme Industrial Supplies GmbH"])
    address: list[Short] = Field(min_length=1, max_length=6, examples=[["Hauptstraße 1", "10115 Berlin"]])
    registrations: list[Registration] = Field(default_factory=list, max_length=6)
    bank_account: BankAccount
    payment_reference: Short = Field(
        default="{debtor_id}",
        description="The reference a debtor quotes with a payment, as the ERP matches it: text with "
        "`{debtor_id}`, `{case_id}` or `{currency}` in it",
        examples=["AR-{debtor_id}"],
    )
    email: Short | None = None
    phone: Short | None = None
    signatory: Signatory
    legal_basis: dict[Language, Annotated[Text, Field(min_length=1, max_length=500)]] = Field(
        default_factory=dict,
        max_length=10,
        description="What a claim rests on, per language of the letters (a claim letter and a final "
        "demand cite it); without one for the letter's language they cite the contract the invoices were "
        "issued under",
        examples=[
            {
                "en": "our general terms of sale of 1 January 2026, section 7, and the Late Payment of "
                "Commercial Debts (Interest) Act 1998"
            }
        ],
    )

    @field_validator("payment_reference")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        named = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        unknown = named - set(REFERENCE_FIELDS)
        if unknown or re.search(r"{[^}]*[!:][^}]*}", value):
            raise ValueError(f"may name only {', '.join('{' + f + '}' for f in REFERENCE_FIELDS)}")
        return value

    def reference(self, debtor_id: str, case_id: str, currency: str) -> str:
        return self.payment_reference.format(debtor_id=debtor_id, case_id=case_id, currency=currency)


class ProfileVersion(_Strict):
    version: Version
    effective_from: BusinessDate
    profile: TenantProfile


def in_force(versions: Iterable[ProfileVersion], day: dt.date) -> ProfileVersion | None:
    """The version in force on `day`: the latest to take effect by then (the higher version on a tie)."""
    started = [v for v in versions if v.effective_from <= day]
    return max(started, key=lambda v: (v.effective_from, v.version), default=None)
