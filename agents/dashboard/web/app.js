// safetour operations-centre dashboard. Plain JS, no build step, no CDN: Leaflet is vendored.
// Everything from the server is inserted with textContent (alert text can come from the public).
"use strict";
(function () {
  const RADIUS = { normal: 4, elevated: 7, high: 10, critical: 14 };
  const COLOURS = { normal: "#2e7d32", elevated: "#f9a825", high: "#ef6c00", critical: "#c62828" };
  const GREY = "#9e9e9e";  // zones while the screen may be out of date
  const T = {
    th: { title: "ศูนย์ปฏิบัติการ ท่องเที่ยวปลอดภัย พิษณุโลก", connecting: "กำลังเชื่อมต่อ…", live: "ออนไลน์",
      reconnecting: "กำลังเชื่อมต่อใหม่…", operator: "ผู้ปฏิบัติงาน", logout: "ออกจากระบบ", zones: "พื้นที่",
      alerts: "การแจ้งเตือน", ack: "รับทราบ", note: "บันทึก (ไม่บังคับ)", ackedBy: "รับทราบโดย",
      footer: "ระดับความหนาแน่น: Fruin / UK Green Guide · พื้นที่และขอบเขตเป็นค่าประมาณ · แผนที่แบบย่อ (ไม่มีแผนที่ฐาน)",
      normal: "ปกติ", elevated: "เฝ้าระวัง", high: "สูง", critical: "วิกฤต", raised: "แจ้งเตือน",
      escalated: "ยกระดับ", deescalated: "ลดระดับ", resolved: "คลี่คลาย", unit: "คน/ตร.ม.", other: "English",
      ackFailed: "บันทึกการรับทราบไม่สำเร็จ" },
    en: { title: "Phitsanulok Safe Tourism operations centre", connecting: "connecting…", live: "live",
      reconnecting: "reconnecting…", operator: "Operator", logout: "Sign out", zones: "Zones",
      alerts: "Alerts", ack: "Acknowledge", note: "note (optional)", ackedBy: "Acknowledged by",
      footer: "Density levels: Fruin / UK Green Guide · areas and outlines are estimates · schematic map (no basemap tiles)",
      normal: "normal", elevated: "elevated", high: "high", critical: "critical", raised: "raised",
      escalated: "escalated", deescalated: "de-escalated", resolved: "resolved", unit: "p/m²", other: "ไทย",
      ackFailed: "acknowledgement failed" },
  };
  let lang = localStorage.getItem("safetour.lang") || "th";
  const zones = new Map();   // zone_id -> {info, layer, row, points}
  const alerts = new Map();  // idempotency key -> alert
  const acks = new Map();    // alert_id -> ack
  const map = L.map("map", { zoomSnap: 0.25, attributionControl: false });
  let fitted = false;
  // Freshness. The server says in `health` events (every few seconds) how long the pipeline
  // has been silent; the page adds how long it has not heard the server, so a dead server,
  // a dead network or a dead pipeline all show the same banner.
  const health = { staleAfterS: 30, silentS: 0, serverStale: false, heardAt: Date.now() };
  let stale = false;

  const el = (tag, attrs, text) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const t = (k) => (T[lang][k] !== undefined ? T[lang][k] : k);
  const bangkok = (iso) => new Date(iso).toLocaleString(lang === "th" ? "th-TH" : "en-GB",
    { timeZone: "Asia/Bangkok", hour12: false, year: "numeric", month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const keyOf = (a) => `${a.alert_id}:${a.status}:${a.ts}`;

  map.createPane("basemap").style.zIndex = 350;  // under the zones (overlay pane: 400)
  fetch("/static/basemap.json").then((r) => r.json()).then((b) => {
    L.polyline(b.river, { pane: "basemap", color: "#90caf9", weight: 14, opacity: 0.8, interactive: false }).addTo(map);
  }).catch(() => {});

  function applyLang() {
    document.documentElement.lang = lang;
    document.querySelectorAll("[data-i18n]").forEach((n) => { n.textContent = t(n.dataset.i18n); });
    document.getElementById("lang").textContent = t("other");
    zones.forEach(renderZone);
    renderFeed();
  }
  document.getElementById("lang").addEventListener("click", () => {
    lang = lang === "th" ? "en" : "th";
    localStorage.setItem("safetour.lang", lang);
    applyLang();
  });
  setInterval(() => {
    document.getElementById("clock").textContent = bangkok(new Date().toISOString()) + " ICT";
  }, 1000);

  function sparkline(points) {
    const vals = points.map((p) => p[1]).filter((v) => v !== null);
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 120 24");
    if (vals.length < 2) return svg;
    const max = Math.max(1, ...vals);
    const step = 120 / (points.length - 1);
    const pts = points.map((p, i) => `${(i * step).toFixed(1)},${(23 - ((p[1] || 0) / max) * 22).toFixed(1)}`);
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", pts.join(" "));
    svg.appendChild(line);
    return svg;
  }

  function renderZone(z) {
    const level = z.info.level;
    const colour = stale ? GREY : COLOURS[level];
    const last = z.points.length ? z.points[z.points.length - 1][1] : null;
    z.row.dataset.level = level;
    z.row.replaceChildren(el("span", { class: `dot lvl-${level}`, title: t(level) }),
      el("span", { class: "name" }, z.info.name[lang]), sparkline(z.points),
      el("span", { class: "dens" }, last === null ? "–" : `${last.toFixed(2)} ${t("unit")}`));
    if (z.layer) {
      z.layer.setStyle({ color: colour, fillColor: colour, fillOpacity: level === "normal" ? 0.25 : 0.55 });
      const path = z.layer.getElement && z.layer.getElement();
      if (path) { path.dataset.level = level; path.dataset.zone = z.info.zone_id; path.dataset.stale = String(stale); }
      z.marker.setStyle({ color: colour, fillColor: colour, fillOpacity: 0.9 });
      z.marker.setRadius(RADIUS[level]);
      z.layer.setTooltipContent(`${z.info.name[lang]} · ${t(level)}${last === null ? "" : ` · ${last.toFixed(2)} ${t("unit")}`}`);
    }
  }

  function onState(s) {
    const list = document.getElementById("zones");
    const bounds = [];
    for (const info of s.zones) {
      let z = zones.get(info.zone_id);
      if (!z) {
        z = { info, layer: null, row: el("li", { "data-zone": info.zone_id }), points: [] };
        list.appendChild(z.row);
        if (info.polygon) {
          z.layer = L.polygon(info.polygon, { weight: 2 }).addTo(map);
          z.layer.bindTooltip("", { permanent: false, direction: "top" });
          z.layer.on("click", () => z.row.scrollIntoView({ behavior: "smooth" }));
          // A small zone (a vihara) vanishes at town scale: a dot sized by level marks it.
          z.marker = L.circleMarker(z.layer.getBounds().getCenter(), { weight: 2, interactive: false }).addTo(map);
          bounds.push(...info.polygon);
        }
        zones.set(info.zone_id, z);
      }
      z.info = info;
      z.points = info.density.slice();
      renderZone(z);
    }
    if (!fitted && bounds.length) { map.fitBounds(bounds, { padding: [30, 30] }); fitted = true; }
  }

  function onAlert(a) {
    alerts.set(keyOf(a), a);
    const z = zones.get(a.zone_id);
    if (z) { z.info.level = a.status === "resolved" ? "normal" : a.level; renderZone(z); }
    renderFeed();
  }

  function onDensity(d) {
    const z = zones.get(d.zone_id);
    if (!z) return;
    z.points.push(d.point);
    if (z.points.length > 60) z.points.shift();
    renderZone(z);
  }

  async function acknowledge(alertId, input, button) {
    button.disabled = true;
    try {
      const r = await fetch("/api/ack", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ alert_id: alertId, note: input.value }) });
      if (r.status === 401) { location.assign("/login"); return; }  // the session ended
      if (!r.ok) throw new Error(String(r.status));
      const ack = await r.json();
      if (!acks.has(ack.alert_id)) acks.set(ack.alert_id, ack);
      renderFeed();
    } catch (e) {
      button.disabled = false;
      button.title = `${t("ackFailed")}: ${e.message}`;
    }
  }

  function renderFeed() {
    const feed = document.getElementById("feed");
    const items = [...alerts.values()].sort((a, b) => (a.ts < b.ts ? 1 : a.ts > b.ts ? -1 : 0)).slice(0, 200);
    // The newest alert of an episode carries the acknowledge button.
    const newest = new Set();
    const seen = new Set();
    for (const a of items) { if (!seen.has(a.alert_id)) { seen.add(a.alert_id); newest.add(keyOf(a)); } }
    feed.replaceChildren(...items.map((a) => {
      const z = zones.get(a.zone_id);
      const li = el("li", { class: `level-${a.level}`, "data-alert": a.alert_id, "data-status": a.status, "data-level": a.level });
      li.appendChild(el("div", { class: "head" })).append(
        el("span", {}, `${z ? z.info.name[lang] : a.zone_id} · ${t(a.level)} (${t(a.status)})`),
        el("span", {}, bangkok(a.ts)));
      li.appendChild(el("div", { class: "msg" }, (a.message || {})[lang] || ""));
      const ack = acks.get(a.alert_id);
      if (ack) {
        li.appendChild(el("div", { class: "acked" },
          `✓ ${t("ackedBy")} ${ack.operator} · ${bangkok(ack.ts)}${ack.note ? ` · ${ack.note}` : ""}`));
      } else if (newest.has(keyOf(a)) && a.level !== "normal") {
        const row = li.appendChild(el("div", { class: "ack" }));
        const input = el("input", { type: "text", maxlength: "500", placeholder: t("note"), "aria-label": t("note") });
        const button = el("button", { type: "button", class: "ack-button" }, t("ack"));
        button.addEventListener("click", () => acknowledge(a.alert_id, input, button));
        row.append(input, button);
      }
      return li;
    }));
  }

  function onHealth(h) {
    health.staleAfterS = h.stale_after_s;
    health.silentS = h.silent_s;
    health.serverStale = h.stale;
    health.heardAt = Date.now();
    renderHealth();
  }

  function renderHealth() {
    const unheardS = (Date.now() - health.heardAt) / 1000;
    const now = health.serverStale || unheardS > health.staleAfterS;
    const banner = document.getElementById("stale");
    if (now) {
      const n = String(Math.round(health.silentS + unheardS));
      banner.querySelectorAll(".silent-n").forEach((b) => { b.textContent = n; });
    }
    banner.hidden = !now;
    if (now !== stale) {
      stale = now;
      document.body.classList.toggle("stale", stale);
      zones.forEach(renderZone);
    }
  }
  setInterval(renderHealth, 1000);

  function connect() {
    const conn = document.getElementById("conn");
    // EventSource resends Last-Event-ID on its own reconnects; the server replays what we missed.
    const es = new EventSource("/events");
    es.addEventListener("open", () => { conn.className = "conn on"; conn.dataset.i18n = "live"; conn.textContent = t("live"); });
    es.addEventListener("error", () => {
      conn.className = "conn off"; conn.dataset.i18n = "reconnecting"; conn.textContent = t("reconnecting");
      if (es.readyState !== EventSource.CLOSED) return;  // the browser reconnects by itself
      // Refused (not a network error): signed out or expired, to the sign-in page; else retry.
      fetch("/api/me").then((r) => {
        if (r.status === 401) location.assign("/login");
        else setTimeout(connect, 3000);
      }).catch(() => setTimeout(connect, 3000));
    });
    es.addEventListener("state", (e) => {
      const s = JSON.parse(e.data);
      if (s.stale_after_s) health.staleAfterS = s.stale_after_s;
      onState(s);
    });
    es.addEventListener("health", (e) => onHealth(JSON.parse(e.data)));
    es.addEventListener("alert", (e) => onAlert(JSON.parse(e.data)));
    es.addEventListener("ack", (e) => { const a = JSON.parse(e.data); if (!acks.has(a.alert_id)) acks.set(a.alert_id, a); renderFeed(); });
    es.addEventListener("density", (e) => onDensity(JSON.parse(e.data)));
  }

  applyLang();
  connect();
})();
