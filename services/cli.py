"""The `arrears` command line."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from services.runtime.settings import Settings
from services.scoring.cli import app as scoring_app

if TYPE_CHECKING:
    from services.runtime.log import EventLog
    from services.runtime.process import Resources
    from services.runtime.service import Service

app = typer.Typer(help="Arrears: event-sourced accounts-receivable collections.", no_args_is_help=True)
clock_app = typer.Typer(help="The business clock (ar.clock.v1).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys, each scoped to one tenant.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
policy_app = typer.Typer(help="Dunning policies (collections.policies.v1).", no_args_is_help=True)
app.add_typer(clock_app, name="clock")
app.add_typer(keys_app, name="keys")
app.add_typer(topics_app, name="topics")
app.add_typer(policy_app, name="policy")
app.add_typer(scoring_app, name="scoring")


def _logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")


@contextlib.asynccontextmanager
async def _services_log(settings: Settings) -> AsyncIterator[EventLog]:
    """The log the services read: Kafka, or with none configured the PostgreSQL log in their database
    (the embedded server of ARREARS_DATA_DIR, running or not, or DATABASE_URL)."""
    from services.runtime.kafka_log import KafkaLog
    from services.runtime.process import open_resources

    if not settings.kafka_bootstrap_servers:
        async with open_resources(settings) as resources:
            yield resources.event_log
        return
    log = KafkaLog(settings.kafka_bootstrap_servers, timeout_s=settings.producer_timeout_s)
    await log.start()
    try:
        yield log
    finally:
        await log.stop()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


@app.command()
def demo(
    data: Annotated[Path, typer.Option(help="The IBM accounts-receivable sample CSV")] = Path(
        "../shared/data/ibm-accounts-receivable-2012-2013H1.csv"
    ),
) -> None:
    """Replay the sample day by day on the embedded default and print the aging at every month end."""
    from services.demo import main

    logging.basicConfig(level=logging.WARNING)
    main(data)


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="ledger, dunning, notifier or scoring")] = "ledger",
    api_only: Annotated[
        bool,
        typer.Option(
            "--api-only", help="only the HTTP API: more API processes beside one with the background loops"
        ),
    ] = False,
) -> None:
    """Run a service: migrations, consumer, outbox relay and HTTP API, configured by ARREARS_* variables."""
    import uvicorn

    from services.dunning.main import DunningService
    from services.ledger.main import LedgerService
    from services.notifier.main import NotifierService
    from services.runtime.process import open_resources
    from services.scoring.main import ScoringService

    settings = Settings()
    _logging(settings)
    services: dict[str, Callable[[Resources], Service]] = {
        "ledger": LedgerService,
        "dunning": DunningService,
        "notifier": NotifierService,
        "scoring": ScoringService,
    }
    if service not in services:
        raise typer.BadParameter(f"unknown service {service!r}; one of {', '.join(services)}")

    async def run() -> None:
        async with open_resources(settings) as resources:
            running = services[service](resources)
            await running.migrate()
            config = uvicorn.Config(
                running.app(run_background=not api_only),
                host=settings.http_host,
                port=settings.http_port,
                log_level="info",
            )
            await uvicorn.Server(config).serve()

    # uvicorn shuts down gracefully on SIGTERM and then raises it again for the handler it found; with
    # Python's default one the process would end there, before open_resources stops the embedded
    # PostgreSQL it started.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    asyncio.run(run())


@app.command()
def migrate() -> None:
    """Create or upgrade every service's schema."""
    from services.dunning.main import DunningService
    from services.ledger.main import LedgerService
    from services.notifier.main import NotifierService
    from services.runtime.process import open_resources
    from services.scoring.main import ScoringService

    services: list[Callable[[Resources], Service]] = [
        LedgerService,
        DunningService,
        NotifierService,
        ScoringService,
    ]

    async def run() -> list[str]:
        migrated = []
        async with open_resources(Settings()) as resources:
            for service in services:
                running = service(resources)
                await running.migrate()
                migrated.append(running.name)
        return migrated

    typer.echo(f"migrated: {', '.join(asyncio.run(run()))}")


@keys_app.command("create")
def create_key(
    tenant: Annotated[str, typer.Option(help="The tenant the key is scoped to")],
    name: Annotated[
        str, typer.Option(help="Who uses the key: the ERP's name, a collector, the agency id")
    ] = "erp",
    role: Annotated[
        str, typer.Option(help="erp (ledger API); collector, agency or operations (dunning API)")
    ] = "erp",
) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    from services.dunning import store as dunning_store
    from services.dunning.main import DunningService
    from services.ledger import store as ledger_store
    from services.ledger.main import LedgerService
    from services.notifier import store as notifier_store
    from services.notifier.main import NotifierService
    from services.runtime.auth import create_key as create
    from services.runtime.process import open_resources
    from services.scoring import store as scoring_store
    from services.scoring.main import ScoringService

    if role not in ("erp", "collector", "agency", "operations"):
        raise typer.BadParameter("role must be erp, collector, agency or operations")

    async def run() -> str:
        async with open_resources(Settings()) as resources:
            services: list[Service] = (
                [LedgerService(resources)] if role == "erp" else [DunningService(resources)]
            )
            if role in ("collector", "operations"):
                services += [NotifierService(resources), ScoringService(resources)]
            for service in services:
                await service.migrate()
            tables = [ledger_store.runtime] if role == "erp" else [dunning_store.runtime]
            if role in ("collector", "operations"):
                tables += [notifier_store.runtime, scoring_store.runtime]
            async with resources.sessions() as session, session.begin():
                return await create(session, tables, tenant, name, role)

    typer.echo(asyncio.run(run()))


@clock_app.command("advance")
def advance_clock(
    tenant: Annotated[str, typer.Option(help="Tenant id")],
    to: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="Last business day to start")],
    start: Annotated[
        dt.datetime | None,
        typer.Option("--from", formats=["%Y-%m-%d"], help="First day (default: the day after the last one)"),
    ] = None,
) -> None:
    """Publish one business-day-started event per day up to --to. Repeating a day is harmless."""
    from services.runtime import clock

    async def run() -> list[dt.date]:
        async with _services_log(Settings()) as log:
            return await clock.advance(
                log, tenant, to.date(), dt.datetime.now(dt.UTC), start.date() if start else None
            )

    days = asyncio.run(run())
    typer.echo(
        f"{tenant}: started {len(days)} business day(s)" + (f", {days[0]} to {days[-1]}" if days else "")
    )


@policy_app.command("publish")
def publish_policy(
    tenant: Annotated[str, typer.Option(help="Tenant id")],
    version: Annotated[int, typer.Option(min=1, help="The new version; versions are never overwritten")],
    effective_from: Annotated[
        dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="First business date the version decides")
    ],
    file: Annotated[
        Path, typer.Option(exists=True, dir_okay=False, help="YAML or JSON policy document")
    ] = Path(__file__).parent / "dunning" / "policies" / "default.yaml",
) -> None:
    """Validate a dunning policy and publish it on collections.policies.v1."""
    from contracts.policy import PolicyPublished, load_policy
    from services.dunning.api import policy_message

    try:
        document = load_policy(file)
    except ValueError as exc:
        raise typer.BadParameter(f"{file}: {exc}") from None
    published = PolicyPublished(version=version, effective_from=effective_from.date(), document=document)

    async def run() -> None:
        async with _services_log(Settings()) as log:
            await log.publish([policy_message(tenant, published, dt.datetime.now(dt.UTC))])

    asyncio.run(run())
    typer.echo(f"{tenant}: policy version {version} in force from {effective_from.date()}")


@topics_app.command("create")
def create_topics() -> None:
    """Create every topic of the catalogue (idempotent) with infinite retention."""
    from contracts.topics import catalogue
    from services.runtime.kafka_admin import ensure_topics

    settings = Settings()
    if not settings.kafka_bootstrap_servers:
        raise typer.BadParameter("set ARREARS_KAFKA_BOOTSTRAP_SERVERS")
    asyncio.run(ensure_topics(settings.kafka_bootstrap_servers, catalogue()))
    typer.echo("topics ready")


if __name__ == "__main__":
    app()
