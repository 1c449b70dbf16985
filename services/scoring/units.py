"""Minor units per major unit of a currency, looked up once per currency (the lookup goes through
the currency data of babel, which scoring would otherwise repeat for every debtor)."""

from __future__ import annotations

from functools import cache

from contracts.money import minor_unit_exponent


@cache
def minor_per_major(currency: str) -> int:
    return int(10 ** minor_unit_exponent(currency))
