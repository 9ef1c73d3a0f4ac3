"""``eventStats``: the account's events counted per time bucket and key, for charts."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.types import Info

from gateway.api.graphql.context import Context, authorized, user_error
from gateway.api.graphql.types import EventFilter
from gateway.domain.stats import StatsGroup, StatsInterval
from gateway.services.accounts import InputError

strawberry.enum(StatsInterval, description="Buckets of one UTC hour or one UTC day.")
strawberry.enum(
    StatsGroup,
    description="What a bucket's key is. TEMPLATE and TAG count only events that have "
    "one; an event with two tags counts under each.",
)


@strawberry.type(description="How many of the account's events fell in one bucket under one key.")
class StatsBucket:
    start: datetime = strawberry.field(description="The bucket's first moment, UTC.")
    key: str = strawberry.field(description='An event type, provider, template or tag: "BOUNCED".')
    count: int


@strawberry.type
class StatsQuery:
    @strawberry.field(
        description="Counts of events per time bucket and key, by bucket then key; buckets "
        "with no events are left out. Whole hours are read from a rollup kept by ingest; "
        "an address, a message id, several tags, or two of providers/template/tag at once "
        "are counted from the events (at most 10,000 of them)."
    )
    async def event_stats(
        self,
        info: Info[Context, None],
        where: EventFilter | None = None,
        interval: StatsInterval | None = StatsInterval.DAY,
        group_by: StatsGroup | None = StatsGroup.TYPE,
    ) -> list[StatsBucket]:
        context = authorized(info)
        try:
            buckets = await context.services.events.stats(
                context.account_id,
                (where or EventFilter()).to_domain(),
                interval=interval or StatsInterval.DAY,
                group=group_by or StatsGroup.TYPE,
            )
        except InputError as error:
            raise user_error(error) from None
        return [StatsBucket(start=b.start, key=b.key, count=b.count) for b in buckets]
