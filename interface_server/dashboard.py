"""The live dashboard page: one self-contained HTML document (inline CSS, plain JS, SVG).

Nothing is fetched from the network but the page's own JSON feed
(``__FEED__`` is replaced by its path, ``<dashboard path>.json``; see
``interface_server.operations.Operations.feed``). The page polls the feed
every ``interval`` seconds and draws, for the last ten minutes: channel depths
(messages pending per channel), throughput (messages sent per second per
channel, and HTTP requests per second on this server) and the time from a
request's message to its first reply (p50 and p95); then tables of the
problems, channels, workers, interface servers and groups -- the numbers
``switchboard status`` prints (a worker whose heartbeat is late is in state
``stale``, in red). Every name from the layer is inserted as text,
never as HTML.
"""

from __future__ import annotations

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Switchboard dashboard</title>
<link rel="icon" href="data:,">
<style>
  :root { --bg: #f6f7f9; --card: #fff; --ink: #1d2330; --muted: #667085; --line: #e4e7ec;
          --ok: #12805c; --bad: #c0362c; --warn: #b7791f; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif;
         background: var(--bg); color: var(--ink); }
  header { display: flex; gap: 16px; align-items: center; padding: 12px 20px;
           background: #1d2330; color: #fff; flex-wrap: wrap; }
  header h1 { font-size: 18px; margin: 0; }
  header .meta { color: #c9cfdb; font-size: 12px; }
  #verdict { padding: 3px 10px; border-radius: 12px; font-weight: 600; font-size: 12px; }
  #verdict.ok { background: var(--ok); } #verdict.bad { background: var(--bad); }
  #verdict.unknown { background: #667085; }
  main { padding: 16px 20px; display: grid; gap: 16px;
         grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); }
  section { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
            padding: 12px 14px; min-width: 0; }
  section.wide { grid-column: 1 / -1; }
  h2 { font-size: 14px; margin: 0 0 8px; }
  svg.chart { width: 100%; height: 200px; display: block; }
  svg.chart text { font-size: 10px; fill: var(--muted); }
  svg.chart .grid { stroke: var(--line); stroke-width: 1; }
  svg.chart .series { fill: none; stroke-width: 2; }
  .legend { display: flex; flex-wrap: wrap; gap: 4px 12px; font-size: 12px; color: var(--muted); }
  .legend span::before { content: ""; display: inline-block; width: 10px; height: 10px;
                         margin-right: 4px; border-radius: 2px; background: var(--c); }
  table { width: 100%; border-collapse: collapse; font-size: 13px; }
  th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
           white-space: nowrap; }
  th { color: var(--muted); font-weight: 600; font-size: 12px; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  .bar { display: inline-block; width: 70px; height: 8px; background: var(--line);
         border-radius: 4px; vertical-align: middle; margin-right: 6px; overflow: hidden; }
  .bar i { display: block; height: 100%; background: var(--ok); }
  .bar i.warn { background: var(--warn); } .bar i.bad { background: var(--bad); }
  .state-busy { color: var(--warn); font-weight: 600; } .state-idle { color: var(--ok); }
  .state-stale { color: var(--bad); font-weight: 600; }
  ul.problems { margin: 0; padding: 0; list-style: none; }
  ul.problems li { padding: 4px 0; }
  .sev { display: inline-block; width: 70px; font-weight: 700; font-size: 11px; }
  .sev.error { color: var(--bad); } .sev.warning { color: var(--warn); }
  .sev.info { color: var(--muted); }
  .empty { color: var(--muted); font-style: italic; }
  .scroll { overflow-x: auto; }
</style>
</head>
<body>
<header>
  <h1>Switchboard</h1>
  <span id="verdict" class="unknown">waiting for data</span>
  <span class="meta" id="layer"></span>
  <span class="meta" id="updated"></span>
</header>
<main>
  <section class="wide"><h2>Problems</h2><ul class="problems" id="problems"></ul></section>
  <section><h2>Channel depth (messages pending)</h2>
    <svg class="chart" id="chart-depth" viewBox="0 0 600 200" preserveAspectRatio="none"></svg>
    <div class="legend" id="legend-depth"></div></section>
  <section><h2>Throughput (messages sent per second)</h2>
    <svg class="chart" id="chart-throughput" viewBox="0 0 600 200"
         preserveAspectRatio="none"></svg>
    <div class="legend" id="legend-throughput"></div></section>
  <section><h2>Time to first reply (ms, this server)</h2>
    <svg class="chart" id="chart-latency" viewBox="0 0 600 200" preserveAspectRatio="none"></svg>
    <div class="legend" id="legend-latency"></div></section>
  <section><h2>Workers busy / idle</h2>
    <svg class="chart" id="chart-workers" viewBox="0 0 600 200" preserveAspectRatio="none"></svg>
    <div class="legend" id="legend-workers"></div></section>
  <section class="wide"><h2>Channels</h2><div class="scroll"><table id="channels"></table></div>
  </section>
  <section class="wide"><h2>Workers</h2><div class="scroll"><table id="workers"></table></div>
  </section>
  <section><h2>Interface servers</h2><div class="scroll"><table id="servers"></table></div>
  </section>
  <section><h2>Groups</h2><div class="scroll"><table id="groups"></table></div></section>
</main>
<script>
"use strict";
const FEED = "__FEED__";
const COLORS = ["#2f6fed", "#12805c", "#c0362c", "#b7791f", "#7b3fe4", "#0e9aa7",
                "#d6336c", "#5c6b7a", "#e8590c", "#2b8a3e"];
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "text") node.textContent = value; else node.setAttribute(key, value);
  }
  for (const child of children || []) node.appendChild(child);
  return node;
}
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}
function ago(s) {
  if (s === null || s === undefined) return "-";
  if (s < 10) return s.toFixed(1) + " s";
  if (s < 120) return Math.round(s) + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function num(v, digits) {
  if (v === null || v === undefined) return "-";
  return digits === undefined ? String(v) : Number(v).toFixed(digits);
}
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// series: [{name, points: [[t, v], ...]}]; draws into an SVG with a 600x200 viewBox.
function drawChart(id, series, unit) {
  const chart = document.getElementById(id);
  chart.dataset.unit = unit;
  const legend = document.getElementById(id.replace("chart", "legend"));
  chart.replaceChildren();
  legend.replaceChildren();
  const W = 600, H = 200, L = 44, R = 8, T = 8, B = 20;
  const all = series.flatMap(s => s.points);
  if (all.length === 0) {
    const t = svg("text", {x: W / 2, y: H / 2, "text-anchor": "middle"});
    t.textContent = "no data yet";
    chart.appendChild(t);
    chart.dataset.points = "0";
    return;
  }
  const t0 = Math.min(...all.map(p => p[0])), t1 = Math.max(...all.map(p => p[0]));
  const span = Math.max(t1 - t0, 1);
  const top = niceMax(Math.max(...all.map(p => p[1])));
  const x = t => L + (t - t0) / span * (W - L - R);
  const y = v => T + (1 - v / top) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = top * i / 4;
    chart.appendChild(svg("line", {class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v)}));
    const label = svg("text", {x: L - 4, y: y(v) + 3, "text-anchor": "end"});
    label.textContent = Number.isInteger(v) ? String(v) : v.toFixed(1);
    chart.appendChild(label);
  }
  for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) {
    const label = svg("text", {x: x(t), y: H - 4, "text-anchor": anchor});
    label.textContent = t === t1 ? "now" : "-" + ago(t1 - t);
    chart.appendChild(label);
  }
  let total = 0;
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    if (s.points.length > 0) {
      const line = svg("polyline", {
        class: "series", stroke: color, "data-series": s.name,
        "data-points": String(s.points.length),
        points: s.points.map(p => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" ")});
      chart.appendChild(line);
      if (s.points.length === 1) {
        chart.appendChild(svg("circle", {cx: x(s.points[0][0]), cy: y(s.points[0][1]), r: 2.5,
                                         fill: color}));
      }
      total += s.points.length;
    }
    const item = el("span", {text: s.name, style: "--c: " + color});
    legend.appendChild(item);
  });
  chart.dataset.points = String(total);
}

function seriesOf(history, pick) {
  const names = new Map();
  for (const sample of history) {
    for (const [name, value] of Object.entries(pick(sample) || {})) {
      if (value === null || value === undefined) continue;
      if (!names.has(name)) names.set(name, []);
      names.get(name).push([sample.t, value]);
    }
  }
  return [...names.entries()].map(([name, points]) => ({name, points}));
}

function table(id, headers, rows, numeric) {
  const node = document.getElementById(id);
  node.replaceChildren();
  node.appendChild(el("tr", {}, headers.map((h, i) =>
    el("th", {text: h, class: numeric.includes(i) ? "num" : ""}))));
  if (rows.length === 0) {
    node.appendChild(el("tr", {}, [el("td", {text: "none", class: "empty",
                                             colspan: String(headers.length)})]));
    return;
  }
  for (const row of rows) {
    node.appendChild(el("tr", {}, row.map((cell, i) => {
      const td = el("td", {class: numeric.includes(i) ? "num" : ""});
      if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell;
      return td;
    })));
  }
}

function fillBar(fill) {
  const i = el("i", {class: fill >= 0.9 ? "bad" : fill >= 0.75 ? "warn" : "",
                     style: "width: " + Math.min(100, Math.round(fill * 100)) + "%"});
  return el("span", {}, [el("span", {class: "bar"}, [i]),
                          document.createTextNode(Math.round(fill * 100) + "%")]);
}

function render(feed) {
  const status = feed.status;
  const verdict = document.getElementById("verdict");
  document.getElementById("updated").textContent =
    "server " + feed.server.id + " · updated " + new Date().toLocaleTimeString() +
    (feed.error ? " · layer error: " + feed.error : "");
  const history = feed.history || [];
  drawChart("chart-depth", seriesOf(history, s => s.pending), "msgs");
  const throughput = seriesOf(history, s => s.rate);
  throughput.push({name: "HTTP requests (this server)",
                   points: history.filter(s => s.requests_per_s !== null)
                                  .map(s => [s.t, s.requests_per_s])});
  drawChart("chart-throughput", throughput, "/s");
  drawChart("chart-latency", seriesOf(history, s => ({
    "p50": s.first_reply_ms.p50, "p95": s.first_reply_ms.p95})), "ms");
  drawChart("chart-workers", seriesOf(history, s => s.workers), "");
  if (!status) {
    verdict.className = "unknown";
    verdict.textContent = "no look at the layer yet";
    return;
  }
  verdict.className = status.healthy ? "ok" : "bad";
  verdict.textContent = status.healthy ? "HEALTHY" : "UNHEALTHY";
  document.getElementById("layer").textContent = status.layer;
  const problems = document.getElementById("problems");
  problems.replaceChildren();
  for (const p of status.problems) {
    problems.appendChild(el("li", {class: "problem"}, [
      el("span", {class: "sev " + p.severity, text: p.severity.toUpperCase()}),
      document.createTextNode(p.message)]));
  }
  if (status.problems.length === 0) problems.appendChild(el("li", {class: "empty",
                                                                   text: "none"}));
  table("channels", ["Channel", "Pending", "Full", "Oldest", "Capacity", "Sent", "Per s",
                     "ChannelFull", "Expired", "Consumers"],
        status.channels.map(c => [c.name, c.pending, fillBar(c.fill),
                                  c.pending ? ago(c.oldest_age) : "-", c.capacity, c.sent,
                                  num(c.per_second, 1), c.channel_full, c.expired,
                                  c.consumers.length ? c.consumers.join(", ") : "NONE"]),
        [1, 3, 4, 5, 6, 7, 8]);
  table("workers", ["Worker", "Host", "PID", "Threads", "State", "Current", "Processed",
                    "Failed", "Heartbeat", "Uptime", "Channels"],
        status.workers.map(w => [w.name, w.host || "-", num(w.pid), num(w.threads),
                                 el("span", {class: "state-" + w.state.split(" ")[0],
                                             text: w.state}),
                                 w.current ? w.current + " (" + ago(w.current_age) + ")" : "-",
                                 num(w.processed), num(w.failed), ago(w.heartbeat_age) + " ago",
                                 ago(w.uptime),
                                 w.channels === null ? "everything" : w.channels.join(", ")]),
        [2, 3, 6, 7]);
  table("servers", ["Server", "Host", "HTTP", "WebSockets", "In flight", "Heartbeat"],
        status.servers.map(s => [s.name, s.host || "-", num(s.http_connections),
                                 num(s.websockets), num(s.requests_in_flight),
                                 ago(s.heartbeat_age) + " ago" + (s.stale ? " (stale)" : "")]),
        [2, 3, 4]);
  table("groups", ["Group", "Members"],
        (status.groups || []).map(g => [g.name, g.size]), [1]);
}

let interval = 2000;
async function poll() {
  try {
    const response = await fetch(FEED, {cache: "no-store"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    const feed = await response.json();
    interval = Math.max(1000, (feed.interval || 2) * 1000);
    render(feed);
  } catch (error) {
    const verdict = document.getElementById("verdict");
    verdict.className = "unknown";
    verdict.textContent = "feed unreachable: " + error.message;
  }
  setTimeout(poll, interval);
}
poll();
</script>
</body>
</html>
"""
