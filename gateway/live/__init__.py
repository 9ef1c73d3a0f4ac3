"""Live items for websocket subscribers, fanned out to every replica through Redis.

- ``hub``: account-scoped channels; publish from anywhere, subscribe in any process.
- ``subscriber``: one subscriber's bounded queue (overflow, gaps).
- ``publisher``: pipelined publishing that never makes the caller wait for Redis.
- ``events``: stored events published after commit, and streams with catch-up.
- ``codec``: stored events as compact JSON and back.
"""

from gateway.live.events import EVENTS, LiveEvents
from gateway.live.hub import Kind, LiveHub, LiveUnavailable
from gateway.live.subscriber import GAP, Gap, Subscriber, SubscriberOverflow

__all__ = [
    "EVENTS",
    "GAP",
    "Gap",
    "Kind",
    "LiveEvents",
    "LiveHub",
    "LiveUnavailable",
    "Subscriber",
    "SubscriberOverflow",
]
