"""One attempt at one delivery: claim it, render, sign, send, log, decide what next.

Every path ends in a logged attempt and a state: SUCCEEDED, RETRYING (with the time
of the next attempt), FAILED, or HELD when the web hook is disabled.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from gateway.batching import Batcher
from gateway.delivery import signing
from gateway.delivery.render import RenderedRequest, render_request
from gateway.delivery.safety import UnsafeTarget, check_target
from gateway.domain.events import NormalizedEvent
from gateway.domain.webhooks import (
    AttemptRecord,
    DeliveryRecord,
    DeliveryStatus,
    WebhookConfig,
    is_success,
    next_retry_delay,
    sample_event,
)
from gateway.ids import IdGenerator
from gateway.settings import Settings
from gateway.storage import deliveries as store
from gateway.storage import events as event_store
from gateway.storage.db import begin_write

log = logging.getLogger(__name__)

EXCERPT_CHARS = 500
OnAttempt = Callable[[AttemptRecord], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Outcome:
    status: DeliveryStatus | None  # None: nothing was done (not due, or held elsewhere)
    retry_in: float | None = None


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def _excerpt(response: httpx.Response) -> str | None:
    """The start of a response's body as text, for the attempt log."""
    start = response.content[: EXCERPT_CHARS * 4]  # enough bytes for the characters
    try:
        text = start.decode(response.charset_encoding or "utf-8", "replace")
    except LookupError:  # a charset Python does not know
        text = start.decode("utf-8", "replace")
    return text[:EXCERPT_CHARS] or None


def _as_sent(request: RenderedRequest) -> RenderedRequest:
    """The request with its URL as the aiohttp transport will put it on the wire.

    aiohttp re-quotes URLs with yarl (``%40`` becomes ``@`` in a query); a GET is signed
    over its query string as sent, so normalize first and sign what goes out.
    """
    if request.method != "GET":
        return request
    url = URL(request.url)
    return replace(request, url=str(url), signed_content=url.raw_query_string.encode())


@dataclass(frozen=True, slots=True)
class _Claimed:
    delivery: DeliveryRecord
    webhook: WebhookConfig | None
    event: NormalizedEvent | None


@dataclass(frozen=True, slots=True)
class _Called:
    attempt: AttemptRecord
    succeeded: bool
    retry_in: float | None  # what the schedule says, should it have failed


class DeliverySender:
    """Attempts deliveries. Claims and results of concurrent attempts are written in
    shared transactions (group commit): two commits per delivery capped a worker at
    ~110-170 deliveries/s here."""

    def __init__(
        self,
        engine: AsyncEngine,
        ids: IdGenerator,
        http: httpx.AsyncClient,
        settings: Settings,
        on_attempt: OnAttempt | None = None,
    ) -> None:
        self._engine = engine
        self._ids = ids
        self._http = http
        self._settings = settings
        self._on_attempt = on_attempt
        self._lease_seconds = settings.delivery_timeout_seconds + 5
        self._timeout = httpx.Timeout(settings.delivery_timeout_seconds).as_dict()
        self._claims: Batcher[int, _Claimed | None] = Batcher(self._claim, name="claims")
        self._results: Batcher[_Called, tuple[DeliveryStatus, float | None]] = Batcher(
            self._finish, name="attempt-results"
        )

    async def close(self) -> None:
        await self._claims.close()
        await self._results.close()

    async def attempt(self, delivery_id: int) -> Outcome:
        claimed = await self._claims.submit(delivery_id)
        if claimed is None or claimed.webhook is None:
            return Outcome(None)  # not due, held by another worker, or deleted
        delivery, webhook, event = claimed.delivery, claimed.webhook, claimed.event
        if not webhook.enabled:
            # Disabled: keep it for when the web hook is enabled again.
            async with begin_write(self._engine) as connection:
                await store.set_delivery_status(
                    connection,
                    delivery_id=delivery_id,
                    status=DeliveryStatus.HELD,
                    now=datetime.now(UTC),
                )
            return Outcome(DeliveryStatus.HELD)
        called = await self._call(delivery, webhook, event)
        status, retry_in = await self._results.submit(called)
        if not called.succeeded:
            log.info(
                "delivery %s attempt %d to %s: %s (%s)",
                delivery.id,
                called.attempt.number,
                called.attempt.url,
                called.attempt.error,
                status.value,
            )
        if self._on_attempt is not None:
            try:
                await self._on_attempt(called.attempt)
            except Exception:
                log.exception("publishing attempt %s failed", called.attempt.id)
        return Outcome(status, retry_in)

    async def _claim(self, delivery_ids: list[int]) -> list[_Claimed | None]:
        """Claim a batch in one short write, then read what the claimed need."""
        now = datetime.now(UTC)
        async with begin_write(self._engine) as connection:
            records = await store.claim_deliveries(
                connection,
                delivery_ids=sorted(set(delivery_ids)),
                now=now,
                lease_seconds=self._lease_seconds,
            )
        claimed: dict[int, _Claimed] = {}
        if records:
            async with self._engine.connect() as connection:
                webhooks = await store.get_webhooks(
                    connection, webhook_ids=sorted({r.webhook_id for r in records})
                )
                events: dict[int, NormalizedEvent] = {}
                for account_id in {r.account_id for r in records}:
                    found = await event_store.get_events(
                        connection,
                        account_id=account_id,
                        ids=[
                            r.event_id
                            for r in records
                            if r.account_id == account_id and r.event_id is not None
                        ],
                    )
                    events.update((stored.id, stored.event) for stored in found)
            for record in records:
                event = (
                    sample_event(record.created_at)
                    if record.event_id is None
                    else events.get(record.event_id)
                )
                claimed[record.id] = _Claimed(record, webhooks.get(record.webhook_id), event)
        # One claim per delivery: the same id twice in a batch is sent once.
        return [claimed.pop(delivery_id, None) for delivery_id in delivery_ids]

    async def _call(
        self, delivery: DeliveryRecord, webhook: WebhookConfig, event: NormalizedEvent | None
    ) -> _Called:
        """Make the HTTP call; whatever happens, an attempt to log."""
        now = datetime.now(UTC)
        request: RenderedRequest | None = None
        status_code: int | None = None
        error: str | None = None
        excerpt: str | None = None
        retry_after: float | None = None
        started = time.perf_counter()
        try:
            if event is None:
                raise LookupError("the event is no longer stored")
            request = _as_sent(render_request(webhook, delivery.event_id or 0, event))
            await check_target(request.url, allow_private=self._settings.allow_private_webhooks)
            headers = signing.headers(
                webhook.secret, str(delivery.id), int(time.time()), request.signed_content
            )
            headers["user-agent"] = "email-event-gateway"
            if request.content_type:
                headers["content-type"] = request.content_type
            # The request made here and sent as it is: the client's build_request
            # merges default headers, cookies and a base URL we do not use, and cost
            # a quarter of a bare send loop's rate.
            response = await self._http.send(
                httpx.Request(
                    request.method,
                    request.url,
                    content=request.body or None,
                    headers=headers,
                    extensions={"timeout": self._timeout},
                )
            )
            status_code = response.status_code
            excerpt = _excerpt(response)
            retry_after = retry_after_seconds(response.headers.get("retry-after"), now)
        except (httpx.HTTPError, UnsafeTarget, LookupError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        duration_ms = (time.perf_counter() - started) * 1000
        succeeded = status_code is not None and is_success(status_code, webhook.format)
        if status_code is not None and not succeeded:
            error = f"HTTP {status_code} is not a success for the {webhook.format.value} format"
        number = delivery.attempts + 1
        attempt = AttemptRecord(
            id=self._ids.next_id(),
            delivery_id=delivery.id,
            webhook_id=webhook.id,
            account_id=delivery.account_id,
            number=number,
            at=datetime.now(UTC),
            method=request.method if request else webhook.method.value,
            url=request.url if request else webhook.url,
            status_code=status_code,
            duration_ms=round(duration_ms, 3),
            error=error,
            response_excerpt=excerpt,
            request_body=request.body.decode("utf-8", "replace") if request else "",
        )
        retry_in = None
        if not succeeded:
            retry_in = next_retry_delay(number, self._settings.retry_delays, retry_after)
        return _Called(attempt, succeeded, retry_in)

    async def _finish(self, batch: list[_Called]) -> list[tuple[DeliveryStatus, float | None]]:
        """Log a batch of calls, count them against their web hooks, settle each."""
        now = datetime.now(UTC)
        outcomes: dict[int, list[bool]] = {}
        for called in batch:
            outcomes.setdefault(called.attempt.webhook_id, []).append(called.succeeded)
        settled: list[tuple[DeliveryStatus, float | None]] = []
        async with begin_write(self._engine) as connection:
            disabled = await store.count_calls(
                connection,
                outcomes=outcomes,
                disable_after=self._settings.disable_after,
                now=now,
            )
            finished = []
            for called in batch:
                status, retry_in = _settle(called, disabled)
                settled.append((status, retry_in))
                finished.append(
                    store.FinishedAttempt(
                        called.attempt,
                        status,
                        None
                        if retry_in is None
                        else called.attempt.at + timedelta(seconds=retry_in),
                    )
                )
            await store.finish_attempts(connection, finished=finished)
        return settled


def _settle(called: _Called, disabled: set[int]) -> tuple[DeliveryStatus, float | None]:
    if called.succeeded:
        return DeliveryStatus.SUCCEEDED, None
    if called.attempt.webhook_id in disabled:
        return DeliveryStatus.HELD, None
    if called.retry_in is None:
        return DeliveryStatus.FAILED, None
    return DeliveryStatus.RETRYING, called.retry_in
