"""The GraphQL schema: queries and mutations. Resolvers call services; no SQL here."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.types import Info

from gateway.api.graphql.account import AccountMutation, AccountQuery
from gateway.api.graphql.context import (
    Context,
    authorized,
    object_id,
    page_size,
    timed_out,
    user_error,
)
from gateway.api.graphql.errors import (
    GatewaySchema,
    QueryTimeouts,
    SubscriptionsOverWebsocketOnly,
    is_client_error,
)
from gateway.api.graphql.stats import StatsQuery
from gateway.api.graphql.subscriptions import Subscription
from gateway.api.graphql.types import (
    EVENT_TYPES,
    ApiKey,
    ApiKeyCreated,
    CreateIngestSourceInput,
    EventConnection,
    EventFilter,
    IngestSource,
    IngestSourceCreated,
    Message,
    RejectedPayload,
    ReplayResult,
    UpdateIngestSourceInput,
    basic_auth,
    parameters_dict,
)
from gateway.api.graphql.webhooks import WebhookMutation, WebhookQuery
from gateway.services.accounts import InputError
from gateway.services.reads import QueryTimeout
from gateway.settings import Settings


@strawberry.type
class Query(WebhookQuery, StatsQuery, AccountQuery):
    @strawberry.field(description="Events, newest first, as a Relay cursor connection.")
    async def events(
        self,
        info: Info[Context, None],
        where: EventFilter | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> EventConnection:
        context = authorized(info)
        domain_filter = (where or EventFilter()).to_domain()
        try:
            page = await context.services.events.page(
                context.account_id,
                domain_filter,
                first=page_size(context.services, first),
                after=after,
            )
        except InputError as error:
            raise user_error(error) from None
        except QueryTimeout as error:
            raise timed_out(error) from None
        return EventConnection.from_page(page)

    @strawberry.field(description="One message's events in order, and its current state.")
    async def message(self, info: Info[Context, None], message_id: str) -> Message | None:
        context = authorized(info)
        try:
            timeline = await context.services.events.message(context.account_id, message_id)
        except QueryTimeout as error:
            raise timed_out(error) from None
        return None if timeline is None else Message.from_timeline(timeline)

    @strawberry.field
    async def ingest_sources(self, info: Info[Context, None]) -> list[IngestSource]:
        context = authorized(info)
        records = await context.services.accounts.list_sources(context.account_id)
        return [IngestSource.from_record(record) for record in records]

    @strawberry.field(description="The account's API keys (never the keys themselves).")
    async def api_keys(self, info: Info[Context, None]) -> list[ApiKey]:
        context = authorized(info)
        records = await context.services.accounts.list_api_keys(context.account_id)
        return [ApiKey.from_record(record) for record in records]

    @strawberry.field(
        description="What ingest refused (requests, or single events of them), newest first, "
        "kept for replay."
    )
    async def rejected_payloads(
        self,
        info: Info[Context, None],
        first: int | None = None,
        before: strawberry.ID | None = None,
    ) -> list[RejectedPayload]:
        context = authorized(info)
        rows = await context.services.rejections.recent(
            context.account_id,
            limit=page_size(context.services, first),
            before_id=None if before is None else object_id(before, "before"),
        )
        return [RejectedPayload.from_row(row) for row in rows]


@strawberry.type
class Mutation(WebhookMutation, AccountMutation):
    @strawberry.mutation(
        description="Another API key for the account; the key is shown only here. To rotate "
        "a key: create one, switch to it, revoke the old one."
    )
    async def create_api_key(self, info: Info[Context, None]) -> ApiKeyCreated:
        context = authorized(info)
        record, key = await context.services.accounts.create_api_key(context.account_id)
        return ApiKeyCreated(api_key=ApiKey.from_record(record), key=key)

    @strawberry.mutation(
        description="True if the key existed; it stops working (on other replicas within "
        "GATEWAY_SOURCE_CACHE_SECONDS). The account's last key cannot be revoked."
    )
    async def revoke_api_key(self, info: Info[Context, None], id: strawberry.ID) -> bool:
        context = authorized(info)
        try:
            return await context.services.accounts.revoke_api_key(
                context.account_id, object_id(id, "id")
            )
        except InputError as error:
            raise user_error(error) from None

    @strawberry.mutation(
        description="Read a refused request again with its source's current settings and "
        "store its events (a second replay stores nothing new). Null if there is no such "
        "request."
    )
    async def replay_rejected_payload(
        self, info: Info[Context, None], id: strawberry.ID
    ) -> ReplayResult | None:
        context = authorized(info)
        outcome = await context.services.rejections.replay(context.account_id, object_id(id, "id"))
        if outcome is None:
            return None
        result = outcome.result
        return ReplayResult(
            payload=RejectedPayload.from_row(outcome.payload),
            stored=0 if result is None else result.stored,
            duplicates=0 if result is None else result.duplicates,
            error=outcome.error,
        )

    @strawberry.mutation(description="A new ingest source; its token is shown only here.")
    async def create_ingest_source(
        self, info: Info[Context, None], input: CreateIngestSourceInput
    ) -> IngestSourceCreated:
        context = authorized(info)
        try:
            record, token = await context.services.accounts.create_source(
                context.account_id,
                provider=input.provider,
                name=input.name,
                timezone=input.timezone,
                parameters=parameters_dict(input.parameters),
                basic_auth=basic_auth(input.basic_auth),
            )
        except InputError as error:
            raise user_error(InputError(f"input.{error.field}", error.message)) from None
        return IngestSourceCreated(source=IngestSource.from_record(record), token=token)

    @strawberry.mutation
    async def update_ingest_source(
        self, info: Info[Context, None], id: strawberry.ID, input: UpdateIngestSourceInput
    ) -> IngestSource | None:
        context = authorized(info)
        try:
            record = await context.services.accounts.update_source(
                context.account_id,
                object_id(id, "id"),
                name=input.name,
                timezone=input.timezone,
                parameters=parameters_dict(input.parameters),
                basic_auth=basic_auth(input.basic_auth),
                remove_basic_auth=input.remove_basic_auth,
            )
        except InputError as error:
            raise user_error(InputError(f"input.{error.field}", error.message)) from None
        return None if record is None else IngestSource.from_record(record)

    @strawberry.mutation(description="True if the source existed; its token stops working.")
    async def delete_ingest_source(self, info: Info[Context, None], id: strawberry.ID) -> bool:
        context = authorized(info)
        return await context.services.accounts.delete_source(
            context.account_id, object_id(id, "id")
        )


def _should_mask(error: GraphQLError) -> bool:
    """Hide internal failures (no stack traces or SQL to clients); keep our own messages
    and GraphQL's validation errors, which name the field."""
    return not is_client_error(error)


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    """The schema with its limits."""
    settings = settings or Settings()
    # Factories, so every request gets fresh extension state. The depth and alias
    # limiters each make a new validation rule class when built, and the rules are part
    # of ValidationCache's key: built per request, the cache never hit. So their rules
    # are made once here and handed to a fresh AddValidationRules per request.
    limits = [
        *QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
    ]
    tokens = settings.max_query_tokens
    extensions: list[Any] = [
        lambda: AddValidationRules(limits),
        lambda: MaxTokensLimiter(max_token_count=tokens),
        # Without these every request is parsed and validated again (5x on small ones);
        # their LRU caches live at module level, shared by every request.
        lambda: ParserCache(maxsize=1000),
        lambda: ValidationCache(maxsize=1000),
        lambda: MaskErrors(should_mask_error=_should_mask),
        SubscriptionsOverWebsocketOnly,
        QueryTimeouts,
    ]
    return GatewaySchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=list(EVENT_TYPES),
        extensions=extensions,
    )
