"""A fact applied to every case of one debtor: the case it opens, then `evolve` on each case.

The dunning consumer and the policy what-if replay apply facts through this one function, so a replay
moves the cases exactly as the consumer did."""

from __future__ import annotations

from collections.abc import Mapping

from contracts.collections import CaseEvent
from services.dunning.domain.case import Case, Fact, case_id, currency_of, new_case, opens_case
from services.dunning.domain.evolve import evolve


def opened_case(tenant_id: str, debtor_id: str, cases: Mapping[str, Case], fact: Fact) -> Case | None:
    """The new case the fact opens: a balance fact in a currency the debtor has no case in."""
    currency = currency_of(fact)
    if currency is None or case_id(debtor_id, currency) in cases or not opens_case(fact):
        return None
    return new_case(tenant_id, debtor_id, currency)


def evolve_debtor(cases: Mapping[str, Case], fact: Fact) -> list[tuple[Case, Case, list[CaseEvent]]]:
    """(before, after, events) of each case of the debtor the fact changes, by case id."""
    changed = []
    for key in sorted(cases):
        before = cases[key]
        after, events = evolve(before, fact)
        if after is not before:
            changed.append((before, after, events))
    return changed
