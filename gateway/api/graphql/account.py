"""The caller's account: how long its rows are kept (services.retention)."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from gateway.api.graphql.context import Context, authorized, user_error
from gateway.services.accounts import InputError
from gateway.services.retention import AccountRetention


@strawberry.type(description="The caller's account.")
class Account:
    retention_days: int = strawberry.field(
        description="Days its events, deliveries, attempts and rejected payloads are kept, "
        "counted from when the gateway received them: its own setting, else "
        "GATEWAY_RETENTION_DAYS."
    )
    retention_days_override: int | None = strawberry.field(
        description="The account's own retention days; null: GATEWAY_RETENTION_DAYS applies."
    )

    @staticmethod
    def from_retention(retention: AccountRetention) -> Account:
        return Account(retention_days=retention.days, retention_days_override=retention.override)


@strawberry.type
class AccountQuery:
    @strawberry.field(description="The caller's account.")
    async def account(self, info: Info[Context, None]) -> Account:
        context = authorized(info)
        retention = await context.services.retention.account_retention(context.account_id)
        return Account.from_retention(retention)


@strawberry.type
class AccountMutation:
    @strawberry.mutation(
        description="Keep the account's rows this many days (1 to 3650); null: "
        "GATEWAY_RETENTION_DAYS. The next purge applies it."
    )
    async def set_retention_days(self, info: Info[Context, None], days: int | None) -> Account:
        context = authorized(info)
        try:
            retention = await context.services.retention.set_account_retention(
                context.account_id, days
            )
        except InputError as error:
            raise user_error(error) from None
        return Account.from_retention(retention)
