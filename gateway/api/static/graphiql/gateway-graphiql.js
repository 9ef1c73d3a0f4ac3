// The gateway's GraphiQL: the README's examples as tabs, an Authorization header stub,
// the API key typed once for every tab, and the schema fetched again when it changes.
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("graphiql-config").textContent);
  var url = new URL(config.endpoint, window.location.href);
  var subscriptionUrl = new URL(url.href);
  subscriptionUrl.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  var PLACEHOLDER = "<api key>";

  // The Authorization value last typed with a real key, in any tab. GraphiQL keeps
  // headers per tab: without this, each example tab would need the key again.
  var knownAuthorization = null;

  function parseHeaders(text) {
    try {
      var headers = JSON.parse(text || "{}");
      return headers && typeof headers === "object" && !Array.isArray(headers) ? headers : null;
    } catch (error) {
      return null;
    }
  }

  function authorizationName(headers) {
    for (var name in headers) {
      if (name.toLowerCase() === "authorization") return name;
    }
    return null;
  }

  function realAuthorization(headers) {
    var name = headers && authorizationName(headers);
    var value = name ? headers[name] : null;
    return typeof value === "string" && value.indexOf(PLACEHOLDER) < 0 && value.trim()
      ? value
      : null;
  }

  function withKnownKey(headers) {
    var merged = Object.assign({}, headers || {});
    if (knownAuthorization && !realAuthorization(merged)) {
      var name = authorizationName(merged);
      if (name) delete merged[name];
      merged.Authorization = knownAuthorization;
    }
    return merged;
  }

  // GraphiQL sends the headers of the tab with each request; over the websocket
  // (graphql-transport-ws) they are connection_init's payload.
  function makeFetcher() {
    var fetcher = GraphiQL.createFetcher({
      url: url.href,
      subscriptionUrl: subscriptionUrl.href,
    });
    return function (params, options) {
      var headers = withKnownKey(options && options.headers);
      return fetcher(params, Object.assign({}, options, { headers: headers }));
    };
  }

  function remember(headersText) {
    var value = realAuthorization(parseHeaders(headersText));
    if (!value || value === knownAuthorization) return false;
    knownAuthorization = value;
    return true;
  }

  function GatewayGraphiQL() {
    var state = React.useState(makeFetcher);
    var fetcher = state[0];
    var setFetcher = state[1];
    var timer = React.useRef(null);

    // A new fetcher makes GraphiQL fetch the schema again: with the key just typed,
    // its docs no longer say "Error fetching schema".
    function learn(headersText) {
      if (remember(headersText)) {
        setFetcher(function () {
          return makeFetcher();
        });
      }
    }

    function onEditHeaders(text) {
      window.clearTimeout(timer.current);
      timer.current = window.setTimeout(function () {
        learn(text);
      }, 300);
    }

    // Also called as the headers are edited, and when another tab is chosen.
    function onTabChange(tabsState) {
      var active = tabsState.tabs[tabsState.activeTabIndex];
      if (active) learn(active.headers);
    }

    return React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultTabs: config.tabs,
      defaultHeaders: config.headers,
      defaultEditorToolsVisibility: "headers",
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
      onEditHeaders: onEditHeaders,
      onTabChange: onTabChange,
      inputValueDeprecation: true,
    });
  }

  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GatewayGraphiQL)
  );
})();
