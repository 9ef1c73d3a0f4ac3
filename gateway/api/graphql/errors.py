"""What the GraphQL endpoint says and logs when a request goes wrong.

- A subscription sent over HTTP is answered 400, naming the websocket protocol to use:
  Strawberry would run it as a query, and a subscription's root field has nothing to
  resolve without its event stream ("Unexpected error." and a traceback).
- Client mistakes (invalid documents, refused input, a missing key) are logged at INFO
  on one line; only failures of our own code are logged at ERROR with their traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from gateway.api.graphql.context import WebSocketContext
from gateway.services.reads import QueryTimeout

log = logging.getLogger("gateway.graphql")

USE_A_WEBSOCKET = (
    "subscriptions are served over a websocket: connect to /graphql with the "
    "graphql-transport-ws protocol (or the legacy graphql-ws)"
)


class SubscriptionOverHTTP(InvalidOperationTypeError):
    """Strawberry answers this exception with 400 and :meth:`as_http_error_reason`."""

    def __init__(self) -> None:
        super().__init__(OperationType.SUBSCRIPTION)

    def as_http_error_reason(self, method: str) -> str:
        return USE_A_WEBSOCKET


class SubscriptionsOverWebsocketOnly(SchemaExtension):
    """Refuses subscription operations that did not come over a websocket."""

    def on_execute(self) -> Iterator[None]:
        execution = self.execution_context
        if execution.operation_type is OperationType.SUBSCRIPTION and not isinstance(
            execution.context, WebSocketContext
        ):
            raise SubscriptionOverHTTP
        yield


class QueryTimeouts(SchemaExtension):
    """A read the database stopped at its time bound, whichever resolver ran it, is
    answered QUERY_TIMEOUT with the bound (as Strawberry's MaskErrors rewrites errors:
    after execution, before the answer is made)."""

    def on_execute(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is None or not result.errors:
            return
        result.errors = [
            _timed_out(error, error.original_error)
            if isinstance(error.original_error, QueryTimeout)
            else error
            for error in result.errors
        ]


def _timed_out(error: GraphQLError, timeout: QueryTimeout) -> GraphQLError:
    return GraphQLError(
        str(timeout),
        nodes=error.nodes,
        path=error.path,
        original_error=timeout,
        extensions={"code": "QUERY_TIMEOUT", "timeoutSeconds": timeout.seconds},
    )


def is_client_error(error: GraphQLError) -> bool:
    """True for errors the caller caused: GraphQL's own (syntax, validation, variables:
    no original error), those our resolvers raise on purpose (GraphQLErrors), and reads
    too costly to finish within their bound."""
    return error.original_error is None or isinstance(
        error.original_error, GraphQLError | QueryTimeout
    )


def _one_line(error: GraphQLError, execution: ExecutionContext | None) -> str:
    where = ".".join(str(part) for part in error.path or ())
    operation = execution.operation_name if execution is not None else None
    parts = [" ".join(error.message.split())]
    if where:
        parts.append(f"path={where}")
    if operation:
        parts.append(f"operation={operation}")
    return " ".join(parts)


class GatewaySchema(strawberry.Schema):
    """Strawberry's schema, with errors logged by who caused them (Strawberry's
    documented override point: ``process_errors``)."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            if is_client_error(error):
                log.info("graphql request refused: %s", _one_line(error, execution_context))
            else:
                log.error(
                    "graphql resolver failed: %s",
                    _one_line(error, execution_context),
                    exc_info=error.original_error,
                )
