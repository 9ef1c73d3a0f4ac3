"""A delivery's HTTP request in the format its web hook chose.

Each provider's module renders its own wire format; this module only picks one and
adds the GATEWAY format (the GraphQL ``Event`` as JSON) and the parameter rules: with
``parameters`` only fields with a non-blank name are sent, under that name.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from gateway.domain.events import DETAIL_FIELDS, NormalizedEvent
from gateway.domain.jsontext import json_bytes, json_text
from gateway.domain.webhooks import HttpMethod, WebhookConfig, WebhookFormat
from gateway.providers import brevo, jangomail, smtpeter


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


# The GATEWAY format's fields, as the GraphQL Event names them.
GATEWAY_FIELDS: tuple[str, ...] = (
    "id",
    "type",
    "provider",
    "providerEvent",
    "messageId",
    "email",
    "occurredAt",
    "sentAt",
    "subject",
    "template",
    "tags",
    "customId",
    "raw",
    *(_camel(name) for name in DETAIL_FIELDS),
)


def resolve_field(fmt: WebhookFormat, name: str) -> str | None:
    """The field a web hook parameter names, or None if the format has no such field."""
    if fmt is WebhookFormat.JANGOMAIL:
        return jangomail.resolve_field(name)
    if name in GATEWAY_FIELDS:
        return name
    resolved = jangomail.resolve_field(name)
    return resolved if resolved in GATEWAY_FIELDS else None


@dataclass(frozen=True, slots=True)
class RenderedRequest:
    method: str
    url: str
    body: bytes
    content_type: str | None
    # What is signed: the body, or for GET the query string as sent.
    signed_content: bytes


def _json_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def gateway_document(event_id: int, event: NormalizedEvent) -> dict[str, Any]:
    """The GraphQL ``Event`` of ``event`` as a JSON object (camelCase names)."""
    document: dict[str, Any] = {
        "id": str(event_id),
        "type": event.type.value,
        "provider": event.provider.value,
        "providerEvent": event.provider_event,
        "messageId": event.message_id,
        "email": event.email,
        "occurredAt": event.occurred_at.isoformat(),
        "sentAt": event.sent_at.isoformat() if event.sent_at else None,
        "subject": event.subject,
        "template": event.template,
        "tags": list(event.tags),
        "customId": event.custom_id,
        "raw": event.raw,
    }
    for name in DETAIL_FIELDS:
        value = getattr(event, name)
        if value is not None:
            document[_camel(name)] = _json_value(value)
    return document


def _selected(document: Mapping[str, Any], parameters: Mapping[str, str] | None) -> dict[str, Any]:
    if parameters is None:
        return dict(document)
    return {name: document.get(field) for field, name in parameters.items() if name}


def _flat(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return json_text(value)
    return str(value)


def _with_query(url: str, query: str) -> str:
    parts = urlsplit(url)
    joined = f"{parts.query}&{query}" if parts.query and query else parts.query or query
    return urlunsplit((parts.scheme, parts.netloc, parts.path, joined, parts.fragment))


def render_request(config: WebhookConfig, event_id: int, event: NormalizedEvent) -> RenderedRequest:
    """The request owed to ``config`` for one event."""
    pairs: list[tuple[str, str]] | None = None
    document: Any = None
    if config.format is WebhookFormat.JANGOMAIL:
        pairs = jangomail.render(event, config.parameters)
    elif config.format is WebhookFormat.BREVO:
        document = brevo.render(event)
    elif config.format is WebhookFormat.SMTPETER:
        document = smtpeter.render_webhook(event)
    else:
        selected = _selected(gateway_document(event_id, event), config.parameters)
        if config.method is HttpMethod.GET:
            pairs = [(name, _flat(value)) for name, value in selected.items()]
        else:
            document = selected
    if pairs is not None:
        # Values are URL-encoded here, once, as JangoMail does (UTF-8, spaces as +).
        encoded = urlencode(pairs)
        if config.method is HttpMethod.GET:
            return RenderedRequest(
                "GET", _with_query(config.url, encoded), b"", None, encoded.encode()
            )
        body = encoded.encode()
        return RenderedRequest("POST", config.url, body, "application/x-www-form-urlencoded", body)
    body = json_bytes(document)
    return RenderedRequest("POST", config.url, body, "application/json", body)
