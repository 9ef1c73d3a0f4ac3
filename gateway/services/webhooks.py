"""Web hooks: their configuration, and the changes that act on their deliveries.

A change is made in one transaction with the web hook's row locked, so that a worker
disabling it meanwhile waits (or went first): enabling it, or giving it a new URL or
parameters, always releases what it held, and the jobs for those go out at once.
Rotating the secret keeps the previous one signing for a grace period. The outbox is
in ``services.outbox``; the log of calls and redelivery in ``services.deliveries``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.delivery import render, signing
from gateway.delivery.safety import UnsafeTarget, check_target
from gateway.domain.events import EventType
from gateway.domain.webhooks import HttpMethod, WebhookConfig, WebhookFormat, custom_headers
from gateway.ids import IdGenerator
from gateway.services.accounts import InputError
from gateway.services.outbox import DeliveryQueue
from gateway.services.reads import bounded
from gateway.settings import Settings
from gateway.storage import outbox
from gateway.storage import webhooks as store
from gateway.storage.db import begin_write

log = logging.getLogger(__name__)

MAX_BACKFILL_DAYS = 30
DEFAULT_GRACE_HOURS = 24.0
MAX_GRACE_HOURS = 30 * 24.0
# What _checked judges: when another change of these lands between the check and the
# write, the check is made again.
_CHECKED = ("url", "method", "format", "parameters")


@dataclass(frozen=True, slots=True)
class WebhookChanges:
    """What createWebhook / updateWebhook were given; None = not given."""

    url: str | None = None
    method: HttpMethod | None = None
    events: Sequence[EventType] | None = None
    format: WebhookFormat | None = None
    parameters: dict[str, str] | None = None
    tags: Sequence[str] | None = None
    templates: Sequence[str] | None = None
    secret: str | None = None
    backfill_days: int | None = None
    headers: Sequence[tuple[str, str]] | None = None


class WebhookService:
    def __init__(
        self, engine: AsyncEngine, ids: IdGenerator, queue: DeliveryQueue, settings: Settings
    ) -> None:
        self._engine = engine
        self._ids = ids
        self._queue = queue
        self._settings = settings

    def _reading(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A connection for callers' reads, under GATEWAY_QUERY_TIMEOUT_SECONDS."""
        return bounded(self._engine, self._settings.query_timeout_seconds)

    # -- configuration -------------------------------------------------------------

    async def create(self, account_id: int, changes: WebhookChanges) -> tuple[WebhookConfig, str]:
        """A new web hook and its signing secret (shown once); its backfill is enqueued."""
        if changes.url is None:
            raise InputError("url", "is required")
        if not changes.events:
            raise InputError("events", "name at least one event type")
        now = datetime.now(UTC)
        secret = changes.secret or signing.new_secret()
        config = await self._checked(
            WebhookConfig(
                id=self._ids.next_id(),
                account_id=account_id,
                url=changes.url,
                method=changes.method or HttpMethod.POST,
                events=frozenset(changes.events),
                format=changes.format or WebhookFormat.GATEWAY,
                parameters=changes.parameters,
                tags=tuple(changes.tags or ()),
                templates=tuple(changes.templates or ()),
                secret=secret,
                enabled=True,
                disabled_reason=None,
                consecutive_failures=0,
                backfill_days=7 if changes.backfill_days is None else changes.backfill_days,
                created_at=now,
                updated_at=now,
                headers=tuple(changes.headers or ()),
            )
        )
        async with begin_write(self._engine) as connection:
            await store.lock_account_webhooks(connection, account_id)
            await store.add_webhook(connection, config)
        if config.backfill_days > 0:
            await self._queue.enqueue_backfill(config.id)
        return config, secret

    async def update(
        self, account_id: int, webhook_id: int, changes: WebhookChanges
    ) -> WebhookConfig | None:
        """Change the fields given, and only those. A new URL or new parameters enable
        a disabled web hook and send what it held (JangoMail's rule), and what waits
        for a retry, at once."""
        if changes.events is not None and not changes.events:
            raise InputError("events", "name at least one event type")
        for _ in range(5):
            async with self._engine.connect() as connection:
                seen = await store.get_webhook(
                    connection, webhook_id=webhook_id, account_id=account_id
                )
            if seen is None:
                return None
            # Checked outside the transaction: it may resolve a name (DNS).
            wanted = await self._checked(_apply(seen, changes))
            async with begin_write(self._engine) as connection:
                await store.lock_account_webhooks(connection, account_id)
                current = await store.lock_webhook(
                    connection, webhook_id=webhook_id, account_id=account_id
                )
                if current is None:
                    return None
                if any(getattr(current, name) != getattr(seen, name) for name in _CHECKED):
                    continue  # changed meanwhile: check the result again
                values = _changed_values(current, wanted, changes)
                if "secret" in values:
                    # A secret given outright replaces the current one at once: a
                    # rotation's grace period (rotate_secret) ends with it.
                    values |= {"previous_secret": None, "previous_secret_until": None}
                new_target = "url" in values or "parameters" in values
                if new_target:
                    # The old target's failures say nothing of the new one.
                    values["consecutive_failures"] = 0
                enable = not current.enabled and new_target
                released = await self._write(connection, current, values, enable=enable)
                if new_target:
                    # Retries were waiting out the old target's trouble: try the new one.
                    released += await outbox.retry_now(
                        connection, webhook_id=webhook_id, now=datetime.now(UTC)
                    )
                updated = await store.get_webhook(connection, webhook_id=webhook_id)
            if released:
                await self._queue.deliver_now({webhook_id: self._ids.next_id()})
            return updated
        raise InputError("id", "the web hook is being changed by someone else; try again")

    async def rotate_secret(
        self, account_id: int, webhook_id: int, grace_hours: float = DEFAULT_GRACE_HOURS
    ) -> tuple[str, datetime | None] | None:
        """A new signing secret (shown once), and until when the current one keeps
        signing beside it (None: it stops at once). A secret older than the current one
        stops signing now: only two ever sign."""
        if not 0 <= grace_hours <= MAX_GRACE_HOURS:
            raise InputError("graceHours", f"must be between 0 and {MAX_GRACE_HOURS:g}")
        secret = signing.new_secret()
        now = datetime.now(UTC)
        until = now + timedelta(hours=grace_hours) if grace_hours > 0 else None
        async with begin_write(self._engine) as connection:
            current = await store.lock_webhook(
                connection, webhook_id=webhook_id, account_id=account_id
            )
            if current is None:
                return None
            await store.update_webhook(
                connection,
                webhook_id=webhook_id,
                values={
                    "secret": secret,
                    "previous_secret": None if until is None else current.secret,
                    "previous_secret_until": until,
                    "updated_at": now,
                },
            )
        return secret, until

    async def enable(self, account_id: int, webhook_id: int) -> WebhookConfig | None:
        """Enable the web hook (enabled or not) and send what it held, at once."""
        async with begin_write(self._engine) as connection:
            await store.lock_account_webhooks(connection, account_id)
            current = await store.lock_webhook(
                connection, webhook_id=webhook_id, account_id=account_id
            )
            if current is None:
                return None
            released = await self._write(connection, current, {}, enable=True)
            updated = await store.get_webhook(connection, webhook_id=webhook_id)
        if released:
            await self._queue.deliver_now({webhook_id: self._ids.next_id()})
        return updated

    async def _write(
        self,
        connection: AsyncConnection,
        current: WebhookConfig,
        values: dict[str, Any],
        *,
        enable: bool,
    ) -> int:
        """Write ``values`` to the locked web hook. Enabling it releases what it held,
        under the account's web hook lock, so no group commit holds more meanwhile.
        Returns how many deliveries were released."""
        now = datetime.now(UTC)
        if enable:
            values = {**values, "enabled": True, "disabled_reason": None}
            values["consecutive_failures"] = 0
        if values:
            await store.update_webhook(
                connection, webhook_id=current.id, values={**values, "updated_at": now}
            )
        if not enable:
            return 0
        return await outbox.release_held(connection, webhook_id=current.id, now=now)

    async def delete(self, account_id: int, webhook_id: int) -> bool:
        async with begin_write(self._engine) as connection:
            # An in-flight ingest may be writing deliveries for it: let it finish, or
            # its whole batch fails on the foreign key.
            await store.lock_account_webhooks(connection, account_id)
            return await store.delete_webhook(
                connection, account_id=account_id, webhook_id=webhook_id
            )

    async def all(self, account_id: int) -> list[WebhookConfig]:
        async with self._reading() as connection:
            return await store.list_webhooks(connection, account_ids=[account_id])

    async def get(self, account_id: int, webhook_id: int) -> WebhookConfig | None:
        async with self._reading() as connection:
            return await store.get_webhook(connection, webhook_id=webhook_id, account_id=account_id)

    async def _checked(self, config: WebhookConfig) -> WebhookConfig:
        """The configuration, or InputError naming the first field that is wrong."""
        try:
            await check_target(config.url, allow_private=self._settings.allow_private_webhooks)
        except UnsafeTarget as problem:
            raise InputError("url", str(problem)) from None
        if config.method is HttpMethod.GET and config.format in {
            WebhookFormat.BREVO,
            WebhookFormat.SMTPETER,
        }:
            raise InputError("method", f"the {config.format.value} format is POSTed as JSON")
        if config.parameters is not None:
            if config.format in {WebhookFormat.BREVO, WebhookFormat.SMTPETER}:
                raise InputError(
                    "parameters",
                    f"the {config.format.value} format has that provider's own field names; "
                    "parameters apply to the JANGOMAIL and GATEWAY formats",
                )
            resolved: dict[str, str] = {}
            for field, name in config.parameters.items():
                known = render.resolve_field(config.format, field)
                if known is None:
                    raise InputError("parameters", f"unknown field {field!r}")
                resolved[known] = name.strip()
            config = replace(config, parameters=resolved)
        try:
            config = replace(config, headers=custom_headers(config.headers))
        except ValueError as problem:
            raise InputError("headers", str(problem)) from None
        if not 0 <= config.backfill_days <= MAX_BACKFILL_DAYS:
            raise InputError("backfillDays", f"must be between 0 and {MAX_BACKFILL_DAYS}")
        try:
            signing.secret_key(config.secret)
        except ValueError:
            raise InputError(
                "secret", "must be 'whsec_' followed by at least 16 bytes in base64"
            ) from None
        return config


def _apply(current: WebhookConfig, changes: WebhookChanges) -> WebhookConfig:
    """``current`` with the given fields changed."""
    return replace(
        current,
        url=current.url if changes.url is None else changes.url,
        method=changes.method or current.method,
        events=current.events if changes.events is None else frozenset(changes.events),
        format=changes.format or current.format,
        parameters=current.parameters if changes.parameters is None else changes.parameters,
        tags=current.tags if changes.tags is None else tuple(changes.tags),
        templates=current.templates if changes.templates is None else tuple(changes.templates),
        secret=changes.secret or current.secret,
        backfill_days=current.backfill_days
        if changes.backfill_days is None
        else changes.backfill_days,
        headers=current.headers if changes.headers is None else tuple(changes.headers),
    )


def _changed_values(
    current: WebhookConfig, wanted: WebhookConfig, changes: WebhookChanges
) -> dict[str, Any]:
    """The columns to write: the fields given that differ from the stored ones, and
    the parameters when a new format resolved them anew."""
    given = {name for name in _FIELDS if getattr(changes, name) is not None}
    new, old = store.webhook_values(wanted), store.webhook_values(current)
    if wanted.parameters != current.parameters:
        given.add("parameters")
    return {name: new[name] for name in sorted(given) if new[name] != old[name]}


_FIELDS = (
    "url",
    "method",
    "events",
    "format",
    "parameters",
    "tags",
    "templates",
    "secret",
    "backfill_days",
    "headers",
)
