// The status page: one EventSource (a full snapshot, then JSON merge patches), DOM built with
// textContent only (strings from the charger are never parsed as HTML), actions sent with the
// installer token in the Authorization header (never a cookie: CSRF-safe).
"use strict";
(function () {
  const TZ = "Asia/Shanghai";
  const I18N = window.EVSE_I18N;
  let lang = pickLang();
  let snap = {};
  const cards = new Map();

  function pickLang() {
    const saved = localStorage.getItem("evse-lang");
    if (saved === "zh" || saved === "en") return saved;
    const langs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
    for (const l of langs) {
      const s = String(l).toLowerCase();
      if (s.startsWith("zh")) return "zh";
      if (s.startsWith("en")) return "en";
    }
    return "en";
  }
  const t = (k) => (I18N[lang][k] !== undefined ? I18N[lang][k] : I18N.en[k] !== undefined ? I18N.en[k] : k);
  const sub = (group, k) => (I18N[lang][group] || {})[k] || (I18N.en[group] || {})[k] || k;

  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") el.className = v; else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v);
    }
    for (const kid of kids) if (kid !== null && kid !== undefined) el.append(kid instanceof Node ? kid : String(kid));
    return el;
  }
  const num = (v, d) => (typeof v === "number" && isFinite(v) ? v.toFixed(d) : "–");
  // 2026-12-04 21:44:24 in Beijing time, whatever the laptop's own zone and language.
  const CLOCK = new Intl.DateTimeFormat("en-CA", {
    timeZone: TZ, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const fmtTime = (epoch) => {
    if (typeof epoch !== "number") return "–";
    const p = Object.fromEntries(CLOCK.formatToParts(new Date(epoch * 1000)).map((x) => [x.type, x.value]));
    return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`;
  };
  const fmtDuration = (s) => {
    if (typeof s !== "number") return "–";
    const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), mm = Math.floor((s % 3600) / 60);
    return lang === "zh" ? `${d ? d + " 天 " : ""}${hh} 小时 ${mm} 分` : `${d ? d + " d " : ""}${hh} h ${mm} min`;
  };
  const onOff = (v, yes, no) => (v === null || v === undefined ? t("unknown") : v ? t(yes) : t(no));

  function applyPatch(target, patch) {
    if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return patch;
    if (target === null || typeof target !== "object" || Array.isArray(target)) target = {};
    for (const [k, v] of Object.entries(patch)) {
      if (v === null) delete target[k]; else target[k] = applyPatch(target[k], v);
    }
    return target;
  }

  // --- token and actions ------------------------------------------------------------------
  const token = () => sessionStorage.getItem("evse-token") || "";
  function showResult(ok, text) {
    const el = document.getElementById("result");
    el.className = ok ? "good" : "bad";
    el.textContent = text;
  }
  async function act(connector, action, body) {
    const headers = { "Content-Type": "application/json" };
    if (token()) headers.Authorization = "Bearer " + token();
    let reply;
    try {
      const r = await fetch(`/api/connectors/${connector}/${action}`, {
        method: "POST", headers, body: JSON.stringify(body || {}), credentials: "omit" });
      reply = await r.json();
    } catch (e) { reply = { ok: false, reason: "agent_unreachable" }; }
    const what = `${t("connector")} ${connector} ${sub("actions", action)}: `;
    if (reply.ok) showResult(true, what + t("accepted"));
    else showResult(false, what + t("refused") + " – " + sub("reasons", reply.reason) + (reply.detail ? ` (${reply.detail})` : ""));
  }

  // --- rendering ----------------------------------------------------------------------------
  function card(c) {
    let entry = cards.get(c.connector);
    if (!entry) {
      const id = c.connector;
      const live = h("div", { class: "live" });
      const input = h("input", { type: "number", min: "0", max: "80", step: "1", "data-testid": `limit-input-${id}`, "aria-label": "A" });
      const actions = h("div", { class: "actions" },
        h("label", {}, t("limitA"), " ", input),
        h("button", { type: "button", "data-testid": `limit-set-${id}`, onclick: () => act(id, "limit", { limitA: input.value === "" ? null : Number(input.value) }) }, t("setLimit")),
        h("button", { type: "button", "data-testid": `limit-clear-${id}`, onclick: () => act(id, "limit", { limitA: null }) }, t("clearLimit")),
        h("button", { type: "button", "data-testid": `reset-${id}`, onclick: () => act(id, "reset", {}) }, t("reset")));
      if (c.authorisation === "remote") {
        actions.append(h("button", { type: "button", "data-testid": `start-${id}`, onclick: () => act(id, "start", {}) }, t("startCharge")),
          h("button", { type: "button", "data-testid": `stop-${id}`, onclick: () => act(id, "stop", {}) }, t("stopCharge")));
      }
      const el = h("section", { class: "card", "data-testid": `connector-${id}` }, live, actions);
      document.getElementById("connectors").append(el);
      entry = { el, live };
      cards.set(id, entry);
    }
    entry.live.replaceChildren(...liveParts(c));
  }

  function liveParts(c) {
    const id = c.connector;
    const lim = c.limit || {};
    const sourceText = t(lim.source || "none") + (lim.source === "aggregator" ? ` (${lim.layer}${lim.ref ? " " + lim.ref : ""})`
      : lim.detail === "config" ? " (local_limit_a)" : "");
    const head = h("h2", {}, `${t("connector")} ${id}`,
      h("span", { class: `state ${c.state}`, "data-testid": `state-${id}`, "data-state": c.state }, sub("states", c.state)));
    const m = c.meter;
    const cont = c.contactor || {}, lock = c.lock || {};
    const rows = [
      [t("evLevel"), h("span", { "data-testid": `ev-${id}`, "data-level": c.evLevel || "" }, c.evLevel ? sub("levels", c.evLevel) : "–")],
      [t("cp"), typeof c.cpMv === "number" ? `${num(c.cpMv / 1000, 2)} V` : "–"],
      [t("offer"), h("span", { "data-testid": `offer-${id}` }, c.offeredCurrentA ? `${num(c.offeredCurrentA, 1)} A` : t("noOffer")),
        typeof c.dutyPermille === "number" ? `  (${t("duty")} ${num(c.dutyPermille / 10, 1)} %)` : ""],
      [t("setBy"), h("span", { "data-testid": `limit-${id}`, "data-source": lim.source || "" }, `${sourceText}: ${num(lim.a, 1)} A`)],
      [t("contactor"), h("span", { "data-testid": `contactor-${id}` },
        `${t("commanded")} ${onOff(cont.commanded, "closed", "open")} · ${t("feedback")} ${onOff(cont.feedback, "closed", "open")} · ${t("closes")} ${cont.closes ?? 0}`)],
    ];
    if (c.connection === "socket") {
      rows.push([t("lockLabel"), `${t("commanded")} ${onOff(lock.commanded, "locked", "released")} · ${t("feedback")} ${onOff(lock.feedback, "locked", "released")}`]);
    }
    rows.push([t("meter"), m ? h("span", { "data-testid": `meter-${id}` },
      `${(m.voltageV || []).map((v) => num(v, 1)).join(" / ")} V · ${(m.currentA || []).map((a) => num(a, 2)).join(" / ")} A · ${num(m.powerW / 1000, 2)} kW · ${num(m.energyImportWh / 1000, 2)} kWh`) : t("noMeter")]);
    if (typeof c.temperatureC === "number") rows.push([t("temp"), `${num(c.temperatureC, 1)} °C`]);
    rows.push([t("loopLag"), `${num(c.loopLagMs, 1)} ms`]);
    const dl = h("dl", {});
    for (const [k, ...v] of rows) dl.append(h("dt", {}, k), h("dd", {}, ...v));
    const faults = c.faults || [];
    const fl = h("div", { class: "faults-box", "data-testid": `faults-${id}`, "data-count": String(faults.length) });
    if (faults.length) {
      const ul = h("ul", {});
      for (const f of faults) {
        const name = lang === "zh" ? sub("faultNames", f.code) : f.description || f.code;
        const fix = lang === "zh" ? sub("faultFix", f.code) : f.clearing || "";
        ul.append(h("li", {}, h("b", {}, f.code), " ", name, f.safety ? ` [${t("safety")}]` : "",
          h("span", { class: "hint" }, `${t("fix")}: ${fix}`)));
      }
      fl.className = "faults";
      fl.append(h("b", {}, t("faults")), ul);
    } else {
      fl.append(`${t("faults")}: ${t("noFaults")}`);
    }
    const sessions = c.sessions || [];
    const st = h("table", { "data-testid": `sessions-${id}` },
      h("tr", {}, h("th", {}, t("plugIn")), h("th", {}, t("plugOut")), h("th", {}, t("energy")), h("th", {}, t("stop"))));
    for (const s of sessions) {
      st.append(h("tr", {}, h("td", {}, fmtTime(s.plugInAt)), h("td", {}, fmtTime(s.plugOutAt)),
        h("td", {}, `${num(s.energyWh / 1000, 2)} kWh`), h("td", {}, s.stopReason || "–")));
    }
    const sessBox = h("div", {}, h("h3", {}, t("sessions")), sessions.length ? st : t("noSessions"));
    return [head, dl, fl, sessBox];
  }

  function render() {
    const agent = snap.agent || {}, st = snap.status || {}, webInfo = snap.web || {};
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    document.title = `${st.deviceId || ""} – ${t("title")}`;
    document.getElementById("lang").textContent = lang === "zh" ? "English" : "中文";
    document.getElementById("device").textContent = st.deviceId || "";
    const a = document.getElementById("agent");
    a.className = agent.reachable ? (st.ready ? "up" : "") : "down";
    a.textContent = agent.reachable ? (st.ready ? t("agentUp") : t("notReady")) + ` · ${t("uptime")} ${fmtDuration(st.uptimeS)}`
      : `${t("agentDown")}${agent.error ? " (" + agent.error + ")" : ""}`;
    document.getElementById("clock").textContent = `${t("beijing")} ${fmtTime(typeof st.now === "number" ? st.now : Date.now() / 1000)}`;
    document.getElementById("auth-note").textContent = webInfo.actionsEnabled === false ? t("actionsOff") : token() ? t("actionsOn") : t("actionsLocked");
    document.getElementById("connectors").classList.toggle("stale", !agent.reachable);
    for (const c of st.connectors || []) card(c);
    renderLink(st.link);
    renderBuses(st);
  }

  function renderLink(link) {
    const el = document.getElementById("link");
    if (!link) { el.replaceChildren(t("noLink")); return; }
    const lc = link.lastCommand;
    const dl = h("dl", {},
      h("dt", {}, t("link")), h("dd", { "data-testid": "link-state", class: link.connected ? "up" : "down" },
        `${link.connected ? t("connected") : t("disconnected")} ${t("since")} ${fmtTime(link.since)} (MQTT ${link.protocol})`),
      h("dt", {}, t("reconnects")), h("dd", {}, String(link.connects)),
      h("dt", {}, t("backlog")), h("dd", { "data-testid": "backlog" }, `${link.backlog ?? "–"} ${t("messages")}`),
      h("dt", {}, t("lastCommand")), h("dd", { "data-testid": "last-command" },
        lc ? `${lc.type || "?"} ${lc.status}${lc.reason && String(lc.reason).toLowerCase() !== "ok" ? " (" + lc.reason + ")" : ""} · ${fmtTime(lc.at)}` : "–"));
    if (link.failsafe) dl.append(h("dt", {}, t("failsafe")), h("dd", { class: "down" }, t("failsafeActive")));
    if (link.lastError && !link.connected) dl.append(h("dt", {}, "error"), h("dd", {}, link.lastError));
    el.replaceChildren(dl);
  }

  function renderBuses(st) {
    const rb = st.reactionBound || {};
    const bounds = Object.entries(rb.boundMs || {}).map(([k, v]) => `${t("connector")} ${k}: ${num(v, 1)} ms`).join(", ");
    document.getElementById("bound").textContent = `${t("bound")}: ${bounds || "–"} (${t("budget")} ${num(rb.budgetMs, 0)} ms)${rb.overBudgetAccepted ? " – " + t("overBudget") : ""}`;
    const keys = ["transactions", "ok", "timeouts", "garbled", "io_errors", "exceptions", "retries"];
    const table = document.getElementById("buses");
    const rows = [h("tr", {}, h("th", {}, t("bus")), ...keys.map((k) => h("th", {}, t(k))), h("th", {}, t("busy")))];
    for (const [name, b] of Object.entries(st.buses || {})) {
      rows.push(h("tr", { "data-testid": `bus-${name}` }, h("td", {}, name), ...keys.map((k) => h("td", {}, String(b[k] ?? "–"))),
        h("td", {}, `${num(b.busy_s, 1)} s`)));
    }
    table.replaceChildren(...rows);
  }

  // --- wiring ---------------------------------------------------------------------------------
  function connect() {
    const es = new EventSource("/api/events");
    es.addEventListener("full", (e) => { snap = JSON.parse(e.data); render(); });
    es.addEventListener("patch", (e) => { snap = applyPatch(snap, JSON.parse(e.data)); render(); });
    es.onerror = () => { document.getElementById("agent").className = "down"; };
  }
  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("token-save").addEventListener("click", () => {
      const v = document.getElementById("token").value.trim();
      if (v) sessionStorage.setItem("evse-token", v);
      document.getElementById("token").value = "";
      render();
    });
    document.getElementById("token-clear").addEventListener("click", () => { sessionStorage.removeItem("evse-token"); render(); });
    document.getElementById("lang").addEventListener("click", () => {
      lang = lang === "zh" ? "en" : "zh";
      localStorage.setItem("evse-lang", lang);
      cards.forEach((c) => c.el.remove());
      cards.clear();
      render();
    });
    render();
    connect();
  });
})();
