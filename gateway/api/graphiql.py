"""GraphiQL, served from the package: nothing is fetched from the internet.

``GET /graphql`` from a browser (``Accept: text/html``) gets :func:`graphiql_page`; its
scripts and styles are files in ``static/graphiql/`` (GraphiQL 3.9.0, React 18.3.1: their
UMD builds as npm ships them, with their licences; see the README there), served under
``/graphiql/``. The page refers to them by relative URLs, so a gateway behind a path
prefix works too.

The page opens with the README's examples as tabs and an ``Authorization`` header stub;
``gateway-graphiql.js`` carries the key typed once to every tab and has GraphiQL fetch
the schema again when it changes.
"""

from __future__ import annotations

import json
from pathlib import Path

from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

ASSETS = Path(__file__).resolve().parent / "static" / "graphiql"

# The README's GraphQL examples, in its order (tests/test_graphiql.py checks that each
# is one of the README's snippets).
EXAMPLES = (
    """query RecentEvents {
  events(where: {email: "jane@example.com", tags: ["invoice"]}, first: 20) {
    edges { cursor node { id type provider providerEvent occurredAt messageId
      ... on DeliveryProblemEvent { severity rejectReason reason smtpStatus }
      ... on ClickEvent { url } } }
    pageInfo { hasNextPage endCursor }
  }
  message(messageId: "<201798300811.5787683@relay.example.com>") {
    state events { type occurredAt }
  }
}
""",
    """mutation CreateWebhook {
  createWebhook(input: {url: "https://example.com/jango", method: GET, format: JANGOMAIL,
      events: [OPENED, CLICKED],
      parameters: [{field: "email", name: "addr"}, {field: "ip", name: ""}]}) {
    secret webhook { id enabled }
  }
}
""",
    """subscription LiveEvents {
  events {
    id type provider email occurredAt
    ... on DeliveryProblemEvent { severity reason }
  }
}
""",
)

HEADERS_STUB = '{"Authorization": "Bearer <api key>"}'

_PAGE = """<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>GraphiQL · email event gateway</title>
    <link rel="icon" href="data:,">
    <link rel="stylesheet" href="graphiql/graphiql.min.css">
    <style>
      body {{ height: 100%; margin: 0; width: 100%; overflow: hidden; }}
      #graphiql {{ height: 100vh; }}
    </style>
  </head>
  <body>
    <div id="graphiql">Loading GraphiQL…</div>
    <script id="graphiql-config" type="application/json">{config}</script>
    <script src="graphiql/react.production.min.js"></script>
    <script src="graphiql/react-dom.production.min.js"></script>
    <script src="graphiql/graphiql.min.js"></script>
    <script src="graphiql/gateway-graphiql.js"></script>
  </body>
</html>
"""


def graphiql_page() -> str:
    """The GraphiQL page for ``GET /graphql``."""
    config = {
        "endpoint": "graphql",
        "headers": HEADERS_STUB,
        "tabs": [{"query": query, "headers": HEADERS_STUB} for query in EXAMPLES],
    }
    # In a <script> element, "</" would end it: JSON lets "<" be written as \u003c.
    return _PAGE.format(config=json.dumps(config).replace("<", "\\u003c"))


routes = [Mount("/graphiql", app=StaticFiles(directory=ASSETS), name="graphiql")]
