"""GraphiQL works offline: its page refers only to assets the gateway serves itself, and
it opens on the README's examples with an Authorization header stub."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import graphql

from gateway.api.graphiql import EXAMPLES, HEADERS_STUB, graphiql_page
from gateway.api.graphql.schema import build_schema
from tests.conftest import Gateway
from tests.test_readme import graphql_snippets

CONTENT_TYPES = {".js": "javascript", ".css": "text/css"}


class _References(HTMLParser):
    """Every URL the page loads (scripts, styles, icons), and its JSON configuration."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.config: dict[str, object] = {}
        self._in_config = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            if values.get(name):
                self.urls.append(values[name] or "")
        self._in_config = tag == "script" and values.get("id") == "graphiql-config"

    def handle_data(self, data: str) -> None:
        if self._in_config:
            self.config = json.loads(data)
            self._in_config = False


def references(page: str) -> _References:
    parser = _References()
    parser.feed(page)
    return parser


async def test_graphiql_page_refers_only_to_local_assets(gateway: Gateway) -> None:
    async with gateway.client() as client:
        response = await client.get("/graphql", headers={"accept": "text/html"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page_url = f"{gateway.base_url}/graphql"
    loaded = [urljoin(page_url, url) for url in references(response.text).urls]
    assert len(loaded) >= 5
    for url in loaded:
        parts = urlsplit(url)
        assert parts.scheme == "data" or parts.netloc == urlsplit(gateway.base_url).netloc, url


async def test_every_asset_of_the_graphiql_page_is_served_with_its_content_type(
    gateway: Gateway,
) -> None:
    async with gateway.client() as client:
        page = (await client.get("/graphql", headers={"accept": "text/html"})).text
        for url in references(page).urls:
            if url.startswith("data:"):
                continue
            asset = await client.get(urljoin(f"{gateway.base_url}/graphql", url))

            assert asset.status_code == 200, url
            suffix = url[url.rindex(".") :]
            assert CONTENT_TYPES[suffix] in asset.headers["content-type"], url
            assert len(asset.content) > 100, url


async def test_vendored_assets_do_not_load_code_from_elsewhere(gateway: Gateway) -> None:
    async with gateway.client() as client:
        page = (await client.get("/graphql", headers={"accept": "text/html"})).text
        for url in references(page).urls:
            if url.endswith(".css"):
                css = (await client.get(urljoin(f"{gateway.base_url}/graphql", url))).text
                # Fonts and images are inlined as data: URLs.
                assert not re.search(r"url\(\s*['\"]?https?:", css), url
                assert "@import" not in css, url


def test_graphiql_opens_on_the_readmes_examples_with_a_header_stub() -> None:
    config = references(graphiql_page()).config

    tabs = config["tabs"]
    assert isinstance(tabs, list)
    assert [tab["query"] for tab in tabs] == list(EXAMPLES)
    assert all(tab["headers"] == HEADERS_STUB for tab in tabs)
    assert json.loads(HEADERS_STUB) == {"Authorization": "Bearer <api key>"}
    readme = [snippet.strip() for snippet in graphql_snippets()]
    for example in EXAMPLES:
        assert example.strip() in readme


def test_graphiql_examples_are_valid_and_include_a_query_and_a_subscription() -> None:
    schema = graphql.build_schema(build_schema().as_str())
    operations = set()
    for example in EXAMPLES:
        document = graphql.parse(example)
        assert not graphql.validate(schema, document)
        operations |= {d.operation.value for d in document.definitions}  # type: ignore[attr-defined]

    assert {"query", "subscription"} <= operations
