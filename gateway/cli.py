"""The `gateway` command: serve, worker, accounts create|key, doctor, migrate, export-schema."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import TYPE_CHECKING

from gateway.logs import configure_logging, log_config
from gateway.settings import Settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from gateway.services.accounts import AccountService, CreatedAccount


# JangoMail calls one URL per event type (DESIGN.md: the route names the event).
JANGOMAIL_EVENTS = ("sent", "open", "click", "unsubscribe", "bounce", "complaint", "block")


def ingest_urls(base_url: str, provider: str, token: str) -> list[str]:
    """The URLs to give ``provider`` for an ingest source's ``token``, in full."""
    url = f"{base_url.rstrip('/')}/ingest/{provider}/{token}"
    if provider == "jangomail":
        return [f"{url}/{event}" for event in JANGOMAIL_EVENTS]
    return [url]


def _print_account(created: CreatedAccount, *, as_json: bool, base_url: str = "") -> None:
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
    print(f"  API key:  {created.api_key}")
    print("  ingest URLs (give each provider its own):")
    for provider, token in created.ingest_tokens.items():
        for url in ingest_urls(base_url, provider, token):
            print(f"    {provider:<10} {url}")


def print_banner(settings: Settings, base_url: str) -> None:
    """Where the gateway listens and where its data lives, as a user needs it."""
    where = (
        f"SQLite file {(settings.data_dir / 'gateway.db').resolve()}"
        if settings.embedded_database
        else "the database at DATABASE_URL"
    )
    print(f"gateway: GraphiQL  {base_url}/graphql")
    print(f"gateway: data      {where}")
    if settings.embedded_redis:
        print(f"gateway: redis     embedded, in {settings.data_dir.resolve()}")


@contextlib.asynccontextmanager
async def _account_service(settings: Settings) -> AsyncIterator[AccountService]:
    """Accounts of the configured database, with ids from a node lease of their own
    (ids minted here must not be a running gateway's)."""
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
        await lease.renew()
        yield AccountService(engine, ids, cache_seconds=0, cache_size=1)
    finally:
        await lease.close()
        await engine.dispose()


async def _create_account(settings: Settings, name: str) -> CreatedAccount:
    async with _account_service(settings) as service:
        return await service.create_account(name)


async def _new_key(settings: Settings, name: str) -> str:
    from gateway.services.accounts import InputError

    async with _account_service(settings) as service:
        account_id = await service.account_named(name)
        if account_id is None:
            raise InputError("name", f"no account is named {name!r}")
        _record, api_key = await service.create_api_key(account_id)
        return api_key


async def _migrate(settings: Settings) -> None:
    from gateway.storage.db import make_engine, migrate

    if settings.embedded_database:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def _doctor(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.doctor import diagnose

    findings = asyncio.run(
        diagnose(settings, max_lag_seconds=args.max_lag, max_skew_seconds=args.max_skew)
    )
    healthy = all(finding.ok for finding in findings)
    if args.json:
        print(json.dumps({"ok": healthy, "checks": [f.as_dict() for f in findings]}))
    else:
        for finding in findings:
            print(f"{'ok' if finding.ok else 'FAIL':<5} {finding.check:<9} {finding.message}")
        problems = sum(not finding.ok for finding in findings)
        print(
            "gateway doctor: all is well" if healthy else f"gateway doctor: {problems} problem(s)"
        )
    return 0 if healthy else 1


def _serve(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    from gateway.app import create_app

    base_url = f"http://{args.host}:{args.port}"
    print_banner(settings, base_url)
    app = create_app(settings, bootstrap=True, worker=not args.no_worker, base_url=base_url)
    # permessage-deflate is negotiated inside uvicorn before the app runs; it cost
    # ~25 µs a message for every websocket subscriber. uvicorn logs in our format, and
    # its access log gives way to gateway.access.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=log_config(settings.log_format),
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
    key = account_commands.add_parser(
        "key", help="a new API key for an existing account (recovers a lost one)"
    )
    key.add_argument("name")
    key.add_argument("--json", action="store_true", help="print one JSON document")
    doctor = commands.add_parser(
        "doctor", help="check the database, its schema, Redis, workers, queue lag and clocks"
    )
    doctor.add_argument("--json", action="store_true", help="print one JSON document")
    doctor.add_argument(
        "--max-lag", type=float, default=60.0, help="seconds a due delivery may wait (60)"
    )
    doctor.add_argument(
        "--max-skew", type=float, default=2.0, help="seconds of clock skew allowed (2)"
    )
    commands.add_parser("migrate", help="bring the database to the newest schema")
    commands.add_parser("export-schema", help="print the GraphQL SDL")
    args = parser.parse_args(argv)

    settings = Settings()
    configure_logging(settings.log_format)
    if args.command == "serve":
        _serve(settings, args)
    elif args.command == "worker":
        from gateway.worker import run_worker

        run_worker(settings)
    elif args.command == "accounts":
        from gateway.services.accounts import InputError

        try:
            if args.action == "key":
                api_key = asyncio.run(_new_key(settings, args.name))
            else:
                created = asyncio.run(_create_account(settings, args.name))
        except InputError as problem:
            print(f"gateway: {problem}", file=sys.stderr)
            return 2
        if args.action == "key":
            if args.json:
                print(json.dumps({"account": args.name, "api_key": api_key}))
            else:
                print(f"account {args.name!r}: new API key (shown once) {api_key}")
        else:
            _print_account(created, as_json=args.json)
    elif args.command == "doctor":
        return _doctor(settings, args)
    elif args.command == "migrate":
        asyncio.run(_migrate(settings))
        print("database is at the newest schema")
    elif args.command == "export-schema":
        from gateway.api.graphql.schema import build_schema

        print(build_schema(settings).as_str())
    return 0


if __name__ == "__main__":
    sys.exit(main())
