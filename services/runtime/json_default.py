"""What orjson cannot encode by itself in the services' stored states: pydantic models (the contracts'
data held in a state) and frozensets."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def json_default(value: Any) -> Any:
    """orjson's `default=`: a pydantic model as its JSON-mode dump, a frozenset as a list."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, frozenset):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__}")
