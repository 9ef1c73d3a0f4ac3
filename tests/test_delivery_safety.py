"""The private-address guard: every form of an internal address is refused, at
configuration, before each call and at connect time, and a name cannot be re-pointed
between the check and the call (DNS rebinding).

Only 127.0.0.1 is ever connected to: the "public" address of the rebinding test is a
TEST-NET address that a socket factory records and refuses before any packet leaves.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

import aiohttp
import httpx
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from gateway.delivery.safety import (
    GuardedResolver,
    UnsafeTarget,
    check_before_call,
    check_target,
    is_public_address,
)
from gateway.runtime import make_http_client
from gateway.settings import Settings
from tests.receiver import Receiver
from tests.support import gql, gql_errors

# Each IPv6 form that embeds or maps an IPv4 address, reaching 127.0.0.1 (or a range
# that is not global), as the issue found them.
INTERNAL_FORMS = {
    "ipv4-compatible": "::127.0.0.1",
    "nat64-well-known": "64:ff9b::127.0.0.1",
    "nat64-local-use": "64:ff9b:1::7f00:1",
    "6to4": "2002:7f00:1::",
    "siit": "::ffff:0:7f00:1",
    "site-local": "fec0::1",
    "ipv4-mapped": "::ffff:127.0.0.1",
    "teredo-client-127.0.0.1": "2001:0:4136:e378:8000:63bf:80ff:fffe",
    "unique-local": "fd00::1",
    "link-local": "fe80::1",
    "ipv6-loopback": "::1",
    "nat64-to-private": "64:ff9b::10.0.0.1",
    "6to4-to-metadata": "2002:a9fe:a9fe::",
}

# The same forms reaching a public IPv4 address are judged by it, and allowed.
PUBLIC_FORMS = {
    "ipv4": "8.8.8.8",
    "ipv4-mapped": "::ffff:8.8.8.8",
    "nat64-well-known": "64:ff9b::8.8.8.8",
    "6to4": "2002:808:808::",
    "teredo": "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
    "global-unicast": "2606:4700::1111",
}


def strict_settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, allow_private_webhooks=False, **overrides)  # type: ignore[call-arg]


@pytest.mark.parametrize("address", INTERNAL_FORMS.values(), ids=INTERNAL_FORMS.keys())
def test_an_internal_form_is_not_public(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC_FORMS.values(), ids=PUBLIC_FORMS.keys())
def test_a_form_reaching_a_public_ipv4_address_is_public(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", INTERNAL_FORMS.values(), ids=INTERNAL_FORMS.keys())
async def test_an_internal_form_is_refused_at_configuration(address: str) -> None:
    with pytest.raises(UnsafeTarget, match="GATEWAY_ALLOW_PRIVATE_WEBHOOKS"):
        await check_target(f"http://[{address}]:8080/hook", allow_private=False)


@pytest.mark.parametrize("address", INTERNAL_FORMS.values(), ids=INTERNAL_FORMS.keys())
def test_an_internal_form_is_refused_before_a_call(address: str) -> None:
    with pytest.raises(UnsafeTarget, match="internal address"):
        check_before_call(f"http://[{address}]:8080/hook", allow_private=False)


@pytest.mark.parametrize(
    "host", ["2130706433", "127.1", "0177.0.0.1", "127.0.0.1.", "127.0.0.1\u3002"]
)
async def test_a_host_that_looks_like_an_address_must_be_a_standard_one(host: str) -> None:
    # aiohttp connects to such hosts without asking the resolver; the system would
    # read every one of them as 127.0.0.1.
    with pytest.raises(UnsafeTarget, match=r"(?i)IP(v4)? address"):
        check_before_call(f"http://{host}/hook", allow_private=False)
    with pytest.raises(UnsafeTarget, match=r"(?i)IP(v4)? address"):
        await check_target(f"http://{host}/hook", allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1/a\r\nX-Injected: 1",
        "http://127.0.0.1:1/a\nb",
        "http://127.0.0.1:1/a\x00b",
        "http://127.0.0.1:1/a\tb",
        "http://127.0.0.1:1/a b",
        "http://127.0.0.1:1/a\x7fb",
    ],
    ids=["crlf", "lf", "nul", "tab", "space", "del"],
)
def test_a_url_with_control_characters_is_refused_even_where_private_targets_are_allowed(
    url: str,
) -> None:
    with pytest.raises(UnsafeTarget, match="control characters"):
        check_before_call(url, allow_private=True)


class Answering(AbstractResolver):
    """A name lookup answering from a script: the n-th lookup gets the n-th list of
    addresses (the last one again after that)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        addresses = self.answers[min(len(self.lookups), len(self.answers)) - 1]
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


class RecordingSockets:
    """aiohttp's socket factory: records each address the connector would connect to
    and refuses all but 127.0.0.1, before any packet leaves."""

    def __init__(self) -> None:
        self.addresses: list[str] = []

    def __call__(self, addr_info: aiohttp.AddrInfoType) -> socket.socket:
        family, kind, proto, _name, sockaddr = addr_info
        self.addresses.append(str(sockaddr[0]))
        if sockaddr[0] != "127.0.0.1":
            raise OSError(f"the test connects to 127.0.0.1 only, not {sockaddr[0]}")
        return socket.socket(family, kind, proto)


async def test_a_name_resolving_to_loopback_is_refused_at_connect_time(
    receiver: Receiver,
) -> None:
    endpoint = receiver.endpoint()
    port = endpoint.url.split(":")[2].split("/")[0]
    lookup = Answering(["127.0.0.1"])
    async with make_http_client(strict_settings(), lookup=lookup) as client:
        with pytest.raises(httpx.TransportError, match=r"internal address 127\.0\.0\.1"):
            await client.get(f"http://hook.test:{port}{endpoint.path}")
    assert lookup.lookups == ["hook.test"]
    assert endpoint.calls == []


async def test_a_name_with_one_internal_address_among_others_is_refused_whole(
    receiver: Receiver,
) -> None:
    endpoint = receiver.endpoint()
    port = endpoint.url.split(":")[2].split("/")[0]
    sockets = RecordingSockets()
    lookup = Answering(["192.0.2.10", "127.0.0.1"])
    async with make_http_client(strict_settings(), lookup=lookup, socket_factory=sockets) as client:
        with pytest.raises(httpx.TransportError, match="internal address"):
            await client.get(f"http://hook.test:{port}{endpoint.path}")
    assert sockets.addresses == []  # nothing was connected to
    assert endpoint.calls == []


def _not_loopback(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """The guard's rule for the rebinding test: TEST-NET addresses stand for public
    ones (the real rule refuses them too, which would prove nothing here)."""
    return not ip.is_loopback


async def _rebinding_client(
    lookup: AbstractResolver, sockets: RecordingSockets, allowed: Callable[..., bool]
) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(lookup, allowed=allowed), socket_factory=sockets
    )
    return aiohttp.ClientSession(connector=connector)


async def test_a_name_rebound_to_loopback_after_the_check_is_never_called_there(
    receiver: Receiver,
) -> None:
    endpoint = receiver.endpoint()
    port = endpoint.url.split(":")[2].split("/")[0]
    # The first lookup answers a "public" address, every later one 127.0.0.1.
    lookup = Answering(["192.0.2.10"], ["127.0.0.1"])
    sockets = RecordingSockets()
    async with await _rebinding_client(lookup, sockets, _not_loopback) as session:
        for _ in range(3):
            with pytest.raises(aiohttp.ClientConnectorError):
                await session.get(f"http://rebind.test:{port}{endpoint.path}")
    # The connector was asked for the checked address only; later lookups, if any
    # were made, answered 127.0.0.1 and were refused before any connection.
    assert sockets.addresses and set(sockets.addresses) == {"192.0.2.10"}
    assert endpoint.calls == []


async def test_the_production_client_makes_one_checked_lookup_per_connection(
    receiver: Receiver,
) -> None:
    # Public, then loopback: the only lookup is the guard's, so the call cannot be
    # checked against one answer and sent to the other.
    endpoint = receiver.endpoint()
    port = endpoint.url.split(":")[2].split("/")[0]
    lookup = Answering(["192.0.2.10"], ["127.0.0.1"])
    sockets = RecordingSockets()
    async with make_http_client(strict_settings(), lookup=lookup, socket_factory=sockets) as client:
        with pytest.raises(httpx.TransportError):
            await client.get(f"http://rebind.test:{port}{endpoint.path}")
    assert lookup.lookups == ["rebind.test"]
    assert sockets.addresses == []  # TEST-NET is not public under the real rule
    assert endpoint.calls == []


CREATE = "mutation($i: WebhookInput!) { createWebhook(input: $i) { webhook { id } } }"
UPDATE = "mutation($id: ID!, $u: String!) { updateWebhook(id: $id, input: {url: $u}) { url } }"


async def test_create_webhook_refuses_a_url_with_a_line_break(api: httpx.AsyncClient) -> None:
    [error] = await gql_errors(
        api, CREATE, i={"url": "http://127.0.0.1:1/a\r\nX-Injected: 1", "events": ["SENT"]}
    )
    assert error["extensions"]["field"] == "input.url"
    assert "control characters" in error["message"]


async def test_update_webhook_refuses_a_url_with_a_line_break(api: httpx.AsyncClient) -> None:
    created = await gql(
        api, CREATE, i={"url": "http://127.0.0.1:1/a", "events": ["SENT"], "backfillDays": 0}
    )
    webhook_id = created["createWebhook"]["webhook"]["id"]
    [error] = await gql_errors(api, UPDATE, id=webhook_id, u="http://127.0.0.1:1/a\nb")
    assert error["extensions"]["field"] == "input.url"
    assert "control characters" in error["message"]
