"""GraphQL for web hooks: their configuration, deliveries and the log of every call."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.types import Info

from gateway.api.graphql.context import Context, authorized, object_id, page_size, user_error
from gateway.api.graphql.types import (
    Event,
    PageInfo,
    Parameter,
    ParameterInput,
    WebhookHeaderInput,
    WebhookSecret,
    aware,
    event_view,
)
from gateway.domain.events import EventType
from gateway.domain.webhooks import (
    AttemptRecord,
    DeliveryStatus,
    HttpMethod,
    WebhookConfig,
    WebhookFormat,
)
from gateway.services.accounts import InputError
from gateway.services.deliveries import DeliveryView
from gateway.services.events import decode_cursor, encode_cursor
from gateway.services.webhooks import WebhookChanges

strawberry.enum(WebhookFormat)
strawberry.enum(HttpMethod)
strawberry.enum(DeliveryStatus)


@strawberry.type(description="One HTTP call made for a delivery.")
class DeliveryAttempt:
    delivery_id: strawberry.ID
    webhook_id: strawberry.ID
    number: int
    at: datetime
    method: str
    url: str = strawberry.field(description="As called: for GET, with the query string.")
    status_code: int | None
    duration_ms: float
    error: str | None
    response_excerpt: str | None

    @classmethod
    def from_record(cls, record: AttemptRecord) -> DeliveryAttempt:
        return cls(
            delivery_id=strawberry.ID(str(record.delivery_id)),
            webhook_id=strawberry.ID(str(record.webhook_id)),
            number=record.number,
            at=record.at,
            method=record.method,
            url=record.url,
            status_code=record.status_code,
            duration_ms=record.duration_ms,
            error=record.error,
            response_excerpt=record.response_excerpt,
        )


@strawberry.type(description="One event owed to one web hook.")
class Delivery:
    id: strawberry.ID
    webhook_id: strawberry.ID
    status: DeliveryStatus
    event: Event
    attempts: list[DeliveryAttempt]
    next_attempt_at: datetime | None
    created_at: datetime

    @classmethod
    def from_view(cls, view: DeliveryView) -> Delivery:
        record = view.record
        return cls(
            id=strawberry.ID(str(record.id)),
            webhook_id=strawberry.ID(str(record.webhook_id)),
            status=record.status,
            event=event_view(view.event),
            attempts=[DeliveryAttempt.from_record(a) for a in view.attempts],
            next_attempt_at=record.next_attempt_at,
            created_at=record.created_at,
        )


@strawberry.type
class DeliveryEdge:
    cursor: str
    node: Delivery


@strawberry.type
class DeliveryConnection:
    edges: list[DeliveryEdge]
    page_info: PageInfo


@strawberry.type
class Webhook:
    id: strawberry.ID
    url: str
    method: HttpMethod
    events: list[EventType]
    format: WebhookFormat
    parameters: list[Parameter] | None = strawberry.field(
        description="Null: every field under its default name."
    )
    tags: list[str]
    templates: list[str]
    enabled: bool
    disabled_reason: str | None
    consecutive_failures: int
    backfill_days: int
    created_at: datetime
    header_names: list[str] = strawberry.field(
        description="The headers sent on every call, by name: their values are never shown."
    )

    @strawberry.field(description="Every delivery and its calls, newest first.")
    async def deliveries(
        self,
        info: Info[Context, None],
        first: int | None = None,
        after: str | None = None,
        status: DeliveryStatus | None = None,
    ) -> DeliveryConnection:
        context = authorized(info)
        size = page_size(context.services, first)
        try:
            before_id = decode_cursor(after, kind="delivery") if after else None
        except InputError as error:
            raise user_error(error) from None
        page = await context.services.deliveries.deliveries(
            context.account_id, int(self.id), status=status, first=size, before_id=before_id
        )
        edges = [
            DeliveryEdge(
                cursor=encode_cursor(view.record.id, "delivery"), node=Delivery.from_view(view)
            )
            for view in page.deliveries
        ]
        return DeliveryConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next_page, end_cursor=edges[-1].cursor if edges else None
            ),
        )

    @classmethod
    def from_config(cls, config: WebhookConfig) -> Webhook:
        return cls(
            id=strawberry.ID(str(config.id)),
            url=config.url,
            method=config.method,
            events=sorted(config.events, key=lambda t: t.value),
            format=config.format,
            parameters=None
            if config.parameters is None
            else [Parameter(field=f, name=n) for f, n in config.parameters.items()],
            tags=list(config.tags),
            templates=list(config.templates),
            enabled=config.enabled,
            disabled_reason=config.disabled_reason,
            consecutive_failures=config.consecutive_failures,
            backfill_days=config.backfill_days,
            created_at=config.created_at,
            header_names=[name for name, _ in config.headers],
        )


@strawberry.type
class WebhookCreated:
    webhook: Webhook
    secret: str = strawberry.field(description="Shown once: the whsec_ signing secret.")


@strawberry.input(description="For createWebhook, url and events are required.")
class WebhookInput:
    url: str | None = None
    method: HttpMethod | None = None
    events: list[EventType] | None = None
    format: WebhookFormat | None = None
    parameters: list[ParameterInput] | None = strawberry.field(
        default=None,
        description="Event field -> parameter name; blank names are not sent (JANGOMAIL, GATEWAY).",
    )
    tags: list[str] | None = strawberry.field(default=None, description="All of these tags.")
    templates: list[str] | None = strawberry.field(default=None, description="Any of these.")
    secret: str | None = strawberry.field(
        default=None, description="whsec_…; generated when not given."
    )
    backfill_days: int | None = strawberry.field(
        default=None, description="Days of past events sent when created (default 7)."
    )
    headers: list[WebhookHeaderInput] | None = strawberry.field(
        default=None,
        description="Sent on every call; on update, they replace all the web hook's headers.",
    )

    def to_changes(self) -> WebhookChanges:
        return WebhookChanges(
            url=self.url,
            method=self.method,
            events=self.events,
            format=self.format,
            parameters=None
            if self.parameters is None
            else {p.field: p.name for p in self.parameters},
            tags=self.tags,
            templates=self.templates,
            secret=self.secret,
            backfill_days=self.backfill_days,
            headers=None if self.headers is None else [(h.name, h.value) for h in self.headers],
        )


def _input_error(error: InputError) -> Exception:
    return user_error(InputError(f"input.{error.field}", error.message))


@strawberry.type
class WebhookQuery:
    @strawberry.field
    async def webhooks(self, info: Info[Context, None]) -> list[Webhook]:
        context = authorized(info)
        return [
            Webhook.from_config(c) for c in await context.services.webhooks.all(context.account_id)
        ]

    @strawberry.field
    async def webhook(self, info: Info[Context, None], id: strawberry.ID) -> Webhook | None:
        context = authorized(info)
        config = await context.services.webhooks.get(context.account_id, object_id(id, "id"))
        return None if config is None else Webhook.from_config(config)


@strawberry.type
class WebhookMutation:
    @strawberry.mutation(description="A new web hook; its secret is shown only here.")
    async def create_webhook(
        self, info: Info[Context, None], input: WebhookInput
    ) -> WebhookCreated:
        context = authorized(info)
        try:
            config, secret = await context.services.webhooks.create(
                context.account_id, input.to_changes()
            )
        except InputError as error:
            raise _input_error(error) from None
        return WebhookCreated(webhook=Webhook.from_config(config), secret=secret)

    @strawberry.mutation(
        description="Change the given fields; a new URL or parameters re-enable it."
    )
    async def update_webhook(
        self, info: Info[Context, None], id: strawberry.ID, input: WebhookInput
    ) -> Webhook | None:
        context = authorized(info)
        try:
            config = await context.services.webhooks.update(
                context.account_id, object_id(id, "id"), input.to_changes()
            )
        except InputError as error:
            raise _input_error(error) from None
        return None if config is None else Webhook.from_config(config)

    @strawberry.mutation
    async def delete_webhook(self, info: Info[Context, None], id: strawberry.ID) -> bool:
        context = authorized(info)
        return await context.services.webhooks.delete(context.account_id, object_id(id, "id"))

    @strawberry.mutation(description="Enable a disabled web hook and send what it held.")
    async def enable_webhook(self, info: Info[Context, None], id: strawberry.ID) -> Webhook | None:
        context = authorized(info)
        config = await context.services.webhooks.enable(context.account_id, object_id(id, "id"))
        return None if config is None else Webhook.from_config(config)

    @strawberry.mutation(
        description="A new signing secret, shown once; the previous one signs beside it "
        "until previousValidUntil (graceHours from now; 0: it stops at once)."
    )
    async def rotate_webhook_secret(
        self, info: Info[Context, None], id: strawberry.ID, grace_hours: float | None = 24.0
    ) -> WebhookSecret:
        context = authorized(info)
        try:
            rotated = await context.services.webhooks.rotate_secret(
                context.account_id,
                object_id(id, "id"),
                24.0 if grace_hours is None else grace_hours,
            )
        except InputError as error:
            raise user_error(error) from None
        if rotated is None:
            raise user_error(InputError("id", "no such web hook"))
        secret, until = rotated
        return WebhookSecret(secret=secret, previous_valid_until=until)

    @strawberry.mutation(
        description="Send again the web hook's deliveries of this status created in "
        "[since, until); at most 10,000 a call. Returns how many."
    )
    async def recover_deliveries(
        self,
        info: Info[Context, None],
        webhook_id: strawberry.ID,
        since: datetime,
        until: datetime | None = None,
        status: DeliveryStatus | None = DeliveryStatus.FAILED,
    ) -> int:
        context = authorized(info)
        try:
            count = await context.services.deliveries.recover(
                context.account_id,
                object_id(webhook_id, "webhookId"),
                since=aware(since),
                until=None if until is None else aware(until),
                status=status or DeliveryStatus.FAILED,
            )
        except InputError as error:
            raise user_error(error) from None
        if count is None:
            raise user_error(InputError("webhookId", "no such web hook"))
        return count

    @strawberry.mutation(description="Send a delivery again, whatever became of it.")
    async def redeliver(
        self, info: Info[Context, None], delivery_id: strawberry.ID
    ) -> Delivery | None:
        context = authorized(info)
        view = await context.services.deliveries.redeliver(
            context.account_id, object_id(delivery_id, "deliveryId")
        )
        return None if view is None else Delivery.from_view(view)

    @strawberry.mutation(description="Deliver a fixed sample event to the web hook.")
    async def send_test_event(
        self, info: Info[Context, None], webhook_id: strawberry.ID
    ) -> Delivery | None:
        context = authorized(info)
        view = await context.services.deliveries.send_test(
            context.account_id, object_id(webhook_id, "webhookId")
        )
        return None if view is None else Delivery.from_view(view)
