"""Live delivery attempts: each call a worker logs, published for `deliveries` subscribers.

Workers publish from their own processes; every gateway replica's hub hears them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.domain.webhooks import AttemptRecord
from gateway.live.hub import Kind, LiveHub


def encode_attempt(attempt: AttemptRecord) -> dict[str, Any]:
    return {
        "id": attempt.id,
        "delivery_id": attempt.delivery_id,
        "webhook_id": attempt.webhook_id,
        "account_id": attempt.account_id,
        "number": attempt.number,
        "at": attempt.at.isoformat(),
        "method": attempt.method,
        "url": attempt.url,
        "status_code": attempt.status_code,
        "duration_ms": attempt.duration_ms,
        "error": attempt.error,
        "response_excerpt": attempt.response_excerpt,
    }


def decode_attempt(value: Any) -> AttemptRecord:
    fields = dict(value)
    fields["at"] = datetime.fromisoformat(fields["at"])
    return AttemptRecord(**fields)


ATTEMPTS: Kind[AttemptRecord] = Kind("attempts", decode_attempt)


def attempt_publisher(hub: LiveHub) -> Any:
    """The delivery sender's on-attempt hook: publish each logged call."""

    async def publish(attempt: AttemptRecord) -> None:
        hub.publish(attempt.account_id, ATTEMPTS, encode_attempt(attempt))

    return publish
