"""A refused request leaves its kept-alive connection open: a provider's next request
on it is answered, not failed. (uvicorn closes the connection of an app that raises.)"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest

from gateway.services.accounts import CreatedAccount
from tests.conftest import Gateway


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    """Send one HTTP/1.1 request on the connection; its answer's status, body read."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")
    )
    await reader.readexactly(length)
    return int(lines[0].split()[1])


def post(path: str, body: bytes, content_type: str = "application/json", **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: gateway", f"content-type: {content_type}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("brevo", b'{"event": '),
        ("brevo", b"[" + b"9" * 5000 + b"]"),
        ("brevo", b'[{"event": "delivered", "email": "a@b.c", "date": "0001-01-01 00:00:00"}]'),
        ("smtpeter", b'{"event": "delivery", "data": {"size": 1e400, "time": 1}}'),
        ("jangomail/opne", b""),
    ],
)
async def test_a_refused_ingest_keeps_the_connection(
    gateway: Gateway, account: CreatedAccount, route: str, body: bytes
) -> None:
    provider = route.split("/")[0]
    path = f"/ingest/{provider}/{account.ingest_tokens[provider]}{route[len(provider) :]}"
    url = urlsplit(gateway.base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        first = await exchange(reader, writer, post(path, body))
        assert first < 500
        again = await exchange(reader, writer, post(path, body))
        assert again == first
    finally:
        writer.close()


async def test_invalid_utf8_on_graphql_keeps_the_connection(
    gateway: Gateway, account: CreatedAccount
) -> None:
    url = urlsplit(gateway.base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    auth = {"authorization": f"Bearer {account.api_key}"}
    try:
        assert await exchange(reader, writer, post("/graphql", b'{"query": "\xff"}', **auth)) == 400
        ok = post("/graphql", b'{"query": "{ __typename }"}', **auth)
        assert await exchange(reader, writer, ok) == 200
    finally:
        writer.close()
