/* slotledger dashboard: renders the snapshots pushed on /v1/stream; no build step.
 * Live mode follows the stream; the time slider switches the pool view (tiles and
 * grid) to /v1/pool/at for a past instant while the queue and events stay live. */
(() => {
  "use strict";

  const byId = (id) => document.querySelector(`[data-testid="${id}"]`);
  const STATUSES = ["idle", "deploying", "busy", "error"];
  const EVENT_STATUS = {
    SlotProvisioned: "idle", SlotAcquired: "deploying", SlotDeploying: "deploying",
    SlotStarted: "busy", SlotReleased: "idle", SlotFailed: "error", SlotRecoveryFailed: "error",
    SlotRecovered: "idle", SlotAppCreated: "deploying", SlotHeartbeatRefused: "error",
    QueueEntryEnqueued: "queue", QueueEntryDispatched: "queue", QueueEntryExpired: "queue",
    QueueEntryCancelled: "queue",
  };
  const SLIDER_MAX = 1000;

  const state = {
    snapshot: null,
    offsetMs: 0,          // server clock minus browser clock
    names: new Map(),     // slot id -> name
    firstEventAt: null,   // ms; the slider's left end
    history: null,        // a /v1/pool/at answer while time travelling
    historyAt: null,      // ms of that instant
    openSlot: null,       // slot id shown in the timeline drawer
    openVersion: null,
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

  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], { hour12: false });
  }

  function stamp(ms) {
    const d = new Date(ms);
    return `${d.toLocaleDateString()} ${clock(ms)}`;
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
  }

  // --- pool view (tiles + grid), live or historical -------------------------------------

  function liveView(snap) {
    return {
      stats: snap.stats,
      until: null,
      slots: snap.slots.map((s) => ({
        id: s.slot_id, name: s.name, status: s.status, since: s.status_since, bot: s.bot_id,
      })),
    };
  }

  function historyView(answer) {
    return {
      stats: answer.stats,
      until: Date.parse(answer.at),
      slots: answer.slots.map((s) => ({
        id: s.slot_id, name: s.name, status: s.status, since: s.since, bot: s.bot_id,
      })),
    };
  }

  function setTile(name, value, sub) {
    const tile = byId(`tile-${name}`);
    tile.querySelector(".tile-value").textContent = value;
    if (sub !== undefined) tile.querySelector(".tile-sub").textContent = sub;
  }

  function renderPool(view) {
    const st = view.stats;
    setTile("total", st.total, `of ${st.maxSize} max`);
    for (const status of STATUSES) setTile(status, st[status]);
    document.querySelector(".tiles").classList.toggle("historical", view.until !== null);
    const grid = byId("slot-grid");
    if (!view.slots.length) {
      grid.innerHTML = `<p class="empty">${view.until ? "no slots at that time" : "the pool has no slots"}</p>`;
      return;
    }
    grid.innerHTML = view.slots.map((s) => `
      <button type="button" class="slot ${esc(s.status)}" data-testid="slot" data-slot-id="${esc(s.id)}"
              data-name="${esc(s.name)}" data-status="${esc(s.status)}"
              title="${esc(s.name)}: ${esc(s.status)} since ${esc(stamp(Date.parse(s.since)))}">
        <span class="slot-name">${esc(s.name)}</span>
        <span class="slot-status">${esc(s.status)}</span>
        <span class="slot-bot">${s.bot ? esc(s.bot) : "&nbsp;"}</span>
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
        <span class="mono">${esc(q.bot_id)}</span>
        <span class="prio" title="priority (lower goes first)">p${q.priority}</span>
        <span class="muted" data-waiting-since="${Date.parse(q.queued_at)}"></span>
      </li>`).join("");
    updateTimes();
  }

  function eventSubject(ev) {
    const slot = ev.slot_id ? state.names.get(ev.slot_id) || shortId(ev.slot_id) : "";
    const parts = [slot && `<span class="mono">${esc(slot)}</span>`,
      ev.bot_id && `<span class="muted">${esc(ev.bot_id)}</span>`,
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
      <li data-testid="event" data-type="${esc(ev.type)}" title="${esc(ev.reason || ev.type)}">
        <span class="ev-time">${esc(clock(Date.parse(ev.occurred_at)))}</span>
        <span class="badge ${esc(EVENT_STATUS[ev.type] || "")}">${esc(eventLabel(ev.type))}</span>
        <span class="ev-what">${eventSubject(ev)}</span>
      </li>`).join("");
  }

  function renderLag(lag) {
    byId("lag").textContent = lag.behind === 0 ? "0 s" : `${lag.seconds.toFixed(1)} s`;
    const follower = lag.heartbeat_s === null ? "follower idle" : `read ${lag.heartbeat_s.toFixed(1)} s ago`;
    byId("lag-sub").textContent = `${lag.behind} events behind · ${follower}`;
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
  }

  function sliderInstant(value) {
    const start = state.firstEventAt || serverNow() - 3600e3;
    return start + ((serverNow() - start) * value) / SLIDER_MAX;
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
      const seconds = Math.max((end - start) / 1000, 0.001);
      return `<span class="${esc(i.status)}" data-testid="interval" data-status="${esc(i.status)}"
        style="flex-grow:${seconds}" title="${esc(i.status)} ${esc(clock(start))} for ${esc(duration(seconds))}"></span>`;
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
  byId("back-to-live").addEventListener("click", backToLive);
  setInterval(updateTimes, 1000);
  connect();
})();
