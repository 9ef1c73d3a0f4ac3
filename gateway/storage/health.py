"""What an operator asks of the database: how far behind delivery is, what is held,
which web hooks are disabled, and the database's own clock.

Every count here walks an index (``ix_deliveries_due`` is status, next_attempt_at)
over the deliveries still open or held, never the delivered history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.webhooks import DeliveryStatus
from gateway.storage.models import Delivery, Webhook

_deliveries = Delivery.__table__  # type: ignore[attr-defined]
_webhooks = Webhook.__table__  # type: ignore[attr-defined]

_OPEN = (DeliveryStatus.PENDING.value, DeliveryStatus.RETRYING.value)


@dataclass(frozen=True, slots=True)
class QueueHealth:
    """The outbox as of ``now``: ``due`` open deliveries whose time has come (the
    oldest was due at ``oldest_due_at``), ``scheduled`` ones waiting for a retry's
    time, ``held`` ones of disabled web hooks, and ``webhooks_disabled``."""

    now: datetime
    due: int
    oldest_due_at: datetime | None
    scheduled: int
    held: int
    webhooks_disabled: int

    @property
    def lag_seconds(self) -> float:
        """How long the oldest due delivery has waited past its time (0 when none)."""
        if self.oldest_due_at is None:
            return 0.0
        return max((self.now - self.oldest_due_at).total_seconds(), 0.0)


async def queue_health(connection: AsyncConnection, *, now: datetime) -> QueueHealth:
    due_at = func.coalesce(_deliveries.c.next_attempt_at, _deliveries.c.created_at)
    is_due = or_(_deliveries.c.next_attempt_at.is_(None), _deliveries.c.next_attempt_at <= now)
    due = (
        await connection.execute(
            select(func.count(), func.min(due_at)).where(_deliveries.c.status.in_(_OPEN), is_due)
        )
    ).one()
    scheduled = await connection.scalar(
        select(func.count()).where(
            _deliveries.c.status.in_(_OPEN), _deliveries.c.next_attempt_at > now
        )
    )
    held = await connection.scalar(
        select(func.count()).where(_deliveries.c.status == DeliveryStatus.HELD.value)
    )
    disabled = await connection.scalar(
        select(func.count()).select_from(_webhooks).where(_webhooks.c.enabled.is_(False))
    )
    oldest = due[1]
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return QueueHealth(
        now=now,
        due=int(due[0]),
        oldest_due_at=oldest,
        scheduled=int(scheduled or 0),
        held=int(held or 0),
        webhooks_disabled=int(disabled or 0),
    )


async def database_now(connection: AsyncConnection) -> datetime:
    """The database server's clock (UTC), to compare with this machine's."""
    if connection.dialect.name == "sqlite":
        # SQLite's clock is this machine's: there is no server to disagree with.
        text = await connection.scalar(select(func.strftime("%Y-%m-%d %H:%M:%f", "now")))
        return datetime.fromisoformat(str(text)).replace(tzinfo=UTC)
    value = await connection.scalar(select(func.now()))
    assert isinstance(value, datetime)
    return value.astimezone(UTC)
