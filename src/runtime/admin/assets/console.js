// The annals console: a single page over the console's JSON endpoints. Pages are chosen by
// the URL's fragment (#/log, #/store/POKEMONS, ...). Everything shown from the store is set
// as text (textContent), never parsed as HTML.
"use strict";

// The endpoints are relative to the page, so the console works mounted under any prefix.
const BASE = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
// Samples kept for the charts: one every POLL_MS, over the last ten minutes.
const POLL_MS = 2000;
const SAMPLES_MAX = 300;
const TAIL_SHOWN_MAX = 200;

const history = { rate: [], lag: [] };
let lastHead = null;
let tail = null;

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function setStatus(text) {
  document.getElementById("status").textContent = text || "";
}

function token() {
  return document.getElementById("token").value.trim();
}

async function api(path, options) {
  const response = await fetch(BASE + path, options);
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
  if (!response.ok) {
    const message = body && body.message ? body.message : response.statusText;
    throw new Error(`${response.status} ${message}`);
  }
  return body;
}

function mutate(method, path) {
  return api(path, { method, headers: { Authorization: "Bearer " + token() } });
}

function enc(s) { return encodeURIComponent(s); }
function num(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString(); }
function json(v) { return JSON.stringify(v, null, 2); }

function age(ms) {
  if (!ms) return "–";
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function table(headers, rows) {
  const head = h("tr", {}, headers.map(([label, cls]) => h("th", { class: cls }, label)));
  return h("table", {}, h("thead", {}, head), h("tbody", {}, rows));
}

function pushSample(series, value) {
  series.push({ t: Date.now(), v: value });
  while (series.length > SAMPLES_MAX) series.shift();
}

// A line chart of `series` as inline SVG, scaled to its maximum.
function chart(label, series, unit) {
  const width = 360, height = 110, pad = 24;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const max = Math.max(1, ...series.map((s) => s.v));
  const base = document.createElementNS(ns, "line");
  for (const [k, v] of [["x1", pad], ["y1", height - pad], ["x2", width], ["y2", height - pad]]) {
    base.setAttribute(k, v);
  }
  svg.append(base);
  const top = document.createElementNS(ns, "text");
  top.setAttribute("x", 0);
  top.setAttribute("y", 10);
  top.textContent = `${num(Math.round(max))} ${unit}`;
  svg.append(top);
  const seconds = Math.round((series.length * POLL_MS) / 1000);
  const span = seconds < 120 ? `${seconds} s` : `${Math.round(seconds / 60)} min`;
  const bottom = document.createElementNS(ns, "text");
  bottom.setAttribute("x", pad);
  bottom.setAttribute("y", height - 8);
  bottom.textContent = series.length ? `last ${span}` : "collecting…";
  svg.append(bottom);
  if (series.length > 1) {
    // The samples so far fill the width; at most SAMPLES_MAX are kept.
    const step = (width - pad) / (series.length - 1);
    const points = series.map((s, i) => {
      const x = pad + i * step;
      const y = height - pad - (s.v / max) * (height - pad - 16);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.join(" "));
    svg.append(line);
  }
  const last = series.length ? series[series.length - 1].v : null;
  return h("div", { class: "chart" },
    h("div", { class: "label" },
      `${label}: ${last === null ? "–" : num(Math.round(last))} ${unit}`),
    svg);
}

// Polls the head and the consumers' lag for the charts, on every page.
async function poll() {
  try {
    const stats = await api("api/stats");
    const now = Date.now();
    if (lastHead) {
      const seconds = (now - lastHead.t) / 1000;
      pushSample(history.rate, Math.max(0, (stats.head - lastHead.head) / seconds));
    }
    lastHead = { t: now, head: stats.head };
    const consumers = await api("api/consumers");
    const lags = consumers.consumers.map((c) => c.lag);
    pushSample(history.lag, lags.length ? Math.max(...lags) : 0);
    if (currentPage() === "overview") renderCharts();
  } catch (e) {
    setStatus(`polling: ${e.message}`);
  }
}

function renderCharts() {
  const rate = document.getElementById("rate");
  if (rate && history.rate.length) rate.textContent = num(Math.round(history.rate.at(-1).v));
  const holder = document.getElementById("charts");
  if (!holder) return;
  holder.replaceChildren(
    chart("Events per second", history.rate, "ev/s"),
    chart("Largest consumer lag", history.lag, "events"));
}

function currentPage() {
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  return parts[0] || "overview";
}

async function overview(main) {
  const [stores, stats, consumers, letters] = await Promise.all([
    api("api/stores"), api("api/stats"), api("api/consumers"), api("api/dead-letters"),
  ]);
  const maxLag = consumers.consumers.reduce((m, c) => Math.max(m, c.lag), 0);
  const cards = [
    ["Head position", num(stats.head)],
    ["Events per second", history.rate.length ? num(Math.round(history.rate.at(-1).v)) : "–",
      "rate"],
    ["Stores", num(stores.stores.length)],
    ["Largest consumer lag", num(maxLag)],
    ["Dead letters", num(letters.total)],
  ];
  if (stats.log) {
    const log = stats.log;
    cards.push(["Log on disk", bytes(log.segmentBytes + log.indexBytes + log.snapshotBytes)]);
    cards.push(["Events per sync", log.syncs ? (log.events / log.syncs).toFixed(1) : "–"]);
  }
  main.replaceChildren(
    h("h2", {}, "Overview"),
    h("div", { class: "cards" }, cards.map(([label, value, id]) =>
      h("div", { class: "card" },
        h("div", { class: "label" }, label),
        h("div", { class: "value", id }, value)))),
    h("div", { id: "charts", class: "charts" }),
    h("h2", {}, "Event stores"),
    table([["Store"], ["Aggregates", "num"], ["Events", "num"], ["Typed"]],
      stores.stores.map((s) => h("tr", {},
        h("td", {}, h("a", { href: `#/store/${enc(s.id)}` }, s.id)),
        h("td", { class: "num" }, num(s.aggregates)),
        h("td", { class: "num" }, num(s.events)),
        h("td", {}, s.registered ? "yes" : h("span", { class: "muted" }, "no"))))),
    h("h2", {}, "Consumers at a glance"),
    consumersTable(consumers.consumers));
}

function consumersTable(consumers) {
  if (!consumers.length) return h("p", { class: "muted" }, "No consumer has a checkpoint.");
  const headers = [
    ["Consumer"], ["Kind"], ["Checkpoint", "num"], ["Lag (events)", "num"], ["Oldest unhandled"],
  ];
  return table(headers,
    consumers.map((c) => h("tr", {},
      h("td", {}, c.name),
      h("td", {}, c.kind),
      h("td", { class: "num" }, num(c.checkpoint)),
      h("td", { class: c.lag > 0 ? "num lagging" : "num ok" }, num(c.lag)),
      h("td", {}, c.oldestUnhandled ? `${age(c.oldestUnhandledAgeMs)} ago` : "–"))));
}

async function storePage(main, store, params) {
  const query = new URLSearchParams({ limit: "50" });
  if (params.get("token")) query.set("pageToken", params.get("token"));
  if (params.get("reverse") === "true") query.set("reverse", "true");
  const page = await api(`api/stores/${enc(store)}/aggregates?${query}`);
  const reverse = params.get("reverse") === "true";
  const link = (extra) => `#/store/${enc(store)}?${new URLSearchParams(extra)}`;
  main.replaceChildren(
    h("h2", {}, `Store ${store}`),
    h("div", { class: "pager" },
      h("a", { href: link({ reverse: String(!reverse) }) },
        reverse ? "Oldest first" : "Newest first"),
      params.get("token")
        ? h("a", { href: link({ reverse: String(reverse) }) }, "First page") : null,
      page.nextPageToken
        ? h("a", { href: link({ reverse: String(reverse), token: page.nextPageToken }) },
          "Next page")
        : null),
    table([["Aggregate"], ["First event"]],
      page.aggregates.map((a) => h("tr", {},
        h("td", {},
          h("a", { href: `#/aggregate/${enc(store)}/${enc(a.aggregateId)}` }, a.aggregateId)),
        h("td", {}, a.initialEventTimestamp)))));
}

function eventCard(event) {
  const cols = [
    h("div", {}, h("div", { class: "muted" }, "payload"), h("pre", {}, json(event.payload))),
    h("div", {}, h("div", { class: "muted" }, "metadata"), h("pre", {}, json(event.metadata))),
  ];
  if ("stateAfter" in event) {
    cols.push(h("div", {},
      h("div", { class: "muted" }, "state after"), h("pre", {}, json(event.stateAfter))));
  } else if (event.stateError) {
    cols.push(h("div", {},
      h("div", { class: "muted" }, "state after"), h("pre", {}, event.stateError)));
  }
  return h("div", { class: "event" },
    h("div", { class: "head" },
      h("span", { class: "type" }, event.type),
      h("span", {}, `v${event.version}`),
      h("a", { href: `#/aggregate/${enc(event.eventStoreId)}/${enc(event.aggregateId)}` },
        `${event.eventStoreId} / ${event.aggregateId}`),
      h("span", { class: "muted" }, `position ${num(event.position)}`),
      h("span", { class: "muted" }, event.timestamp),
      event.schemaVersion > 1
        ? h("span", { class: "muted" }, `schema ${event.schemaVersion}`) : null,
      event.decodeError ? h("span", { class: "lagging" }, event.decodeError) : null),
    h("div", { class: "cols" }, cols));
}

async function aggregatePage(main, store, id) {
  const first = await api(`api/stores/${enc(store)}/aggregates/${enc(id)}?limit=100`);
  const timeline = h("div", { class: "timeline" }, first.events.map(eventCard));
  const more = h("button", {}, "Load more");
  let next = first.nextFrom;
  more.disabled = !next;
  more.addEventListener("click", async () => {
    if (!next) return;
    const page = await api(`api/stores/${enc(store)}/aggregates/${enc(id)}?from=${next}&limit=100`);
    timeline.append(...page.events.map(eventCard));
    next = page.nextFrom;
    more.disabled = !next;
  });
  main.replaceChildren(
    h("h2", {}, `${store} / ${id}`),
    h("p", { class: "muted" },
      `version ${first.version}` + (first.registered
        ? "" : " · store not registered: payloads shown as stored, no state")),
    timeline,
    h("div", { class: "pager" }, more));
}

async function logPage(main, params) {
  const query = new URLSearchParams({ limit: "50" });
  if (params.get("from")) query.set("from", params.get("from"));
  const page = await api(`api/log?${query}`);
  main.replaceChildren(
    h("h2", {}, "Global log"),
    h("div", { class: "pager" },
      page.previous ? h("a", { href: `#/log?from=${page.previous}` }, "Older") : null,
      h("span", { class: "muted" }, `from position ${num(page.from)} · head ${num(page.head)}`),
      page.next <= page.head ? h("a", { href: `#/log?from=${page.next}` }, "Newer") : null,
      h("a", { href: "#/log" }, "Newest")),
    h("div", { class: "timeline" }, page.events.slice().reverse().map(eventCard)));
}

function tailPage(main) {
  const stores = h("input", { placeholder: "stores (comma-separated)" });
  const types = h("input", { placeholder: "event types (comma-separated)" });
  const list = h("div", { class: "timeline" });
  const state = h("span", { class: "muted" }, "stopped");
  const start = h("button", {}, "Start");
  const stop = h("button", { disabled: "disabled" }, "Stop");
  start.addEventListener("click", () => {
    stopTail();
    const query = new URLSearchParams();
    if (stores.value.trim()) query.set("stores", stores.value.trim());
    if (types.value.trim()) query.set("types", types.value.trim());
    tail = new EventSource(`${BASE}api/tail?${query}`);
    tail.addEventListener("event", (message) => {
      list.prepend(eventCard(JSON.parse(message.data)));
      while (list.children.length > TAIL_SHOWN_MAX) list.lastChild.remove();
    });
    tail.addEventListener("open", () => { state.textContent = "following new events"; });
    tail.addEventListener("error", () => { state.textContent = "disconnected; retrying"; });
    start.disabled = true;
    stop.disabled = false;
  });
  stop.addEventListener("click", () => {
    stopTail();
    state.textContent = "stopped";
    start.disabled = false;
    stop.disabled = true;
  });
  main.replaceChildren(
    h("h2", {}, "Live tail"),
    h("div", { class: "filters" }, stores, types, start, stop, state),
    list);
}

function stopTail() {
  if (tail) { tail.close(); tail = null; }
}

async function consumersPage(main) {
  const consumers = await api("api/consumers");
  main.replaceChildren(
    h("h2", {}, "Consumers"),
    consumers.stateStore ? consumersTable(consumers.consumers)
      : h("p", { class: "muted" }, "The console has no state store."),
    h("h2", {}, "Key-value views"),
    consumers.views.length
      ? table([["View"], ["Version", "num"], ["Active"], ["Next position", "num"], ["Lag", "num"]],
        consumers.views.map((v) => h("tr", {},
          h("td", {}, v.name), h("td", { class: "num" }, v.version),
          h("td", {}, v.active ? "yes" : "no"),
          h("td", { class: "num" }, num(v.nextPosition)),
          h("td", { class: v.lag > 0 ? "num lagging" : "num ok" }, num(v.lag)))))
      : h("p", { class: "muted" }, "No key-value view."),
    h("h2", {}, "Integrity"),
    h("p", {}, h("button", { onclick: verify }, "Verify the log (token)"), " ",
      h("span", { id: "verify" })));
}

async function verify() {
  const out = document.getElementById("verify");
  out.textContent = "verifying…";
  try {
    const report = await mutate("POST", "api/verify");
    out.textContent = report.clean
      ? `clean: ${num(report.events)} events in ${num(report.segments)} segments`
      : `${report.problemCount} problems: ${report.problems.join("; ")}`;
  } catch (e) {
    out.textContent = e.message;
  }
}

async function deadLettersPage(main) {
  const letters = await api("api/dead-letters");
  const act = (method, path, what) => async () => {
    try {
      await mutate(method, path);
      setStatus("");
      route();
    } catch (e) {
      setStatus(`${what}: ${e.message}`);
    }
  };
  main.replaceChildren(
    h("h2", {}, `Dead letters (${num(letters.total)})`),
    letters.deadLetters.length
      ? table([["Action"], ["Position", "num"], ["Event"], ["Error"], ["Attempts", "num"],
        ["Failed at"], [""]],
        letters.deadLetters.map((l) => {
          const key = `api/dead-letters/${enc(l.action)}/${l.position}`;
          return h("tr", {},
            h("td", {}, l.action),
            h("td", { class: "num" }, num(l.position)),
            h("td", {}, h("a", { href: `#/aggregate/${enc(l.eventStoreId)}/${enc(l.aggregateId)}` },
              `${l.type} ${l.eventStoreId}/${l.aggregateId} v${l.version}`)),
            h("td", {}, l.error),
            h("td", { class: "num" }, l.attempts),
            h("td", {}, l.failedAt,
              l.retryRequestedAt ? h("div", { class: "muted" }, "retry requested") : null),
            h("td", {},
              h("button", { onclick: act("POST", `${key}/retry`, "retry") }, "Retry"), " ",
              h("button", { class: "danger", onclick: act("DELETE", key, "drop") }, "Drop")));
        }))
      : h("p", { class: "muted" }, "No dead letter."));
}

async function workersPage(main) {
  const [queues, entities] = await Promise.all([api("api/queues"), api("api/entities")]);
  main.replaceChildren(
    h("h2", {}, "Queues"),
    queues.queues.length
      ? table([["Queue"], ["Depth", "num"], ["In flight", "num"], ["Dead letters", "num"]],
        queues.queues.map((q) => h("tr", {}, h("td", {}, q.name),
          h("td", { class: "num" }, num(q.depth)), h("td", { class: "num" }, num(q.inFlight)),
          h("td", { class: "num" }, num(q.deadLetters)))))
      : h("p", { class: "muted" }, "No queue registered with the console."),
    h("h2", {}, "Entities"),
    entities.entities.length
      ? entities.entities.map((e) => h("div", {},
        h("h3", {}, `${e.name} (${e.eventStoreId}): ${num(e.liveInstances)} live, `
          + `${num(e.mailboxDepth)} commands waiting, ${num(e.pendingTimers)} timers`),
        e.timers && e.timers.length
          ? table([["Entity"], ["Timer"], ["Due"], ["Attempts", "num"], ["Command"]],
            e.timers.map((t) => h("tr", {}, h("td", {}, t.aggregateId), h("td", {}, t.name),
              h("td", {}, t.at), h("td", { class: "num" }, t.attempts),
              h("td", {}, h("pre", {}, json(t.command))))))
          : h("p", { class: "muted" }, e.timersError || "No pending timer.")))
      : h("p", { class: "muted" }, "No entity kind registered with the console."));
}

// Counts navigations: a page whose requests finish after the next navigation began is dropped,
// not drawn over the newer page.
let routes = 0;

async function route() {
  const current = ++routes;
  const main = document.createElement("div");
  const [path, search] = location.hash.replace(/^#\/?/, "").split("?");
  const parts = path.split("/").map(decodeURIComponent);
  const params = new URLSearchParams(search || "");
  const page = parts[0] || "overview";
  if (page !== "tail") stopTail();
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.page === page);
  }
  setStatus("");
  try {
    if (page === "overview") await overview(main);
    else if (page === "store") await storePage(main, parts[1], params);
    else if (page === "aggregate") await aggregatePage(main, parts[1], parts.slice(2).join("/"));
    else if (page === "log") await logPage(main, params);
    else if (page === "tail") tailPage(main);
    else if (page === "consumers") await consumersPage(main);
    else if (page === "dead-letters") await deadLettersPage(main);
    else if (page === "workers") await workersPage(main);
    else main.replaceChildren(h("p", {}, "No such page."));
  } catch (e) {
    if (current === routes) setStatus(e.message);
    return;
  }
  if (current !== routes) return;
  document.getElementById("main").replaceChildren(...main.childNodes);
  if (page === "overview") renderCharts();
}

document.addEventListener("DOMContentLoaded", () => {
  const input = document.getElementById("token");
  input.value = sessionStorage.getItem("annals-console-token") || "";
  input.addEventListener("change", () => {
    sessionStorage.setItem("annals-console-token", input.value);
  });
  window.addEventListener("hashchange", route);
  route();
  poll();
  setInterval(poll, POLL_MS);
});
