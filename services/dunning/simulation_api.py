"""HTTP for the policy what-if: a candidate policy replayed over the tenant's recorded history
(`replay`, read-only: nothing is sent, no table or topic is written)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, model_validator

from contracts.policy import DunningPolicy
from services.dunning import store
from services.dunning.replay import simulate
from services.dunning.simulation import DEFAULT_PAID_WITHIN, Window, report_json
from services.runtime.auth import Principal
from services.runtime.http import Authorize, api_responses
from services.runtime.params import IsoDate

Reader = Annotated[Principal, Depends(Authorize(store.runtime, "collector", "operations"))]
"""Who reads policies may try one."""


class SimulateBody(BaseModel):
    document: DunningPolicy = Field(description="The candidate policy")
    from_: IsoDate = Field(alias="from", description="First business date of the window")
    to: IsoDate = Field(description="Last business date of the window")
    paid_within_days: int = Field(default=DEFAULT_PAID_WITHIN, ge=0, le=366)
    sample: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Replay this fraction of the tenant's debtors (the same ones on every run) and report "
        "estimates for all of them with 95 % margins; 1: every debtor, exact",
    )

    @model_validator(mode="after")
    def _ordered(self) -> SimulateBody:
        if self.to < self.from_:
            raise ValueError("'to' is before 'from'")
        return self


def router() -> APIRouter:
    api = APIRouter(responses=api_responses())

    @api.post(
        "/policies/simulate",
        tags=["policies"],
        summary="Replay a candidate policy over the recorded history beside the versions in force",
    )
    async def simulate_policy(body: SimulateBody, request: Request, principal: Reader) -> dict[str, Any]:
        """Per step and channel the commands the published versions issued and the candidate would
        have issued on the window's business days, contacts per debtor, agency placements, legal
        actions and the recorded payments within `paid_within_days` after a command. The recorded
        facts are replayed as they happened: how a debtor would have reacted to a command that was
        never sent is unknown (`caveats`)."""
        window = Window(body.from_, body.to, body.paid_within_days)
        report = await simulate(
            request.app.state.event_log, principal.tenant_id, body.document, window, sample=body.sample
        )
        return report_json(report)

    return api
