"""API keys scoped to one tenant. Only a SHA-256 of the secret is stored; the key is shown once.

A key reads `ark_<key id>_<secret>`; the key id finds the row, the secret is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.runtime.tables import RuntimeTables

PREFIX = "ark"
_KEY = re.compile(r"ark_([0-9a-f]{1,64})_([A-Za-z0-9_-]{1,256})")
"""What a key can be: anything else is refused before a query (a NUL, say, no database takes)."""


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    name: str
    role: str


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


async def create_key(
    session: AsyncSession,
    tables: RuntimeTables | Sequence[RuntimeTables],
    tenant_id: str,
    name: str,
    role: str,
) -> str:
    """A new key, valid for the services whose tables are given (a collector's key opens the
    dunning API and the notifier's task queue)."""
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    for each in [tables] if isinstance(tables, RuntimeTables) else tables:
        await session.execute(
            insert(each.api_keys).values(
                key_id=key_id, tenant_id=tenant_id, principal=name, role=role, secret_sha256=_digest(secret)
            )
        )
    return f"{PREFIX}_{key_id}_{secret}"


async def verify_key(session: AsyncSession, tables: RuntimeTables, presented: str) -> Principal | None:
    match = _KEY.fullmatch(presented)
    if match is None:
        return None
    key_id, secret = match.groups()
    keys = tables.api_keys
    row = (
        await session.execute(
            select(keys.c.tenant_id, keys.c.principal, keys.c.role, keys.c.secret_sha256).where(
                keys.c.key_id == key_id, keys.c.revoked_at.is_(None)
            )
        )
    ).first()
    if row is None or not hmac.compare_digest(row.secret_sha256, _digest(secret)):
        return None
    return Principal(row.tenant_id, row.principal, row.role)
