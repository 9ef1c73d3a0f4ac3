"""No web hook calls to loopback, private, link-local or otherwise internal addresses
unless ``GATEWAY_ALLOW_PRIVATE_WEBHOOKS`` is set. Checked after DNS resolution, both
when a web hook is configured and before every call (a name may be re-pointed)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


class UnsafeTarget(ValueError):
    """The URL may not be called; the message says why."""


def check_url_shape(url: str) -> tuple[str, int]:
    """The host and port of an http(s) URL; UnsafeTarget if it is not one."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise UnsafeTarget("must be an http:// or https:// URL")
    if not parts.hostname:
        raise UnsafeTarget("has no host")
    if parts.username or parts.password:
        raise UnsafeTarget("must not carry credentials; use the signing secret")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeTarget("has an invalid port") from None
    return parts.hostname, port


def _internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


async def check_target(url: str, *, allow_private: bool) -> None:
    """UnsafeTarget unless every address ``url``'s host resolves to may be called."""
    host, port = check_url_shape(url)
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnsafeTarget(f"host {host!r} does not resolve: {exc.strerror}") from None
    for info in infos:
        address = str(info[4][0])
        if _internal(address):
            raise UnsafeTarget(
                f"resolves to the internal address {address}; set "
                "GATEWAY_ALLOW_PRIVATE_WEBHOOKS=true to allow such targets"
            )
