"""GraphQL subscriptions, and the sharing that lets one event reach many subscribers.

An event with 1,000 local subscribers must not cost 1,000 GraphQL executions (Strawberry
resolves a field in ~5 µs) nor 1,000 trips through Strawberry's per-result machinery
(extension hooks, message building, JSON): measured, that was ~100 µs per subscriber.

- Every local subscriber of an account receives the *same* decoded event object from
  the live hub, so that object gets one GraphQL view (:class:`SharedViews`).
- Over a websocket, the protocol handler hands each operation a :class:`LiveSink`: its
  socket, its result message, and the request it was started with. The resolver
  executes that request once per event and selection (the same document, variables
  and operation name), with the event's view as the subscription's root value, through
  Strawberry's public ``Schema.execute``, and keeps ``{"data": …}`` as JSON with the
  view. Each subscriber's resolver writes that text straight into its own protocol
  message, so what is left per subscriber is a dictionary look-up, waking its task and
  one socket write.
- Results with errors, and other transports, take Strawberry's ordinary path (the
  resolver yields the view), which masks and reports errors.

Only the fields of an event are shared, and those are the same for every subscriber of
the account the event belongs to.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import orjson
import strawberry
from graphql import GraphQLError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected
from strawberry.types import Info
from strawberry.types.graphql import OperationType

from gateway.api.graphql.context import Context, authorized, object_id, timed_out, user_error
from gateway.api.graphql.types import Event, EventFilter, event_view
from gateway.api.graphql.webhooks import DeliveryAttempt
from gateway.domain.query import StoredEvent
from gateway.domain.webhooks import AttemptRecord
from gateway.live import GAP, LiveUnavailable, SubscriberOverflow
from gateway.live.attempts import ATTEMPTS
from gateway.services.accounts import InputError
from gateway.services.reads import QueryTimeout

SUBSCRIPTION_ONLY = (OperationType.SUBSCRIPTION,)


@dataclass(frozen=True, slots=True)
class Selection:
    """What a subscription asked for, as its client sent it: equal selections get equal
    results for the same event."""

    query: str
    variables: dict[str, Any] | None
    operation_name: str | None

    @property
    def key(self) -> str:
        variables = orjson.dumps(self.variables, option=orjson.OPT_SORT_KEYS).decode()
        return f"{self.operation_name}\x00{variables}\x00{self.query}"


class _Shared:
    __slots__ = ("asked", "results", "stored", "view")

    def __init__(self, stored: StoredEvent, view: Event) -> None:
        self.stored = stored
        self.view = view
        # Selection key -> {"data": …} as JSON, or None when the result had errors.
        self.results: dict[str, str | None] = {}
        # Selections one subscriber has asked for (see encoded_event).
        self.asked: set[str] = set()


class SharedViews:
    """One GraphQL view per event object, and its encoded results per selection.

    Entries hold their objects, so an id in here always names the object it was made
    for; the oldest go once there are ``size`` (what they hold is bounded by that many
    events): an event is served to all of its local subscribers within moments, and one
    that is later than that is executed again.
    """

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._by_event: dict[int, _Shared] = {}
        self._by_view: dict[int, _Shared] = {}

    def view(self, stored: StoredEvent) -> Event:
        shared = self._by_event.get(id(stored))
        if shared is None:
            shared = _Shared(stored, event_view(stored))
            self._by_event[id(stored)] = shared
            self._by_view[id(shared.view)] = shared
            if len(self._by_event) > self._size:
                oldest = self._by_event.pop(next(iter(self._by_event)))
                del self._by_view[id(oldest.view)]
        return shared.view

    def shared(self, view: object) -> _Shared | None:
        """What is shared about a view made here; None for any other object."""
        shared = self._by_view.get(id(view))
        return shared if shared is not None and shared.view is view else None


# Process-wide, like Strawberry's parser and validation caches: subscribers on every
# websocket of this process share it.
SHARED_VIEWS = SharedViews()


async def execute_selection(
    schema: strawberry.Schema, selection: Selection, view: Event, context: object
) -> str | None:
    """``{"data": …}`` of ``selection`` for one event's view, as JSON; None if the
    result has errors (those take Strawberry's path, which masks them)."""
    result = await schema.execute(
        selection.query,
        variable_values=selection.variables,
        context_value=context,
        root_value=view,
        operation_name=selection.operation_name,
        allowed_operation_types=SUBSCRIPTION_ONLY,
    )
    if result.errors:
        return None
    return orjson.dumps({"data": result.data}).decode()


async def encoded_event(
    schema: strawberry.Schema, selection: Selection, key: str, view: Event, context: object
) -> str | None:
    """The shared ``{"data": …}`` text of ``selection`` (whose key is ``key``) for a
    shared view, executed by the second subscriber that asks for it; None for the first.

    Executing through ``Schema.execute`` (extensions, caches) costs several times
    Strawberry's own per-result path, and pays only when the result is shared: a lone
    subscriber, such as a resumed one reading what it missed, takes Strawberry's path.
    """
    shared = SHARED_VIEWS.shared(view)
    if shared is None:
        return None
    if key in shared.results:
        return shared.results[key]
    if key not in shared.asked:
        shared.asked.add(key)
        return None
    text = shared.results[key] = await execute_selection(schema, selection, view, context)
    return text


@dataclass(frozen=True, slots=True)
class LiveSink:
    """Where one websocket operation's results may be written directly: its socket,
    its protocol's result message up to the payload, and the request it runs."""

    websocket: WebSocket
    prefix: str
    selection: Selection
    key: str

    @classmethod
    def for_message(
        cls, websocket: WebSocket, message: dict[str, Any], selection: Selection
    ) -> LiveSink:
        """``message`` is the protocol's result message for the operation, without its
        payload (e.g. ``{"id": "1", "type": "next"}``)."""
        text = orjson.dumps({**message, "payload": None}).decode()
        return cls(websocket, text.removesuffix("null}"), selection, selection.key)

    async def send(self, payload: str) -> bool:
        """Send one result; False once the connection is gone."""
        try:
            await self.websocket.send_text(self.prefix + payload + "}")
        except (WebSocketDisconnect, WebSocketDisconnected):
            return False
        return True


# Set by the websocket protocol handlers for each operation (gateway.api.graphql.app).
LIVE_SINK: contextvars.ContextVar[LiveSink | None] = contextvars.ContextVar(
    "live_sink", default=None
)


def _overflow_error(overflow: SubscriberOverflow, last_id: int | None) -> GraphQLError:
    resume = f"; subscribe again with after: {last_id!s}" if last_id is not None else ""
    return GraphQLError(
        f"this subscription fell more than {overflow.max_queue} events behind and was "
        f"ended{resume}",
        extensions={
            "code": "SUBSCRIBER_OVERFLOW",
            "lastId": None if last_id is None else str(last_id),
        },
    )


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Each newly stored event that matches `where`, as it is stored. With "
        "`after` (the id of the last event seen), first the events stored since then."
    )
    async def events(
        self,
        info: Info[Context, None],
        where: EventFilter | None = None,
        after: strawberry.ID | None = None,
    ) -> AsyncGenerator[Event, None]:
        context = authorized(info)
        after_id = None if after is None else object_id(after, "after")
        domain_filter = (where or EventFilter()).to_domain()
        try:
            context.services.events.check_filter(domain_filter)
        except InputError as error:
            raise user_error(error) from None
        stream = context.services.live_events.stream(
            context.account_id, domain_filter, after_id=after_id
        )
        sink = LIVE_SINK.get()
        schema, request_context = info.schema, info.context
        last_id = after_id
        try:
            async with aclosing(stream):
                async for stored in stream:
                    view = SHARED_VIEWS.view(stored)
                    text = (
                        await encoded_event(schema, sink.selection, sink.key, view, request_context)
                        if sink is not None
                        else None
                    )
                    if text is None:
                        yield view
                    elif sink is not None and not await sink.send(text):
                        return  # the connection is gone
                    last_id = stored.id
        except SubscriberOverflow as overflow:
            raise _overflow_error(overflow, last_id) from None
        except LiveUnavailable as unavailable:
            raise GraphQLError(str(unavailable), extensions={"code": "UNAVAILABLE"}) from None
        except QueryTimeout as error:  # catching up on what was missed took too long
            raise timed_out(error) from None

    @strawberry.subscription(
        description="Each call made to the caller's web hooks (or to `webhookId` only) "
        "as it is logged. Live only: the log itself is `webhook(id) { deliveries }`."
    )
    async def deliveries(
        self, info: Info[Context, None], webhook_id: strawberry.ID | None = None
    ) -> AsyncGenerator[DeliveryAttempt, None]:
        context = authorized(info)
        wanted = None if webhook_id is None else object_id(webhook_id, "webhookId")

        def accept(attempt: AttemptRecord) -> bool:
            return wanted is None or attempt.webhook_id == wanted

        try:
            async with context.services.live.subscribe(
                context.account_id, ATTEMPTS, accept=accept
            ) as subscriber:
                while True:
                    item = await subscriber.get()
                    if item is GAP:
                        continue  # attempts missed while Redis was away are in the log
                    assert isinstance(item, AttemptRecord)
                    yield DeliveryAttempt.from_record(item)
        except SubscriberOverflow as overflow:
            raise GraphQLError(
                f"this subscription fell more than {overflow.max_queue} attempts behind "
                "and was ended",
                extensions={"code": "SUBSCRIBER_OVERFLOW"},
            ) from None
        except LiveUnavailable as unavailable:
            raise GraphQLError(str(unavailable), extensions={"code": "UNAVAILABLE"}) from None
