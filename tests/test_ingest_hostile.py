"""Hostile input on every ingest route, on both databases: whatever is sent, the answer
is never a 5xx, and everything refused is listed in ``rejectedPayloads``."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.services.accounts import CreatedAccount
from tests.conftest import Gateway
from tests.strategies import json_values
from tests.support import brevo_event, gql

BREVO_FIELDS = [*brevo_event(), "ts_epoch", "tag", "link", "reason", "s_epoch"]
SMTPETER_FIELDS = ["event", "type", "id", "recipient", "time", "status", "code", "tags", "size"]


def _record(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(fields), json_values, max_size=6)


# Events that are nearly right: a real Brevo event with some fields given any value.
brevo_bodies = st.builds(lambda changes: brevo_event(**changes), _record(BREVO_FIELDS))
smtpeter_bodies = st.one_of(
    _record(SMTPETER_FIELDS),
    st.builds(lambda event, data: {"event": event, "data": data}, json_values, json_values),
)
bodies = st.one_of(
    st.binary(max_size=200).map(lambda raw: ("bytes", raw)),
    json_values.map(lambda value: ("json", value)),
    st.lists(brevo_bodies, min_size=1, max_size=4).map(lambda batch: ("json", batch)),
    st.lists(smtpeter_bodies, min_size=1, max_size=4).map(lambda batch: ("json", batch)),
)
JANGOMAIL_EVENTS = ["sent", "open", "click", "bounce", "block", "Opened", "nonesuch", "%00"]
jangomail_calls = st.tuples(
    st.sampled_from(JANGOMAIL_EVENTS),
    st.dictionaries(
        st.sampled_from(
            ["EmailAddress", "OpenDateTime", "SentDateTime", "MessageSize", "Definitive", "x"]
        ),
        st.text() | st.integers(min_value=-(2**80), max_value=2**80).map(str),
        max_size=5,
    ),
    st.sampled_from(["GET", "POST"]),
)
HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NEWEST = "query($first: Int) { rejectedPayloads(first: $first) { id status index reason } }"


def encoded(kind: str, value: Any) -> bytes:
    if kind == "bytes":
        return bytes(value)
    return json.dumps(value).encode()  # NaN and Infinity as JavaScript writes them


async def newest_kept(api: httpx.AsyncClient) -> int:
    kept = (await gql(api, NEWEST, first=1))["rejectedPayloads"]
    return int(kept[0]["id"]) if kept else 0


async def assert_refusals_listed(
    api: httpx.AsyncClient, since: int, response: httpx.Response
) -> None:
    """A 200 lists what it refused, each kept as one item; any other answer (a 4xx
    for a body that cannot be read) is kept as one item with that status."""
    assert response.status_code < 500, response.text
    kept = (await gql(api, NEWEST, first=50))["rejectedPayloads"]
    new = [item for item in kept if int(item["id"]) > since]
    if response.status_code == 200:
        refused = response.json()["rejected"]
        assert sorted((r["index"] or 0, r["reason"]) for r in refused) == sorted(
            (item["index"] or 0, item["reason"]) for item in new
        )
    else:
        assert [item["status"] for item in new] == [response.status_code]


CONTENT_TYPES = [
    "application/json",
    "application/json; charset=latin-1",
    "text/plain",
    "",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "image/png",
]


@HYPOTHESIS
@given(
    route=st.sampled_from(["brevo", "smtpeter", "jangomail/open", "jangomail/nonesuch"]),
    sent=bodies,
    content_type=st.sampled_from(CONTENT_TYPES),
)
async def test_any_body_is_answered_below_500_and_what_is_refused_is_kept(
    gateway: Gateway,
    account: CreatedAccount,
    api: httpx.AsyncClient,
    route: str,
    sent: tuple[str, Any],
    content_type: str,
) -> None:
    provider, _, event = route.partition("/")
    since = await newest_kept(api)
    async with gateway.client() as client:
        response = await client.post(
            f"/ingest/{provider}/{account.ingest_tokens[provider]}/{event}".rstrip("/"),
            content=encoded(*sent),
            headers={"content-type": content_type},
        )
    await assert_refusals_listed(api, since, response)


@HYPOTHESIS
@given(call=jangomail_calls)
async def test_any_jangomail_call_is_answered_below_500_and_what_is_refused_is_kept(
    gateway: Gateway,
    account: CreatedAccount,
    api: httpx.AsyncClient,
    call: tuple[str, dict[str, str], str],
) -> None:
    event, parameters, method = call
    since = await newest_kept(api)
    url = f"/ingest/jangomail/{account.ingest_tokens['jangomail']}/{quote(event, safe='%')}"
    async with gateway.client() as client:
        if method == "GET":
            response = await client.get(url, params=_encodable(parameters))
        else:
            response = await client.post(url, data=_encodable(parameters))
    await assert_refusals_listed(api, since, response)


def _encodable(parameters: dict[str, str]) -> dict[str, str]:
    """Lone surrogates cannot be sent in a URL: each becomes U+FFFD, as a browser does."""
    return {
        name: value.encode("utf-8", "replace").decode("utf-8") for name, value in parameters.items()
    }
