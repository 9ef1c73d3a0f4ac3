// GraphQL over HTTP, and subscriptions over a websocket speaking graphql-transport-ws
// (the protocol's four messages we need: connection_init, subscribe, next, complete).

export class GraphQLError extends Error {}

export async function query(apiKey, text, variables = {}) {
  const response = await fetch("/graphql", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${apiKey}` },
    body: JSON.stringify({ query: text, variables }),
  });
  if (response.status === 401) throw new GraphQLError("That API key is not valid here.");
  const body = await response.json();
  if (body.errors && body.errors.length) {
    throw new GraphQLError(body.errors.map((e) => e.message).join("; "));
  }
  return body.data;
}

// Calls onNext(data) for each result and onStatus(text) as the connection changes.
// Reconnects after a drop; variables(…) is asked again then, so that a caller can
// resume after the last event it saw. Returns a function that stops it all.
export function subscribe(apiKey, text, variables, { onNext, onStatus }) {
  let socket = null;
  let stopped = false;
  let retry = 500;
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`;

  function connect() {
    socket = new WebSocket(url, "graphql-transport-ws");
    socket.addEventListener("open", () => {
      socket.send(JSON.stringify({
        type: "connection_init", payload: { authorization: `Bearer ${apiKey}` },
      }));
    });
    socket.addEventListener("message", (message) => {
      const frame = JSON.parse(message.data);
      if (frame.type === "connection_ack") {
        retry = 500;
        socket.send(JSON.stringify({
          id: "tail", type: "subscribe", payload: { query: text, variables: variables() },
        }));
        onStatus("live");
      } else if (frame.type === "next" && frame.payload.data) {
        onNext(frame.payload.data);
      } else if (frame.type === "error") {
        onStatus(`error: ${frame.payload.map((e) => e.message).join("; ")}`);
      } else if (frame.type === "ping") {
        socket.send(JSON.stringify({ type: "pong" }));
      }
    });
    socket.addEventListener("close", (event) => {
      if (stopped) return;
      onStatus(event.code === 4403 ? "not allowed: sign in again" : "reconnecting…");
      if (event.code === 4403) return;
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 15000);
    });
  }

  connect();
  return () => {
    stopped = true;
    if (socket) socket.close(1000);
  };
}
