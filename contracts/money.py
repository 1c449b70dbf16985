"""Money as an integer count of minor units with an ISO 4217 currency code. Never a float."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from functools import cache, lru_cache
from typing import Annotated

from babel.numbers import get_currency_precision, list_currencies
from pydantic import AfterValidator, BaseModel, ConfigDict, Field


@cache
def _known_currencies() -> frozenset[str]:
    return frozenset(list_currencies())


def check_currency(code: str) -> str:
    if code not in _known_currencies():
        raise ValueError(f"{code!r} is not an ISO 4217 currency code")
    return code


CurrencyCode = Annotated[
    str,
    Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 alphabetic code", examples=["EUR"]),
    AfterValidator(check_currency),
]


MAX_MINOR = 10**15
"""The largest amount, in minor units, of one money field (ten trillion in a two-decimal currency):
far beyond any receivable, and small enough that sums of millions of them fit PostgreSQL's bigint."""


class Money(BaseModel):
    """An amount of money: `amount_minor` counts minor units (cents for EUR, yen for JPY)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amount_minor: int = Field(
        strict=True,
        ge=-MAX_MINOR,
        le=MAX_MINOR,
        description="Integer count of the currency's minor units",
    )
    currency: CurrencyCode


def positive(money: Money, field: str) -> Money:
    if money.amount_minor <= 0:
        raise ValueError(f"{field} must be a positive amount")
    return money


@lru_cache(maxsize=1024)
def minor_unit_exponent(currency: str) -> int:
    # Cached: babel's lookup costs more than the formatting it serves, once per amount in words.
    return int(get_currency_precision(currency))


def parse_major(amount: str, currency: str) -> int:
    """Convert a decimal string in major units ("1234.5") to minor units, refusing lost precision."""
    try:
        value = Decimal(amount.strip())
    except InvalidOperation as exc:
        raise ValueError(f"{amount!r} is not a decimal amount") from exc
    if not value.is_finite():
        raise ValueError(f"{amount!r} is not a finite amount")
    scaled = value.scaleb(minor_unit_exponent(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount!r} has more decimals than {currency} allows")
    return int(scaled)


def format_major(amount_minor: int, currency: str) -> str:
    """Minor units as a decimal string in major units (-1234 EUR: "-12.34"), in integer arithmetic."""
    exponent = minor_unit_exponent(currency)
    if not exponent:
        return str(amount_minor)
    major, minor = divmod(abs(amount_minor), 10**exponent)
    # zfill, not a nested format spec: this runs for every amount a score's reasons put in words.
    return f"{'-' if amount_minor < 0 else ''}{major}.{str(minor).zfill(exponent)}"
