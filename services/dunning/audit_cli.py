"""`arrears audit`: recompute the debtors' hash-chained records from the database and name the first
entry of each chain that no longer matches what was recorded."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from services.runtime.settings import Settings

app = typer.Typer(help="The debtors' tamper-evident records.", no_args_is_help=True)


@app.command()
def verify(
    tenant: Annotated[str, typer.Option(help="Tenant id")],
    debtor: Annotated[list[str] | None, typer.Option(help="Only this debtor (repeatable)")] = None,
) -> None:
    """Recompute every chain of the tenant (or of --debtor) in keyset pages on one snapshot; exit 1
    naming the first changed entry of each broken chain, 0 with the count of entries checked."""
    from services.dunning.domain.audit import Break
    from services.dunning.record import verify_tenant
    from services.runtime.database import driver_connection
    from services.runtime.process import open_resources

    async def run() -> tuple[int, list[Break]]:
        async with open_resources(Settings()) as resources, resources.sessions() as session:
            connection = await driver_connection(session)
            await connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            try:
                return await verify_tenant(connection, tenant, debtor or ())
            finally:
                await session.rollback()

    checked, breaks = asyncio.run(run())
    for found in breaks:
        typer.echo(f"{tenant}: {found}")
    if breaks:
        typer.echo(f"{tenant}: {len(breaks)} broken chain(s); {checked} entries checked", err=True)
        raise typer.Exit(1)
    typer.echo(f"{tenant}: {checked} entries checked, every chain intact")
