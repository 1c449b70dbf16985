"""The `arrears` command line."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from services.dunning.audit_cli import app as audit_app
from services.runtime.collector import settle as settle_collector
from services.runtime.logging_setup import LogFormat, configure_logging
from services.runtime.settings import Settings
from services.runtime.tracing import configure_tracing
from services.scoring.cli import app as scoring_app

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
app.add_typer(audit_app, name="audit")


def _logging(settings: Settings, default: LogFormat = "text", level: str | int | None = None) -> None:
    configure_logging(level or settings.log_level, settings.log_format or default)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


@app.command()
def demo(
    data: Annotated[Path, typer.Option(help="The IBM accounts-receivable sample CSV")] = Path(
        "../shared/data/ibm-accounts-receivable-2012-2013H1.csv"
    ),
    serve_dashboard: Annotated[
        bool,
        typer.Option(
            "--serve/--no-serve", help="At the end, serve the dashboard until Ctrl-C (--no-serve: exit)"
        ),
    ] = True,
    port: Annotated[int, typer.Option(help="The dashboard's port on 127.0.0.1 (0: any free one)")] = 8080,
) -> None:
    """Replay the sample day by day on the embedded default, print the aging at every month end, then
    serve the operations dashboard over the result."""
    from services.demo import main

    _logging(Settings(), level=logging.WARNING)
    main(data, port if serve_dashboard else None)


@app.command()
def serve(
    service: Annotated[
        str, typer.Argument(help="ledger, dunning, notifier, scoring, or dashboard (the operations page)")
    ] = "ledger",
    api_only: Annotated[
        bool,
        typer.Option(
            "--api-only", help="only the HTTP API: more API processes beside one with the background loops"
        ),
    ] = False,
) -> None:
    """Run a service: migrations, consumer, outbox relay and HTTP API, configured by ARREARS_* variables."""
    import uvicorn

    from services.stack import SERVICES, open_stack

    settings = Settings()
    _logging(settings, "json")
    if service == "dashboard":
        from services.dashboard.main import serve as serve_dashboard

        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        settle_collector()
        asyncio.run(serve_dashboard(settings))
        return
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
    configure_tracing(service)

    async def run() -> None:
        async with open_stack(settings, [service], background=not api_only) as stack:
            # Requests are logged by the app (request_telemetry.py), in the process's format.
            config = uvicorn.Config(
                stack.app(service),
                host=settings.http_host,
                port=settings.http_port,
                log_config=None,
                access_log=False,
            )
            await uvicorn.Server(config).serve()

    # uvicorn shuts down gracefully on SIGTERM and then raises it again for the handler it found; with
    # Python's default one the process would end there, before the stack stops its loops and the
    # embedded PostgreSQL it started.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    settle_collector()
    asyncio.run(run())


@app.command()
def migrate() -> None:
    """Create or upgrade every service's schema."""
    from services.stack import migrate as migrate_all

    typer.echo(f"migrated: {', '.join(asyncio.run(migrate_all(Settings())))}")


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
    from services.stack import open_stack

    if role not in ("erp", "collector", "agency", "operations"):
        raise typer.BadParameter("role must be erp, collector, agency or operations")
    services = ["ledger"] if role == "erp" else ["dunning"]
    if role in ("collector", "operations"):
        services += ["notifier", "scoring"]
    if role == "operations":  # finance reads the ledger's aging and KPIs (the dashboard's key)
        services.insert(0, "ledger")

    async def run() -> str:
        async with open_stack(Settings(), services, background=False) as stack:
            return await stack.create_key(tenant, name, role, on=services)

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
    from services.runtime.process import open_log

    async def run() -> list[dt.date]:
        async with open_log(Settings()) as log:
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
    from services.runtime.process import open_log

    try:
        document = load_policy(file)
    except ValueError as exc:
        raise typer.BadParameter(f"{file}: {exc}") from None
    published = PolicyPublished(version=version, effective_from=effective_from.date(), document=document)

    async def run() -> None:
        async with open_log(Settings()) as log:
            await log.publish([policy_message(tenant, published, dt.datetime.now(dt.UTC))])

    asyncio.run(run())
    typer.echo(f"{tenant}: policy version {version} in force from {effective_from.date()}")


@policy_app.command("simulate")
def simulate_policy(
    tenant: Annotated[str, typer.Option(help="Tenant id")],
    candidate: Annotated[
        Path, typer.Option(exists=True, dir_okay=False, help="YAML or JSON candidate policy document")
    ],
    start: Annotated[
        dt.datetime, typer.Option("--from", formats=["%Y-%m-%d"], help="First business date of the window")
    ],
    end: Annotated[
        dt.datetime, typer.Option("--to", formats=["%Y-%m-%d"], help="Last business date of the window")
    ],
    paid_within: Annotated[int, typer.Option(min=0, help="Days after a command a payment counts")] = 14,
    workers: Annotated[int, typer.Option(min=1, help="Processes replaying the log's partitions")] = 1,
    sample: Annotated[
        float,
        typer.Option(
            min=0.0001,
            max=1.0,
            help="Replay this fraction of the debtors (the same ones every run) and estimate the tenant's "
            "figures with 95 % margins; 1: every debtor",
        ),
    ] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON")] = False,
) -> None:
    """Replay a candidate policy over the tenant's recorded history beside the published versions
    (read-only: nothing is sent, no table or topic is written)."""
    from typing import Any

    import orjson

    from contracts.policy import load_policy
    from services.dunning.replay import simulate
    from services.dunning.simulation import Window, report_json, report_table
    from services.runtime.process import open_log

    try:
        document = load_policy(candidate)
        window = Window(start.date(), end.date(), paid_within)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    async def run() -> dict[str, Any]:
        settings = Settings()
        async with open_log(settings) as log:
            report = await simulate(
                log, tenant, document, window, workers=workers, settings=settings, sample=sample
            )
            return report_json(report)

    report = asyncio.run(run())
    typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if as_json else report_table(report))


@topics_app.command("create")
def create_topics() -> None:
    """Create every topic of the catalogue (idempotent) with infinite retention."""
    from contracts.topics import catalogue
    from services.runtime.kafka_admin import ensure_topics

    settings = Settings()
    if not settings.kafka_bootstrap_servers:
        raise typer.BadParameter("set ARREARS_KAFKA_BOOTSTRAP_SERVERS")
    asyncio.run(
        ensure_topics(settings.kafka_bootstrap_servers, catalogue(), settings.kafka_replication_factor)
    )
    typer.echo("topics ready")


if __name__ == "__main__":
    app()
