"""Accounts, their API keys and ingest sources: secrets made here, stored hashed."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cachetools import TTLCache
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.domain.events import Provider
from gateway.ids import IdGenerator
from gateway.providers import registry
from gateway.services.reads import bounded
from gateway.storage import accounts as store
from gateway.storage.accounts import KeyRecord, SourceRecord
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


# A password is chosen by a person, so unlike keys and tokens it is hashed slowly
# (scrypt, about 16 MiB and tens of milliseconds a try), with a salt of its own.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64) of ``password``."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    encoded = [base64.b64encode(part).decode() for part in (salt, digest)]
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${encoded[0]}${encoded[1]}"


def password_matches(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        computed = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, binascii.Error):
        return False
    return scheme == "scrypt" and hmac.compare_digest(computed, expected)


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """HTTP Basic credentials an ingest source requires (Brevo sends them from the
    user:password@ part of the web hook URL configured there)."""

    username: str
    password: str


@dataclass(frozen=True, slots=True)
class CreatedAccount:
    account_id: int
    name: str
    api_key: str
    ingest_tokens: dict[str, str]


class AccountService:
    """Creates accounts and sources and answers "whose key/token is this?"."""

    def __init__(
        self,
        engine: AsyncEngine,
        ids: IdGenerator,
        *,
        cache_seconds: float,
        cache_size: int,
        read_timeout: float = 10.0,
    ) -> None:
        self._engine = engine
        self._ids = ids
        self._read_timeout = read_timeout  # of the account's own lists (reads.bounded)
        # Each cache keeps at most ``cache_size`` entries, each for ``cache_seconds``:
        # misses are cached too (a provider retrying with a deleted token), so a stream
        # of made-up tokens must push out old entries, not grow the process.
        # token hash -> source. Ingest looks its source up on every request; a short
        # cache keeps that off the database. Local changes evict.
        # (A 1-tuple, so that a cached miss is told apart from nothing cached.)
        self._sources: Lookups[str, SourceRecord | None] = Lookups(cache_size, cache_seconds)
        # (source id, password hash, SHA-256 of the credentials) -> True. A provider
        # sends the same ones with every event; scrypt runs once per cache period.
        self._verified: TTLCache[tuple[int, str, str], bool] = _cache(cache_size, cache_seconds)
        # Wrong passwords are not cached: at most two scrypt runs at a time, in threads,
        # however many bad requests arrive.
        self._hashing = asyncio.Semaphore(2)
        # API key hash -> account id.
        self._keys: Lookups[str, int | None] = Lookups(cache_size, cache_seconds)

    def cache_sizes(self) -> dict[str, int]:
        """Entries held by each cache (for /metrics and tests)."""
        return {
            "sources": len(self._sources),
            "api_keys": len(self._keys),
            "basic_auth": len(self._verified),
        }

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

    async def account_named(self, name: str) -> int | None:
        """The id of the account called ``name``, if there is one."""
        async with self._engine.connect() as connection:
            return await store.account_id_by_name(connection, name.strip())

    async def create_api_key(self, account_id: int) -> tuple[KeyRecord, str]:
        """Another key for the account (to rotate: create, switch, revoke the old)."""
        api_key = new_secret("egw_")
        record = KeyRecord(self._ids.next_id(), api_key[:8], datetime.now(UTC))
        async with begin_write(self._engine) as connection:
            await store.add_api_key(
                connection,
                key_id=record.id,
                account_id=account_id,
                key_hash=hash_secret(api_key),
                prefix=record.prefix,
                now=record.created_at,
            )
        return record, api_key

    async def list_api_keys(self, account_id: int) -> list[KeyRecord]:
        async with bounded(self._engine, self._read_timeout) as connection:
            return await store.list_api_keys(connection, account_id=account_id)

    async def revoke_api_key(self, account_id: int, key_id: int) -> bool:
        """Delete a key; False if the account has no such key. The last key stays: an
        account without one could never be reached again. Other replicas may accept a
        revoked key for up to GATEWAY_SOURCE_CACHE_SECONDS."""
        async with begin_write(self._engine) as connection:
            keys = await store.list_api_keys(connection, account_id=account_id)
            if key_id not in {key.id for key in keys}:
                return False
            if len(keys) == 1:
                raise InputError("id", "this is the account's last key: create another first")
            await store.delete_api_key(connection, account_id=account_id, key_id=key_id)
        self._keys.clear()
        return True

    async def count_accounts(self) -> int:
        async with self._engine.connect() as connection:
            return await store.count_accounts(connection)

    async def account_for_api_key(self, api_key: str) -> int | None:
        key_hash = hash_secret(api_key)

        async def lookup() -> int | None:
            async with self._engine.connect() as connection:
                return await store.account_id_for_key(connection, key_hash)

        return await self._keys.get(key_hash, lookup)

    async def source_for_token(self, token: str) -> SourceRecord | None:
        token_hash = hash_secret(token)

        async def lookup() -> SourceRecord | None:
            async with self._engine.connect() as connection:
                return await store.source_by_token(connection, token_hash)

        return await self._sources.get(token_hash, lookup)

    async def basic_auth_accepted(
        self, source: SourceRecord, credentials: tuple[str, str] | None
    ) -> bool:
        """Whether a request's Basic (username, password) satisfies ``source``; True
        when the source requires no credentials."""
        if source.basic_username is None or source.basic_password_hash is None:
            return True
        if credentials is None:
            return False
        username, password = credentials
        if not hmac.compare_digest(username.encode(), source.basic_username.encode()):
            return False
        key = (source.id, source.basic_password_hash, hash_secret(f"{username}:{password}"))
        if self._verified.get(key, False):
            return True
        async with self._hashing:
            matches = await asyncio.to_thread(
                password_matches, password, source.basic_password_hash
            )
        if matches:
            self._verified[key] = True
        return matches

    async def create_source(
        self,
        account_id: int,
        *,
        provider: Provider,
        name: str,
        timezone: str | None,
        parameters: dict[str, str] | None,
        basic_auth: BasicAuth | None = None,
    ) -> tuple[SourceRecord, str]:
        """A new ingest source and its token (shown once)."""
        token = new_secret("src_")
        username, password_hash = await _checked_basic_auth(provider, basic_auth)
        source = SourceRecord(
            id=self._ids.next_id(),
            account_id=account_id,
            provider=provider.value,
            name=_checked_name(name),
            timezone=_checked_timezone(timezone or "UTC"),
            created_at=datetime.now(UTC),
            parameters=_checked_parameters(provider, parameters or {}),
            basic_username=username,
            basic_password_hash=password_hash,
        )
        async with begin_write(self._engine) as connection:
            await store.add_source(connection, source=source, token_hash=hash_secret(token))
        return source, token

    async def list_sources(self, account_id: int) -> list[SourceRecord]:
        async with bounded(self._engine, self._read_timeout) as connection:
            return await store.list_sources(connection, account_id=account_id)

    async def update_source(
        self,
        account_id: int,
        source_id: int,
        *,
        name: str | None = None,
        timezone: str | None = None,
        parameters: dict[str, str] | None = None,
        basic_auth: BasicAuth | None = None,
        remove_basic_auth: bool = False,
    ) -> SourceRecord | None:
        """Change what is given; ``basic_auth`` replaces the credentials,
        ``remove_basic_auth`` drops them."""
        if basic_auth is not None and remove_basic_auth:
            raise InputError("basicAuth", "give new credentials or remove them, not both")
        username: str | None = None
        password_hash: str | None = None
        if basic_auth is not None:
            # Hashed before the write lock is taken: scrypt takes a while.
            async with self._engine.connect() as connection:
                found = await store.get_source(
                    connection, account_id=account_id, source_id=source_id
                )
            if found is None:
                return None
            username, password_hash = await _checked_basic_auth(
                Provider(found.provider), basic_auth
            )
        async with begin_write(self._engine) as connection:
            current = await store.get_source(connection, account_id=account_id, source_id=source_id)
            if current is None:
                return None
            if basic_auth is None and not remove_basic_auth:
                username, password_hash = current.basic_username, current.basic_password_hash
            changed = replace(
                current,
                name=current.name if name is None else _checked_name(name),
                timezone=current.timezone if timezone is None else _checked_timezone(timezone),
                parameters=current.parameters
                if parameters is None
                else _checked_parameters(Provider(current.provider), parameters),
                basic_username=username,
                basic_password_hash=password_hash,
            )
            await store.update_source(
                connection,
                account_id=account_id,
                source_id=source_id,
                changes={
                    "name": changed.name,
                    "timezone": changed.timezone,
                    "parameters": changed.parameters,
                    "basic_username": changed.basic_username,
                    "basic_password_hash": changed.basic_password_hash,
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


def _cache(size: int, seconds: float) -> TTLCache[Any, Any]:
    return TTLCache(maxsize=max(size, 1), ttl=seconds)


K = TypeVar("K")
V = TypeVar("V")


class Lookups(Generic[K, V]):
    """A bounded cache of lookups (hits and misses alike), where concurrent misses of
    one key share one lookup: when an entry lapses under load, the requests waiting
    for it make one query, not one each (and the pool does not open a connection for
    each of them)."""

    def __init__(self, size: int, seconds: float) -> None:
        # (A 1-tuple, so that a cached None is told apart from nothing cached.)
        self._cache: TTLCache[K, tuple[V]] = _cache(size, seconds)
        self._running: dict[K, asyncio.Future[V]] = {}  # at most one per waiting caller
        self._generation = 0  # a lookup that began before clear() is not kept

    def __len__(self) -> int:
        return len(self._cache)

    def clear(self) -> None:
        self._cache.clear()
        self._generation += 1

    async def get(self, key: K, lookup: Callable[[], Awaitable[V]]) -> V:
        cached = self._cache.get(key)
        if cached is not None:
            return cached[0]
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(self._look(key, lookup, self._generation))
            # Retrieved even if every caller has gone (no "never retrieved" warning).
            running.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._running[key] = running
        # A caller that is cancelled leaves the lookup running for the others.
        return await asyncio.shield(running)

    async def _look(self, key: K, lookup: Callable[[], Awaitable[V]], generation: int) -> V:
        try:
            value = await lookup()
        finally:
            del self._running[key]
        if generation == self._generation:
            self._cache[key] = (value,)
        return value


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


async def _checked_basic_auth(
    provider: Provider, basic_auth: BasicAuth | None
) -> tuple[str | None, str | None]:
    """(username, password hash) to store, or (None, None) for no credentials."""
    if basic_auth is None:
        return None, None
    if provider is not Provider.BREVO:
        raise InputError(
            "basicAuth",
            f"HTTP Basic credentials are for Brevo sources; {provider.value} sends none",
        )
    username = basic_auth.username.strip()
    if not username or len(username) > 200 or ":" in username:
        raise InputError("basicAuth.username", "must be 1 to 200 characters, without ':'")
    if not 12 <= len(basic_auth.password) <= 200:
        raise InputError("basicAuth.password", "must be 12 to 200 characters")
    return username, await asyncio.to_thread(hash_password, basic_auth.password)


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
