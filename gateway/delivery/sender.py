"""One attempt at one delivery: claim it, render, sign, send, log, decide what next.

Every path ends in a logged attempt and a state: SUCCEEDED, RETRYING (with the time
of the next attempt), FAILED, or HELD when the web hook is disabled.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import aiohttp
import httpx
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from gateway import tracing
from gateway.batching import Batcher
from gateway.delivery import signing
from gateway.delivery.answers import describe_error, read_excerpt
from gateway.delivery.render import RenderedRequest, render_request
from gateway.delivery.safety import UnsafeTarget, check_before_call
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
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.storage import deliveries as store
from gateway.storage import delivery_runs as runs
from gateway.storage import events as event_store
from gateway.storage.db import WriteTransactions, begin_write

log = logging.getLogger(__name__)

# What a receiver or the network can cause; anything else is logged with its trace.
EXPECTED_ERRORS = (httpx.HTTPError, aiohttp.ClientError, UnsafeTarget, LookupError, OSError)
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


def _as_sent(request: RenderedRequest) -> RenderedRequest:
    """The request with its URL as the aiohttp transport will put it on the wire.

    aiohttp re-quotes URLs with yarl (``%40`` becomes ``@`` in a query); a GET is signed
    over its query string as sent, so normalize first and sign what goes out.
    """
    if request.method != "GET":
        return request
    url = URL(request.url)
    return replace(request, url=str(url), signed_content=url.raw_query_string.encode())


@functools.lru_cache(maxsize=4096)
def _parsed_address(url: str) -> httpx.URL:
    """httpx's URL of a web hook's configured address, parsed once (it is immutable):
    parsing it for every call cost as much as the rest of building the request."""
    return httpx.URL(url)


def _request_url(request: RenderedRequest, webhook: WebhookConfig) -> httpx.URL:
    """The URL a call goes to. Only configured addresses are kept parsed: a GET's
    address carries its event in the query, is used once, and is not kept (it would
    hold event data in memory and push the addresses out)."""
    if request.url == webhook.url:
        return _parsed_address(webhook.url)
    return httpx.URL(request.url)


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
    # False when the receiver was never called for want of the event: no reason to
    # disable its web hook.
    counts_against_webhook: bool = True


class DeliverySender:
    """Attempts deliveries. Claims and results of concurrent attempts are written in
    shared transactions (group commit): two commits per delivery capped a worker at
    ~110-170 deliveries/s here. On SQLite each transaction is one hand-off to a thread
    of the sender's own (storage.db.WriteTransactions)."""

    def __init__(
        self,
        engine: AsyncEngine,
        ids: IdGenerator,
        transport: httpx.AsyncBaseTransport,
        settings: Settings,
        on_attempt: OnAttempt | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._engine = engine
        self._metrics = metrics or Metrics()
        self._ids = ids
        self._transport = transport
        self._settings = settings
        self._on_attempt = on_attempt
        self._lease_seconds = settings.delivery_timeout_seconds + 5
        self._timeout = httpx.Timeout(settings.delivery_timeout_seconds).as_dict()
        self._transactions = WriteTransactions(engine)
        self._claims: Batcher[int, _Claimed | None] = Batcher(self._claim, name="claims")
        self._results: Batcher[_Called, tuple[DeliveryStatus, float | None]] = Batcher(
            self._finish, name="attempt-results"
        )

    async def close(self) -> None:
        await self._claims.close()
        await self._results.close()
        await self._transactions.close()

    async def attempt(
        self, delivery_id: int, on_called: Callable[[bool], None] | None = None
    ) -> Outcome:
        """One attempt. ``on_called(succeeded)``, if given, is told as soon as the call
        has ended, before its result is written."""
        with tracing.span("webhook delivery", {"gateway.delivery.id": delivery_id}, kind="client"):
            outcome = await self._attempt(delivery_id, on_called)
            # None: nothing was done (not due, held by another worker, or deleted).
            status = "skipped" if outcome.status is None else outcome.status.value.lower()
            tracing.annotate({"gateway.delivery.outcome": status})
            return outcome

    async def _attempt(self, delivery_id: int, on_called: Callable[[bool], None] | None) -> Outcome:
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
        if on_called is not None:
            on_called(called.succeeded)
        tracing.annotate(
            {
                "gateway.webhook.id": webhook.id,
                "gateway.webhook.format": webhook.format.value,
                "gateway.event.id": delivery.event_id,
                "gateway.attempt.number": called.attempt.number,
                "http.response.status_code": called.attempt.status_code,
            }
        )
        status, retry_in = await self._results.submit(called)
        self._metrics.delivery_attempted(
            webhook.format.value, status.value, called.attempt.duration_ms / 1000
        )
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
        """Claim a batch and read what the claimed need, in one transaction."""
        now = datetime.now(UTC)

        def claim(connection: Connection) -> dict[int, _Claimed]:
            records = runs.claim_deliveries(
                connection,
                delivery_ids=sorted(set(delivery_ids)),
                now=now,
                lease_seconds=self._lease_seconds,
            )
            if not records:
                return {}
            webhooks = runs.get_webhooks(
                connection, webhook_ids=sorted({r.webhook_id for r in records})
            )
            events: dict[int, NormalizedEvent] = {}
            for account_id in {r.account_id for r in records}:
                found = event_store.get_events_sync(
                    connection,
                    account_id=account_id,
                    ids=[
                        r.event_id
                        for r in records
                        if r.account_id == account_id and r.event_id is not None
                    ],
                )
                events.update((stored.id, stored.event) for stored in found)
            return {
                record.id: _Claimed(
                    record,
                    webhooks.get(record.webhook_id),
                    sample_event(record.created_at)
                    if record.event_id is None
                    else events.get(record.event_id),
                )
                for record in records
            }

        claimed = await self._transactions.run(claim)
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
        # One deadline for the whole exchange: httpx's timeouts are per phase, and a
        # receiver dripping a byte a second never trips a read timeout.
        deadline = asyncio.timeout(self._settings.delivery_timeout_seconds)
        try:
            async with deadline:
                check_before_call(webhook.url, allow_private=self._settings.allow_private_webhooks)
                if event is None:
                    raise LookupError(
                        "the event is no longer stored (purged by retention): nothing to send"
                    )
                request = _as_sent(render_request(webhook, delivery.event_id or 0, event))
                # The web hook's own headers first: none of them is one of ours
                # (domain.webhooks.custom_headers refused those at configuration).
                headers = dict(webhook.headers)
                headers |= signing.headers(
                    webhook.signing_secrets(now),
                    str(delivery.id),
                    int(now.timestamp()),
                    request.signed_content,
                )
                headers["user-agent"] = "email-event-gateway"
                # Nothing is decompressed beyond the excerpt; ask for none at all.
                headers["accept-encoding"] = "identity"
                if request.content_type:
                    headers["content-type"] = request.content_type
                # Straight to the transport (httpx's public transport API): a client's
                # send adds auth, redirect and cookie handling that a web hook call has
                # no use for, and cost a tenth of the worker's time.
                response = await self._transport.handle_async_request(
                    httpx.Request(
                        request.method,
                        _request_url(request, webhook),
                        content=request.body or None,
                        headers=headers,
                        extensions={"timeout": self._timeout},
                    )
                )
                try:
                    status_code = response.status_code
                    retry_after = retry_after_seconds(response.headers.get("retry-after"), now)
                    excerpt = await read_excerpt(response)
                finally:
                    await response.aclose()
        # Whatever went wrong (a receiver that does not speak HTTP, a header too long,
        # TLS, a bug of ours in rendering), it is this attempt's error: nothing may
        # escape and leave the delivery unlogged and pending.
        except Exception as exc:
            if deadline.expired():
                limit = self._settings.delivery_timeout_seconds
                error = f"no complete answer within {limit:g} s (GATEWAY_DELIVERY_TIMEOUT_SECONDS)"
            else:
                error = describe_error(exc)
                if not isinstance(exc, EXPECTED_ERRORS):
                    log.warning("delivery %s: unexpected error", delivery.id, exc_info=True)
        duration_ms = (time.perf_counter() - started) * 1000
        succeeded = (
            error is None and status_code is not None and is_success(status_code, webhook.format)
        )
        if error is None and status_code is not None and not succeeded:
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
        if event is None:
            # It will not come back: the delivery ends FAILED now, not after retries.
            return _Called(attempt, False, None, counts_against_webhook=False)
        retry_in = None
        if not succeeded:
            retry_in = next_retry_delay(number, self._settings.retry_delays, retry_after)
        return _Called(attempt, succeeded, retry_in)

    async def _finish(self, batch: list[_Called]) -> list[tuple[DeliveryStatus, float | None]]:
        """Log a batch of calls, count them against their web hooks, settle each, in
        one transaction."""
        now = datetime.now(UTC)
        outcomes: dict[int, list[bool]] = {}
        for called in batch:
            if called.counts_against_webhook:
                outcomes.setdefault(called.attempt.webhook_id, []).append(called.succeeded)

        def finish(connection: Connection) -> list[tuple[DeliveryStatus, float | None]]:
            counted = runs.count_calls(
                connection,
                outcomes=outcomes,
                disable_after=self._settings.disable_after,
                now=now,
            )
            settled = [_settle(called, counted.disabled) for called in batch]
            runs.finish_attempts(
                connection,
                existing=counted.existing,
                finished=[
                    runs.FinishedAttempt(
                        called.attempt,
                        status,
                        None
                        if retry_in is None
                        else called.attempt.at + timedelta(seconds=retry_in),
                    )
                    for called, (status, retry_in) in zip(batch, settled, strict=True)
                ],
            )
            return settled

        return await self._transactions.run(finish)


def _settle(called: _Called, disabled: set[int]) -> tuple[DeliveryStatus, float | None]:
    if called.succeeded:
        return DeliveryStatus.SUCCEEDED, None
    if not called.counts_against_webhook:
        return DeliveryStatus.FAILED, None  # its event is gone: holding it sends nothing
    if called.attempt.webhook_id in disabled:
        return DeliveryStatus.HELD, None
    if called.retry_in is None:
        return DeliveryStatus.FAILED, None
    return DeliveryStatus.RETRYING, called.retry_in
