// The console: signs in with an API key (kept in sessionStorage), then reads the
// account's traffic, rates, web hooks and rejected payloads over GraphQL and tails
// new events over a websocket. Everything the page shows is set as text, never as
// HTML: payloads and addresses come from the outside world.
import { bucketStarts, drawChart, tabulate } from "./charts.js";
import { GraphQLError, query, subscribe } from "./graphql.js";

const KEY = "gateway.apiKey";
const $ = (selector) => document.querySelector(selector);
let stopTail = null;

function cell(row, text, tag = "td") {
  const element = document.createElement(tag);
  element.textContent = text ?? "";
  row.append(element);
  return element;
}

function percent(part, whole) {
  return whole ? `${((100 * part) / whole).toFixed(1)} %` : "–";
}

function when(iso) {
  return iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) : "";
}

// The window the selector names, on whole hours or UTC days (eventStats then reads
// only its rollup).
function currentWindow() {
  const choice = $("#window").value;
  const hour = 3600;
  const day = 24 * hour;
  const now = Date.now() / 1000;
  if (choice === "24h") {
    const end = Math.floor(now / hour) * hour + hour;
    return { interval: "HOUR", step: hour, start: end - 24 * hour, end };
  }
  const days = choice === "7d" ? 7 : 30;
  const end = Math.floor(now / day) * day + day;
  return { interval: "DAY", step: day, start: end - days * day, end };
}

const iso = (seconds) => new Date(seconds * 1000).toISOString();

async function loadTraffic(apiKey) {
  const window = currentWindow();
  const where = { start: iso(window.start), end: iso(window.end) };
  const data = await query(
    apiKey,
    `query Traffic($where: EventFilter, $interval: StatsInterval) {
      byType: eventStats(where: $where, interval: $interval, groupBy: TYPE) { start key count }
      byProvider: eventStats(where: $where, interval: $interval, groupBy: PROVIDER) {
        start key count }
    }`,
    { where, interval: window.interval },
  );
  const starts = bucketStarts(window);
  for (const [name, buckets] of [["type", data.byType], ["provider", data.byProvider]]) {
    const table = tabulate(buckets, starts);
    drawChart($(`#chart-${name}`), starts, table);
    const body = $(`#traffic-${name} tbody`);
    body.replaceChildren();
    for (const key of table.keys) {
      const row = document.createElement("tr");
      row.dataset.key = key;
      row.dataset.count = String(table.totals[key]);
      cell(row, key, "th");
      cell(row, table.totals[key].toLocaleString());
      body.append(row);
    }
    const total = Object.values(table.totals).reduce((a, b) => a + b, 0);
    $(`#chart-${name}`).dataset.total = String(total);
  }
  return window;
}

const RATE_TYPES = ["DELIVERED", "BOUNCED", "REJECTED", "FAILED", "COMPLAINED", "OPENED", "CLICKED"];

async function loadRates(apiKey, window) {
  const parts = [];
  for (const group of ["TEMPLATE", "TAG"]) {
    for (const type of RATE_TYPES) {
      parts.push(`${group}_${type}: eventStats(where: {start: $start, end: $end, types: [${type}]},
        interval: DAY, groupBy: ${group}) { key count }`);
    }
  }
  const data = await query(
    apiKey,
    `query Rates($start: DateTime, $end: DateTime) { ${parts.join("\n")} }`,
    { start: iso(window.start), end: iso(window.end) },
  );
  for (const group of ["TEMPLATE", "TAG"]) {
    const counts = new Map(); // key -> {TYPE: n}
    for (const type of RATE_TYPES) {
      for (const bucket of data[`${group}_${type}`]) {
        const seen = counts.get(bucket.key) ?? {};
        seen[type] = (seen[type] ?? 0) + bucket.count;
        counts.set(bucket.key, seen);
      }
    }
    const body = $(`#rates-${group.toLowerCase()} tbody`);
    body.replaceChildren();
    const keys = [...counts.keys()].sort();
    if (!keys.length) {
      const row = document.createElement("tr");
      cell(row, `No events with a ${group.toLowerCase()} in this window.`).colSpan = 7;
      body.append(row);
    }
    for (const key of keys) {
      const c = counts.get(key);
      const n = (type) => c[type] ?? 0;
      const outcomes = n("DELIVERED") + n("BOUNCED") + n("REJECTED") + n("FAILED");
      const row = document.createElement("tr");
      row.dataset.key = key;
      cell(row, key, "th");
      cell(row, n("DELIVERED").toLocaleString());
      cell(row, percent(n("DELIVERED"), outcomes));
      cell(row, percent(n("BOUNCED"), outcomes));
      cell(row, percent(n("COMPLAINED"), n("DELIVERED")));
      cell(row, percent(n("OPENED"), n("DELIVERED")));
      cell(row, percent(n("CLICKED"), n("DELIVERED")));
      body.append(row);
    }
  }
}

function median(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

async function loadWebhooks(apiKey) {
  const data = await query(
    apiKey,
    `query Health { webhooks {
      id url enabled disabledReason consecutiveFailures
      recent: deliveries(first: 50) { edges { node {
        status attempts { at statusCode durationMs error } } } }
      held: deliveries(first: 100, status: HELD) { edges { cursor } }
    } }`,
  );
  const body = $("#webhook-health tbody");
  body.replaceChildren();
  if (!data.webhooks.length) {
    const row = document.createElement("tr");
    cell(row, "No web hooks yet (createWebhook in GraphiQL).").colSpan = 7;
    body.append(row);
  }
  for (const hook of data.webhooks) {
    const deliveries = hook.recent.edges.map((edge) => edge.node);
    const succeeded = deliveries.filter((d) => d.status === "SUCCEEDED").length;
    const failed = deliveries.filter((d) => d.status === "FAILED").length;
    const attempts = deliveries.flatMap((d) => d.attempts);
    const latency = median(attempts.map((a) => a.durationMs));
    const problems = attempts
      .filter((a) => a.error || a.statusCode === null || a.statusCode >= 300)
      .sort((a, b) => Date.parse(b.at) - Date.parse(a.at));
    const last = problems[0];
    const held = hook.held.edges.length;
    const row = document.createElement("tr");
    row.dataset.id = hook.id;
    cell(row, hook.url, "th");
    cell(row, hook.enabled ? "enabled" : `disabled: ${hook.disabledReason ?? ""}`)
      .className = hook.enabled ? "ok" : "error";
    cell(row, percent(succeeded, succeeded + failed));
    cell(row, latency === null ? "–" : `${latency.toFixed(0)} ms`);
    cell(row, String(hook.consecutiveFailures));
    cell(row, held >= 100 ? "100+" : String(held));
    cell(row, last ? `${when(last.at)} ${last.error ?? `HTTP ${last.statusCode}`}` : "");
    body.append(row);
  }
}

async function loadRejected(apiKey) {
  const data = await query(
    apiKey,
    `query Rejected { rejectedPayloads(first: 20) {
      id provider status reason receivedAt body replayedAt } }`,
  );
  const body = $("#rejected-payloads tbody");
  body.replaceChildren();
  if (!data.rejectedPayloads.length) {
    const row = document.createElement("tr");
    cell(row, "Nothing was refused.").colSpan = 6;
    body.append(row);
  }
  for (const payload of data.rejectedPayloads) {
    const row = document.createElement("tr");
    row.dataset.id = payload.id;
    cell(row, when(payload.receivedAt));
    cell(row, payload.provider);
    cell(row, String(payload.status));
    cell(row, payload.reason);
    const excerpt = cell(row, payload.body ? payload.body.slice(0, 200) : "(no body)");
    excerpt.className = "body";
    const action = cell(row, "");
    action.className = "outcome";
    if (payload.replayedAt) {
      action.textContent = `replayed ${when(payload.replayedAt)}`;
    } else {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "replay";
      button.textContent = "Replay";
      button.addEventListener("click", () => replay(apiKey, payload.id, action, button));
      action.append(button);
    }
    body.append(row);
  }
}

async function replay(apiKey, id, action, button) {
  button.disabled = true;
  try {
    const data = await query(
      apiKey,
      `mutation Replay($id: ID!) { replayRejectedPayload(id: $id) {
        stored duplicates error } }`,
      { id },
    );
    const result = data.replayRejectedPayload;
    if (!result) {
      action.textContent = "gone";
    } else if (result.error) {
      action.textContent = `still refused: ${result.error}`;
      button.disabled = false;
      action.append(button);
    } else {
      action.textContent = `stored ${result.stored}, duplicates ${result.duplicates}`;
    }
    action.dataset.outcome = result && !result.error ? "stored" : "refused";
  } catch (problem) {
    action.textContent = problem.message;
    button.disabled = false;
  }
}

const TAIL_FIELDS = "id type provider email occurredAt template tags";
const TAIL_ROWS = 100;
const REDRAW_AFTER_MS = 5000;
let lastSeen = null;
let redraw = null;

// New events also change the charts: redraw them a little later, once per burst.
function redrawSoon(apiKey) {
  if (redraw) return;
  redraw = setTimeout(() => {
    redraw = null;
    loadTraffic(apiKey).catch(() => {});
  }, REDRAW_AFTER_MS);
}

function tailRow(event) {
  const row = document.createElement("tr");
  row.dataset.id = event.id;
  row.dataset.type = event.type;
  cell(row, when(event.occurredAt));
  cell(row, event.type).className = `type type-${event.type.toLowerCase()}`;
  cell(row, event.provider);
  cell(row, event.email);
  cell(row, event.template);
  cell(row, event.tags.join(", "));
  return row;
}

async function startTail(apiKey) {
  const data = await query(apiKey, `query Latest { events(first: 20) { edges { node {
    ${TAIL_FIELDS} } } } }`);
  const body = $("#live-tail tbody");
  body.replaceChildren(...data.events.edges.map((edge) => tailRow(edge.node)));
  lastSeen = data.events.edges.length ? data.events.edges[0].node.id : null;
  if (stopTail) stopTail();
  stopTail = subscribe(
    apiKey,
    `subscription Tail($after: ID) { events(after: $after) { ${TAIL_FIELDS} } }`,
    () => ({ after: lastSeen }),
    {
      onNext: ({ events: event }) => {
        lastSeen = event.id;
        body.prepend(tailRow(event));
        while (body.rows.length > TAIL_ROWS) body.lastElementChild.remove();
        redrawSoon(apiKey);
      },
      onStatus: (text) => {
        $("#tail-status").textContent = text;
        $("#tail-status").dataset.state = text === "live" ? "live" : "down";
      },
    },
  );
}

async function refresh(apiKey) {
  $("#traffic-status").textContent = "loading…";
  try {
    const window = await loadTraffic(apiKey);
    await Promise.all([loadRates(apiKey, window), loadWebhooks(apiKey), loadRejected(apiKey)]);
    $("#traffic-status").textContent = `updated ${when(new Date().toISOString())} UTC`;
    document.body.dataset.loaded = "true";
  } catch (problem) {
    $("#traffic-status").textContent = problem.message;
  }
}

async function signIn(apiKey) {
  // One cheap authenticated query says whether the key is good.
  await query(apiKey, "query SignIn { webhooks { id } }");
  sessionStorage.setItem(KEY, apiKey);
  $("#sign-in").hidden = true;
  $("#dashboard").hidden = false;
  $("#account-bar").hidden = false;
  await Promise.all([refresh(apiKey), startTail(apiKey)]);
}

function signOut() {
  sessionStorage.removeItem(KEY);
  if (stopTail) stopTail();
  stopTail = null;
  location.reload();
}

$("#sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("#sign-in-error").textContent = "";
  try {
    await signIn($("#api-key").value.trim());
  } catch (problem) {
    $("#sign-in-error").textContent =
      problem instanceof GraphQLError ? problem.message : `Could not reach the gateway: ${problem}`;
  }
});
$("#sign-out").addEventListener("click", signOut);
$("#refresh").addEventListener("click", () => refresh(sessionStorage.getItem(KEY)));
$("#window").addEventListener("change", () => refresh(sessionStorage.getItem(KEY)));

const saved = sessionStorage.getItem(KEY);
if (saved) {
  signIn(saved).catch(() => sessionStorage.removeItem(KEY));
}
