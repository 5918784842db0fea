/* slotledger dashboard: renders the snapshots pushed on /v1/stream; no build step.
 * Live mode follows the stream; the time slider switches the pool view (tiles and
 * grid) to /v1/pool/at for a past instant while the queue and events stay live.
 * The charts are plain SVG drawn here from /v1/pool/timeline, /v1/stats/queue-wait and
 * /v1/stats/deploy-times over the slider's range; a cursor marks the slider's instant. */
(() => {
  "use strict";

  const byId = (id) => document.querySelector(`[data-testid="${id}"]`);
  const STATUSES = ["idle", "deploying", "busy", "error"];
  const LAYERS = ["busy", "deploying", "error", "idle"]; // bottom to top
  const EVENT_STATUS = {
    SlotProvisioned: "idle", SlotAcquired: "deploying", SlotDeploying: "deploying",
    SlotStarted: "busy", SlotReleased: "idle", SlotFailed: "error", SlotRecoveryFailed: "error",
    SlotRecovered: "idle", SlotAppCreated: "deploying", SlotHeartbeatRefused: "error",
    QueueEntryEnqueued: "queue", QueueEntryDispatched: "queue", QueueEntryExpired: "queue",
    QueueEntryCancelled: "queue", InvariantViolated: "error", InvariantResolved: "idle",
    SlotDrained: "drained", SlotUndrained: "drained", PoolDrained: "drained", PoolUndrained: "drained",
  };
  const DRAIN_TITLE = { slot: "drained by name", pool: "drained with the pool" };
  const SLIDER_MAX = 1000;
  const THUMB_HALF = 7;        // px; the slider's thumb is 14 px wide (dashboard.css)
  const CHART_REFRESH_MS = 3000;
  const DEPLOY_WINDOW_S = 3600;
  const VIOLATIONS_REFRESH_MS = 3000;

  const state = {
    snapshot: null,
    offsetMs: 0,          // server clock minus browser clock
    names: new Map(),     // slot id -> name
    firstEventAt: null,   // ms; the slider's left end for the range "all"
    range: "all",         // "all" or seconds before now
    history: null,        // a /v1/pool/at answer while time travelling
    historyAt: null,      // ms of that instant
    openSlot: null,       // slot id shown in the timeline drawer
    openVersion: null,
    charts: { timeline: null, queue: null, deploys: null },
    chartsAt: 0,          // when the charts were last requested (browser ms)
    chartsRequest: 0,
    chartsTimer: null,
    dragging: false,      // the slider's thumb is held: leave it where the hand puts it
  };

  // --- formatting ----------------------------------------------------------------------

  function esc(value) {
    return String(value ?? "").replace(/[&<>"']/g, (c) => (
      { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
    const h = Math.floor(m / 60);
    if (h < 48) return `${h}h ${String(m % 60).padStart(2, "0")}m`;
    return `${Math.floor(h / 24)}d ${h % 24}h`;
  }

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    if (value < 10) return `${value.toFixed(2)} s`;
    if (value < 60) return `${value.toFixed(1)} s`;
    return duration(value);
  }

  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], { hour12: false });
  }

  function stamp(ms) {
    const d = new Date(ms);
    return `${d.toLocaleDateString()} ${clock(ms)}`;
  }

  function tickLabel(ms, spanMs) {
    const d = new Date(ms);
    const hm = d.toLocaleTimeString([], { hour12: false, hour: "2-digit", minute: "2-digit" });
    if (spanMs < 10 * 60e3) return clock(ms);
    if (spanMs < 36 * 3600e3) return hm;
    return `${d.toLocaleDateString([], { month: "2-digit", day: "2-digit" })} ${hm}`;
  }

  const serverNow = () => Date.now() + state.offsetMs;
  const shortId = (text) => (text ? String(text).slice(0, 8) : "");

  // --- connection ----------------------------------------------------------------------

  function setConnection(kind, text) {
    const pill = byId("connection");
    pill.dataset.state = kind;
    pill.textContent = text;
  }

  function connect() {
    const source = new EventSource("/v1/stream");
    source.onopen = () => setConnection("live", "live");
    source.onerror = () => setConnection("reconnecting", "reconnecting…");
    source.addEventListener("snapshot", (e) => onSnapshot(JSON.parse(e.data)));
    source.addEventListener("lag", (e) => renderLag(JSON.parse(e.data)));
    source.addEventListener("problem", (e) => {
      setConnection("problem", `store problem: ${JSON.parse(e.data).detail}`);
    });
  }

  function onSnapshot(snap) {
    state.snapshot = snap;
    state.offsetMs = Date.parse(snap.server_time) - Date.now();
    for (const slot of snap.slots) state.names.set(slot.slot_id, slot.name);
    setConnection("live", "live");
    byId("position").textContent = snap.position;
    if (snap.slots.length) byId("pool-name").textContent = `pool ${snap.slots[0].pool}`;
    if (!state.history) renderPool(liveView(snap));
    renderQueue(snap.queue, snap.waiting);
    renderEvents(snap.events);
    renderLag(snap.lag);
    if (state.firstEventAt === null) loadFirstEvent();
    refreshOpenTimeline(snap);
    scheduleCharts();
  }

  // --- pool view (tiles + grid), live or historical -------------------------------------

  function liveView(snap) {
    return {
      stats: snap.stats,
      until: null,
      slots: snap.slots.map((s) => ({
        id: s.slot_id, name: s.name, status: s.status, since: s.status_since, bot: s.bot_id,
        reason: s.status === "error" ? s.last_error : null,
        drained: Boolean(s.drained), drainScope: s.drain_scope ?? null,
      })),
    };
  }

  function historyView(answer) {
    return {
      stats: answer.stats,
      until: Date.parse(answer.at),
      slots: answer.slots.map((s) => ({
        id: s.slot_id, name: s.name, status: s.status, since: s.since, bot: s.bot_id, reason: null,
        drained: false, drainScope: null, // /v1/pool/at does not say which slots were drained
      })),
    };
  }

  function setTile(name, value, sub) {
    const tile = byId(`tile-${name}`);
    tile.querySelector(".tile-value").textContent = value;
    if (sub !== undefined) tile.querySelector(".tile-sub").textContent = sub;
  }

  const drainTitle = (scope) => DRAIN_TITLE[scope] || "drained";

  /** "N drained" in the Total tile: live only (the past's drains are not known here). */
  function renderDrained(view) {
    const pill = byId("drained-count");
    const drained = view.until === null ? view.slots.filter((s) => s.drained) : [];
    pill.hidden = drained.length === 0;
    pill.dataset.count = drained.length;
    pill.textContent = `${drained.length} drained`;
    const byName = drained.filter((s) => s.drainScope === "slot").length;
    const withPool = drained.filter((s) => s.drainScope === "pool").length;
    pill.title = [byName && `${byName} drained by name`, withPool && `${withPool} drained with the pool`]
      .filter(Boolean).join(", ") || "drained";
  }

  function renderPool(view) {
    const st = view.stats;
    setTile("total", st.total, `of ${st.maxSize} max`);
    for (const status of STATUSES) setTile(status, st[status]);
    document.querySelector(".tiles").classList.toggle("historical", view.until !== null);
    renderDrained(view);
    const grid = byId("slot-grid");
    if (!view.slots.length) {
      grid.innerHTML = `<p class="empty">${view.until ? "no slots at that time" : "the pool has no slots"}</p>`;
      return;
    }
    grid.innerHTML = view.slots.map((s) => `
      <button type="button" class="slot ${esc(s.status)}${s.drained ? " drained" : ""}" data-testid="slot"
              data-slot-id="${esc(s.id)}" data-name="${esc(s.name)}" data-status="${esc(s.status)}"
              data-drained="${s.drained}" data-drain-scope="${esc(s.drainScope)}"
              title="${esc(s.name)}: ${esc(s.status)} since ${esc(stamp(Date.parse(s.since)))}${s.drained ? ` · ${esc(drainTitle(s.drainScope))}` : ""}">
        <span class="slot-name">${esc(s.name)}</span>
        <span class="slot-state"><span class="slot-status">${esc(s.status)}</span>${s.drained
          ? `<span class="slot-drained" data-testid="slot-drained" title="${esc(drainTitle(s.drainScope))}">drained</span>`
          : ""}</span>
        <span class="slot-bot">${s.bot ? esc(s.bot) : "&nbsp;"}</span>
        ${s.reason ? `<span class="slot-reason" data-testid="slot-reason">${esc(s.reason)}</span>` : ""}
        <span class="slot-time" data-since="${Date.parse(s.since)}"
              data-until="${view.until ?? ""}"></span>
      </button>`).join("");
    updateTimes();
  }

  function updateTimes() {
    const now = serverNow();
    for (const el of document.querySelectorAll(".slot-time")) {
      const until = el.dataset.until ? Number(el.dataset.until) : now;
      el.textContent = `for ${duration((until - Number(el.dataset.since)) / 1000)}`;
    }
    for (const el of document.querySelectorAll("[data-waiting-since]")) {
      el.textContent = duration((now - Number(el.dataset.waitingSince)) / 1000);
    }
  }

  // --- queue, events, lag --------------------------------------------------------------

  function renderQueue(stats, waiting) {
    const avg = stats.average_wait_s === null ? "–" : duration(stats.average_wait_s);
    setTile("queue", stats.length, `avg wait ${avg}`);
    byId("queue-count").textContent = waiting.length;
    const list = byId("queue");
    if (!waiting.length) {
      list.innerHTML = '<li class="empty">nobody waits</li>';
      return;
    }
    list.innerHTML = waiting.map((q) => `
      <li data-testid="queue-entry" data-bot="${esc(q.bot_id)}">
        <span class="pos">#${q.position}</span>
        <span class="mono wrap">${esc(q.bot_id)}</span>
        <span class="prio" title="priority (lower goes first)">p${q.priority}</span>
        <span class="muted" data-waiting-since="${Date.parse(q.queued_at)}"></span>
      </li>`).join("");
    updateTimes();
  }

  function eventSubject(ev) {
    const slot = ev.slot_id ? state.names.get(ev.slot_id) || shortId(ev.slot_id) : "";
    const parts = [slot && `<span class="mono">${esc(slot)}</span>`,
      ev.bot_id && `<span class="mono muted" data-testid="event-bot">${esc(ev.bot_id)}</span>`,
      ev.actor && `<span class="muted">by ${esc(ev.actor)}</span>`];
    return parts.filter(Boolean).join(" ");
  }

  function eventLabel(type) {
    return type.replace(/^Slot|^QueueEntry/, "").replace(/([a-z])([A-Z])/g, "$1 $2");
  }

  function renderEvents(events) {
    const list = byId("events");
    if (!events.length) {
      list.innerHTML = '<li class="empty">no events yet</li>';
      return;
    }
    list.innerHTML = events.map((ev) => `
      <li data-testid="event" data-type="${esc(ev.type)}">
        <span class="ev-time">${esc(clock(Date.parse(ev.occurred_at)))}</span>
        <span class="badge ${esc(EVENT_STATUS[ev.type] || "")}">${esc(eventLabel(ev.type))}</span>
        <span class="ev-what">${eventSubject(ev)}</span>
        ${(ev.reason || ev.data.detail) ? `<span class="ev-reason" data-testid="event-reason">${esc(ev.reason || ev.data.detail)}</span>` : ""}
      </li>`).join("");
  }

  function renderLag(lag) {
    byId("lag").textContent = lag.behind === 0 ? "0 s" : `${lag.seconds.toFixed(1)} s`;
    const follower = lag.heartbeat_s === null ? "follower idle" : `read ${lag.heartbeat_s.toFixed(1)} s ago`;
    byId("lag-sub").textContent = `${lag.behind} events behind · ${follower}`;
  }

  // --- invariant violations: a red banner while any is open (/readyz lists them) --------

  async function loadViolations() {
    try {
      const answer = await fetch("/readyz");  // 503 too has the body
      renderViolations((await answer.json()).violations || []);
    } catch (e) {
      // unreachable now: the connection pill says so; the banner stays as it was
    }
  }

  function renderViolations(violations) {
    const banner = byId("violations-banner");
    banner.hidden = violations.length === 0;
    byId("violations-count").textContent = violations.length;
    byId("violations").innerHTML = violations.map((v) => {
      const slot = v.slot_id ? state.names.get(v.slot_id) || shortId(v.slot_id) : "";
      const where = [slot && `slot ${slot}`, v.bot_id && `bot ${v.bot_id}`, `position ${v.position}`];
      return `<li data-testid="violation" data-kind="${esc(v.kind)}">
        <span class="kind">${esc(v.kind)}</span> ${esc(v.detail)}
        <span class="muted">(${esc(where.filter(Boolean).join(", "))}, ${esc(stamp(Date.parse(v.observed_at)))})</span></li>`;
    }).join("");
  }

  // --- time travel ---------------------------------------------------------------------

  async function loadFirstEvent() {
    state.firstEventAt = 0; // loading
    try {
      const answer = await fetch("/v1/events?limit=1");
      const events = await answer.json();
      state.firstEventAt = events.length ? Date.parse(events[0].occurred_at) : null;
    } catch (error) {
      state.firstEventAt = null;
    }
    if (state.firstEventAt) refreshCharts();
  }

  function rangeStart(now) {
    if (state.range === "all") return state.firstEventAt || now - 3600e3;
    return now - Number(state.range) * 1000;
  }

  function sliderInstant(value) {
    const now = serverNow();
    const start = rangeStart(now);
    return start + ((now - start) * value) / SLIDER_MAX;
  }

  let travelTimer = null;
  let travelRequest = 0;

  function onSlider() {
    const slider = byId("time-slider");
    const value = Number(slider.value);
    clearTimeout(travelTimer);
    if (value >= SLIDER_MAX) {
      backToLive();
      return;
    }
    const at = sliderInstant(value);
    byId("time-label").textContent = stamp(at);
    travelTimer = setTimeout(() => travelTo(at), 120);
  }

  async function travelTo(at) {
    const request = ++travelRequest;
    const answer = await fetch(`/v1/pool/at?t=${encodeURIComponent(new Date(at).toISOString())}`);
    if (!answer.ok || request !== travelRequest) return;
    state.history = await answer.json();
    state.historyAt = at;
    renderPool(historyView(state.history));
    const banner = byId("history-banner");
    banner.hidden = false;
    banner.textContent = `Showing the pool as it was at ${stamp(at)} (${duration((serverNow() - at) / 1000)} ago). Queue and events stay live.`;
    byId("back-to-live").hidden = false;
    drawCharts();
    loadDeployTimes();
  }

  function backToLive() {
    travelRequest += 1;
    state.history = null;
    state.historyAt = null;
    byId("time-slider").value = SLIDER_MAX;
    byId("time-label").textContent = "live";
    byId("history-banner").hidden = true;
    byId("back-to-live").hidden = true;
    if (state.snapshot) renderPool(liveView(state.snapshot));
    drawCharts();
    loadDeployTimes();
  }

  // --- charts: data --------------------------------------------------------------------

  function scheduleCharts() {
    if (state.chartsTimer !== null) return;
    const wait = Math.max(0, state.chartsAt + CHART_REFRESH_MS - Date.now());
    state.chartsTimer = setTimeout(() => { state.chartsTimer = null; refreshCharts(); }, wait);
  }

  async function getJSON(url) {
    const answer = await fetch(url);
    if (!answer.ok) throw new Error(`${url}: ${answer.status}`);
    return answer.json();
  }

  /** The timeline and the queue over the slider's range, in buckets of a few pixels. */
  async function refreshCharts() {
    if (state.firstEventAt === 0) return; // the range's start is being read
    state.chartsAt = Date.now();
    const request = ++state.chartsRequest;
    const now = serverNow();
    const start = rangeStart(now);
    const width = byId("timeline-chart").clientWidth || 600;
    const buckets = Math.max(30, Math.min(240, Math.floor(width / 4)));
    const step = Math.max(1, Math.ceil((now - start) / 1000 / buckets));
    const query = `since=${encodeURIComponent(new Date(start).toISOString())}`
      + `&until=${encodeURIComponent(new Date(now).toISOString())}&step=${step}`;
    try {
      const [timeline, queue] = await Promise.all([
        getJSON(`/v1/pool/timeline?${query}`), getJSON(`/v1/stats/queue-wait?${query}`),
      ]);
      if (request !== state.chartsRequest) return;
      state.charts.timeline = timeline;
      state.charts.queue = queue;
      drawCharts();
    } catch (error) {
      byId("timeline-readout").textContent = "the charts cannot be read now";
    }
    loadDeployTimes();
  }

  let deployRequest = 0;

  /** Deploy times over the hour before the slider's instant (before now when live). */
  async function loadDeployTimes() {
    const request = ++deployRequest;
    const until = state.historyAt ? `&until=${encodeURIComponent(new Date(state.historyAt).toISOString())}` : "";
    try {
      const answer = await getJSON(`/v1/stats/deploy-times?window=${DEPLOY_WINDOW_S}${until}`);
      if (request !== deployRequest) return;
      state.charts.deploys = answer;
      drawDeploys(answer);
    } catch (error) {
      byId("deploy-window").textContent = "cannot be read now";
    }
  }

  // --- charts: drawing -----------------------------------------------------------------

  /** x and y scales of one chart: time from the answer's start to now (as the slider's
   *  range, so the cursor sits under the thumb), values along ``scale``. */
  function frame(el, answer, scale, height, bottomPad) {
    const width = Math.max(el.clientWidth, 120);
    const since = Date.parse(answer.since);
    const until = Math.max(Date.parse(answer.until), serverNow(), since + 1);
    const x0 = THUMB_HALF;
    const x1 = width - THUMB_HALF;
    const y0 = 8;
    const y1 = height - bottomPad;
    const { top, step } = scale;
    return {
      width, height, since, until, x0, x1, y0, y1, top, step,
      x: (ms) => x0 + ((ms - since) / (until - since)) * (x1 - x0),
      y: (v) => y1 - (v / top) * (y1 - y0),
      at: (px) => since + ((px - x0) / (x1 - x0)) * (until - since),
    };
  }

  /** A round step (1, 2 or 5 x 10^k) giving at most four grid lines up to ``value``,
   *  and the top of the axis: ``value`` rounded up to it. */
  function axis(value, whole) {
    const rough = Math.max(value, whole ? 1 : 1e-3) / 4;
    const magnitude = 10 ** Math.floor(Math.log10(rough));
    let step = [1, 2, 5, 10].map((m) => m * magnitude).find((m) => m >= rough);
    if (whole) step = Math.max(1, Math.round(step));
    return { step, top: Math.ceil(value / step - 0.01) * step || step }; // 3.001 slots: 3
  }

  function bucketEnd(answer, i) {
    const bucket = answer.buckets[i];
    return bucket.end ?? Math.min(Date.parse(bucket.start) + answer.step_s * 1000, Date.parse(answer.until));
  }

  /** A stepped line through (bucket start, value) .. (bucket end, value). */
  function steps(f, answer, values) {
    return answer.buckets.map((b, i) => {
      const y = f.y(values[i]).toFixed(1);
      return `${f.x(Date.parse(b.start)).toFixed(1)},${y} ${f.x(bucketEnd(answer, i)).toFixed(1)},${y}`;
    }).join(" ");
  }

  function gridLines(f, format) {
    const lines = [];
    for (let v = f.step; v <= f.top + 1e-9; v += f.step) {
      const y = f.y(v).toFixed(1);
      lines.push(`<line class="grid" x1="${f.x0}" x2="${f.x1}" y1="${y}" y2="${y}"/>`
        + `<text class="axis" x="${f.x0 + 3}" y="${Number(y) + 11}">${esc(format(v))}</text>`);
    }
    return lines.join("");
  }

  function tickFractions(width) {
    return width < 520 ? [0, 0.5, 1] : [0, 0.25, 0.5, 0.75, 1];
  }

  function timeGrid(f) {
    return tickFractions(f.width).slice(1, -1).map((q) => {
      const x = (f.x0 + q * (f.x1 - f.x0)).toFixed(1);
      return `<line class="grid" x1="${x}" x2="${x}" y1="${f.y0}" y2="${f.y1}"/>`;
    }).join("");
  }

  function cursor(f) {
    if (!state.historyAt || state.historyAt < f.since || state.historyAt > f.until) return "";
    const x = f.x(state.historyAt).toFixed(1);
    return `<line class="cursor" data-testid="chart-cursor" x1="${x}" x2="${x}" y1="${f.y0 - 6}" y2="${f.y1}"/>`;
  }

  function bucketAt(answer, ms) {
    const i = Math.floor((ms - Date.parse(answer.since)) / (answer.step_s * 1000));
    return Math.max(0, Math.min(answer.buckets.length - 1, i));
  }

  function renderTicks(f) {
    const span = f.until - f.since;
    const fractions = tickFractions(f.width);
    byId("slider-ticks").innerHTML = fractions.map((q, k) => {
      const edge = k === 0 ? "first" : k === fractions.length - 1 ? "last" : "";
      const text = k === fractions.length - 1 && !state.history ? "now" : tickLabel(f.since + q * span, span);
      return `<span class="tick ${edge}" data-testid="slider-tick" style="left: calc(${THUMB_HALF}px + (100% - ${2 * THUMB_HALF}px) * ${q})">${esc(text)}</span>`;
    }).join("");
  }

  function drawCharts() {
    if (state.historyAt && !state.dragging) { // the instant stays put as the range grows
      const now = serverNow();
      const start = rangeStart(now);
      byId("time-slider").value = Math.round(((state.historyAt - start) / (now - start)) * SLIDER_MAX);
    }
    if (state.charts.timeline) drawTimeline(state.charts.timeline);
    if (state.charts.queue) drawQueue(state.charts.queue);
  }

  /** The answer as drawn: from its end to now, what the stream shows now (``now(snap)``
   *  gives a bucket's values), so the chart reaches the slider's right end. */
  function withLiveTail(answer, now) {
    const end = Date.parse(answer.until);
    if (!state.snapshot || !answer.buckets.length || serverNow() - end < 500) return answer;
    const tail = { start: answer.until, end: serverNow(), ...now(state.snapshot) };
    return { ...answer, buckets: [...answer.buckets, tail] };
  }

  const poolNow = (snap) => Object.fromEntries(STATUSES.map((s) => [s, snap.stats[s]]));
  const queueNow = (snap) => ({
    waiting: snap.queue.length,
    longest_wait_s: snap.queue.oldest_queued_at
      ? (serverNow() - Date.parse(snap.queue.oldest_queued_at)) / 1000 : 0,
    mean_wait_s: null,
  });

  function drawTimeline(answer) {
    const el = byId("timeline-chart");
    const drawn = withLiveTail(answer, poolNow);
    const totals = drawn.buckets.map((b) => STATUSES.reduce((sum, s) => sum + b[s], 0));
    const f = frame(el, answer, axis(Math.max(answer.max_size, ...totals, 1), true), el.clientWidth < 520 ? 140 : 180, 2);
    const below = drawn.buckets.map(() => 0);
    const layers = LAYERS.map((status) => {
      const base = below.slice();
      drawn.buckets.forEach((b, i) => { below[i] += b[status]; });
      const top = steps(f, drawn, below);
      const bottom = steps(f, drawn, base).split(" ").reverse().join(" ");
      return `<polygon class="layer ${status}" data-status="${status}" points="${top} ${bottom}"/>`;
    }).join("");
    el.dataset.since = answer.since;
    el.dataset.until = answer.until;
    el.dataset.step = answer.step_s;
    el.dataset.buckets = JSON.stringify(answer.buckets);
    el.innerHTML = `<svg width="${f.width}" height="${f.height}" role="img">${timeGrid(f)}${layers}`
      + `${gridLines(f, String)}${cursor(f)}</svg>`;
    renderTicks(f);
    const describe = (i) => {
      const b = answer.buckets[i];
      const values = STATUSES.map((s) => `${s} ${b[s].toFixed(b[s] % 1 ? 1 : 0)}`).join(" · ");
      return `${clock(Date.parse(b.start))}–${clock(bucketEnd(answer, i))} · ${values} (mean slots)`;
    };
    hover(el, f, answer, describe, byId("timeline-readout"));
    el.onclick = (e) => {
      const share = (pointerX(el, e) - f.x0) / (f.x1 - f.x0);
      const slider = byId("time-slider");
      slider.value = Math.round(Math.max(0, Math.min(1, share)) * SLIDER_MAX);
      onSlider();
    };
  }

  const pointerX = (el, e) => e.clientX - el.getBoundingClientRect().left;

  /** The readout follows the pointer, else the cursor's bucket, else the newest one. */
  function hover(el, f, answer, describe, readout) {
    const rest = () => {
      if (!answer.buckets.length) { readout.textContent = "no data in this range"; return; }
      readout.textContent = describe(bucketAt(answer, state.historyAt || f.until - 1));
    };
    el.onpointermove = (e) => {
      if (answer.buckets.length) readout.textContent = describe(bucketAt(answer, f.at(pointerX(el, e))));
    };
    el.onpointerleave = rest;
    rest();
  }

  function drawQueue(answer) {
    const el = byId("queue-chart");
    const drawn = withLiveTail(answer, queueNow);
    const longest = drawn.buckets.map((b) => b.longest_wait_s);
    const f = frame(el, answer, axis(Math.max(...longest, 1), false), el.clientWidth < 520 ? 120 : 140, 18);
    const end = drawn.buckets.length ? bucketEnd(drawn, drawn.buckets.length - 1) : f.since;
    const area = drawn.buckets.length
      ? `<polygon class="layer queue" points="${steps(f, drawn, longest)} ${f.x(end).toFixed(1)},${f.y1} ${f.x(f.since).toFixed(1)},${f.y1}"/>`
      : "";
    const served = drawn.buckets.map((b, i) => (b.mean_wait_s === null ? "" : `<circle class="served"
      cx="${f.x((Date.parse(b.start) + bucketEnd(drawn, i)) / 2).toFixed(1)}" cy="${f.y(b.mean_wait_s).toFixed(1)}" r="2.5"/>`)).join("");
    const span = f.until - f.since;
    const fractions = tickFractions(f.width);
    const labels = fractions.map((q, k) => {
      const anchor = k === 0 ? "start" : k === fractions.length - 1 ? "end" : "middle";
      const text = k === fractions.length - 1 ? "now" : tickLabel(f.since + q * span, span);
      return `<text class="axis" text-anchor="${anchor}" x="${(f.x0 + q * (f.x1 - f.x0)).toFixed(1)}" y="${f.height - 4}">${esc(text)}</text>`;
    }).join("");
    el.dataset.since = answer.since;
    el.dataset.until = answer.until;
    el.dataset.step = answer.step_s;
    el.dataset.buckets = JSON.stringify(answer.buckets);
    el.innerHTML = `<svg width="${f.width}" height="${f.height}" role="img">${timeGrid(f)}${area}${served}`
      + `${gridLines(f, (v) => seconds(v).replace(".00 s", " s"))}${labels}${cursor(f)}</svg>`;
    const describe = (i) => {
      const b = answer.buckets[i];
      const mean = b.mean_wait_s === null ? "" : ` · ${b.dispatched} served after ${seconds(b.mean_wait_s)} on average`;
      return `${clock(Date.parse(b.start))}–${clock(bucketEnd(answer, i))} · longest wait ${seconds(b.longest_wait_s)} · ${b.waiting.toFixed(1)} waiting${mean}`;
    };
    hover(el, f, answer, describe, byId("queue-readout"));
  }

  function drawDeploys(answer) {
    const el = byId("deploy-chart");
    const hour = state.historyAt ? `the hour before ${clock(state.historyAt)}` : "last hour";
    byId("deploy-window").textContent = hour;
    for (const [id, value] of [["deploy-p50", answer.p50_s], ["deploy-p95", answer.p95_s]]) {
      byId(id).textContent = seconds(value);
      byId(id).dataset.value = value ?? "";
    }
    byId("deploy-count").textContent = answer.count;
    el.dataset.histogram = JSON.stringify(answer.histogram);
    if (!answer.histogram.length) {
      el.innerHTML = `<p class="empty">no deploy finished in the ${esc(hour)}</p>`;
      return;
    }
    const width = Math.max(el.clientWidth, 120);
    const height = 130;
    const first = answer.histogram[0].start_s;
    const last = answer.histogram[answer.histogram.length - 1].end_s;
    const { top } = axis(Math.max(...answer.histogram.map((b) => b.count)), true);
    const x = (s) => 4 + ((s - first) / (last - first)) * (width - 8);
    const y = (n) => height - 18 - (n / top) * (height - 34);
    const bars = answer.histogram.map((b) => `<rect class="bar" data-testid="deploy-bin" data-count="${b.count}"
      x="${(x(b.start_s) + 1).toFixed(1)}" width="${Math.max(x(b.end_s) - x(b.start_s) - 2, 1).toFixed(1)}"
      y="${y(b.count).toFixed(1)}" height="${(y(0) - y(b.count)).toFixed(1)}"><title>${esc(seconds(b.start_s))}–${esc(seconds(b.end_s))}: ${b.count}</title></rect>`).join("");
    const marks = [["p50", answer.p50_s], ["p95", answer.p95_s]].map(([name, v], k) => {
      const px = x(v);
      const anchor = px > width / 2 ? "end" : "start";
      return `<line class="mark ${name}" x1="${px.toFixed(1)}" x2="${px.toFixed(1)}" y1="${4 + 12 * k}" y2="${y(0)}"/>`
        + `<text class="mark-label" x="${(px + (anchor === "end" ? -4 : 4)).toFixed(1)}" y="${13 + 12 * k}" text-anchor="${anchor}">${name}</text>`;
    }).join("");
    const labels = [first, (first + last) / 2, last].map((s, k) => `<text class="axis" x="${x(s).toFixed(1)}" y="${height - 4}"
      text-anchor="${["start", "middle", "end"][k]}">${esc(seconds(s))}</text>`).join("");
    el.innerHTML = `<svg width="${width}" height="${height}" role="img">`
      + `<line class="grid" x1="4" x2="${width - 4}" y1="${y(0)}" y2="${y(0)}"/>${bars}${marks}${labels}</svg>`;
  }

  // --- slot timeline -------------------------------------------------------------------

  async function openTimeline(slotId) {
    state.openSlot = slotId;
    byId("timeline").hidden = false;
    byId("drawer-backdrop").hidden = false;
    const answer = await fetch(`/v1/slots/${encodeURIComponent(slotId)}/history`);
    if (!answer.ok || state.openSlot !== slotId) return;
    renderTimeline(await answer.json());
  }

  function closeTimeline() {
    state.openSlot = null;
    byId("timeline").hidden = true;
    byId("drawer-backdrop").hidden = true;
  }

  function refreshOpenTimeline(snap) {
    if (!state.openSlot) return;
    const slot = snap.slots.find((s) => s.slot_id === state.openSlot);
    if (slot && slot.version !== state.openVersion) openTimeline(state.openSlot);
  }

  function renderTimeline(history) {
    const slot = history.slot;
    state.openVersion = slot.version;
    byId("timeline-title").textContent = slot.name;
    const holder = slot.bot_id ? ` · bot ${slot.bot_id}` : "";
    byId("timeline-sub").innerHTML = `<span class="badge ${esc(slot.status)}">${esc(slot.status)}</span>`
      + ` since ${esc(stamp(Date.parse(slot.status_since)))}${esc(holder)} · lease ${slot.lease}`;
    const now = serverNow();
    byId("timeline-bar").innerHTML = history.intervals.map((i) => {
      const start = Date.parse(i.start);
      const end = i.end ? Date.parse(i.end) : now;
      const spent = Math.max((end - start) / 1000, 0.001);
      return `<span class="${esc(i.status)}" data-testid="interval" data-status="${esc(i.status)}"
        style="flex-grow:${spent}" title="${esc(i.status)} ${esc(clock(start))} for ${esc(duration(spent))}"></span>`;
    }).join("");
    byId("time-in-status").innerHTML = STATUSES
      .filter((s) => history.time_in_status[s] !== undefined)
      .map((s) => `<span class="badge ${s}">${s} ${esc(duration(history.time_in_status[s]))}</span>`)
      .join("");
    byId("timeline-events").innerHTML = history.events.slice().reverse().map((ev) => {
      const details = [ev.bot_id && `bot ${ev.bot_id}`, ev.actor && `by ${ev.actor}`,
        ev.correlation_id && `cid ${shortId(ev.correlation_id)}`, ev.reason].filter(Boolean);
      return `<li class="${esc(EVENT_STATUS[ev.type] || "")}" data-testid="timeline-event" data-type="${esc(ev.type)}">
        <div class="tl-head"><span class="tl-type">${esc(eventLabel(ev.type))}</span>
          <span class="ev-time">${esc(stamp(Date.parse(ev.occurred_at)))}</span></div>
        <div class="tl-detail">${esc(details.join(" · "))}</div></li>`;
    }).join("");
  }

  // --- wiring --------------------------------------------------------------------------

  byId("slot-grid").addEventListener("click", (e) => {
    const cell = e.target.closest("[data-slot-id]");
    if (cell) openTimeline(cell.dataset.slotId);
  });
  byId("timeline-close").addEventListener("click", closeTimeline);
  byId("drawer-backdrop").addEventListener("click", closeTimeline);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeTimeline(); });
  byId("time-slider").addEventListener("input", onSlider);
  byId("time-slider").addEventListener("pointerdown", () => { state.dragging = true; });
  window.addEventListener("pointerup", () => { state.dragging = false; });
  byId("back-to-live").addEventListener("click", backToLive);
  byId("range").addEventListener("change", (e) => {
    state.range = e.target.value;
    backToLive();
    refreshCharts();
  });
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      drawCharts();
      if (state.charts.deploys) drawDeploys(state.charts.deploys);
    }, 100);
  });
  setInterval(updateTimes, 1000);
  setInterval(loadViolations, VIOLATIONS_REFRESH_MS);
  loadViolations();
  setInterval(scheduleCharts, 2 * CHART_REFRESH_MS); // a quiet pool's charts move on too
  connect();
})();
