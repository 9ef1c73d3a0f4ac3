"""SMTPeter-compatible retrieval: GET /v1/events/{messageid|email|template|tags}/{value}.

Answers ``[{"event": …, "data": {…}}]`` for the events of every provider, with
SMTPeter's window rules: dates are UTC ``yyyy-mm-dd``; ``end`` is exclusive; a lone
``start`` gives one month from it, a lone ``end`` the month before it; a longer
interval is cut to one month from ``start``; neither gives the last month (for a
message id: all of that message's events).
"""

from __future__ import annotations

import calendar
from datetime import MAXYEAR, MINYEAR, UTC, date, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.responses import JSON, answered, bearer_token, error
from gateway.domain.query import EventFilter
from gateway.providers import smtpeter
from gateway.runtime import Services
from gateway.services.accounts import InputError
from gateway.services.reads import QueryTimeout

KINDS = ("messageid", "email", "template", "tags")


class ParameterError(ValueError):
    """A parameter the route cannot use: answered 400 with this message."""


class WindowError(ParameterError):
    """``start`` and ``end`` that make no window."""


def add_months(day: date, months: int) -> date:
    """``day`` moved by whole calendar months, clamped to the end of a shorter month;
    WindowError past the calendar's ends (years 1 and 9999)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    if not MINYEAR <= year <= MAXYEAR:
        raise WindowError(
            f"a window of a month from {day.isoformat()} leaves the calendar "
            f"(years {MINYEAR} to {MAXYEAR})"
        )
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def _parse_date(name: str, value: str | None) -> date | None:
    if value is None or value == "":
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise WindowError(f"{name} must be a date as yyyy-mm-dd, got {value!r}") from None


def window(
    start_text: str | None, end_text: str | None, *, today: date, default_open: bool = False
) -> tuple[date | None, date | None]:
    """The [start, end) window SMTPeter would use for these parameters."""
    start = _parse_date("start", start_text)
    end = _parse_date("end", end_text)
    if start is None and end is None:
        if default_open:
            return None, None
        end = today + timedelta(days=1)
        return add_months(end, -1), end
    if start is not None and end is None:
        return start, add_months(start, 1)
    if start is None and end is not None:
        return add_months(end, -1), end
    assert start is not None and end is not None
    if end <= start:
        raise WindowError("end must be after start")
    return start, min(end, add_months(start, 1))


def _midnight(day: date | None) -> datetime | None:
    return None if day is None else datetime(day.year, day.month, day.day, tzinfo=UTC)


def _tags(text: str | None) -> tuple[str, ...]:
    return tuple(tag for tag in (text or "").split(";") if tag)


def _refuse_nul(name: str, value: str) -> None:
    # No stored text holds one, and PostgreSQL refuses it in a query's parameters.
    if "\x00" in value:
        raise ParameterError(f"{name} contains a NUL character")


@answered
async def events(request: Request) -> Response:
    services: Services = request.app.state.services
    kind = request.path_params["kind"]
    value = request.path_params["value"]
    if kind not in KINDS:
        return error(404, f"unknown event selection {kind!r}: use one of {', '.join(KINDS)}")
    token = request.query_params.get("access_token") or bearer_token(
        request.headers.get("authorization")
    )
    account_id = await services.accounts.account_for_api_key(token) if token else None
    if account_id is None:
        return error(401, "missing or invalid access_token")
    try:
        for name, text in ((kind, value), *request.query_params.multi_items()):
            _refuse_nul(name, text)
        start, end = window(
            request.query_params.get("start"),
            request.query_params.get("end"),
            today=datetime.now(UTC).date(),
            default_open=kind == "messageid",
        )
    except ParameterError as problem:
        return error(400, str(problem))
    tags = _tags(request.query_params.get("tags"))
    if kind == "tags":
        tags = _tags(value) + tags
        if not tags:
            return error(400, "name at least one tag: /v1/events/tags/TAG1;TAG2")
    where = EventFilter(
        message_id=value if kind == "messageid" else None,
        email=value if kind == "email" else None,
        template=value if kind == "template" else None,
        tags=tuple(dict.fromkeys(tags)),
        start=_midnight(start),
        end=_midnight(end),
    )
    try:
        found = await services.events.window(
            account_id, where, limit=services.settings.rest_max_events
        )
    except InputError as problem:
        return error(400, str(problem).replace("where.tags", "tags"))
    except QueryTimeout as problem:
        return error(503, str(problem))
    return JSON([smtpeter.render(stored.event) for stored in found])


routes = [Route("/v1/events/{kind}/{value:path}", events, methods=["GET"])]
