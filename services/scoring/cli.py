"""`arrears scoring`: train the payment-behaviour model, evaluate it without leakage, and print a
tenant's worklist from the scoring service's database."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from services.runtime.settings import Settings

if TYPE_CHECKING:
    from services.scoring.features import DebtorHistory

BACKTEST_DAYS = 120
"""The manifest's metrics: the same model trained on what was known this many days before the end of
its training window, judged on the invoices issued since."""

app = typer.Typer(help="Payment-behaviour scoring (collections.scores.v1).", no_args_is_help=True)

DataOption = Annotated[
    Path,
    typer.Option(exists=True, dir_okay=False, help="Receivables CSV in the shape of the IBM sample"),
]


@app.command()
def evaluate(
    data: DataOption,
    split_date: Annotated[
        dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="Train on what was known before this date")
    ],
) -> None:
    """Train on the history known before --split-date, predict every invoice issued from it on, and
    print accuracy, ROC AUC, Brier score and MAE beside the baselines, as JSON."""
    from services.sample import ibm
    from services.scoring.evaluation import evaluate as run
    from services.scoring.evaluation import histories_of_sample

    report, _ = run(histories_of_sample(ibm.load(data), "sample"), split_date.date())
    typer.echo(json.dumps(report, indent=2))


@app.command()
def train(
    data: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="Receivables CSV in the shape of the IBM sample"),
    ] = None,
    tenant: Annotated[
        str | None,
        typer.Option(help="Learn from the tenant's history as the scoring service recorded it from the log"),
    ] = None,
    as_of: Annotated[
        dt.datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Train on what was known before this date (default: all)"),
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="Where to write the model (default: ARREARS_SCORING_MODEL_DIR)")
    ] = None,
) -> None:
    """Train the model on the event history (--tenant: the invoices and payments the scoring service
    has projected from the log, in ARREARS_DATABASE_URL) or on a receivables CSV (--data), and write it
    as the next version with its manifest; a running scoring service picks it up without a restart."""
    from services.scoring import artifacts
    from services.scoring.evaluation import evaluate as backtest
    from services.scoring.features import examples_known_before, known_on
    from services.scoring.model import train as fit

    if (data is None) == (tenant is None):
        raise typer.BadParameter("give either --tenant (the recorded history) or --data (a CSV)")
    histories = _recorded_histories(tenant) if tenant is not None else _sample_histories(data)
    settled = [i.settled_date for h in histories for i in h.invoices if i.settled_date]
    if not settled:
        raise typer.BadParameter("the history has no settled invoice to learn from")
    until = as_of.date() if as_of else max(settled) + dt.timedelta(days=1)
    known = [known_on(h, until - dt.timedelta(days=1)) for h in histories]
    examples = examples_known_before(known, until)
    report, _ = backtest(known, until - dt.timedelta(days=BACKTEST_DAYS))
    manifest = artifacts.save(
        fit(examples),
        model_dir or Settings().scoring_model_dir,
        trained_from=min(e.issue_date for e in examples).isoformat() if examples else None,
        trained_until=until.isoformat(),
        examples=len(examples),
        metrics={"backtest": report},
    )
    typer.echo(json.dumps(manifest.__dict__, indent=2))


def _sample_histories(data: Path | None) -> list[DebtorHistory]:
    from services.sample import ibm
    from services.scoring.evaluation import histories_of_sample

    assert data is not None
    return histories_of_sample(ibm.load(data), "sample")


def _recorded_histories(tenant: str) -> list[DebtorHistory]:
    from services.runtime.process import open_resources
    from services.scoring import store
    from services.scoring.projection import histories_of

    async def read() -> list[DebtorHistory]:
        async with open_resources(Settings()) as resources, resources.sessions() as session:
            by_debtor, paperless = await store.tenant_history(session, tenant)
        return [
            history
            for debtor in sorted(by_debtor)
            for history in histories_of(tenant, debtor, by_debtor[debtor], paperless.get(debtor))
        ]

    return asyncio.run(read())


@app.command()
def worklist(
    tenant: Annotated[str, typer.Option(help="Tenant id")],
    segment: Annotated[list[str] | None, typer.Option(help="low, medium or high (repeat for more)")] = None,
    bucket: Annotated[list[str] | None, typer.Option(help="1-30, 31-60, 61-90 or default (repeat)")] = None,
    currency: Annotated[list[str] | None, typer.Option(help="ISO 4217 code (repeat)")] = None,
    collector: Annotated[list[str] | None, typer.Option(help="Who last worked the debtor (repeat)")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document instead of a table")] = False,
) -> None:
    """The tenant's debtors by expected recovery of the next action less its cost, as the scoring
    service's database (ARREARS_DATABASE_URL) holds them."""
    from contracts.money import format_major
    from services.runtime.process import open_resources
    from services.scoring import store
    from services.scoring.worklist import WorklistItem

    for value, allowed in (
        (segment, ("low", "medium", "high")),
        (bucket, ("1-30", "31-60", "61-90", "default")),
    ):
        if unknown := sorted(set(value or ()) - set(allowed)):
            raise typer.BadParameter(f"{', '.join(unknown)}: not one of {', '.join(allowed)}")

    async def run() -> list[WorklistItem]:
        async with open_resources(Settings()) as resources, resources.sessions() as session:
            return await store.worklist(
                session,
                tenant,
                segments=segment or (),
                buckets=bucket or (),
                currencies=currency or (),
                collectors=collector or (),
                limit=limit,
            )

    items = asyncio.run(run())
    if as_json:
        rows = [
            {
                "rank": i.rank,
                "debtor_id": i.candidate.debtor_id,
                "currency": i.candidate.currency,
                "segment": i.candidate.segment,
                "bucket": i.candidate.bucket,
                "action": i.candidate.action,
                "amount_at_stake_minor": i.candidate.amount_at_stake_minor,
                "expected_value_minor": i.expected_value_minor,
                "collector": i.candidate.collector,
                "reasons": list(i.candidate.reasons),
            }
            for i in items
        ]
        typer.echo(json.dumps({"items": rows}, indent=2))
        return
    for i in items:
        c = i.candidate
        typer.echo(
            f"{i.rank:>4}  {c.debtor_id:<20} {c.segment:<6} {c.bucket:<7} {c.action:<12}"
            f" {c.currency} {format_major(c.amount_at_stake_minor, c.currency):>14}"
            f"  value {format_major(i.expected_value_minor, c.currency):>14}  {c.collector or '-'}"
        )
    if not items:
        typer.echo(f"{tenant}: nothing on the worklist")
