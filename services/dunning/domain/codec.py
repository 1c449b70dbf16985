"""The case as JSON for the shell's store, and back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter

from services.dunning.domain.case import Case

_CASE = TypeAdapter(Case)


def dump_case(case: Case) -> dict[str, Any]:
    """The case as JSON-ready data, for the shell's store."""
    dumped: dict[str, Any] = _CASE.dump_python(case, mode="json")
    return dumped


def load_case(raw: Mapping[str, Any]) -> Case:
    """The case `dump_case` gave."""
    return _CASE.validate_python(raw)


def load_case_json(raw: bytes | str) -> Case:
    """The case `dump_case` gave, encoded as JSON: the same case as `load_case(json.loads(raw))`,
    parsed and validated in one pass (a third faster)."""
    return _CASE.validate_json(raw)
