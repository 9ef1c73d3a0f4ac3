// Time series from eventStats buckets, drawn with uPlot (vendored: vendor/uPlot.LICENSE).
import uPlot from "./vendor/uPlot.esm.js";

const PALETTE = [
  "#2563eb", "#16a34a", "#dc2626", "#d97706", "#7c3aed", "#0891b2", "#db2777",
  "#65a30d", "#475569", "#ea580c", "#0d9488", "#9333ea", "#a16207",
];

// Every bucket start of the window (seconds), so that empty buckets draw as zero.
export function bucketStarts(window) {
  const starts = [];
  for (let t = window.start; t < window.end; t += window.step) starts.push(t);
  return starts;
}

// { keys: [...], series: {key: [count per bucket]}, totals: {key: n} } from buckets.
export function tabulate(buckets, starts) {
  const index = new Map(starts.map((start, i) => [start, i]));
  const series = {};
  const totals = {};
  for (const bucket of buckets) {
    const at = index.get(Date.parse(bucket.start) / 1000);
    if (at === undefined) continue;
    if (!series[bucket.key]) {
      series[bucket.key] = new Array(starts.length).fill(0);
      totals[bucket.key] = 0;
    }
    series[bucket.key][at] += bucket.count;
    totals[bucket.key] += bucket.count;
  }
  const keys = Object.keys(totals).sort((a, b) => totals[b] - totals[a] || a.localeCompare(b));
  return { keys, series, totals };
}

const WHOLE_STEPS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6].map((p) => m * p))
  .sort((a, b) => a - b);

const charts = new Map();

export function drawChart(container, starts, table) {
  const old = charts.get(container);
  if (old) old.destroy();
  container.replaceChildren();
  if (!table.keys.length) {
    const empty = document.createElement("p");
    empty.className = "empty";
    empty.textContent = "No events in this window.";
    container.append(empty);
    charts.delete(container);
    return;
  }
  const options = {
    width: Math.max(320, container.clientWidth || 560),
    height: 240,
    scales: { x: { time: true } },
    // Counts are whole numbers: no 0.2 steps on the y axis.
    axes: [{}, { size: 50, incrs: WHOLE_STEPS }],
    series: [
      {},
      ...table.keys.map((key, i) => ({
        label: key,
        stroke: PALETTE[i % PALETTE.length],
        width: 2,
        points: { show: starts.length < 60 },
      })),
    ],
  };
  const data = [starts, ...table.keys.map((key) => table.series[key])];
  charts.set(container, new uPlot(options, data, container));
}
