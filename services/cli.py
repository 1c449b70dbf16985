"""The `arrears` command line."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from typing import Annotated

import typer

from services.runtime.settings import Settings

app = typer.Typer(help="Arrears: event-sourced accounts-receivable collections.", no_args_is_help=True)
clock_app = typer.Typer(help="The business clock (ar.clock.v1).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys, each scoped to one tenant.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
app.add_typer(clock_app, name="clock")
app.add_typer(keys_app, name="keys")
app.add_typer(topics_app, name="topics")


def _logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")


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
def serve(service: Annotated[str, typer.Argument(help="ledger or notifier")] = "ledger") -> None:
    """Run a service: migrations, consumer, outbox relay and HTTP API, configured by ARREARS_* variables."""
    import uvicorn

    from services.ledger.main import LedgerService
    from services.notifier.main import NotifierService
    from services.runtime.process import open_resources

    settings = Settings()
    _logging(settings)
    services: dict[str, type[LedgerService] | type[NotifierService]] = {
        "ledger": LedgerService,
        "notifier": NotifierService,
    }
    if service not in services:
        raise typer.BadParameter(f"unknown service {service!r}; one of {', '.join(services)}")

    async def run() -> None:
        async with open_resources(settings) as resources:
            running = services[service](resources)
            await running.migrate()
            config = uvicorn.Config(
                running.app(), host=settings.http_host, port=settings.http_port, log_level="info"
            )
            await uvicorn.Server(config).serve()

    asyncio.run(run())


@app.command()
def migrate() -> None:
    """Create or upgrade every service's schema."""
    from services.ledger.main import LedgerService
    from services.notifier.main import NotifierService
    from services.runtime.process import open_resources

    async def run() -> None:
        async with open_resources(Settings()) as resources:
            await LedgerService(resources).migrate()
            await NotifierService(resources).migrate()

    asyncio.run(run())
    typer.echo("migrated: ledger, notifier")


@keys_app.command("create")
def create_key(
    tenant: Annotated[str, typer.Option(help="The tenant the key is scoped to")],
    name: Annotated[str, typer.Option(help="Who uses the key, e.g. the ERP's name")] = "erp",
    role: Annotated[str, typer.Option(help="erp, collector, agency or operations")] = "erp",
) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    from services.ledger import store
    from services.ledger.main import LedgerService
    from services.runtime.auth import create_key as create
    from services.runtime.process import open_resources

    async def run() -> str:
        async with open_resources(Settings()) as resources:
            await LedgerService(resources).migrate()
            async with resources.sessions() as session, session.begin():
                return await create(session, store.runtime, tenant, name, role)

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
    from services.runtime.kafka_log import KafkaLog

    settings = Settings()
    if not settings.kafka_bootstrap_servers:
        raise typer.BadParameter("set ARREARS_KAFKA_BOOTSTRAP_SERVERS: the clock publishes to Kafka")

    async def run() -> list[dt.date]:
        log = KafkaLog(settings.kafka_bootstrap_servers or "")
        await log.start()
        try:
            return await clock.advance(
                log, tenant, to.date(), dt.datetime.now(dt.UTC), start.date() if start else None
            )
        finally:
            await log.stop()

    days = asyncio.run(run())
    typer.echo(
        f"{tenant}: started {len(days)} business day(s)" + (f", {days[0]} to {days[-1]}" if days else "")
    )


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
