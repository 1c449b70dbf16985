"""What orjson cannot encode by itself in the services' stored states: pydantic models (the contracts'
data held in a state) and frozensets."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel

_NATIVE = (str, int, bool)


@cache
def is_flat(model: type[BaseModel]) -> bool:
    """Whether the model's JSON-mode dump is its `__dict__` as it stands: every field a string, an
    integer or a boolean, under its own name and dumped, no extra or computed fields and no custom
    serializers (the provenance references every case holds several of are such models)."""
    decorators = model.__pydantic_decorators__
    return (
        model.model_config.get("extra") != "allow"
        and not model.model_computed_fields
        and not decorators.field_serializers
        and not decorators.model_serializers
        and all(
            f.annotation in _NATIVE and f.alias is None and f.serialization_alias is None and not f.exclude
            for f in model.model_fields.values()
        )
    )


def json_default(value: Any) -> Any:
    """orjson's `default=`: a pydantic model as its JSON-mode dump, a frozenset as a list."""
    if isinstance(value, BaseModel):
        return value.__dict__ if is_flat(type(value)) else value.model_dump(mode="json")
    if isinstance(value, frozenset):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__}")
