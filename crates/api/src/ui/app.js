// fulcrum dashboard. Reads the native API (/v1) with the operator's bearer token, once a
// second, and renders load balancers → listeners → pools → members with their traffic.
//
// Every value that comes from the API is put on the page as text (textContent, append of a
// string, setAttribute), never parsed as HTML: names are chosen by users. Rows are kept and
// updated in place between polls, so buttons, hover and selection survive a refresh.
"use strict";

(() => {
  const TOKEN_KEY = "fulcrum.dashboard.token";
  const POLL_MS = 1000;
  // The API's rate limit is per token, shared with the operator's scripts: a refresh makes
  // one call per pool besides a few fixed ones, so with many pools the page refreshes less
  // often rather than spend more than this many calls a second.
  const CALLS_PER_SECOND = 20;
  const CALL_TIMEOUT_MS = 10000;
  const STALE_MS = 3000;
  const WORK_REQUESTS_SHOWN = 15;
  const DASH = "—";

  let token = sessionStorage.getItem(TOKEN_KEY);
  // Bumped on sign-out, so an answer to an older poll never renders.
  let generation = 0;
  let timer = null;
  let polling = false;
  let pollAgain = false;
  let lastOk = 0;
  let calls = 0; // API calls made, for the refresh budget
  let pollDelay = POLL_MS;
  // Changes made from this page; a refresh that started before one is not rendered (it
  // could show the member as it was), and another follows at once.
  let changes = 0;
  // Member ids with a drain change on its way.
  const changing = new Set();

  const state = {
    health: null,
    lbs: [],
    listeners: [],
    pools: [],
    members: new Map(), // pool id → members
    workRequests: [],
    nodes: [],
    stats: null, // the /v1/stats answer, or null when the server has none
    statsNote: "",
  };

  // ---- DOM helpers ----------------------------------------------------------------------

  const byId = (id) => document.getElementById(id);

  /** An element with attributes and children; strings become text nodes. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c !== undefined && c !== null && c !== false) el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  function setText(el, text) {
    const t = text === undefined || text === null ? "" : String(text);
    if (el.textContent !== t) el.textContent = t;
  }

  function setClass(el, cls) {
    if (el.className !== cls) el.className = cls;
  }

  function setTitle(el, title) {
    if (title) {
      if (el.title !== title) el.title = title;
    } else if (el.hasAttribute("title")) {
      el.removeAttribute("title");
    }
  }

  /** Replaces el's children with badges [{text, cls, title}], unless they already match. */
  function setBadges(el, badges) {
    const sig = JSON.stringify(badges);
    if (el.dataset.sig === sig) return;
    el.dataset.sig = sig;
    el.replaceChildren(...badges.map((b) => h("span", { class: `badge ${b.cls}`, title: b.title }, b.text)));
  }

  /**
   * Makes parent's children the elements of items, in order, keyed by keyOf: existing ones
   * are updated in place, new ones created, missing ones removed.
   */
  function syncList(parent, items, keyOf, create, update) {
    const existing = new Map();
    for (const el of Array.from(parent.children)) existing.set(el.dataset.key, el);
    let prev = null;
    for (const item of items) {
      const key = keyOf(item);
      let el = existing.get(key);
      if (el) {
        existing.delete(key);
      } else {
        el = create(item);
        el.dataset.key = key;
      }
      update(el, item);
      const want = prev ? prev.nextElementSibling : parent.firstElementChild;
      if (el !== want) parent.insertBefore(el, want);
      prev = el;
    }
    for (const el of existing.values()) el.remove();
  }

  // ---- formatting -----------------------------------------------------------------------

  const isNum = (x) => typeof x === "number" && Number.isFinite(x);

  function fmtRate(x) {
    if (!isNum(x)) return DASH;
    if (x === 0) return "0";
    if (x < 10) return x.toFixed(1);
    return Math.round(x).toLocaleString("en-US");
  }

  function fmtMs(x) {
    if (!isNum(x)) return DASH;
    if (x < 0.1) return `${x.toFixed(2)} ms`;
    if (x < 10) return `${x.toFixed(1)} ms`;
    if (x < 10000) return `${Math.round(x)} ms`;
    return `${(x / 1000).toFixed(1)} s`;
  }

  function fmtPct(x) {
    if (!isNum(x)) return DASH;
    if (x === 0) return "0%";
    if (x < 0.001) return "<0.1%";
    return `${(x * 100).toFixed(x < 0.1 ? 1 : 0)}%`;
  }

  function fmtCount(n) {
    return isNum(n) ? n.toLocaleString("en-US") : DASH;
  }

  function fmtAge(iso) {
    const t = Date.parse(iso);
    if (!Number.isFinite(t)) return DASH;
    const s = Math.max(0, (Date.now() - t) / 1000);
    if (s < 60) return `${Math.floor(s)}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m`;
    if (s < 86400) return `${Math.floor(s / 3600)}h`;
    return `${Math.floor(s / 86400)}d`;
  }

  const shortId = (id) => String(id || "").slice(0, 8);
  const words = (s) => String(s || "").toLowerCase().replace(/_/g, " ");
  const endpoint = (m) => (String(m.address).includes(":") ? `[${m.address}]:${m.port}` : `${m.address}:${m.port}`);

  const TONE = {
    ACTIVE: "ok", ONLINE: "ok", SUCCEEDED: "ok", healthy: "ok",
    NO_MONITOR: "quiet", closed: "quiet", unknown: "quiet",
    DRAINING: "warn", DEGRADED: "warn", half_open: "warn",
    OFFLINE: "off",
    ERROR: "bad", FAILED: "bad", open: "bad", unhealthy: "bad",
    ACCEPTED: "info", IN_PROGRESS: "info",
    PENDING_CREATE: "info", PENDING_UPDATE: "info", PENDING_DELETE: "info",
  };
  const tone = (s) => TONE[s] || "quiet";
  const badge = (s, title) => ({ text: words(s), cls: tone(s), title });

  // ---- the API --------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message, requestId) {
      super(message);
      this.status = status;
      this.code = code;
      this.requestId = requestId;
    }
    describe() {
      const what = this.status ? `${this.status} ${this.code}` : this.code;
      const id = this.requestId ? ` (request ${this.requestId})` : "";
      return `${what}: ${this.message}${id}`;
    }
  }

  async function api(method, path, body) {
    const headers = { authorization: `Bearer ${token}`, accept: "application/json" };
    const init = { method, headers, cache: "no-store", signal: AbortSignal.timeout(CALL_TIMEOUT_MS) };
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    calls++;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, "unreachable", `cannot reach fulcrum (${e.message})`);
    }
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (!resp.ok) {
      const code = (data && data.code) || `http_${resp.status}`;
      const message = (data && data.message) || text.slice(0, 200) || resp.statusText;
      const err = new ApiError(resp.status, code, message, data && data.request_id);
      err.retryAfter = Number(resp.headers.get("retry-after")) || 0;
      throw err;
    }
    return { data, headers: resp.headers };
  }

  /** Every item of a paged list, following next_page_token. */
  async function listAll(path) {
    const items = [];
    let page = null;
    for (let i = 0; i < 100; i++) {
      const sep = path.includes("?") ? "&" : "?";
      const url = `${path}${sep}limit=1000${page ? `&page_token=${encodeURIComponent(page)}` : ""}`;
      const { data } = await api("GET", url);
      items.push(...data.items);
      if (!data.next_page_token) break;
      page = data.next_page_token;
    }
    return items;
  }

  async function fetchStats() {
    try {
      return { stats: (await api("GET", "/v1/stats")).data, note: "" };
    } catch (e) {
      if (e.status === 401) throw e;
      // An older fulcrum has no /v1/stats: the figures read "—".
      if (e.status === 404) return { stats: null, note: "this fulcrum serves no /v1/stats" };
      return { stats: null, note: `traffic figures unavailable: ${e.describe()}` };
    }
  }

  async function refresh(gen) {
    const changesBefore = changes;
    const [health, lbs, listeners, pools, workRequests, nodes, stats] = await Promise.all([
      api("GET", "/v1/health").then((r) => r.data),
      listAll("/v1/loadbalancers"),
      listAll("/v1/listeners"),
      listAll("/v1/pools"),
      api("GET", `/v1/work-requests?limit=${WORK_REQUESTS_SHOWN}`).then((r) => r.data.items),
      api("GET", "/v1/nodes").then((r) => r.data.items),
      fetchStats(),
    ]);
    const members = await Promise.all(
      pools.map((p) =>
        listAll(`/v1/pools/${encodeURIComponent(p.id)}/members`).catch((e) => {
          if (e.status === 404) return []; // deleted since the pools were listed
          throw e;
        }),
      ),
    );
    if (gen !== generation) return;
    if (changes !== changesBefore) {
      pollAgain = true;
      return;
    }
    Object.assign(state, { health, lbs, listeners, pools, workRequests, nodes });
    state.members = new Map(pools.map((p, i) => [p.id, members[i]]));
    state.stats = stats.stats;
    state.statsNote = stats.note;
    render();
  }

  // ---- notices --------------------------------------------------------------------------

  /** Shows a notice; errors stay until closed, others go after a few seconds. */
  function notify(kind, text, key) {
    const box = byId("notices");
    if (key) {
      const old = box.querySelector(`[data-notice="${key}"]`);
      if (old) old.remove();
    }
    const close = h("button", { class: "notice-close", type: "button", "aria-label": "Dismiss" }, "×");
    const el = h("div", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" },
      h("span", { class: "notice-text" }, text), close);
    if (key) el.dataset.notice = key;
    close.addEventListener("click", () => el.remove());
    box.append(el);
    if (kind !== "error") setTimeout(() => el.remove(), 6000);
    return el;
  }

  function clearNotice(key) {
    const el = byId("notices").querySelector(`[data-notice="${key}"]`);
    if (el) el.remove();
  }

  // ---- sign in / out ----------------------------------------------------------------------

  function showLogin(message) {
    byId("app").hidden = true;
    byId("status").hidden = true;
    byId("logout").hidden = true;
    byId("login").hidden = false;
    const err = byId("login-error");
    err.hidden = !message;
    setText(err, message || "");
    byId("token").focus();
  }

  function showApp() {
    byId("login").hidden = true;
    byId("app").hidden = false;
    byId("status").hidden = false;
    byId("logout").hidden = false;
  }

  function signOut(message) {
    generation++;
    clearTimeout(timer);
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    byId("lbs").replaceChildren();
    byId("wrs").replaceChildren();
    byId("nodes").replaceChildren();
    byId("notices").replaceChildren();
    showLogin(message);
  }

  async function signIn(event) {
    event.preventDefault();
    const input = byId("token");
    const candidate = input.value.trim();
    if (!candidate) return;
    const button = byId("login-submit");
    button.disabled = true;
    token = candidate;
    try {
      await api("GET", "/v1/loadbalancers?limit=1");
      sessionStorage.setItem(TOKEN_KEY, candidate);
      input.value = "";
      start();
    } catch (e) {
      token = null;
      showLogin(e.status === 401 ? "That token was refused." : `Cannot sign in: ${e.describe()}`);
    } finally {
      button.disabled = false;
    }
  }

  // ---- polling ----------------------------------------------------------------------------

  function start() {
    showApp();
    generation++;
    pollNow();
  }

  async function pollNow() {
    if (!token) return;
    if (polling) {
      pollAgain = true;
      return;
    }
    polling = true;
    const gen = generation;
    const callsBefore = calls;
    let delay = POLL_MS;
    try {
      await refresh(gen);
      if (gen === generation) {
        lastOk = Date.now();
        clearNotice("poll");
      }
    } catch (e) {
      if (gen === generation) {
        if (e.status === 401) {
          polling = false;
          signOut("The token was refused; sign in again.");
          return;
        }
        notify("error", `Cannot refresh: ${e.describe()}. Retrying…`, "poll");
        if (e.retryAfter) delay = Math.max(delay, e.retryAfter * 1000);
      }
    } finally {
      polling = false;
    }
    if (gen !== generation) return;
    pollDelay = Math.max(delay, Math.ceil(((calls - callsBefore) / CALLS_PER_SECOND) * 1000));
    renderStatus();
    clearTimeout(timer);
    timer = setTimeout(pollNow, pollAgain ? 0 : pollDelay);
    pollAgain = false;
  }

  // ---- actions ----------------------------------------------------------------------------

  async function setDrain(member, drain) {
    const name = member.name ? `${member.name} (${endpoint(member)})` : endpoint(member);
    changing.add(member.id);
    render();
    try {
      const path = `/v1/pools/${encodeURIComponent(member.pool_id)}/members/${encodeURIComponent(member.id)}`;
      const { data, headers } = await api("PATCH", path, { drain });
      changes++;
      // Show the member as the API now has it, without waiting for the next poll.
      const list = state.members.get(member.pool_id) || [];
      state.members.set(member.pool_id, list.map((m) => (m.id === data.id ? data : m)));
      const wr = headers.get("x-work-request-id");
      notify("ok", `${drain ? "Draining" : "Undrained"} ${name}${wr ? ` · work request ${shortId(wr)}` : ""}`);
    } catch (e) {
      if (e.status === 401) return signOut("The token was refused; sign in again.");
      notify("error", `Could not ${drain ? "drain" : "undrain"} ${name}: ${e.describe()}`);
    } finally {
      changing.delete(member.id);
      render();
      pollNow();
    }
  }

  // ---- rendering --------------------------------------------------------------------------

  function statsIndex() {
    const s = state.stats;
    const index = (list) => new Map((Array.isArray(list) ? list : []).map((x) => [x.id, x]));
    return {
      listeners: index(s && s.listeners),
      pools: index(s && s.pools),
      members: index(s && s.members),
    };
  }

  const byName = (a, b) => (a.name || a.id).localeCompare(b.name || b.id) || a.id.localeCompare(b.id);

  function render() {
    const stats = statsIndex();
    renderSummary(stats);
    renderTree(stats);
    renderWorkRequests();
    renderNodes();
    renderStatus();
  }

  function renderStatus() {
    const hp = state.health;
    const live = byId("live");
    const every = pollDelay > POLL_MS ? ` · every ${Math.round(pollDelay / 1000)} s` : "";
    const fresh = lastOk && Date.now() - lastOk < STALE_MS + pollDelay - POLL_MS;
    setClass(live, `live ${fresh ? "live-ok" : "live-stale"}`);
    setText(byId("live-text"), fresh ? `live${every}` : lastOk ? `stale · last update ${fmtAge(new Date(lastOk).toISOString())} ago` : "connecting…");
    if (!hp) return;
    const rev = byId("revision");
    setText(rev, `revision ${hp.revision} · served ${hp.fleet_applied_revision}`);
    setTitle(rev, `This node's view holds revision ${hp.revision}; its data plane serves ${hp.applied_revision}; work requests count ${hp.fleet_applied_revision} as served.`);
    const store = byId("store");
    const ok = hp.store_reachable && hp.store_writable;
    setText(store, ok ? "store ok" : !hp.store_reachable ? "store unreachable" : "store read-only");
    setClass(store, `meta ${ok ? "" : "meta-bad"}`);
    setTitle(store, hp.store_error || "");
  }

  function renderSummary(stats) {
    const all = [].concat(...state.members.values());
    setText(byId("sum-lbs"), state.lbs.length);
    setText(byId("sum-listeners"), state.listeners.length);
    setText(byId("sum-pools"), state.pools.length);
    setText(byId("sum-members"), all.length);
    const count = (s) => all.filter((m) => m.operating_status === s).length;
    const down = count("ERROR") + count("OFFLINE");
    const draining = count("DRAINING");
    const parts = [`${all.length - down - draining} up`];
    if (draining) parts.push(`${draining} draining`);
    if (down) parts.push(`${down} down`);
    setText(byId("sum-members-sub"), parts.join(" · "));
    const rps = byId("sum-rps");
    const errors = byId("sum-errors");
    if (state.stats) {
      const ls = [...stats.listeners.values()];
      const total = ls.reduce((a, l) => a + (l.requests_per_second || 0), 0);
      const bad = ls.reduce((a, l) => a + (l.requests_per_second || 0) * (l.error_rate || 0), 0);
      setText(rps, fmtRate(total));
      setText(errors, total > 0 ? fmtPct(bad / total) : fmtPct(0));
      setClass(errors, `tile-value ${total > 0 && bad / total > 0.01 ? "text-bad" : ""}`);
      const w = state.stats.window_seconds;
      setText(byId("sum-window"), isNum(w) && w > 0 ? `over the last ${Math.round(w)} s` : "measuring…");
    } else {
      setText(rps, DASH);
      setText(errors, DASH);
      setClass(errors, "tile-value");
      setText(byId("sum-window"), state.statsNote);
    }
  }

  function renderTree(stats) {
    const lbs = [...state.lbs].sort(byName);
    byId("no-lbs").hidden = lbs.length > 0;
    syncList(byId("lbs"), lbs, (lb) => lb.id, createLb, (el, lb) => updateLb(el, lb, stats));
  }

  /** The traffic cells shared by listeners, pools and members. */
  function trafficCells() {
    return {
      rps: h("td", { class: "num c-rps" }),
      err: h("td", { class: "num c-err" }),
      p50: h("td", { class: "num c-p50" }),
      p99: h("td", { class: "num c-p99" }),
    };
  }

  function updateTraffic(cells, s) {
    setText(cells.rps, s ? fmtRate(s.requests_per_second) : DASH);
    setText(cells.err, s ? fmtPct(s.error_rate) : DASH);
    setClass(cells.err, `num c-err ${s && s.error_rate > 0.01 ? "text-bad" : s && s.error_rate > 0 ? "text-warn" : ""}`);
    const errs = s && isNum(s.errors_total) ? ` · ${fmtCount(s.errors_total)} errors` : "";
    setTitle(cells.err, s && isNum(s.requests_total) ? `${fmtCount(s.requests_total)} requests in all${errs}` : "");
    setText(cells.p50, s ? fmtMs(s.p50_ms) : DASH);
    setText(cells.p99, s ? fmtMs(s.p99_ms) : DASH);
  }

  function createLb() {
    const r = {
      name: h("h2", { class: "lb-name" }),
      meta: h("span", { class: "lb-meta" }),
      badges: h("span", { class: "badges" }),
      traffic: h("span", { class: "lb-traffic" }),
      listeners: h("tbody"),
      noListeners: h("p", { class: "empty" }, "No listeners."),
      pools: h("div", { class: "pools" }),
      noPools: h("p", { class: "empty" }, "No pools."),
    };
    const el = h("section", { class: "card lb" },
      h("header", { class: "lb-head" }, r.name, r.meta, r.badges, h("span", { class: "spacer" }), r.traffic),
      h("table", { class: "grid listeners" },
        h("colgroup", {}, h("col", { class: "w-name" }), h("col", { class: "w-proto" }), h("col", { class: "w-target" }),
          h("col", { class: "w-status" }), h("col", { class: "w-num" }), h("col", { class: "w-num" }), h("col", { class: "w-num" }),
          h("col", { class: "w-num" }), h("col", { class: "w-num" })),
        h("thead", {}, h("tr", {},
          h("th", {}, "Listener"), h("th", {}, "Port"), h("th", {}, "Sends to"), h("th", {}, "Status"),
          h("th", { class: "num" }, "Req/s"), h("th", { class: "num" }, "Errors"), h("th", { class: "num" }, "p50"),
          h("th", { class: "num" }, "p99"), h("th", { class: "num", title: "Requests in all" }, "Total"))),
        r.listeners),
      r.noListeners,
      r.pools,
      r.noPools);
    el._r = r;
    return el;
  }

  function updateLb(el, lb, stats) {
    const r = el._r;
    el.dataset.lbId = lb.id;
    setText(r.name, lb.name || shortId(lb.id));
    setTitle(r.name, `id ${lb.id}`);
    setText(r.meta, `${lb.vip_address} · ${words(lb.kind)}`);
    const badges = [];
    if (lb.provisioning_status !== "ACTIVE") badges.push(badge(lb.provisioning_status));
    badges.push(badge(lb.operating_status));
    setBadges(r.badges, badges);

    const listeners = state.listeners.filter((l) => l.loadbalancer_id === lb.id).sort((a, b) => a.port - b.port);
    const pools = state.pools.filter((p) => p.loadbalancer_id === lb.id).sort(byName);
    const poolNames = new Map(state.pools.map((p) => [p.id, p.name || shortId(p.id)]));

    const ls = listeners.map((l) => stats.listeners.get(l.id)).filter(Boolean);
    if (state.stats && ls.length) {
      const rps = ls.reduce((a, s) => a + (s.requests_per_second || 0), 0);
      setText(r.traffic, `${fmtRate(rps)} req/s`);
    } else {
      setText(r.traffic, "");
    }

    r.noListeners.hidden = listeners.length > 0;
    syncList(r.listeners, listeners, (l) => l.id, createListener, (row, l) => updateListener(row, l, stats, poolNames));
    r.noPools.hidden = pools.length > 0;
    syncList(r.pools, pools, (p) => p.id, createPool, (block, p) => updatePool(block, p, stats));
  }

  function createListener() {
    const r = {
      name: h("td", { class: "c-name" }),
      port: h("td", { class: "mono" }),
      target: h("td", {}),
      status: h("td", {}),
      traffic: trafficCells(),
      total: h("td", { class: "num" }),
    };
    const t = r.traffic;
    const row = h("tr", {}, r.name, r.port, r.target, r.status, t.rps, t.err, t.p50, t.p99, r.total);
    row._r = r;
    return row;
  }

  function updateListener(row, l, stats, poolNames) {
    const r = row._r;
    row.dataset.listenerId = l.id;
    setText(r.name, l.name || shortId(l.id));
    setTitle(r.name, `id ${l.id}`);
    setText(r.port, `${l.protocol} :${l.port}`);
    const routes = (l.routes || []).length;
    const target = l.default_pool_id ? poolNames.get(l.default_pool_id) || shortId(l.default_pool_id) : "no default pool";
    setText(r.target, routes ? `${target} + ${routes} route${routes > 1 ? "s" : ""}` : target);
    const badges = [];
    if (l.provisioning_status !== "ACTIVE") badges.push(badge(l.provisioning_status));
    badges.push(badge(l.operating_status, l.status_reason));
    setBadges(r.status, badges);
    const s = stats.listeners.get(l.id);
    updateTraffic(r.traffic, s);
    setText(r.total, s ? fmtCount(s.requests_total) : DASH);
  }

  function createPool() {
    const r = {
      name: h("h3", { class: "pool-name" }),
      meta: h("span", { class: "pool-meta" }),
      badges: h("span", { class: "badges" }),
      figures: h("span", { class: "pool-figures" }),
      members: h("tbody"),
      noMembers: h("p", { class: "empty" }, "No members."),
    };
    const th = (text, cls) => h("th", { class: cls }, text);
    const el = h("div", { class: "pool" },
      h("div", { class: "pool-head" }, r.name, r.meta, r.badges, h("span", { class: "spacer" }), r.figures),
      h("table", { class: "grid members" },
        h("colgroup", {}, h("col", { class: "w-member" }), h("col", { class: "w-weight" }), h("col", { class: "w-state" }),
          h("col", { class: "w-health" }), h("col", { class: "w-breaker" }), h("col", { class: "w-num" }),
          h("col", { class: "w-num" }), h("col", { class: "w-num" }), h("col", { class: "w-num" }),
          h("col", { class: "w-flight" }), h("col", { class: "w-action" })),
        h("thead", {}, h("tr", {},
          th("Member"), th("Weight", "num"), th("State"), th("Health"), th("Breaker"), th("Req/s", "num"),
          th("Errors", "num"), th("p50", "num"), th("p99", "num"), th("In flight", "num"), th(""))),
        r.members),
      r.noMembers);
    el._r = r;
    return el;
  }

  function updatePool(el, p, stats) {
    const r = el._r;
    el.dataset.poolId = p.id;
    setText(r.name, p.name || shortId(p.id));
    setTitle(r.name, `id ${p.id}`);
    const members = [...(state.members.get(p.id) || [])].sort(
      (a, b) =>
        a.name.localeCompare(b.name, "en", { numeric: true }) ||
        a.address.localeCompare(b.address, "en", { numeric: true }) ||
        a.port - b.port,
    );
    const up = members.filter((m) => ["ONLINE", "NO_MONITOR"].includes(m.operating_status)).length;
    setText(r.meta, `${p.protocol} · ${words(p.algorithm)} · ${up}/${members.length} up`);
    const badges = [];
    if (p.provisioning_status !== "ACTIVE") badges.push(badge(p.provisioning_status));
    badges.push(badge(p.operating_status));
    setBadges(r.badges, badges);
    const s = stats.pools.get(p.id);
    // A pool's quantiles may be null (its members carry them): show what there is.
    const figures = s ? [`${fmtRate(s.requests_per_second)} req/s`, `${fmtPct(s.error_rate)} errors`] : [];
    if (s && isNum(s.p50_ms)) figures.push(`p50 ${fmtMs(s.p50_ms)}`);
    if (s && isNum(s.p99_ms)) figures.push(`p99 ${fmtMs(s.p99_ms)}`);
    setText(r.figures, figures.join(" · "));
    r.noMembers.hidden = members.length > 0;
    syncList(r.members, members, (m) => m.id, createMember, (row, m) => updateMember(row, m, stats));
  }

  function createMember() {
    const r = {
      name: h("div", { class: "m-name" }),
      addr: h("div", { class: "m-addr mono" }),
      weight: h("td", { class: "num c-weight" }),
      state: h("td", { class: "c-state" }),
      health: h("td", { class: "c-health" }),
      breaker: h("td", { class: "c-breaker" }),
      traffic: trafficCells(),
      flight: h("td", { class: "num c-flight" }),
      button: h("button", { class: "btn btn-small", type: "button" }),
    };
    const t = r.traffic;
    const row = h("tr", { class: "member" },
      h("td", { class: "c-member" }, r.name, r.addr),
      r.weight, r.state, r.health, r.breaker, t.rps, t.err, t.p50, t.p99, r.flight,
      h("td", { class: "c-action" }, r.button));
    r.button.addEventListener("click", () => {
      const m = row._member;
      if (m && !changing.has(m.id)) setDrain(m, !m.drain);
    });
    row._r = r;
    return row;
  }

  function updateMember(row, m, stats) {
    const r = row._r;
    row._member = m;
    row.dataset.memberId = m.id;
    row.dataset.drain = String(m.drain);
    const s = stats.members.get(m.id);
    const failing = m.operating_status === "ERROR" || (s && (s.ejected || s.breaker === "open"));
    const out = m.drain || m.offline || !m.admin_state_up;
    setClass(row, `member${failing ? " member-bad" : out ? " member-out" : ""}`);
    setText(r.name, m.name);
    r.name.hidden = !m.name;
    setText(r.addr, endpoint(m));
    setTitle(r.addr, `id ${m.id}`);
    setText(r.weight, m.weight);

    const flags = [];
    if (!m.admin_state_up) flags.push({ text: "admin down", cls: "bad" });
    if (m.offline) flags.push({ text: "offline", cls: "off" });
    if (m.drain) flags.push({ text: "draining", cls: "warn", title: "Takes only requests bound to it; finishes those in flight" });
    if (m.backup) flags.push({ text: "backup", cls: "info", title: "Serves only when no other member can" });
    if (m.priority) flags.push({ text: `priority ${m.priority}`, cls: "quiet" });
    if (!flags.length) flags.push({ text: "active", cls: "quiet" });
    setBadges(r.state, flags);

    const health = [badge(m.operating_status, s ? `health check: ${s.health}` : undefined)];
    if (s && s.ejected) health.push({ text: "ejected", cls: "bad", title: "Passively ejected after failures" });
    setBadges(r.health, health);
    setBadges(r.breaker, s && s.breaker ? [badge(s.breaker)] : [{ text: DASH, cls: "none" }]);

    updateTraffic(r.traffic, s);
    setText(r.flight, s ? fmtCount(s.in_flight) : DASH);

    const busy = changing.has(m.id);
    r.button.disabled = busy;
    r.button.dataset.action = m.drain ? "undrain" : "drain";
    setText(r.button, busy ? "…" : m.drain ? "Undrain" : "Drain");
    setClass(r.button, `btn btn-small ${m.drain ? "btn-primary" : ""}`);
    setTitle(r.button, m.drain ? "Send new requests to this member again" : "Stop sending new requests to this member");
  }

  function resourceName(ref) {
    const find = (list) => list.find((x) => x.id === ref.id);
    if (ref.kind === "member") {
      for (const list of state.members.values()) {
        const m = find(list);
        if (m) return m.name || endpoint(m);
      }
    }
    const lists = { load_balancer: state.lbs, listener: state.listeners, pool: state.pools };
    const found = lists[ref.kind] && find(lists[ref.kind]);
    return (found && found.name) || shortId(ref.id);
  }

  function renderWorkRequests() {
    const wrs = state.workRequests;
    byId("no-wrs").hidden = wrs.length > 0;
    syncList(byId("wrs"), wrs, (w) => w.id, createWorkRequest, updateWorkRequest);
  }

  function createWorkRequest() {
    const r = {
      status: h("td", { class: "c-wr-status" }),
      op: h("div", { class: "wr-op" }),
      what: h("div", { class: "wr-what" }),
      error: h("div", { class: "wr-error" }),
      age: h("td", { class: "num muted" }),
    };
    const row = h("tr", {}, r.status, h("td", {}, r.op, r.what, r.error), r.age);
    row._r = r;
    return row;
  }

  function updateWorkRequest(row, w) {
    const r = row._r;
    row.dataset.wrId = w.id;
    setBadges(r.status, [badge(w.status)]);
    setText(r.op, w.operation);
    setTitle(r.op, `work request ${w.id} · revision ${w.revision}`);
    const refs = w.resources || [];
    const shown = refs.slice(0, 2).map((x) => `${words(x.kind)} ${resourceName(x)}`);
    if (refs.length > 2) shown.push(`+${refs.length - 2} more`);
    setText(r.what, shown.join(", "));
    const err = w.error ? `${w.error.code}: ${w.error.message}` : w.status === "FAILED" ? w.message : "";
    setText(r.error, err);
    r.error.hidden = !err;
    setText(r.age, fmtAge(w.accepted_at));
    setTitle(r.age, w.accepted_at);
  }

  function renderNodes() {
    const nodes = [...state.nodes].sort((a, b) => a.id.localeCompare(b.id));
    byId("nodes-panel").hidden = nodes.length === 0;
    const newest = nodes.reduce((a, n) => Math.max(a, n.applied_revision), 0);
    syncList(byId("nodes"), nodes, (n) => n.id, () => {
      const r = { id: h("td", { class: "mono" }), role: h("td", {}), rev: h("td", { class: "num" }), seen: h("td", { class: "num muted" }) };
      const row = h("tr", {}, r.id, r.role, r.rev, r.seen);
      row._r = r;
      return row;
    }, (row, n) => {
      const r = row._r;
      setText(r.id, n.id);
      setText(r.role, n.role);
      setText(r.rev, n.applied_revision);
      setClass(r.rev, `num ${n.applied_revision < newest ? "text-warn" : ""}`);
      setTitle(r.rev, n.applied_revision < newest ? `behind: the newest node serves ${newest}` : "");
      setText(r.seen, `${fmtAge(n.updated_at)} ago`);
    });
  }

  // ---- start ------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    byId("login-form").addEventListener("submit", signIn);
    byId("logout").addEventListener("click", () => signOut(""));
    // Keep "stale" honest while no poll answers.
    setInterval(() => token && renderStatus(), 1000);
    if (token) start();
    else showLogin("");
  });
})();
