"""What is read of a receiver's answer: a bounded excerpt, never the whole body.

A receiver is a server we do not control; it may answer gigabytes, compressed or not,
as fast or as slowly as it likes. The sender reads a few kilobytes under its deadline
and hangs up.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncGenerator

import httpx

EXCERPT_CHARS = 500
# Bytes of a response read at most: enough for EXCERPT_CHARS characters of UTF-8.
EXCERPT_BYTES = 4096
ERROR_CHARS = 1000


def _decoded(raw: bytes, encoding: str) -> bytes | None:
    """At most EXCERPT_BYTES of what ``raw`` (the start of a body) encodes, or None
    for an encoding not decoded here. Bounded: a small compressed start may inflate to
    gigabytes, so only as much as the excerpt needs is inflated."""
    encoding = encoding.strip().lower()
    if encoding in {"", "identity"}:
        return raw
    if encoding not in {"gzip", "x-gzip", "deflate"}:
        return None
    # A zlib or gzip header, detected; then deflate without a header, which some
    # servers send as "deflate".
    for wbits in (zlib.MAX_WBITS | 32, -zlib.MAX_WBITS):
        try:
            return zlib.decompressobj(wbits).decompress(raw, EXCERPT_BYTES)
        except zlib.error:
            continue
    return None


async def read_excerpt(response: httpx.Response) -> str | None:
    """The start of a response's body as text, for the attempt log.

    Reads at most EXCERPT_BYTES and stops: the caller closes the response, and aiohttp
    drops a connection whose body was not read to the end, so a receiver answering
    gigabytes costs us a few kilobytes."""
    raw = bytearray()
    chunks = response.aiter_raw()
    try:
        async for chunk in chunks:
            raw += chunk
            if len(raw) >= EXCERPT_BYTES:
                break
    finally:
        if isinstance(chunks, AsyncGenerator):  # left mid-way: finish it now, not at GC
            await chunks.aclose()
    truncated = len(raw) >= EXCERPT_BYTES
    content = _decoded(bytes(raw[:EXCERPT_BYTES]), response.headers.get("content-encoding", ""))
    if content is None:
        return f"[a {response.headers['content-encoding']}-encoded body]"
    if content.isascii() and b"\0" not in content:
        # Any ASCII-compatible charset reads these bytes the same (UTF-16 and -32 text
        # would hold NULs), and finding the charset costs ~30 us of header parsing.
        text = content.decode("ascii")
    else:
        try:
            text = content.decode(response.charset_encoding or "utf-8", "replace")
        except LookupError:  # a charset Python does not know
            text = content.decode("utf-8", "replace")
    if truncated or len(text) > EXCERPT_CHARS:
        return text[: EXCERPT_CHARS - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return text or None


def describe_error(exc: Exception) -> str:
    """An exception as an attempt's error text: its type and message, bounded.

    The aiohttp transport re-raises aiohttp's errors as httpx ones under names that can
    mislead ("ConnectTimeout" for a receiver that hung up); the original says more."""
    if isinstance(exc, httpx.TransportError) and isinstance(exc.__cause__, Exception):
        exc = exc.__cause__
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:ERROR_CHARS]
