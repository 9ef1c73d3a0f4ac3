"""The deployment recipe (deploy/compose.yaml, deploy/nginx.conf, Dockerfile) agrees
with the README and with the code's settings. Docker is not run here: the files are
read as Docker Compose and nginx would read them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.settings import Settings

ROOT = Path(__file__).parent.parent
COMPOSE = ROOT / "deploy" / "compose.yaml"
NGINX = ROOT / "deploy" / "nginx.conf"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(COMPOSE.read_text())
    found: dict[str, dict[str, Any]] = document["services"]
    return found


def command(service: dict[str, Any]) -> list[str]:
    value = service.get("command", [])
    return value.split() if isinstance(value, str) else list(value)


def gateway_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run the gateway's image (built from the Dockerfile)."""
    return {name: service for name, service in services.items() if "build" in service}


def replicas(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in gateway_services(services).items() if command(s)[:1] == ["serve"]}


def workers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in gateway_services(services).items() if command(s) == ["worker"]}


def documented_settings() -> set[str]:
    """Every variable named in the README's Settings table. A row may name several:
    `GATEWAY_MAX_PAGE_SIZE` / `_DEFAULT_PAGE_SIZE` (the rest continue GATEWAY_)."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            for name in re.findall(r"`(_?[A-Z][A-Z_]*)`", row.split("|")[1]):
                names.add("GATEWAY" + name if name.startswith("_") else name)
    return names


def settings_field(variable: str) -> bool:
    """Whether the gateway reads ``variable`` (a field of Settings, or its alias)."""
    for name, field in Settings.model_fields.items():
        aliases = getattr(field.validation_alias, "choices", None) or []
        if variable in aliases or variable == f"GATEWAY_{name.upper()}":
            return True
    return False


def test_compose_runs_the_database_redis_a_migration_two_replicas_two_workers_and_a_proxy(
    services: dict[str, dict[str, Any]],
) -> None:
    assert {"postgres", "redis", "migrate", "proxy"} <= services.keys()
    assert len(replicas(services)) == 2
    assert len(workers(services)) == 2
    assert command(services["migrate"]) == ["migrate"]


def test_replicas_serve_without_a_worker_on_every_interface(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in replicas(services).items():
        argv = command(service)
        assert "--no-worker" in argv, name
        assert argv[argv.index("--host") + 1] == "0.0.0.0", name


def test_replicas_and_workers_start_after_the_migration(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in {**replicas(services), **workers(services)}.items():
        condition = service["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name
    assert services["migrate"]["restart"] == "no"


def test_replicas_workers_and_the_migration_share_one_database_and_one_redis(
    services: dict[str, dict[str, Any]],
) -> None:
    processes = gateway_services(services)
    assert {service["environment"]["DATABASE_URL"] for service in processes.values()} == {
        services["gateway-a"]["environment"]["DATABASE_URL"]
    }
    assert {service["environment"]["REDIS_URL"] for service in processes.values()} == {
        services["gateway-a"]["environment"]["REDIS_URL"]
    }


def test_the_shared_urls_name_the_compose_database_and_redis(
    services: dict[str, dict[str, Any]],
) -> None:
    environment = services["gateway-a"]["environment"]
    database = urlsplit(environment["DATABASE_URL"])
    postgres = services["postgres"]["environment"]
    assert database.scheme == "postgresql"
    assert database.hostname == "postgres"
    assert database.username == postgres["POSTGRES_USER"]
    assert database.path == f"/{postgres['POSTGRES_DB']}"
    assert urlsplit(environment["REDIS_URL"]).hostname == "redis"


def test_every_variable_compose_gives_the_gateway_is_a_documented_setting(
    services: dict[str, dict[str, Any]],
) -> None:
    documented = documented_settings()
    for name, service in gateway_services(services).items():
        for variable in service.get("environment", {}):
            assert variable in documented, f"{name}: {variable} is not in the README's Settings"
            assert settings_field(variable), f"{name}: the gateway does not read {variable}"


def test_the_proxy_balances_every_replica_and_upgrades_graphql_websockets(
    services: dict[str, dict[str, Any]],
) -> None:
    config = NGINX.read_text()
    mounts = services["proxy"]["volumes"]
    assert any(mount.startswith("./nginx.conf:") for mount in mounts)
    upstream = re.search(r"upstream gateway \{(.*?)\}", config, re.S)
    assert upstream is not None
    servers = set(re.findall(r"server ([\w.-]+):(\d+)", upstream.group(1)))
    assert servers == {(name, "8000") for name in replicas(services)}
    graphql = re.search(r"location /graphql \{(.*?)\}", config, re.S)
    assert graphql is not None
    assert "proxy_set_header Upgrade $http_upgrade;" in graphql.group(1)
    assert "proxy_set_header Connection $connection_upgrade;" in graphql.group(1)


def test_the_image_installs_the_package_and_serves(services: dict[str, dict[str, Any]]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "\nFROM python:3.11-slim\n" in dockerfile
    assert "pip install ." in dockerfile
    assert 'ENTRYPOINT ["gateway"]' in dockerfile
    assert re.search(r'^CMD \["serve"', dockerfile, re.M)
    documented = documented_settings()
    assert set(re.findall(r"\b(GATEWAY_[A-Z_]+)=", dockerfile)) <= documented
    for service in gateway_services(services).values():
        assert service["build"]["dockerfile"] == "Dockerfile"
        assert (COMPOSE.parent / service["build"]["context"] / "Dockerfile").exists()


def test_the_readme_describes_every_compose_service() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Running at scale\n", 1)[1].split("\n## ", 1)[0]
    for name in yaml.safe_load(COMPOSE.read_text())["services"]:
        assert f"`{name}`" in section, f"README's Running at scale does not name {name}"
