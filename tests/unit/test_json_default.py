"""What the services' stored states encode through orjson's `default=`: pydantic models as their
JSON-mode dump (flat ones from their fields), frozensets as lists."""

from __future__ import annotations

import orjson
import pytest
from pydantic import BaseModel, Field, computed_field

from contracts.collections import InputRef
from contracts.journal import DebtorProfile
from contracts.money import Money
from services.runtime.json_default import is_flat, json_default


def test_a_flat_model_encodes_as_its_json_dump() -> None:
    ref = InputRef(topic="ar.receivables.v1", partition=3, offset=2**63 - 1, event_id="evt:1/a@b+c")
    money = Money(amount_minor=-5, currency="EUR")
    assert is_flat(InputRef) and is_flat(Money)
    for model in (ref, money):
        assert orjson.dumps(model, default=json_default) == orjson.dumps(model.model_dump(mode="json"))


def test_a_model_with_dates_lists_or_optional_fields_is_dumped_by_pydantic() -> None:
    profile = DebtorProfile.model_validate({"name": "Acme", "postal_address": ["1 Main St"]})
    assert not is_flat(DebtorProfile)
    assert json_default(profile) == profile.model_dump(mode="json")


def test_a_frozenset_is_a_list_and_anything_else_is_refused() -> None:
    assert orjson.dumps({"a": frozenset({("x", "y")})}, default=json_default) == b'{"a":[["x","y"]]}'
    with pytest.raises(TypeError):
        orjson.dumps(object(), default=json_default)


def test_a_model_with_an_excluded_or_computed_field_is_not_flat() -> None:
    class Hidden(BaseModel):
        shown: str
        hidden: str = Field(exclude=True)

    class Computed(BaseModel):
        amount: int

        @computed_field  # type: ignore[prop-decorator]
        @property
        def doubled(self) -> int:
            return 2 * self.amount

    assert not is_flat(Hidden) and not is_flat(Computed)
    assert json_default(Hidden(shown="a", hidden="b")) == {"shown": "a"}
    assert json_default(Computed(amount=2)) == {"amount": 2, "doubled": 4}
