"""Which module speaks for which provider. Adding a provider is one module and one line here."""

from __future__ import annotations

from collections.abc import Callable

from gateway.domain.events import Provider
from gateway.providers import brevo, jangomail, smtpeter
from gateway.providers.base import ProviderAdapter

ADAPTERS: dict[Provider, ProviderAdapter] = {
    Provider.BREVO: brevo.adapter,
    Provider.JANGOMAIL: jangomail.adapter,
    Provider.SMTPETER: smtpeter.adapter,
}


def provider_named(name: str) -> Provider | None:
    """The provider of an ingest route segment (``brevo``), case-insensitively."""
    try:
        return Provider(name.upper())
    except ValueError:
        return None


def _no_fields(_name: str) -> str | None:
    return None


def field_resolver(provider: Provider) -> Callable[[str], str | None]:
    """How a source of this provider names its parameters: only JangoMail lets customers
    rename them, so the other providers accept none."""
    return jangomail.resolve_field if provider is Provider.JANGOMAIL else _no_fields
