"""Receivers that do not play by the rules: raw TCP servers on 127.0.0.1 that answer
garbage, hang up, send a header too long, drip bytes, answer 300 MB or a gzip bomb.
Every call to them ends in a logged attempt with its error, counts against the web
hook, and leads to a retry or a final state; none costs the gateway its memory."""

from __future__ import annotations

import asyncio
import os
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from gateway.services.accounts import CreatedAccount
from gateway.storage import webhooks as webhook_store
from gateway.storage.db import begin_write
from tests.conftest import Gateway
from tests.support import brevo_event, gql, ingest_brevo

CREATE = """
mutation($i: WebhookInput!) { createWebhook(input: $i) { webhook { id } } }
"""
DELIVERIES = """
query($id: ID!) { webhook(id: $id) { consecutiveFailures
  deliveries(first: 10) { edges { node { id status
    attempts { number statusCode error responseExcerpt } } } } } }
"""

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A TCP server on 127.0.0.1 answering each connection with ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.port = 0
        self.finished = 0  # connections handled to the end
        self.writers: set[asyncio.StreamWriter] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            await self._handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the gateway hung up: what these tests expect of it
        finally:
            writer.close()
            self.writers.discard(writer)
            self.finished += 1

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/hook"


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[RawServer]]]:
    started: list[tuple[asyncio.Server, RawServer]] = []

    async def start(handler: Handler) -> RawServer:
        raw = RawServer(handler)
        server = await asyncio.start_server(raw._serve, "127.0.0.1", 0)
        raw.port = server.sockets[0].getsockname()[1]
        started.append((server, raw))
        return raw

    yield start
    for server, raw in started:
        server.close()
        for writer in list(raw.writers):
            writer.close()
        await server.wait_closed()


async def read_request_head(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


async def answer_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request_head(reader)
    writer.write(b"SSH-2.0-OpenSSH_9.6\r\nthis is not HTTP at all\r\n\r\n")
    await writer.drain()


async def greet_with_garbage(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")  # before any request: where TLS expects a hello
    await writer.drain()


async def hang_up(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
    await read_request_head(reader)


async def answer_a_huge_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 9000 + b"\r\nContent-Length: 2\r\n\r\nok")
    await writer.drain()


async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
    """``head``, then a byte a second for up to a minute, or until hung up on."""
    await read_request_head(reader)
    writer.write(head)
    for _ in range(60):
        if reader.at_eof():
            return
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(1)


async def drip_the_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await drip(reader, writer, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")


async def drip_the_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await drip(reader, writer, b"HTTP/1.1 200 OK\r\nX-Slow: ")


async def create_webhook(api: httpx.AsyncClient, url: str) -> str:
    data = await gql(api, CREATE, i={"url": url, "events": ["DELIVERED"], "backfillDays": 0})
    return str(data["createWebhook"]["webhook"]["id"])


async def delivery_when(
    api: httpx.AsyncClient,
    webhook_id: str,
    done: Callable[[dict[str, Any]], bool],
    timeout: float = 30,
) -> tuple[dict[str, Any], int]:
    """The web hook's one delivery once ``done`` says so, and its failure count."""
    deadline = time.monotonic() + timeout
    while True:
        webhook = (await gql(api, DELIVERIES, id=webhook_id))["webhook"]
        edges = webhook["deliveries"]["edges"]
        if edges and done(edges[0]["node"]):
            # The web hook's row was read before its deliveries: read it again now
            # that the last attempt is known to be written.
            again = (await gql(api, DELIVERIES, id=webhook_id))["webhook"]
            return edges[0]["node"], again["consecutiveFailures"]
        assert time.monotonic() < deadline, f"not settled: {edges}"
        await asyncio.sleep(0.1)


def failed(delivery: dict[str, Any]) -> bool:
    return bool(delivery["status"] == "FAILED")


def attempted_and_retrying_or_failed(delivery: dict[str, Any]) -> bool:
    return bool(delivery["attempts"]) and delivery["status"] in {"RETRYING", "FAILED"}


@pytest.mark.parametrize(
    ("handler", "scheme", "error"),
    [
        (answer_garbage, "http", "ClientResponseError"),
        (hang_up, "http", "ServerDisconnectedError"),
        (answer_a_huge_header, "http", "ClientResponseError"),
        (greet_with_garbage, "https", "SSL"),
    ],
    ids=["not-http", "hangs-up", "header-over-8-kb", "tls-to-a-plain-server"],
)
async def test_a_broken_receiver_is_a_logged_failure_and_the_delivery_fails(
    gateway: Gateway,
    account: CreatedAccount,
    api: httpx.AsyncClient,
    raw_server: Callable[[Handler], Awaitable[RawServer]],
    handler: Handler,
    scheme: str,
    error: str,
) -> None:
    server = await raw_server(handler)
    webhook_id = await create_webhook(api, server.url(scheme))
    await ingest_brevo(gateway, account, brevo_event())
    delivery, failures = await delivery_when(api, webhook_id, failed)
    # The first call and both retries: each logged with its error, none answered.
    assert [a["number"] for a in delivery["attempts"]] == [1, 2, 3]
    assert all(a["statusCode"] is None for a in delivery["attempts"])
    assert all(error in a["error"] for a in delivery["attempts"]), delivery["attempts"]
    assert failures == 3


@pytest.mark.parametrize("handler", [drip_the_body, drip_the_headers], ids=["body", "headers"])
async def test_a_dripping_receiver_is_cut_off_at_the_deadline(
    gateway: Gateway,
    account: CreatedAccount,
    api: httpx.AsyncClient,
    raw_server: Callable[[Handler], Awaitable[RawServer]],
    handler: Handler,
) -> None:
    server = await raw_server(handler)
    webhook_id = await create_webhook(api, server.url())
    await ingest_brevo(gateway, account, brevo_event())
    delivery, failures = await delivery_when(api, webhook_id, attempted_and_retrying_or_failed)
    first = delivery["attempts"][0]
    limit = gateway.settings.delivery_timeout_seconds
    assert f"no complete answer within {limit:g} s" in first["error"]
    assert failures >= 1


async def test_a_stored_url_with_a_line_break_is_refused_at_send_time(
    gateway: Gateway, account: CreatedAccount, api: httpx.AsyncClient
) -> None:
    # A web hook written before URLs were checked for control characters.
    webhook_id = await create_webhook(api, "http://127.0.0.1:9/hook")
    async with begin_write(gateway.services.engine) as connection:
        await webhook_store.update_webhook(
            connection,
            webhook_id=int(webhook_id),
            values={"url": "http://127.0.0.1:9/hook\r\nX-Injected: 1"},
        )
    await ingest_brevo(gateway, account, brevo_event())
    delivery, failures = await delivery_when(api, webhook_id, failed)
    assert all("control characters" in a["error"] for a in delivery["attempts"])
    assert failures == 3


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """The most this process held in memory while a block ran, beyond what it held
    before (sampled every 10 ms)."""

    def __init__(self) -> None:
        self.start = resident_bytes()
        self.peak = self.start
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, resident_bytes())
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> PeakMemory:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.peak = max(self.peak, resident_bytes())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 1e6


HUGE = 300 * 1024 * 1024


async def test_a_300_mb_answer_costs_a_few_kilobytes_and_is_logged_truncated(
    gateway: Gateway,
    account: CreatedAccount,
    api: httpx.AsyncClient,
    raw_server: Callable[[Handler], Awaitable[RawServer]],
) -> None:
    sent = 0

    async def answer_300_mb(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % HUGE)
        chunk = b"x" * 65536  # the same chunk again and again: nothing held here
        while sent < HUGE:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)

    server = await raw_server(answer_300_mb)
    webhook_id = await create_webhook(api, server.url())
    async with PeakMemory() as memory:
        await ingest_brevo(gateway, account, brevo_event())
        delivery, _ = await delivery_when(api, webhook_id, lambda d: d["status"] == "SUCCEEDED")
        while server.finished < 1:  # the receiver noticed the hang-up
            await asyncio.sleep(0.02)
    assert memory.growth_mb < 100, f"grew by {memory.growth_mb:.0f} MB"
    [attempt] = delivery["attempts"]
    assert attempt["responseExcerpt"] == "x" * 499 + "\N{HORIZONTAL ELLIPSIS}"
    assert sent < 32 * 1024 * 1024  # hung up on, long before 300 MB


async def test_a_gzip_bomb_is_inflated_only_as_far_as_the_excerpt(
    gateway: Gateway,
    account: CreatedAccount,
    api: httpx.AsyncClient,
    raw_server: Callable[[Handler], Awaitable[RawServer]],
) -> None:
    async def bomb(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # 1 GB of zeros as gzip, compressed as it is sent (a megabyte of zeros
        # compresses to about a kilobyte).
        await read_request_head(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        compressor = zlib.compressobj(wbits=31)
        block = b"0" * (1 << 20)
        for _ in range(1024):
            if reader.at_eof():
                return  # hung up on
            data = compressor.compress(block)
            if data:
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()
            await asyncio.sleep(0)  # compressing is work: let the gateway run too
        tail = compressor.flush()
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
        await writer.drain()

    server = await raw_server(bomb)
    webhook_id = await create_webhook(api, server.url())
    async with PeakMemory() as memory:
        await ingest_brevo(gateway, account, brevo_event())
        delivery, _ = await delivery_when(api, webhook_id, lambda d: d["status"] == "SUCCEEDED")
    assert memory.growth_mb < 100, f"grew by {memory.growth_mb:.0f} MB"
    [attempt] = delivery["attempts"]
    assert attempt["responseExcerpt"] == "0" * 499 + "\N{HORIZONTAL ELLIPSIS}"
