"""The GraphQL context, and the helpers every resolver uses to read it and to refuse input."""

from __future__ import annotations

from dataclasses import dataclass

import strawberry
from graphql import GraphQLError
from starlette.websockets import WebSocket
from strawberry.types import Info

from gateway.runtime import Services
from gateway.services.accounts import InputError
from gateway.services.reads import QueryTimeout


@dataclass
class Context:
    services: Services
    # None until the caller is authenticated (GraphiQL's page, a websocket before
    # connection_init): nothing may be read then.
    account_id: int | None


@dataclass
class WebSocketContext(Context):
    """A websocket's context, one per connection: Strawberry stores connection_init's
    payload in ``connection_params``; ``account_id`` is set once it authenticates."""

    connection_params: dict[str, object] | None = None
    websocket: WebSocket | None = None


@dataclass
class AuthorizedContext:
    services: Services
    account_id: int


def authorized(info: Info[Context, None]) -> AuthorizedContext:
    """The caller's context; an UNAUTHENTICATED error if there is no caller yet."""
    context = info.context
    if context.account_id is None:
        raise GraphQLError("not authenticated", extensions={"code": "UNAUTHENTICATED"})
    return AuthorizedContext(context.services, context.account_id)


def user_error(error: InputError) -> GraphQLError:
    """A GraphQL error whose message and extensions name the offending field."""
    return GraphQLError(
        f"{error.field}: {error.message}",
        extensions={"code": "BAD_USER_INPUT", "field": error.field},
    )


def timed_out(error: QueryTimeout) -> GraphQLError:
    """The error of a read the database stopped: QUERY_TIMEOUT, with the bound."""
    return GraphQLError(
        str(error), extensions={"code": "QUERY_TIMEOUT", "timeoutSeconds": error.seconds}
    )


def object_id(value: strawberry.ID, field: str) -> int:
    """An id argument as the integer it stands for; an error naming ``field`` if not."""
    try:
        return int(value)
    except ValueError:
        raise user_error(InputError(field, f"{value!r} is not an id")) from None


def page_size(services: Services, first: int | None) -> int:
    """``first`` as a page size (the default when not given); an error naming it when
    it is out of range."""
    size = services.settings.default_page_size if first is None else first
    limit = services.settings.max_page_size
    if not 0 <= size <= limit:
        raise user_error(InputError("first", f"must be between 0 and {limit}"))
    return size
