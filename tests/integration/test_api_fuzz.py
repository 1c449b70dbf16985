"""Hostile input against every API: Schemathesis generates requests from each service's own OpenAPI
document (its examples, the boundaries of every parameter and body field, then positive and negative
random data) and sends them with a key of every role to the services served over real HTTP on the
session's PostgreSQL. No answer may be a 5xx, and every answer must be one the document declares, in
the declared content type and shape.

The run is bounded and repeatable: a fixed seed, deterministic generation, a fixed number of examples
per operation, no example database and no deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import schemathesis
from fastapi.routing import APIRoute
from schemathesis.engine import Status, events
from schemathesis.engine import from_schema as engine_for

from services.runtime.http import Authorize
from services.runtime.service import Service
from services.stack import serving
from tests.integration.api_world import ROLES, api_world

pytestmark = pytest.mark.integration

CHECKS = (
    "not_a_server_error",
    "response_schema_conformance",
    "status_code_conformance",
    "content_type_conformance",
)
SEED = 20260701
MAX_EXAMPLES = 12
"""Random examples per operation, after its examples and the boundary cases, with a key of a role
that may call it."""
REFUSED_EXAMPLES = 4
"""Random examples per operation with a key of a role that may not call it: each must be its 403."""


def fuzz_config(api_key: str, *, allowed: bool) -> schemathesis.Config:
    generation = {
        "mode": "all",
        "max-examples": MAX_EXAMPLES if allowed else REFUSED_EXAMPLES,
        "deterministic": True,
        "no-shrink": True,
        "database": "none",
        "allow-x00": True,
    }
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "color": False,
            "continue-on-failure": True,
            "suppress-health-check": ["all"],
            "cache": {"enabled": False},
            "headers": {"X-API-Key": api_key},
            "request-timeout": 30,
            "generation": generation,
            "phases": {
                "examples": {"enabled": allowed},
                "coverage": {"enabled": allowed},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        }
    )


@dataclass
class Finding:
    operation: str
    check: str
    title: str
    message: str
    request: str

    def __str__(self) -> str:
        return f"{self.operation}: {self.check}: {self.title}: {self.message}\n    {self.request}"


@dataclass
class Outcome:
    cases: int = 0
    failed: set[str] = field(default_factory=set)
    findings: dict[tuple[str, str, str], Finding] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def roles_of(service: Service) -> dict[str, tuple[str, ...]]:
    """The roles that may call each operation ("GET /v1/cases"), as its key check admits them."""
    roles: dict[str, tuple[str, ...]] = {}
    for route in (r for router in service.routers() for r in router.routes):
        if isinstance(route, APIRoute):
            for dependency in route.dependant.dependencies:
                if isinstance(dependency.call, Authorize):
                    for method in route.methods or ():
                        roles[f"{method} {route.path}"] = dependency.call.roles
    return roles


def fuzz(url: str, api_key: str, operations: list[str], *, allowed: bool) -> Outcome:
    """Fuzz these operations of the API at `url` with the key: every phase where the key's role may
    call them, a few random requests where it may not; what it sent and what failed."""
    outcome = Outcome()
    if not operations:
        return outcome
    schema = schemathesis.openapi.from_url(
        f"{url}/openapi.json", config=fuzz_config(api_key, allowed=allowed)
    ).include(name=operations)
    schema.config.update(base_url=url)
    for event in engine_for(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            outcome.cases += len(recorder.interactions)
            if not allowed:  # a key that may not call the operation learns only that
                for case_id, interaction in recorder.interactions.items():
                    status = interaction.response.status_code if interaction.response else None
                    if status != 403:
                        outcome.failed.add(case_id)
                        request = f"{interaction.request.method} {interaction.request.uri}"
                        outcome.findings.setdefault(
                            (recorder.label, "refused", str(status)),
                            Finding(recorder.label, "refused", f"{status}, not 403", "", request),
                        )
            for case_id, checks in recorder.checks.items():
                for check in checks:
                    if check.status != Status.FAILURE or check.failure_info is None:
                        continue
                    outcome.failed.add(case_id)
                    failure = check.failure_info.failure
                    key = (recorder.label, check.name, failure.title)
                    outcome.findings.setdefault(
                        key,
                        Finding(
                            recorder.label,
                            check.name,
                            failure.title,
                            " ".join(failure.message.split())[:400],
                            check.failure_info.code_sample.replace(api_key, "$KEY"),
                        ),
                    )
        elif isinstance(event, events.NonFatalError):
            outcome.errors.append(f"{event.label}: {event.value!r}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    return outcome


async def test_no_request_makes_an_api_fail_or_answer_off_its_document(
    postgres: object, new_database: Callable[[], Awaitable[str]], tenant: str
) -> None:
    report: list[str] = []
    findings: list[str] = []
    async with api_world(await new_database(), tenant) as world, contextlib.AsyncExitStack() as served:
        services = world.stack.services
        urls = {name: await served.enter_async_context(serving(world.stack.app(name))) for name in services}
        started = time.monotonic()
        for name, url in urls.items():
            roles = roles_of(services[name])
            assert roles, f"{name} has no operation behind a key check"
            for role in ROLES:
                for allowed in (True, False):
                    operations = [o for o, admitted in roles.items() if (role in admitted) == allowed]
                    begun = time.monotonic()
                    outcome = await asyncio.to_thread(
                        fuzz, url, world.keys[role], operations, allowed=allowed
                    )
                    report.append(
                        f"{name} as {role} ({'allowed' if allowed else 'refused'}, {len(operations)}"
                        f" operations): {outcome.cases} cases, {len(outcome.failed)} failed"
                        f" ({time.monotonic() - begun:.1f} s)"
                    )
                    findings += [f"[{name} as {role}] {f}" for f in outcome.findings.values()]
                    findings += [f"[{name} as {role}] error: {e}" for e in outcome.errors]
        report.append(f"total {time.monotonic() - started:.1f} s")
    print("\n".join(report))
    assert not findings, "\n".join(report + findings)
