"""Tables. Every row belongs to an account; nothing is read across accounts.

Datetimes are aware UTC in and out (SQLModel's ``UTCDateTime``: ``timestamptz`` on
PostgreSQL, UTC text on SQLite).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class Account(SQLModel, table=True):
    __tablename__ = "accounts"
    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    name: str = Field(unique=True, max_length=200)
    created_at: datetime
    # Days its rows are kept (services.retention); null: GATEWAY_RETENTION_DAYS.
    retention_days: int | None = None


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"
    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    account_id: int = Field(sa_type=BigInteger, foreign_key="accounts.id", index=True)
    key_hash: str = Field(unique=True, max_length=64)
    prefix: str = Field(max_length=16)
    created_at: datetime


class IngestSource(SQLModel, table=True):
    __tablename__ = "ingest_sources"
    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    account_id: int = Field(sa_type=BigInteger, foreign_key="accounts.id", index=True)
    provider: str = Field(max_length=16)
    name: str = Field(max_length=200)
    token_hash: str = Field(unique=True, max_length=64)
    timezone: str = Field(default="UTC", max_length=64)
    # JSON object: gateway field name -> the provider's parameter name.
    parameters: str = Field(default="{}", sa_type=Text)
    created_at: datetime
    # HTTP Basic credentials the provider must send (Brevo); the password as a salted
    # scrypt hash (see services.accounts.hash_password). Both null: none required.
    basic_username: str | None = Field(default=None, max_length=200)
    basic_password_hash: str | None = Field(default=None, sa_type=Text)


class EventRow(SQLModel, table=True):
    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("account_id", "dedupe_key", name="uq_events_account_dedupe"),
        # One index per filter of events(where:), each ending in id so that "newest
        # first" with a keyset cursor is an index range scan, never a sort of the table.
        Index("ix_events_account_id", "account_id", "id"),
        Index("ix_events_message", "account_id", "message_id", "id"),
        Index("ix_events_email", "account_id", "email_key", "id"),
        Index("ix_events_template", "account_id", "template", "id"),
        Index("ix_events_type", "account_id", "type", "id"),
        Index("ix_events_occurred", "account_id", "occurred_at", "id"),
    )
    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    account_id: int = Field(sa_type=BigInteger, foreign_key="accounts.id")
    source_id: int | None = Field(default=None, sa_type=BigInteger)
    type: str = Field(max_length=16)
    provider: str = Field(max_length=16)
    provider_event: str = Field(max_length=64)
    message_id: str | None = Field(default=None, max_length=255)
    email: str = Field(max_length=320)
    email_key: str = Field(max_length=320)
    occurred_at: datetime
    sent_at: datetime | None = None
    subject: str | None = Field(default=None, sa_type=Text)
    template: str | None = Field(default=None, max_length=255)
    tags: str = Field(default="[]", sa_type=Text)  # JSON array, for reading back
    custom_id: str | None = Field(default=None, sa_type=Text)
    details: str = Field(default="{}", sa_type=Text)  # JSON: the type-specific fields
    raw: str = Field(sa_type=Text)  # the provider's payload for this event, as JSON
    dedupe_key: str = Field(max_length=40)
    received_at: datetime


class EventTag(SQLModel, table=True):
    """One row per (event, tag): all-of-tags queries walk the rarest tag's rows."""

    __tablename__ = "event_tags"
    account_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    tag: str = Field(primary_key=True, max_length=255)
    event_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))


class TagCount(SQLModel, table=True):
    """How many events carry each tag: picks the rarest tag to drive a query."""

    __tablename__ = "tag_counts"
    account_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    tag: str = Field(primary_key=True, max_length=255)
    count: int = Field(default=0, sa_type=BigInteger)


class RejectedPayload(SQLModel, table=True):
    """A request we could not read, or one event of a request that we could not store,
    kept so it can be replayed once fixed."""

    __tablename__ = "rejected_payloads"
    # Retention purges an account's oldest first (an id range).
    __table_args__ = (Index("ix_rejected_account_id", "account_id", "id"),)
    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    account_id: int | None = Field(default=None, sa_type=BigInteger, index=True)
    source_id: int | None = Field(default=None, sa_type=BigInteger)
    provider: str = Field(max_length=16)
    method: str = Field(max_length=8)
    # The ingest path with the token replaced by "{token}": no token is kept in clear.
    path: str = Field(sa_type=Text)
    query: str = Field(default="", sa_type=Text)
    content_type: str = Field(default="", sa_type=Text)
    # The request's body, or the refused event alone (as JSON); past the body limit, a
    # prefix of the body (see size).
    body: bytes = Field(sa_type=LargeBinary)
    # The body's true size in bytes (more than len(body) when only a prefix is kept);
    # NULL in rows kept before it was recorded, and by older code: len(body).
    size: int | None = Field(default=None, sa_type=BigInteger)
    # The refused event's position in its request; NULL when the whole request is kept.
    event_index: int | None = None
    status: int
    reason: str = Field(sa_type=Text)
    received_at: datetime
    # Set when a replay (replayRejectedPayload) stored what this request carried.
    replayed_at: datetime | None = None


class Webhook(SQLModel, table=True):
    """A customer's web hook. The signing secret is kept as is: signing needs it."""

    __tablename__ = "webhooks"
    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    account_id: int = Field(sa_type=BigInteger, foreign_key="accounts.id", index=True)
    url: str = Field(sa_type=Text)
    method: str = Field(max_length=8)
    events: str = Field(default="[]", sa_type=Text)  # JSON array of EventType names
    format: str = Field(max_length=16)
    # JSON object field -> name, or null for every field under its default name.
    parameters: str | None = Field(default=None, sa_type=Text)
    tags: str = Field(default="[]", sa_type=Text)
    templates: str = Field(default="[]", sa_type=Text)
    secret: str = Field(sa_type=Text)
    enabled: bool = True
    disabled_reason: str | None = Field(default=None, sa_type=Text)
    consecutive_failures: int = 0
    backfill_days: int = 7
    created_at: datetime
    updated_at: datetime
    # JSON array of [name, value]: headers sent on every call.
    headers: str = Field(default="[]", sa_type=Text)
    # The secret before the last rotation signs too, until previous_secret_until.
    previous_secret: str | None = Field(default=None, sa_type=Text)
    previous_secret_until: datetime | None = None


class Delivery(SQLModel, table=True):
    """One event owed to one web hook: the transactional outbox row."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id", name="uq_deliveries_webhook_event"),
        Index("ix_deliveries_webhook", "webhook_id", "id"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
        # A web hook's due deliveries in order (storage.outbox.due_of_webhook).
        Index("ix_deliveries_webhook_due", "webhook_id", "status", "next_attempt_at"),
    )
    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    account_id: int = Field(sa_type=BigInteger)
    webhook_id: int = Field(sa_type=BigInteger, foreign_key="webhooks.id", ondelete="CASCADE")
    # Null for a test delivery (sendTestEvent), whose event is a fixed sample.
    event_id: int | None = Field(default=None, sa_type=BigInteger)
    status: str = Field(max_length=16)
    attempts: int = 0
    next_attempt_at: datetime | None = None
    # A worker owns the delivery until then: two workers never send it at once.
    lease_until: datetime | None = None
    created_at: datetime
    updated_at: datetime


class DeliveryAttemptRow(SQLModel, table=True):
    """One HTTP call made for a delivery: the web hook's log."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (
        Index("ix_attempts_delivery", "delivery_id", "number"),
        Index("ix_attempts_webhook", "webhook_id", "id"),
    )
    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    account_id: int = Field(sa_type=BigInteger)
    webhook_id: int = Field(sa_type=BigInteger, foreign_key="webhooks.id", ondelete="CASCADE")
    delivery_id: int = Field(sa_type=BigInteger, foreign_key="deliveries.id", ondelete="CASCADE")
    number: int
    at: datetime
    method: str = Field(max_length=8)
    url: str = Field(sa_type=Text)
    request_body: str = Field(default="", sa_type=Text)
    status_code: int | None = None
    duration_ms: float
    error: str | None = Field(default=None, sa_type=Text)
    response_excerpt: str | None = Field(default=None, sa_type=Text)


class IdNode(SQLModel, table=True):
    """A node number for ids (gateway.ids), leased to one process at a time. Not an
    account's row: it belongs to the deployment. All NODE_COUNT rows exist from the
    migration on, so claiming one is a single UPDATE."""

    __tablename__ = "id_nodes"
    node: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    # Who holds it (host, pid and a random part, for people reading the table); null
    # when released.
    owner: str | None = Field(default=None, max_length=200)
    # Unix milliseconds. The holder mints ids only in milliseconds below expires_at_ms
    # by its own clock; a new holder only from floor_ms (the previous expires_at_ms) on.
    floor_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class EventCount(SQLModel, table=True):
    """How many events an account stored per UTC hour (and day), type and one dimension (its
    provider, its template, each of its tags): ``eventStats`` reads these, not the
    events. Ingest adds to them in the transaction that stores the events."""

    __tablename__ = "event_counts"
    account_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    dimension: str = Field(primary_key=True, max_length=8)  # provider | template | tag
    span: int = Field(primary_key=True)  # hours the row covers: 1, or 24 (a UTC day)
    hour: int = Field(  # its first hour, in hours since the Unix epoch, UTC
        sa_column=Column(BigInteger, primary_key=True, autoincrement=False)
    )
    key: str = Field(primary_key=True, max_length=255)
    type: str = Field(primary_key=True, max_length=16)
    count: int = Field(default=0, sa_type=BigInteger)
