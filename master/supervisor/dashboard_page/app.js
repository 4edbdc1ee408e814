// pycluster's dashboard. Polls dashboard.json?since=SEQ once a second (the master sends the whole
// ring once, then only its newest samples), keeps the last WINDOW_S seconds, and redraws.
// Plain browser JavaScript: no build step, no CDN; the only library is the vendored uPlot.
"use strict";
(function () {
  const WINDOW_S = 300;
  const POLL_MS = 1000;
  const TIMEOUT_MS = 3000;
  const STALE_MS = 4000;
  const MAX_EVENTS = 200;
  // Distinct on a projector and for the common colour blindnesses; a worker keeps its colour (by id).
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#17becf", "#8c564b", "#e377c2",
                   "#bcbd22", "#7f7f7f"];
  const REPLICA_PALETTE = ["#0f766e", "#c2410c", "#1d4ed8", "#be185d", "#4d7c0f", "#6d28d9"];

  const state = { instance: null, seq: 0, samples: [], events: new Map(), snapshot: null, host: "",
                  peers: null, cluster: null, lastOk: 0, error: null };
  const charts = {};   // name -> { key, plot }

  const $ = (id) => document.getElementById(id);
  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  const colorFor = (id) => PALETTE[Number(id) % PALETTE.length];

  // -- numbers, legible --------------------------------------------------------------------
  function fmtRate(v) {
    if (v === null || v === undefined) return "–";
    return v >= 100 ? Math.round(v).toLocaleString("en") : v.toFixed(1);
  }
  function fmtBytes(n) {
    if (!n) return "–";
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i ? n.toFixed(n >= 100 ? 0 : 1) : n) + " " + units[i];
  }
  function fmtDuration(s) {
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  const fmtClock = (t) => new Date(t * 1000).toLocaleTimeString("en-GB");

  // -- the data --------------------------------------------------------------------------------
  async function getJSON(url) {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), TIMEOUT_MS);
    try {
      const response = await fetch(url, { signal: ctrl.signal, cache: "no-store" });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || ("HTTP " + response.status));
      return body;
    } finally {
      clearTimeout(timer);
    }
  }

  // Returns false when the answer came from another master (restarted, or another replica behind a
  // load balancer) and was not the whole ring: the caller asks again from scratch.
  function merge(answer) {
    if (answer.instance !== state.instance) {
      state.instance = answer.instance;
      state.seq = 0;
      state.samples = [];
      state.events.clear();
      if (!answer.full) return false;
    }
    for (const sample of answer.samples) {
      if (sample.seq > state.seq) { state.samples.push(sample); state.seq = sample.seq; }
    }
    const newest = state.samples.length ? state.samples[state.samples.length - 1].t : 0;
    while (state.samples.length && state.samples[0].t < newest - WINDOW_S) state.samples.shift();
    for (const event of answer.events) state.events.set(event.id, event);
    while (state.events.size > MAX_EVENTS) state.events.delete(state.events.keys().next().value);
    state.snapshot = answer.snapshot;
    state.host = answer.host;
    state.peers = answer.peers;
    return true;
  }

  async function poll() {
    try {
      if (!merge(await getJSON("dashboard.json?since=" + state.seq))) merge(await getJSON("dashboard.json"));
      state.lastOk = Date.now();
      state.error = null;
      render();
    } catch (err) {
      state.error = err.name === "AbortError" ? "no answer in " + TIMEOUT_MS / 1000 + " s" : String(err.message || err);
    }
    if (state.peers) {
      try { state.cluster = await getJSON("cluster.json"); renderReplicas(); } catch (err) { /* shown as stale */ }
    }
    renderLive();
    setTimeout(poll, POLL_MS);
  }

  // -- charts --------------------------------------------------------------------------------
  function eventClass(e) {
    if (e.kind === "rolling" || e.kind === "scale") return e.kind;
    if (e.reason === "timeout") return "timeout";
    if (e.verdict === "drained") return "retired";
    if (e.verdict === "shutting-down") return "stop";
    return "crash";
  }
  const EVENT_COLOR = { crash: "--bad", timeout: "--warn", retired: "--warn", rolling: "--info", scale: "--scale",
                        stop: "--muted" };
  function eventLabel(e) {
    const cls = eventClass(e);
    if (cls === "rolling") return "⟳ reload";
    if (cls === "scale") return "⇅ scale";
    const sign = { crash: "✖", timeout: "⏱", retired: "↻", stop: "■" }[cls];
    return sign + " w" + e.worker + (cls === "retired" ? " " + e.reason : cls === "crash" ? " " + e.reason : "");
  }

  // A rolling restart as a band from its start to its end (its steps and drained workers are inside).
  function rollingBands() {
    const bands = [];
    const sorted = [...state.events.values()].filter((e) => e.kind === "rolling").sort((a, b) => a.t - b.t);
    for (const e of sorted) {
      if (e.phase === "start") bands.push({ from: e.t, to: null, failed: false });
      else if ((e.phase === "done" || e.phase === "failed") && bands.length && bands[bands.length - 1].to === null) {
        Object.assign(bands[bands.length - 1], { to: e.t, failed: e.phase === "failed" });
      }
    }
    return bands;
  }

  // On the timeline: crashes, timeouts and retirements as dashed lines with a label, reloads as bands.
  function drawEvents(u) {
    const { left, top, width, height } = u.bbox;
    const dpr = window.devicePixelRatio || 1;
    const ctx = u.ctx;
    const xAt = (t) => Math.min(left + width, Math.max(left, u.valToPos(t, "x", true)));
    ctx.save();
    ctx.font = "600 " + (13 * dpr) + "px system-ui, sans-serif";
    for (const band of rollingBands()) {
      const from = xAt(band.from);
      const to = xAt(band.to === null ? u.scales.x.max : band.to);
      ctx.fillStyle = css(band.failed ? "--bad" : "--info") + "22";
      ctx.fillRect(from, top, Math.max(2 * dpr, to - from), height);
      ctx.fillStyle = css(band.failed ? "--bad" : "--info");
      ctx.fillText(band.failed ? "⟳ reload failed" : "⟳ reload", from + 4 * dpr, top + height - 8 * dpr);
    }
    let row = 0;
    for (const e of state.events.values()) {
      const cls = eventClass(e);
      if (cls === "rolling" || (cls === "retired" && e.reason === "reload")) continue;
      if (e.t < u.scales.x.min || e.t > u.scales.x.max) continue;
      const x = Math.round(u.valToPos(e.t, "x", true));
      const color = css(EVENT_COLOR[cls]);
      ctx.strokeStyle = color;
      ctx.fillStyle = color;
      ctx.lineWidth = 2 * dpr;
      ctx.setLineDash([6 * dpr, 4 * dpr]);
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + height);
      ctx.stroke();
      ctx.fillText(eventLabel(e), x + 4 * dpr, top + (14 + 16 * (row % 3)) * dpr);
      row += 1;
    }
    ctx.restore();
  }

  const INTEGER_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];
  const axisNumber = (v) => (Number.isInteger(v) ? v.toLocaleString("en") : v.toFixed(1));

  function chartOptions(el, height, series, { events = false, integer = false } = {}) {
    const fg = css("--fg");
    const grid = { stroke: css("--grid"), width: 1 };
    const y = { stroke: fg, grid, ticks: grid, size: 70, font: "14px system-ui, sans-serif",
                values: (u, vals) => vals.map(axisNumber) };
    if (integer) y.incrs = INTEGER_STEPS;   // counts of requests: no 0.25 ticks
    return {
      width: Math.max(300, el.clientWidth), height,
      // At least a minute across, so a young master's chart does not zoom into milliseconds.
      scales: { x: { time: true, range: (u, min, max) => [Math.min(min, max - 60), max] }, y: { range: (u, min, max) => [0, Math.max(integer ? 4 : 1, (max || 0) * 1.12)] } },
      axes: [{ stroke: fg, grid, ticks: grid, font: "14px system-ui, sans-serif" }, y],
      series: [{ value: (u, t) => (t === null ? "–" : fmtClock(t)) }, ...series],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      hooks: events ? { draw: [drawEvents] } : {},
    };
  }

  // Create the chart, or recreate it when its set of series changes (a worker came or went).
  function showChart(name, el, key, makeOptions, data) {
    let chart = charts[name];
    if (chart && chart.key === key) {
      chart.plot.setData(data);
    } else {
      if (chart) chart.plot.destroy();
      chart = charts[name] = { key, plot: new uPlot(makeOptions(), data, el) };
    }
    // Away from the cursor, the legend shows the newest values (the cursor's, when it is over the chart).
    if (chart.plot.cursor.left < 0 && data[0].length) chart.plot.setLegend({ idx: data[0].length - 1 });
  }

  function workerIds() {
    const seen = new Set();
    for (const sample of state.samples) for (const id of Object.keys(sample.w)) seen.add(id);
    return [...seen].sort((a, b) => Number(a) - Number(b));
  }

  function workerSeriesChart(name, field, scale, height, withTotal) {
    const el = $("chart-" + name);
    const ids = workerIds();
    const xs = state.samples.map((s) => s.t);
    const column = (id) => state.samples.map((s) => {
      const v = s.w[id];
      return v && v[field] !== null ? v[field] * scale : null;
    });
    const data = [xs, ...ids.map(column)];
    const series = ids.map((id) => ({ label: "worker " + id, stroke: colorFor(id), width: 2.5, points: { show: false },
                                      value: (u, v) => fmtRate(v) }));
    if (withTotal) {
      data.push(state.samples.map((s) => s.rps));
      series.push({ label: "total", stroke: css("--fg"), width: 2, dash: [8, 5], points: { show: false },
                    value: (u, v) => fmtRate(v) });
    }
    showChart(name, el, ids.join(","), () => chartOptions(el, height, series, { events: withTotal,
                                                                                 integer: field === 1 }), data);
  }

  // -- the page ------------------------------------------------------------------------------
  function render() {
    const snap = state.snapshot;
    if (!snap) return;
    const master = snap.master;
    const latest = state.samples[state.samples.length - 1] || { w: {}, rps: null, in_flight: 0 };
    $("host").textContent = state.host + " · " + master.app;
    $("t-rps").textContent = fmtRate(latest.rps);
    $("t-flight").textContent = latest.in_flight;
    const serving = snap.workers.filter((w) => w.state === "listening" && !w.draining).length;
    $("t-workers").textContent = serving + " / " + master.target_workers;
    $("t-policy").textContent = master.policy;
    $("t-rss").textContent = fmtBytes(snap.workers.reduce((sum, w) => sum + w.rss, 0));
    const restarts = Object.entries(master.restarts || {});
    $("t-restarts").textContent = restarts.reduce((sum, [, n]) => sum + n, 0);
    $("t-restart-reasons").textContent = restarts.map(([why, n]) => why + " " + n).join(" · ");
    $("t-master").replaceChildren(badge(master.state));
    $("t-uptime").textContent = "pid " + master.pid + " · up " + fmtDuration(master.uptime) + " · gen " + master.generation;
    renderRolling(master.reload || {});
    workerSeriesChart("rps", 0, 1, 300, true);
    workerSeriesChart("flight", 1, 1, 200, false);
    workerSeriesChart("rss", 2, 1 / 1048576, 200, false);
    renderWorkers(snap.workers, latest);
    renderEvents();
    document.body.dataset.seq = state.seq;
  }

  function renderRolling(reload) {
    const box = $("rolling");
    const recent = reload.finished && Date.now() / 1000 - reload.finished < 60;
    box.hidden = !(reload.state === "running" || (reload.state !== "idle" && recent));
    if (box.hidden) return;
    box.className = "panel rolling " + reload.state;
    const done = reload.replaced || 0;
    const total = reload.total || 0;
    $("rolling-fill").style.width = (total ? (100 * done) / total : 100) + "%";
    let text = done + " of " + total + " workers replaced";
    if (reload.state === "running" && reload.current) text += " · now " + reload.current.old + " → " + reload.current.new;
    if (reload.state === "done") text += " · done in " + (reload.finished - reload.started).toFixed(1) + " s";
    if (reload.state === "failed") text += " · FAILED: " + reload.error;
    $("rolling-text").textContent = text;
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    return td;
  }
  function badge(text, cls) {
    const span = document.createElement("span");
    span.className = "badge " + (cls || text);
    span.textContent = text;
    return span;
  }

  function renderWorkers(workers, latest) {
    const body = $("workers").querySelector("tbody");
    body.replaceChildren(...workers.map((w) => {
      const tr = document.createElement("tr");
      tr.dataset.worker = w.id;
      const name = cell("worker " + w.id + " · slot " + w.slot);
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colorFor(w.id);
      name.prepend(swatch);
      const stateCell = cell("");
      stateCell.append(badge(w.draining ? "draining" : w.state));
      const now = latest.w[String(w.id)];
      tr.append(name, cell(w.pid, "num"), stateCell, cell(fmtRate(now ? now[0] : null), "num big"),
                cell(w.in_flight, "num"), cell(fmtBytes(w.rss), "num"), cell(fmtDuration(w.uptime), "num"),
                cell(w.requests.toLocaleString("en"), "num"), cell(w.restarts, "num"));
      return tr;
    }));
  }

  function renderEvents() {
    const list = $("events");
    const newest = [...state.events.values()].sort((a, b) => b.t - a.t).slice(0, 40);
    list.replaceChildren(...newest.map((e) => {
      const li = document.createElement("li");
      li.className = eventClass(e);
      const time = document.createElement("time");
      time.textContent = fmtClock(e.t);
      li.append(time, document.createTextNode(e.text));
      return li;
    }));
  }

  function renderLive() {
    const live = $("live");
    const fresh = state.lastOk && Date.now() - state.lastOk < STALE_MS;
    live.className = "live " + (fresh ? "ok" : state.lastOk ? "stale" : "connecting");
    live.textContent = fresh ? "● live" : state.lastOk
      ? "stale " + Math.round((Date.now() - state.lastOk) / 1000) + " s" + (state.error ? ": " + state.error : "")
      : "connecting…" + (state.error ? " " + state.error : "");
  }

  // -- every replica (with --dashboard-peers) ---------------------------------------------------
  function renderReplicas() {
    const view = state.cluster;
    $("replicas").hidden = !view;
    if (!view) return;
    $("replicas-peers").textContent = view.peers + (view.errors.length ? " · " + view.errors.join("; ") : "");
    const replicas = view.replicas;
    const data = replicas.length ? holdOver(uPlot.join(replicas.map(bySecond))) : [[]];
    // The sum over the replicas at each second: the load the balancer spread.
    data.push(data[0].map((_, i) => {
      const known = data.slice(1).map((ys) => ys[i]).filter((v) => v !== null && v !== undefined);
      return known.length ? known.reduce((a, b) => a + b, 0) : null;
    }));
    const series = replicas.map((r, i) => ({ label: replicaName(r), stroke: REPLICA_PALETTE[i % REPLICA_PALETTE.length],
                                             width: 2.5, points: { show: false }, value: (u, v) => fmtRate(v) }));
    series.push({ label: "all replicas", stroke: css("--fg"), width: 2, dash: [8, 5], points: { show: false },
                  value: (u, v) => fmtRate(v) });
    const el = $("chart-replicas");
    showChart("replicas", el, replicas.map((r) => r.address).join(","), () => chartOptions(el, 220, series), data);
    $("replicas-table").querySelector("tbody").replaceChildren(...replicas.map((r, i) => replicaRow(r, i)));
  }

  // Each replica samples on its own clock: put every sample on its whole second, so the replicas'
  // series line up (one value per replica per second) and can be summed.
  function bySecond(r) {
    const seconds = new Map();
    r.series.t.forEach((t, i) => seconds.set(Math.round(t), r.series.rps[i]));
    return [[...seconds.keys()], [...seconds.values()]];
  }
  // A replica whose sample fell into the next second has no value in this one: hold its last value
  // for up to 2 s, so its line and the sum do not dip on the replicas' clock skew (a real gap stays).
  function holdOver(data) {
    const xs = data[0];
    for (const ys of data.slice(1)) {
      let last = null;
      let lastX = -Infinity;
      for (let i = 0; i < xs.length; i += 1) {
        if (ys[i] !== null && ys[i] !== undefined) { last = ys[i]; lastX = xs[i]; }
        else if (last !== null && xs[i] - lastX <= 2) ys[i] = last;
        else ys[i] = null;
      }
    }
    return data;
  }
  const replicaName = (r) => r.address + (r.host ? " · " + r.host : "");

  function replicaRow(r, i) {
    const tr = document.createElement("tr");
    const s = r.summary || {};
    const name = cell(replicaName(r));
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = REPLICA_PALETTE[i % REPLICA_PALETTE.length];
    name.prepend(swatch);
    if (r.self) name.append(badge("this one", "self"));
    const stateCell = cell("");
    stateCell.append(r.ok ? badge(s.state) : badge(r.in_dns ? "down" : "gone", "down"));
    if (!r.ok && r.error) stateCell.append(document.createTextNode(" " + r.error));
    const lastRps = r.series.rps.length ? r.series.rps[r.series.rps.length - 1] : null;
    const restarts = Object.values(s.restarts || {}).reduce((a, b) => a + b, 0);
    const rolling = s.reload && s.reload.state === "running" ? s.reload.replaced + "/" + s.reload.total : (s.reload || {}).state || "";
    tr.append(name, stateCell, cell(r.ok ? fmtRate(lastRps) : "–", "num big"), cell(r.ok ? s.in_flight : "–", "num"),
              cell(r.ok ? s.listening + " / " + s.target_workers : "–", "num"), cell(r.ok ? fmtBytes(s.rss) : "–", "num"),
              cell(r.ok ? restarts : "–", "num"), cell(rolling));
    return tr;
  }

  window.addEventListener("resize", () => {
    for (const [name, chart] of Object.entries(charts)) {
      const el = $("chart-" + name);
      chart.plot.setSize({ width: Math.max(300, el.clientWidth), height: chart.plot.height });
    }
  });
  // For tests and the curious: the page's state and its uPlot charts.
  window.pyclusterDashboard = { state, charts };
  poll();
})();
