"""No web hook calls to loopback, private, link-local or otherwise internal addresses
unless ``GATEWAY_ALLOW_PRIVATE_WEBHOOKS`` is set.

Three places apply one rule (``is_public_address``):

- configuration (``check_target``): the URL's shape, then every address its host
  resolves to, so that a bad target is refused with a clear error at once;
- before each call (``check_before_call``): the shape again (rows written before a rule
  existed) and a host that is an address literal, which aiohttp connects to without a
  lookup;
- at connect time (``GuardedResolver``): the HTTP client's only name lookup. The
  addresses it returns are the ones checked and the ones connected to, so a name that
  answers differently a second time (DNS rebinding) cannot move the call elsewhere.

IPv6 forms that carry an IPv4 address are judged by the IPv4 address they reach.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import re
import socket
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from urllib.parse import urlsplit

import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

IPAddress = IPv4Address | IPv6Address

ALLOW_HINT = "set GATEWAY_ALLOW_PRIVATE_WEBHOOKS=true to allow such targets"

_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated IPv4-compatible, [::127.0.0.1]
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")  # IPv4-translated, [::ffff:0:7f00:1]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known NAT64 prefix
# C0 controls, space, DEL, C1 controls and any other whitespace.
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f-\x9f\s]")


class UnsafeTarget(ValueError):
    """The URL may not be called; the message says why."""


class RefusedAddress(OSError):
    """A name resolved to an address that may not be called. An OSError, as a failed
    lookup is: aiohttp's connector reports it as a connection error naming the host."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EACCES, message)  # the strerror aiohttp shows


def embedded_ipv4(ip: IPv6Address) -> list[IPv4Address]:
    """The IPv4 addresses an IPv6 address carries and so reaches: IPv4-mapped,
    IPv4-compatible, SIIT, NAT64 (64:ff9b::/96), 6to4 (the relay's target) and Teredo
    (server and client). The local-use NAT64 prefix 64:ff9b:1::/48 places the IPv4
    address where its operator chooses; it is not global unicast, so it is refused
    whole instead."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in _COMPATIBLE or ip in _SIIT or ip in _NAT64:
        return [IPv4Address(int(ip) & 0xFFFF_FFFF)]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)
    return []


def is_public_address(ip: IPAddress) -> bool:
    """True for an address on the public internet: not loopback, private, link-local,
    site-local, shared, reserved, documentation or multicast, and not an IPv6 form
    that reaches such an IPv4 address."""
    if isinstance(ip, IPv4Address):
        return ip.is_global and not ip.is_multicast
    carried = embedded_ipv4(ip)
    if carried:
        return all(is_public_address(address) for address in carried)
    # Only 2000::/3 is global unicast: this leaves out fc00::/7, fe80::/10, the
    # site-local fec0::/10 and ff00::/8, which ipaddress's is_global does not all
    # exclude on every Python version.
    return ip in _GLOBAL_UNICAST and ip.is_global


def _parse(address: str) -> IPAddress:
    return ipaddress.ip_address(address.split("%", 1)[0])  # without an IPv6 zone


def _refusal(address: str) -> str:
    return f"resolves to the internal address {address}; {ALLOW_HINT}"


def check_url_shape(url: str) -> tuple[str, int]:
    """The host and port of an http(s) URL; UnsafeTarget if it is not one."""
    # A CR or LF could split the request line; any control character or space is
    # refused rather than guessed at (URL-encode them).
    found = _CONTROL_OR_SPACE.search(url)
    if found is not None:
        raise UnsafeTarget(
            f"must not contain spaces or control characters (U+{ord(found.group()):04X} "
            f"at position {found.start()}); URL-encode them"
        )
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


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` names literally, or None for a name to look up.

    aiohttp takes a host with a colon, or of only digits and dots, as an address and
    connects to it without asking the resolver; such a host must be a standard address
    we can judge (``2130706433`` or ``127.1`` would reach 127.0.0.1 unchecked)."""
    if ":" not in host and not host.replace(".", "").isdigit():
        return None
    try:
        return _parse(host)
    except ValueError:
        raise UnsafeTarget(f"host {host!r} is not a standard IP address") from None


def connect_host(url: str) -> str:
    """The host aiohttp connects to for ``url``, derived as the httpx-aiohttp transport
    hands it over: httpx normalizes the URL, yarl parses the result, aiohttp takes its
    raw host. Judged as such, since other parsers disagree (``127.0.0.1\u3002`` is a
    name to ``urlsplit`` but the address-like ``127.0.0.1.`` to aiohttp)."""
    try:
        host = URL(str(httpx.URL(url))).raw_host
    except (httpx.InvalidURL, ValueError) as exc:
        raise UnsafeTarget(f"is not a valid URL ({exc})") from None
    if not host:
        raise UnsafeTarget("has no host")
    return host


def check_before_call(url: str, *, allow_private: bool) -> None:
    """What is checked before each call (names are checked by GuardedResolver)."""
    check_url_shape(url)
    if allow_private:
        return
    address = literal_address(connect_host(url))
    if address is not None and not is_public_address(address):
        raise UnsafeTarget(_refusal(str(address)))


async def check_target(url: str, *, allow_private: bool) -> None:
    """UnsafeTarget unless every address ``url``'s host resolves to may be called."""
    _host, port = check_url_shape(url)
    if allow_private:
        return
    host = connect_host(url)
    literal = literal_address(host)
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except socket.gaierror as exc:
            raise UnsafeTarget(f"host {host!r} does not resolve: {exc.strerror}") from None
        addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        if not is_public_address(_parse(address)):
            raise UnsafeTarget(_refusal(address))


class GuardedResolver(AbstractResolver):
    """The HTTP client's name lookup: answers only if every address found may be
    called, so the connector connects to checked addresses and nothing else."""

    def __init__(
        self,
        lookup: AbstractResolver,
        *,
        allowed: Callable[[IPAddress], bool] = is_public_address,
    ) -> None:
        self._lookup = lookup
        self._allowed = allowed

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._lookup.resolve(host, port, family)
        if not found:
            raise RefusedAddress(f"host {host!r} does not resolve")
        for result in found:
            if not self._allowed(_parse(result["host"])):
                raise RefusedAddress(f"{host} {_refusal(result['host'])}")
        return found

    async def close(self) -> None:
        await self._lookup.close()
