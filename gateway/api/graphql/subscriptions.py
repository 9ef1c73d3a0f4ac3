"""GraphQL subscriptions, and the sharing that lets one event reach many subscribers.

An event with 1,000 local subscribers must not cost 1,000 GraphQL executions (Strawberry
resolves a field in ~5 µs) nor 1,000 trips through Strawberry's per-result machinery
(extension hooks, message building, JSON): measured, that was ~100 µs per subscriber.

- Every local subscriber of an account receives the *same* decoded event object from
  the live hub, so that object gets one GraphQL view (:class:`SharedViews`).
- Each operation (the same document and variables) is executed once per event
  (:class:`SharedExecution`), and its ``{"data": …}`` serialized once.
- Over a websocket, the resolver writes that text straight into the protocol's result
  message for each subscriber (:class:`LiveSink`), so what is left per subscriber is
  waking its task and one socket write. Results with errors, and other transports,
  take Strawberry's ordinary path (the resolver yields the view).

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
from graphql import (
    ExecutionResult,
    FieldNode,
    GraphQLError,
    GraphQLField,
    GraphQLObjectType,
    GraphQLResolveInfo,
    OperationDefinitionNode,
)
from graphql.pyutils import AwaitableOrValue, Path
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types import Info

from gateway.api.graphql.context import Context, authorized, object_id, timed_out, user_error
from gateway.api.graphql.types import Event, EventFilter, event_view
from gateway.api.graphql.webhooks import DeliveryAttempt
from gateway.domain.query import StoredEvent
from gateway.domain.webhooks import AttemptRecord
from gateway.live import GAP, LiveUnavailable, SubscriberOverflow
from gateway.live.attempts import ATTEMPTS
from gateway.services.accounts import InputError
from gateway.services.events import QueryTimeout


@dataclass(slots=True)
class _Result:
    # Kept with the operation it was computed for: ids of dead objects are reused.
    operation: OperationDefinitionNode
    result: ExecutionResult
    text: str | None = None  # {"data": …} as JSON, once a subscriber needed it


class _Shared:
    __slots__ = ("results", "stored", "view")

    def __init__(self, stored: StoredEvent, view: Event) -> None:
        self.stored = stored
        self.view = view
        self.results: dict[tuple[int, str], _Result] = {}


class SharedViews:
    """One GraphQL view per event object, and its results per operation.

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

    def results_for(self, root: object) -> dict[tuple[int, str], _Result] | None:
        """The shared results of a view made here; None for any other object."""
        shared = self._by_view.get(id(root))
        return shared.results if shared is not None and shared.view is root else None


# Process-wide, like Strawberry's parser and validation caches: subscribers on every
# websocket of this process share it.
SHARED_VIEWS = SharedViews()

# The executor of the subscription being started, for its resolver (see
# SharedExecution.build_resolve_info); each operation runs in a task of its own.
_EXECUTOR: contextvars.ContextVar[SharedExecution | None] = contextvars.ContextVar(
    "subscription_executor", default=None
)


class SharedExecution(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, with subscription events executed once per operation.

    graphql-core executes each event with a copy of the subscription's executor (its
    ``build_per_event_executor``); a copy whose event is a shared view looks for the
    result of its operation and variables before executing.
    """

    _results: dict[tuple[int, str], _Result] | None = None
    _group: tuple[int, str] | None = None
    _event_copy = False

    def _group_key(self) -> tuple[int, str]:
        if self._group is None:
            # Equal documents are one object (the parser cache), so the operation's
            # identity and the variables' text name the selection.
            self._group = (id(self.operation), repr(self.variable_values.coerced))
        return self._group

    def build_per_event_executor(self, payload: Any) -> SharedExecution:
        self._group_key()  # on the subscription's executor, so every copy has it
        executor = super().build_per_event_executor(payload)
        assert isinstance(executor, SharedExecution)
        executor._results = SHARED_VIEWS.results_for(payload)
        executor._event_copy = True
        return executor

    def execute_operation(self, serially: bool | None = None) -> AwaitableOrValue[Any]:
        results = self._results
        if results is None:
            return super().execute_operation(serially)
        group = self._group_key()
        found = results.get(group)
        if found is not None and found.operation is self.operation:
            return found.result
        result = super().execute_operation(serially)
        if isinstance(result, ExecutionResult):  # an awaitable (async field) is not kept
            results[group] = _Result(self.operation, result)
        return result

    def build_resolve_info(
        self,
        field_def: GraphQLField,
        field_nodes: list[FieldNode],
        parent_type: GraphQLObjectType,
        path: Path,
    ) -> GraphQLResolveInfo[Any]:
        if not self._event_copy and parent_type is self.schema.subscription_type:
            # About to call the subscription's resolver, in the operation's task.
            _EXECUTOR.set(self)
        return super().build_resolve_info(field_def, field_nodes, parent_type, path)

    async def encoded_event(self, view: object) -> str | None:
        """``{"data": …}`` of this operation for a shared view, as JSON made once for
        every subscriber with the same selection; None if it has errors (those take
        Strawberry's path, which masks them) or the view is not shared."""
        results = SHARED_VIEWS.results_for(view)
        if results is None:
            return None
        group = self._group_key()
        found = results.get(group)
        if found is None or found.operation is not self.operation:
            result = self.build_per_event_executor(view).execute_operation(False)
            if not isinstance(result, ExecutionResult):
                result = await result
            found = results[group] = _Result(self.operation, result)
        if found.result.errors:
            return None
        if found.text is None:
            found.text = orjson.dumps({"data": found.result.data}).decode()
        return found.text


@dataclass(frozen=True, slots=True)
class LiveSink:
    """Where one websocket operation's results may be written directly: its socket,
    and its protocol's result message up to the payload."""

    websocket: WebSocket
    prefix: str

    @classmethod
    def for_message(cls, websocket: WebSocket, message: dict[str, Any]) -> LiveSink:
        """``message`` is the protocol's result message for the operation, without its
        payload (e.g. ``{"id": "1", "type": "next"}``)."""
        text = orjson.dumps({**message, "payload": None}).decode()
        return cls(websocket, text.removesuffix("null}"))

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
        executor, sink = _EXECUTOR.get(), LIVE_SINK.get()
        last_id = after_id
        try:
            async with aclosing(stream):
                async for stored in stream:
                    view = SHARED_VIEWS.view(stored)
                    text = await executor.encoded_event(view) if executor and sink else None
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
