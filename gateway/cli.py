"""The `gateway` command: serve, worker, accounts create, migrate, export-schema."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import TYPE_CHECKING

from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.services.accounts import CreatedAccount


def _print_account(created: CreatedAccount, *, as_json: bool) -> None:
    document = {
        "account": created.name,
        "account_id": str(created.account_id),
        "api_key": created.api_key,
        "ingest_tokens": created.ingest_tokens,
    }
    if as_json:
        print(json.dumps(document))
        return
    print(f"account {created.name!r} (shown once: keep these)")
    print(f"  API key:      {created.api_key}")
    for provider, token in created.ingest_tokens.items():
        print(f"  {provider:<10}    /ingest/{provider}/{token}")


async def _create_account(settings: Settings, name: str) -> CreatedAccount:
    from gateway.ids import IdGenerator
    from gateway.services.accounts import AccountService
    from gateway.services.nodes import NodeLease
    from gateway.storage.db import make_engine, migrate

    if settings.embedded_database:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    ids = IdGenerator.unleased()
    lease = NodeLease(engine, ids, lease_seconds=settings.node_lease_seconds)
    try:
        if settings.embedded_database:
            await migrate(engine)
        await lease.renew()  # ids minted here must not be a running gateway's
        service = AccountService(engine, ids, cache_seconds=0, cache_size=1)
        return await service.create_account(name)
    finally:
        await lease.close()
        await engine.dispose()


async def _migrate(settings: Settings) -> None:
    from gateway.storage.db import make_engine, migrate

    if settings.embedded_database:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def _serve(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    from gateway.app import create_app

    app = create_app(settings, bootstrap=True, worker=not args.no_worker)
    # permessage-deflate is negotiated inside uvicorn before the app runs; it cost
    # ~25 µs a message for every websocket subscriber.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=False,
        ws_per_message_deflate=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP/GraphQL server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--no-worker", action="store_true", help="do not run a delivery worker in this process"
    )
    commands.add_parser("worker", help="run a delivery worker (start several to scale out)")
    accounts = commands.add_parser("accounts", help="manage accounts")
    account_commands = accounts.add_subparsers(dest="action", required=True)
    create = account_commands.add_parser("create", help="create an account, its key and tokens")
    create.add_argument("name")
    create.add_argument("--json", action="store_true", help="print one JSON document")
    commands.add_parser("migrate", help="bring the database to the newest schema")
    commands.add_parser("export-schema", help="print the GraphQL SDL")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # arq logs two lines per job and httpx one per request; every call is in the
    # delivery log already.
    logging.getLogger("arq.worker").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = Settings()
    if args.command == "serve":
        _serve(settings, args)
    elif args.command == "worker":
        from gateway.worker import run_worker

        run_worker(settings)
    elif args.command == "accounts":
        from gateway.services.accounts import InputError

        try:
            created = asyncio.run(_create_account(settings, args.name))
        except InputError as problem:
            print(f"gateway: {problem}", file=sys.stderr)
            return 2
        _print_account(created, as_json=args.json)
    elif args.command == "migrate":
        asyncio.run(_migrate(settings))
        print("database is at the newest schema")
    elif args.command == "export-schema":
        from gateway.api.graphql.schema import build_schema

        print(build_schema(settings).as_str())
    return 0


if __name__ == "__main__":
    sys.exit(main())
