"""GraphQL types: a view over the domain, converted at this boundary and nowhere else."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from gateway.domain.events import EventType, NormalizedEvent, Provider, RejectReason, Severity
from gateway.domain.query import EventFilter as DomainFilter
from gateway.domain.query import StoredEvent
from gateway.services.accounts import BasicAuth
from gateway.services.events import EventPage, MessageTimeline, encode_cursor
from gateway.storage.accounts import KeyRecord, SourceRecord

strawberry.enum(EventType)
strawberry.enum(Provider)
strawberry.enum(Severity)
strawberry.enum(RejectReason)


_DEVICE = 'The kind of device, as the provider says ("DESKTOP", "MOBILE").'
_PREVIEW_URL = "The provider's own page for this event (Brevo's mirror_link)."
_CONTACT_ID = "The provider's id of the recipient as a contact (Brevo's contact_id)."


@strawberry.interface(description="One delivery event of one message to one recipient.")
class Event:
    id: strawberry.ID = strawberry.field(description="The gateway's id, sortable by arrival.")
    type: EventType
    provider: Provider
    provider_event: str = strawberry.field(description='As the provider named it: "soft_bounce".')
    message_id: str | None
    email: str
    occurred_at: datetime = strawberry.field(description="When it happened, UTC.")
    sent_at: datetime | None
    subject: str | None
    template: str | None
    tags: list[str]
    custom_id: str | None
    raw: JSON = strawberry.field(description="The provider's payload exactly as received.")
    received_at: datetime = strawberry.field(description="When the gateway stored it.")


@strawberry.type(description="QUEUED, SENT or DELIVERED.")
class SendingEvent(Event):
    sending_ip: str | None
    message_size: int | None
    relay_id: str | None
    relay_message_id: str | None
    from_email: str | None
    preview_url: str | None = strawberry.field(description=_PREVIEW_URL)
    contact_id: str | None = strawberry.field(description=_CONTACT_ID)


@strawberry.type(description="DEFERRED, BOUNCED, REJECTED or FAILED.")
class DeliveryProblemEvent(Event):
    severity: Severity | None
    reject_reason: RejectReason | None
    reason: str | None = strawberry.field(description="The provider's reason or diagnostic code.")
    smtp_status: str | None = strawberry.field(description='Enhanced status code, e.g. "5.1.1".')
    sending_ip: str | None


@strawberry.type(description="OPENED.")
class OpenEvent(Event):
    unique: bool | None
    proxy: bool | None = strawberry.field(description="Opened by a mail privacy proxy.")
    ip: str | None
    user_agent: str | None
    device: str | None = strawberry.field(description=_DEVICE)
    preview_url: str | None = strawberry.field(description=_PREVIEW_URL)
    contact_id: str | None = strawberry.field(description=_CONTACT_ID)


@strawberry.type(description="CLICKED.")
class ClickEvent(Event):
    url: str | None
    position: int | None
    ip: str | None
    user_agent: str | None
    device: str | None = strawberry.field(description=_DEVICE)
    preview_url: str | None = strawberry.field(description=_PREVIEW_URL)
    contact_id: str | None = strawberry.field(description=_CONTACT_ID)


@strawberry.type(description="UNSUBSCRIBED.")
class UnsubscribeEvent(Event):
    unsubscribe_type: str | None
    ip: str | None
    user_agent: str | None
    device: str | None = strawberry.field(description=_DEVICE)
    preview_url: str | None = strawberry.field(description=_PREVIEW_URL)
    contact_id: str | None = strawberry.field(description=_CONTACT_ID)


@strawberry.type(description="COMPLAINED.")
class ComplaintEvent(Event):
    abuse_id: str | None


@strawberry.type(description="AUTORESPONDED or UNKNOWN.")
class OtherEvent(Event):
    reason: str | None


_FAMILY: dict[EventType, type[Event]] = {
    EventType.QUEUED: SendingEvent,
    EventType.SENT: SendingEvent,
    EventType.DELIVERED: SendingEvent,
    EventType.DEFERRED: DeliveryProblemEvent,
    EventType.BOUNCED: DeliveryProblemEvent,
    EventType.REJECTED: DeliveryProblemEvent,
    EventType.FAILED: DeliveryProblemEvent,
    EventType.OPENED: OpenEvent,
    EventType.CLICKED: ClickEvent,
    EventType.UNSUBSCRIBED: UnsubscribeEvent,
    EventType.COMPLAINED: ComplaintEvent,
    EventType.AUTORESPONDED: OtherEvent,
    EventType.UNKNOWN: OtherEvent,
}
EVENT_TYPES: tuple[type[Event], ...] = tuple(dict.fromkeys(_FAMILY.values()))
_OWN_FIELDS: dict[type[Event], tuple[str, ...]] = {
    family: tuple(
        name
        for name in family.__annotations__
        if name not in Event.__annotations__ and not name.startswith("_")
    )
    for family in EVENT_TYPES
}


def event_view(stored: StoredEvent) -> Event:
    """The concrete GraphQL type for a stored event: the one place that decides it."""
    event: NormalizedEvent = stored.event
    family = _FAMILY[event.type]
    own: dict[str, Any] = {name: getattr(event, name) for name in _OWN_FIELDS[family]}
    return family(
        id=strawberry.ID(str(stored.id)),
        type=event.type,
        provider=event.provider,
        provider_event=event.provider_event,
        message_id=event.message_id,
        email=event.email,
        occurred_at=event.occurred_at,
        sent_at=event.sent_at,
        subject=event.subject,
        template=event.template,
        tags=list(event.tags),
        custom_id=event.custom_id,
        raw=cast(JSON, event.raw),
        received_at=stored.received_at,
        **own,
    )


@strawberry.input(description="Every given criterion must hold.")
class EventFilter:
    message_id: str | None = strawberry.UNSET
    email: str | None = strawberry.UNSET
    template: str | None = strawberry.UNSET
    tags: list[str] | None = strawberry.field(
        default=strawberry.UNSET, description="All of these tags."
    )
    types: list[EventType] | None = strawberry.UNSET
    providers: list[Provider] | None = strawberry.UNSET
    start: datetime | None = strawberry.field(
        default=strawberry.UNSET, description="occurredAt >= start (inclusive)."
    )
    end: datetime | None = strawberry.field(
        default=strawberry.UNSET, description="occurredAt < end (exclusive)."
    )

    def to_domain(self) -> DomainFilter:
        def given(value: Any) -> Any:
            return None if value is strawberry.UNSET else value

        return DomainFilter(
            message_id=given(self.message_id),
            email=given(self.email),
            template=given(self.template),
            tags=tuple(dict.fromkeys(given(self.tags) or ())),
            types=frozenset(given(self.types) or ()),
            providers=frozenset(given(self.providers) or ()),
            start=_aware(given(self.start)),
            end=_aware(given(self.end)),
        )


def aware(value: datetime) -> datetime:
    """A time given without a zone is taken as UTC, the zone everything is served in."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else aware(value)


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class EventEdge:
    cursor: str
    node: Event


@strawberry.type
class EventConnection:
    edges: list[EventEdge]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: EventPage) -> EventConnection:
        edges = [EventEdge(cursor=encode_cursor(s.id), node=event_view(s)) for s in page.events]
        return cls(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                end_cursor=edges[-1].cursor if edges else None,
            ),
        )


@strawberry.type(description="One message's events in the order they happened.")
class Message:
    message_id: str
    state: EventType = strawberry.field(
        description="The most advanced state its events show, whatever order they arrived in."
    )
    events: list[Event]
    sent_at: datetime | None = strawberry.field(
        description="When it was sent: its send event's time, never after its first event."
    )

    @classmethod
    def from_timeline(cls, timeline: MessageTimeline) -> Message:
        return cls(
            message_id=timeline.message_id,
            state=timeline.state,
            events=[event_view(stored) for stored in timeline.events],
            sent_at=timeline.sent_at,
        )


@strawberry.type
class Parameter:
    field: str
    name: str


@strawberry.input
class ParameterInput:
    field: str = strawberry.field(description="An Event field name (email, messageId, …).")
    name: str = strawberry.field(description="The parameter name; blank means not sent.")


@strawberry.input(description="A header sent on every call of a web hook.")
class WebhookHeaderInput:
    name: str = strawberry.field(description="A token (RFC 7230), none the gateway sets.")
    value: str = strawberry.field(description="Printable ASCII; never shown again.")


@strawberry.type
class WebhookSecret:
    secret: str = strawberry.field(description="Shown once: the new whsec_ signing secret.")
    previous_valid_until: datetime | None = strawberry.field(
        description="Until then the previous secret signs too; null: it no longer does."
    )


def parameters_dict(parameters: list[ParameterInput] | None) -> dict[str, str] | None:
    return None if parameters is None else {p.field: p.name for p in parameters}


@strawberry.input(description="HTTP Basic credentials a source requires (Brevo).")
class BasicAuthInput:
    username: str
    password: str = strawberry.field(description="12 to 200 characters; stored hashed.")


def basic_auth(value: BasicAuthInput | None) -> BasicAuth | None:
    return None if value is None else BasicAuth(value.username, value.password)


@strawberry.type
class IngestSource:
    id: strawberry.ID
    provider: Provider
    name: str
    timezone: str
    parameters: list[Parameter]
    created_at: datetime
    basic_auth_username: str | None = strawberry.field(
        description="Set when requests must carry HTTP Basic credentials (the password "
        "is never shown)."
    )

    @classmethod
    def from_record(cls, record: SourceRecord) -> IngestSource:
        return cls(
            id=strawberry.ID(str(record.id)),
            provider=Provider(record.provider),
            name=record.name,
            timezone=record.timezone,
            parameters=[Parameter(field=f, name=n) for f, n in record.parameters.items()],
            created_at=record.created_at,
            basic_auth_username=record.basic_username,
        )


@strawberry.type
class IngestSourceCreated:
    source: IngestSource
    token: str = strawberry.field(description="Shown once: the {token} of the ingest URL.")


@strawberry.input
class CreateIngestSourceInput:
    provider: Provider
    name: str
    timezone: str | None = strawberry.field(
        default=None, description="IANA zone of the provider's local times (JangoMail)."
    )
    parameters: list[ParameterInput] | None = None
    basic_auth: BasicAuthInput | None = strawberry.field(
        default=None,
        description="Require these HTTP Basic credentials on every request (Brevo sends "
        "them from https://user:password@… in its web hook URL).",
    )


@strawberry.input
class UpdateIngestSourceInput:
    name: str | None = None
    timezone: str | None = None
    parameters: list[ParameterInput] | None = None
    basic_auth: BasicAuthInput | None = strawberry.field(
        default=None, description="Replace the required HTTP Basic credentials."
    )
    remove_basic_auth: bool = strawberry.field(
        default=False, description="Stop requiring HTTP Basic credentials."
    )


@strawberry.type(
    description="What ingest refused, kept for replay: a request that could not be read at "
    "all, or one event of a readable request (index)."
)
class RejectedPayload:
    id: strawberry.ID
    provider: Provider
    source_id: strawberry.ID | None
    method: str
    content_type: str
    status: int = strawberry.field(
        description="What the request was answered (4xx); 422 for one refused event of a "
        "request answered 200."
    )
    reason: str
    received_at: datetime
    index: int | None = strawberry.field(
        description="The refused event's position in its request (0 for a lone event); "
        "null when the whole request is kept."
    )
    body: str = strawberry.field(
        description="As received (UTF-8; undecodable bytes as U+FFFD): the request's body, "
        "or the refused event alone as JSON; past the body limit, only its first bytes."
    )
    size: float = strawberry.field(
        description="The body's true size in bytes (a Float: it can pass GraphQL's 32-bit Int)."
    )
    truncated: bool = strawberry.field(
        description="Only the first bytes of the body are kept (it was over the limit); "
        "such a request cannot be replayed."
    )
    replayed_at: datetime | None = strawberry.field(
        description="When a replay stored what it carries."
    )

    @classmethod
    def from_row(cls, row: dict[str, object]) -> RejectedPayload:
        source_id = row["source_id"]
        body = bytes(cast(bytes, row["body"]))
        size = row.get("size")
        # Rows kept before sizes were recorded hold their whole body.
        true_size = size if isinstance(size, int) else len(body)
        index = row.get("event_index")
        return cls(
            id=strawberry.ID(str(row["id"])),
            provider=Provider(str(row["provider"])),
            source_id=None if source_id is None else strawberry.ID(str(source_id)),
            method=str(row["method"]),
            content_type=str(row["content_type"]),
            status=int(cast(int, row["status"])),
            reason=str(row["reason"]),
            received_at=cast(datetime, row["received_at"]),
            index=index if isinstance(index, int) else None,
            body=body.decode("utf-8", "replace"),
            size=float(true_size),
            truncated=true_size > len(body),
            replayed_at=cast("datetime | None", row.get("replayed_at")),
        )


@strawberry.type
class ReplayResult:
    payload: RejectedPayload
    stored: int = strawberry.field(description="Events stored by this replay.")
    duplicates: int = strawberry.field(description="Events already stored (an earlier replay).")
    error: str | None = strawberry.field(
        description="Why it, or some of its events, still cannot be read (what could is "
        "stored; it is marked replayed only once nothing in it is refused)."
    )


@strawberry.type(description="An API key; the key itself is shown only when created.")
class ApiKey:
    id: strawberry.ID
    prefix: str = strawberry.field(description="Its first characters, to tell keys apart.")
    created_at: datetime

    @classmethod
    def from_record(cls, record: KeyRecord) -> ApiKey:
        return cls(
            id=strawberry.ID(str(record.id)), prefix=record.prefix, created_at=record.created_at
        )


@strawberry.type
class ApiKeyCreated:
    api_key: ApiKey
    key: str = strawberry.field(description="Shown once: send it as Authorization: Bearer.")
