"""Accounts, API keys and ingest sources.

Secrets arrive here already hashed: storage never sees a key or token in clear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.storage.models import Account, ApiKey, IngestSource

accounts_table = Account.__table__  # type: ignore[attr-defined]
keys_table = ApiKey.__table__  # type: ignore[attr-defined]
sources_table = IngestSource.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class SourceRecord:
    id: int
    account_id: int
    provider: str
    name: str
    timezone: str
    created_at: datetime
    parameters: dict[str, str] = field(default_factory=dict)
    basic_username: str | None = None
    basic_password_hash: str | None = None


async def count_accounts(connection: AsyncConnection) -> int:
    return int(
        (await connection.execute(select(func.count()).select_from(accounts_table))).scalar_one()
    )


async def account_id_by_name(connection: AsyncConnection, name: str) -> int | None:
    result = await connection.execute(
        select(accounts_table.c.id).where(accounts_table.c.name == name)
    )
    value = result.scalar_one_or_none()
    return None if value is None else int(value)


async def create_account(
    connection: AsyncConnection, *, account_id: int, name: str, now: datetime
) -> None:
    await connection.execute(
        insert(accounts_table).values(id=account_id, name=name, created_at=now)
    )


async def add_api_key(
    connection: AsyncConnection,
    *,
    key_id: int,
    account_id: int,
    key_hash: str,
    prefix: str,
    now: datetime,
) -> None:
    await connection.execute(
        insert(keys_table).values(
            id=key_id, account_id=account_id, key_hash=key_hash, prefix=prefix, created_at=now
        )
    )


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An API key as it can be shown again: never the key, only its first characters."""

    id: int
    prefix: str
    created_at: datetime


async def list_api_keys(connection: AsyncConnection, *, account_id: int) -> list[KeyRecord]:
    result = await connection.execute(
        select(keys_table.c.id, keys_table.c.prefix, keys_table.c.created_at)
        .where(keys_table.c.account_id == account_id)
        .order_by(keys_table.c.id)
    )
    return [KeyRecord(row.id, row.prefix, row.created_at) for row in result]


async def delete_api_key(connection: AsyncConnection, *, account_id: int, key_id: int) -> bool:
    result = await connection.execute(
        delete(keys_table).where(keys_table.c.account_id == account_id, keys_table.c.id == key_id)
    )
    return bool(result.rowcount)


async def account_id_for_key(connection: AsyncConnection, key_hash: str) -> int | None:
    result = await connection.execute(
        select(keys_table.c.account_id).where(keys_table.c.key_hash == key_hash)
    )
    value = result.scalar_one_or_none()
    return None if value is None else int(value)


def _source(row: RowMapping) -> SourceRecord:
    return SourceRecord(
        id=row["id"],
        account_id=row["account_id"],
        provider=row["provider"],
        name=row["name"],
        timezone=row["timezone"],
        created_at=row["created_at"],
        parameters=orjson.loads(row["parameters"]),
        basic_username=row["basic_username"],
        basic_password_hash=row["basic_password_hash"],
    )


async def add_source(connection: AsyncConnection, *, source: SourceRecord, token_hash: str) -> None:
    await connection.execute(
        insert(sources_table).values(
            id=source.id,
            account_id=source.account_id,
            provider=source.provider,
            name=source.name,
            token_hash=token_hash,
            timezone=source.timezone,
            parameters=orjson.dumps(source.parameters).decode(),
            created_at=source.created_at,
            basic_username=source.basic_username,
            basic_password_hash=source.basic_password_hash,
        )
    )


async def source_by_token(connection: AsyncConnection, token_hash: str) -> SourceRecord | None:
    result = await connection.execute(
        select(sources_table).where(sources_table.c.token_hash == token_hash)
    )
    row = result.mappings().one_or_none()
    return None if row is None else _source(row)


async def list_sources(connection: AsyncConnection, *, account_id: int) -> list[SourceRecord]:
    result = await connection.execute(
        select(sources_table)
        .where(sources_table.c.account_id == account_id)
        .order_by(sources_table.c.id)
    )
    return [_source(row) for row in result.mappings()]


async def get_source(
    connection: AsyncConnection, *, account_id: int, source_id: int
) -> SourceRecord | None:
    result = await connection.execute(
        select(sources_table).where(
            sources_table.c.account_id == account_id, sources_table.c.id == source_id
        )
    )
    row = result.mappings().one_or_none()
    return None if row is None else _source(row)


async def update_source(
    connection: AsyncConnection, *, account_id: int, source_id: int, changes: dict[str, Any]
) -> bool:
    """Apply ``changes`` (name, timezone, parameters, basic_username,
    basic_password_hash); False if there is no such source."""
    values = dict(changes)
    if "parameters" in values:
        values["parameters"] = orjson.dumps(values["parameters"]).decode()
    result = await connection.execute(
        update(sources_table)
        .where(sources_table.c.account_id == account_id, sources_table.c.id == source_id)
        .values(**values)
    )
    return bool(result.rowcount)


async def delete_source(connection: AsyncConnection, *, account_id: int, source_id: int) -> bool:
    result = await connection.execute(
        delete(sources_table).where(
            sources_table.c.account_id == account_id, sources_table.c.id == source_id
        )
    )
    return bool(result.rowcount)
