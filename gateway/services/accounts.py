"""Accounts, their API keys and ingest sources: secrets made here, stored hashed."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.domain.events import Provider
from gateway.ids import IdGenerator
from gateway.providers import registry
from gateway.storage import accounts as store
from gateway.storage.accounts import SourceRecord
from gateway.storage.db import begin_write


class InputError(ValueError):
    """A caller's input that cannot be accepted; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def hash_secret(secret: str) -> str:
    """SHA-256 of a key or token.

    They are 256-bit random values, so a fast hash is as safe as a slow one here
    (nothing to brute-force) and lets every request look its key up by index.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class CreatedAccount:
    account_id: int
    name: str
    api_key: str
    ingest_tokens: dict[str, str]


class AccountService:
    """Creates accounts and sources and answers "whose key/token is this?"."""

    def __init__(self, engine: AsyncEngine, ids: IdGenerator, *, cache_seconds: float) -> None:
        self._engine = engine
        self._ids = ids
        self._cache_seconds = cache_seconds
        # token hash -> (source, fetched at). Ingest looks its source up on every
        # request; a short cache keeps that off the database. Local changes evict.
        self._sources: dict[str, tuple[SourceRecord | None, float]] = {}
        self._keys: dict[str, tuple[int | None, float]] = {}

    async def create_account(self, name: str) -> CreatedAccount:
        """A new account with one API key and one ingest source per provider."""
        name = name.strip()
        if not name:
            raise InputError("name", "must not be blank")
        now = datetime.now(UTC)
        account_id = self._ids.next_id()
        api_key = new_secret("egw_")
        tokens: dict[str, str] = {}
        async with begin_write(self._engine) as connection:
            if await store.account_id_by_name(connection, name) is not None:
                raise InputError("name", f"an account named {name!r} exists already")
            await store.create_account(connection, account_id=account_id, name=name, now=now)
            await store.add_api_key(
                connection,
                key_id=self._ids.next_id(),
                account_id=account_id,
                key_hash=hash_secret(api_key),
                prefix=api_key[:8],
                now=now,
            )
            for provider in Provider:
                token = new_secret("src_")
                source = SourceRecord(
                    id=self._ids.next_id(),
                    account_id=account_id,
                    provider=provider.value,
                    name=provider.value.lower(),
                    timezone="UTC",
                    created_at=now,
                )
                await store.add_source(connection, source=source, token_hash=hash_secret(token))
                tokens[provider.value.lower()] = token
        return CreatedAccount(account_id, name, api_key, tokens)

    async def count_accounts(self) -> int:
        async with self._engine.connect() as connection:
            return await store.count_accounts(connection)

    async def account_for_api_key(self, api_key: str) -> int | None:
        key_hash = hash_secret(api_key)
        cached = self._keys.get(key_hash)
        if cached is not None and time.monotonic() - cached[1] < self._cache_seconds:
            return cached[0]
        async with self._engine.connect() as connection:
            account_id = await store.account_id_for_key(connection, key_hash)
        self._keys[key_hash] = (account_id, time.monotonic())
        return account_id

    async def source_for_token(self, token: str) -> SourceRecord | None:
        token_hash = hash_secret(token)
        cached = self._sources.get(token_hash)
        if cached is not None and time.monotonic() - cached[1] < self._cache_seconds:
            return cached[0]
        async with self._engine.connect() as connection:
            source = await store.source_by_token(connection, token_hash)
        self._sources[token_hash] = (source, time.monotonic())
        return source

    async def create_source(
        self,
        account_id: int,
        *,
        provider: Provider,
        name: str,
        timezone: str | None,
        parameters: dict[str, str] | None,
    ) -> tuple[SourceRecord, str]:
        """A new ingest source and its token (shown once)."""
        token = new_secret("src_")
        source = SourceRecord(
            id=self._ids.next_id(),
            account_id=account_id,
            provider=provider.value,
            name=_checked_name(name),
            timezone=_checked_timezone(timezone or "UTC"),
            created_at=datetime.now(UTC),
            parameters=_checked_parameters(provider, parameters or {}),
        )
        async with begin_write(self._engine) as connection:
            await store.add_source(connection, source=source, token_hash=hash_secret(token))
        return source, token

    async def list_sources(self, account_id: int) -> list[SourceRecord]:
        async with self._engine.connect() as connection:
            return await store.list_sources(connection, account_id=account_id)

    async def update_source(
        self,
        account_id: int,
        source_id: int,
        *,
        name: str | None = None,
        timezone: str | None = None,
        parameters: dict[str, str] | None = None,
    ) -> SourceRecord | None:
        async with begin_write(self._engine) as connection:
            current = await store.get_source(connection, account_id=account_id, source_id=source_id)
            if current is None:
                return None
            changed = replace(
                current,
                name=current.name if name is None else _checked_name(name),
                timezone=current.timezone if timezone is None else _checked_timezone(timezone),
                parameters=current.parameters
                if parameters is None
                else _checked_parameters(Provider(current.provider), parameters),
            )
            await store.update_source(
                connection,
                account_id=account_id,
                source_id=source_id,
                changes={
                    "name": changed.name,
                    "timezone": changed.timezone,
                    "parameters": changed.parameters,
                },
            )
        self._sources.clear()
        return changed

    async def delete_source(self, account_id: int, source_id: int) -> bool:
        async with begin_write(self._engine) as connection:
            deleted = await store.delete_source(
                connection, account_id=account_id, source_id=source_id
            )
        self._sources.clear()
        return deleted


def _checked_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise InputError("name", "must be 1 to 200 characters")
    return name


def _checked_timezone(timezone: str) -> str:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(
            "timezone", f"unknown time zone {timezone!r}: use an IANA name like 'America/New_York'"
        ) from None
    if timezone not in available_timezones() and timezone != "UTC":
        raise InputError("timezone", f"unknown time zone {timezone!r}")
    return timezone


def _checked_parameters(provider: Provider, parameters: dict[str, str]) -> dict[str, str]:
    """Field names resolved to gateway field names; names as given (blank = not sent)."""
    resolve = registry.field_resolver(provider)
    checked: dict[str, str] = {}
    for field, name in parameters.items():
        resolved = resolve(field)
        if resolved is None:
            raise InputError("parameters", f"unknown field {field!r} for {provider.value}")
        checked[resolved] = name.strip()
    return checked
