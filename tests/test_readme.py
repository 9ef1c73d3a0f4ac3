"""The README's examples are part of the contract: every GraphQL snippet in it must be
valid against the schema the gateway serves, so that a stale one fails CI."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import graphql
import pytest

from gateway.api.graphql.schema import build_schema
from gateway.services.accounts import CreatedAccount
from tests.conftest import Gateway

README = Path(__file__).resolve().parent.parent / "README.md"
_SNIPPET = re.compile(r"```graphql\n(.*?)```", re.DOTALL)


def graphql_snippets() -> list[str]:
    return _SNIPPET.findall(README.read_text())


def test_the_readme_has_graphql_examples() -> None:
    assert len(graphql_snippets()) >= 3


@pytest.mark.parametrize("snippet", graphql_snippets())
def test_readme_graphql_snippet_is_valid_against_the_schema(snippet: str) -> None:
    schema = graphql.build_schema(build_schema().as_str())

    errors = graphql.validate(schema, graphql.parse(snippet))

    assert not errors, [error.message for error in errors]


def try_it_script() -> str:
    """The README's "Try it" shell block, with its placeholder variables line dropped."""
    section = README.read_text().split("## Try it", 1)[1]
    script: str = re.search(r"```sh\n(.*?)```", section, re.DOTALL).group(1)  # type: ignore[union-attr]
    return "\n".join(line for line in script.splitlines() if not line.startswith("G="))


def json_values(text: str) -> list[Any]:
    """The JSON documents printed one after another (curl adds no newline)."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while at < len(text.rstrip()):
        value, at = decoder.raw_decode(text, at)
        values.append(value)
        while at < len(text) and text[at].isspace():
            at += 1
    return values


async def test_the_try_it_curl_lines_store_one_event_of_each_provider(
    gateway: Gateway, account: CreatedAccount
) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "G": gateway.base_url,
        "KEY": account.api_key,
        "BREVO": account.ingest_tokens["brevo"],
        "JANGO": account.ingest_tokens["jangomail"],
        "SMTPETER": account.ingest_tokens["smtpeter"],
    }
    process = await asyncio.create_subprocess_exec(
        "bash", "-euc", try_it_script(), env=env, stdout=asyncio.subprocess.PIPE
    )
    output, _ = await process.communicate()

    assert process.returncode == 0
    answers = json_values(output.decode())
    assert [answer["stored"] for answer in answers[:3]] == [1, 1, 1], answers
    nodes = [edge["node"] for edge in answers[3]["data"]["events"]["edges"]]
    assert sorted((node["provider"], node["type"]) for node in nodes) == [
        ("BREVO", "DELIVERED"),
        ("JANGOMAIL", "OPENED"),
        ("SMTPETER", "DELIVERED"),
    ]
