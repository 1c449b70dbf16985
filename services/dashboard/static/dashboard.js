// The page's wiring: the API key, the calls through the same-origin pass-through, and which panel
// shows which answer. Each panel shows its own "not available" when its endpoint fails.
"use strict";

(() => {
  const KEY = "arrears.dashboard.key";
  const WORKLIST_SIZE = 10;
  const REFRESH_MS = 60_000;
  const SERVICES = ["ledger", "dunning", "scoring", "notifier"];
  const $ = (selector) => document.querySelector(selector);
  let last = null;
  let pinned = false; // a day the reader chose; otherwise every refresh follows the business date

  // A key in the fragment (#key=…) never reaches a server; it is moved to this tab's storage and
  // taken off the address bar. The fragment may also name the day to open on (as_of=YYYY-MM-DD).
  function takeFragment() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const key = fragment.get("key");
    if (key) sessionStorage.setItem(KEY, key);
    const day = fragment.get("as_of");
    if (day && /^\d{4}-\d{2}-\d{2}$/.test(day)) {
      $("#as-of").value = day;
      pinned = true;
    }
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  }

  function askForKey() {
    const dialog = $("#key-dialog");
    if (!dialog.open) dialog.showModal();
    $("#key-input").focus();
  }

  async function call(service, path, params = {}) {
    const url = new URL(`/api/${service}${path}`, location.origin);
    for (const [name, value] of Object.entries(params)) {
      if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
    }
    try {
      const response = await fetch(url, {
        headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY)}`, Accept: "application/json" },
      });
      let body = null;
      try { body = await response.json(); } catch { body = null; }
      return { ok: response.ok, status: response.status, body };
    } catch {
      return { ok: false, status: 0, body: null };
    }
  }

  function show(id, content) {
    const body = document.querySelector(`#${id} .body`);
    body.replaceChildren(...content);
    body.parentElement.classList.remove("loading");
  }

  function panel(id, result, render) {
    try {
      show(id, result.ok && result.body ? render(result.body) : [Panels.unavailable(result)]);
    } catch (error) {
      console.error(id, error);
      show(id, [Panels.unavailable({ status: result.status, body: { detail: "unexpected answer" } })]);
    }
  }

  function trendWidth() {
    return Math.max(320, Math.floor($("#trend .body").clientWidth));
  }

  function render(results) {
    const { aging, receivables, agingTrend, collections, agencies, worklist, ready } = results;
    panel("aging", aging, Panels.aging);
    panel("trend", agingTrend, (body) => Panels.trend(body, trendWidth()));
    const sources = {
      receivables: receivables.ok ? receivables.body : null,
      agingTrend: agingTrend.ok ? agingTrend.body : null,
      collections: collections.ok ? collections.body : null,
    };
    const anyKpi = Object.values(sources).some(Boolean);
    panel("kpis", anyKpi ? { ok: true, body: sources } : receivables, Panels.tiles);
    panel("funnel", collections, Panels.funnel);
    panel("agencies", agencies, Panels.agencies);
    panel("worklist", worklist, Panels.worklist);
    show("lag", Panels.lag(ready));
    const tenant = [aging, receivables, collections].find((r) => r.ok && r.body && r.body.tenant_id);
    $("#tenant").textContent = tenant ? `Tenant ${tenant.body.tenant_id}` : "";
    const day = aging.ok ? aging.body.as_of : $("#as-of").value;
    if (day) $("#as-of").value = day;
    for (const small of document.querySelectorAll(".as-of")) small.textContent = day ? `as of ${Format.date(day)}` : "";
  }

  async function load() {
    if (!sessionStorage.getItem(KEY)) { askForKey(); return; }
    for (const section of document.querySelectorAll(".panel")) section.classList.add("loading");
    const chosen = pinned ? $("#as-of").value || null : null;
    const months = $("#months").value;
    const aging = await call("ledger", "/v1/aging", { as_of: chosen });
    if (aging.status === 401) { sessionStorage.removeItem(KEY); askForKey(); }
    // Every panel reads the same day: the one chosen, or the business date the aging answered for.
    const as_of = chosen || (aging.ok ? aging.body.as_of : null);
    const [receivables, agingTrend, collections, agencies, worklist, ...ready] = await Promise.all([
      call("ledger", "/v1/kpis/receivables", { as_of, months }),
      call("ledger", "/v1/kpis/aging-trend", { as_of, months }),
      call("dunning", "/v1/kpis/collections", { as_of, months }),
      call("dunning", "/v1/kpis/agencies", { as_of }),
      call("scoring", "/v1/worklist", { limit: WORKLIST_SIZE }),
      ...SERVICES.map((service) => call(service, "/readyz")),
    ]);
    last = {
      aging, receivables, agingTrend, collections, agencies, worklist,
      ready: Object.fromEntries(SERVICES.map((service, i) => [service, ready[i]])),
    };
    render(last);
    document.body.dataset.loaded = String(Date.now());
  }

  function start() {
    takeFragment();
    $("#key-form").addEventListener("submit", () => {
      sessionStorage.setItem(KEY, $("#key-input").value.trim());
      $("#key-input").value = "";
      load();
    });
    $("#as-of").addEventListener("change", () => { pinned = Boolean($("#as-of").value); });
    $("#controls").addEventListener("submit", (event) => { event.preventDefault(); load(); });
    $("#forget-key").addEventListener("click", () => { sessionStorage.removeItem(KEY); askForKey(); });
    let resizing = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(() => { if (last) panel("trend", last.agingTrend, (b) => Panels.trend(b, trendWidth())); }, 150);
    });
    setInterval(() => { if (!document.hidden && sessionStorage.getItem(KEY)) load(); }, REFRESH_MS);
    load();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
