"""Standard Webhooks signatures (https://www.standardwebhooks.com), made by the
``standardwebhooks`` package that receivers verify with.

``webhook-signature: v1,<base64 HMAC-SHA256>`` over ``{id}.{timestamp}.{body}``, keyed
with the base64 part of the web hook's ``whsec_`` secret.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; ValueError if it is not one.

    Stricter than the package (which pads and accepts any length): a secret given at
    configuration must be real base64 of at least 16 bytes."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    key = base64.b64decode(encoded, validate=True)
    if len(key) < 16:
        raise ValueError("a signing secret must hold at least 16 bytes")
    return key


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value. ``body`` is what is sent: the request
    body, or for a GET the query string as sent (our renderers make UTF-8 only)."""
    return Webhook(secret).sign(
        message_id, datetime.fromtimestamp(timestamp, UTC), body.decode("utf-8")
    )


def headers(
    signing_secrets: Sequence[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The Standard Webhooks headers, signed with each of ``signing_secrets``: during a
    rotation's grace period the signatures of both secrets, space-separated (the
    standard's way; a receiver accepts the call if any of them verifies)."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            sign(secret, message_id, timestamp, body) for secret in signing_secrets
        ),
    }
