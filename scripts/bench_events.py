"""Benchmark data: realistic ~600-byte Brevo events, all distinct, in a fixed shape.

Event number ``n`` decides everything about an event, so the load generator, the bulk
filler and the query benchmark agree on the data without sharing state:

- the address is one of ``ADDRESSES`` (``n % ADDRESSES``), ~10 events each at 1M;
- ``common-a`` and ``common-b`` are each on ~50% of events, independently;
- ``rare-x`` and ``rare-y`` are each on ~0.11% of events, both on 0.01% (~100 at 1M).
"""

from __future__ import annotations

import orjson

ADDRESSES = 100_000
COMMON_A, COMMON_B, RARE_X, RARE_Y = "common-a", "common-b", "rare-x", "rare-y"
TAG_PAIRS: dict[str, tuple[str, str]] = {
    "common+common": (COMMON_A, COMMON_B),
    "common+rare": (COMMON_A, RARE_X),
    "rare+rare": (RARE_X, RARE_Y),
}

_KINDS = ("delivered", "request", "opened", "click", "delivered", "unique_opened", "soft_bounce")
_BASE_TS = 1_767_225_600  # 2026-01-01T00:00:00Z
_SPREAD_SECONDS = 90 * 86_400


def _mix(n: int) -> int:
    """A cheap 64-bit hash (splitmix64's finaliser): independent-looking bits per n."""
    z = (n + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def address(n: int) -> str:
    user = n % ADDRESSES
    return f"user{user:06d}@mail{user % 97:02d}.example.com"


def tags(n: int) -> list[str]:
    bits = _mix(n)
    found = []
    if bits & 1:
        found.append(COMMON_A)
    if bits & 2:
        found.append(COMMON_B)
    if n % 1000 == 3 or n % 10_000 == 7:
        found.append(RARE_X)
    if n % 1000 == 5 or n % 10_000 == 7:
        found.append(RARE_Y)
    return found


def brevo_event(n: int) -> dict[str, object]:
    """Brevo's event number ``n``: distinct payload, message id and time for every n."""
    bits = _mix(n)
    kind = _KINDS[(bits >> 8) % len(_KINDS)]
    ts = _BASE_TS + (bits >> 16) % _SPREAD_SECONDS
    event: dict[str, object] = {
        "event": kind,
        "email": address(n),
        "id": 418_000 + n % 1000,
        "date": "2026-01-01 01:00:00",
        "ts": ts,
        "message-id": f"<20260101010000.{n:012d}.{bits % 99_991:05d}@smtp-relay.mailin.fr>",
        "ts_event": ts,
        "ts_epoch": ts * 1000 - 1234,
        "subject": f"Your order #{n % 9_999_991:07d} has shipped: tracking details inside",
        "X-Mailin-custom": f'{{"order_id":"ORD-{n:09d}","customer":"C-{bits % 999_983:06d}",'
        '"campaign":"shipping-confirmation"}',
        "sending_ip": f"185.41.{(bits >> 40) % 256}.{(bits >> 48) % 256}",
        "template_id": 20 + (bits >> 24) % 12,
        "tags": tags(n),
        "contact_id": 8_000_000 + n % ADDRESSES,
        "sender_email": "orders@shop.example.com",
        "mirror_link": f"https://app-smtp.brevo.com/log/preview/{bits:016x}-{n:012d}",
    }
    if kind == "click":
        event["link"] = f"https://shop.example.com/track/{n:012d}?utm_source=brevo"
    elif kind == "soft_bounce":
        event["reason"] = "452 4.2.2 The email account that you tried to reach is over quota"
    return event


def single_body(n: int) -> bytes:
    return orjson.dumps(brevo_event(n))


def batch_body(first: int, size: int) -> bytes:
    return orjson.dumps([brevo_event(n) for n in range(first, first + size)])
