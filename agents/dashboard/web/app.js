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
      ackFailed: "บันทึกการรับทราบไม่สำเร็จ", updated: "ปรับข้อมูล", started: "เริ่ม", since: "ผ่านมา",
      lasted: "นาน", notAcked: "ยังไม่มีผู้รับทราบ", history: "ลำดับระดับ", peak: "สูงสุด",
      startShift: "เริ่มเวร", startShiftHint: "คลิกเพื่อเปิดเสียงเตือนระดับวิกฤต (เบราว์เซอร์ปิดเสียงไว้จนกว่าจะคลิก)",
      mute: "ปิดเสียง", unmute: "เปิดเสียง", soundOn: "เสียงเตือนวิกฤต: เปิด", soundOff: "เสียงเตือนวิกฤต: ปิด",
      thresholds: "เกณฑ์", blind: "ไม่มีข้อมูล", h: "ชม.", min: "นาที", s: "วินาที",
      confidence: "ความเชื่อมั่น", lowConfidence: "ความเชื่อมั่นต่ำ: ค่าความหนาแน่นอาจคลาดเคลื่อน",
      until: "ถึง", by: "โดย", heat: "แผนที่ความหนาแน่นรายช่อง (แถวล่าง = ทิศใต้)", cell: "ช่อง",
      densest: "หนาแน่นที่สุด" },
    en: { title: "Phitsanulok Safe Tourism operations centre", connecting: "connecting…", live: "live",
      reconnecting: "reconnecting…", operator: "Operator", logout: "Sign out", zones: "Zones",
      alerts: "Alerts", ack: "Acknowledge", note: "note (optional)", ackedBy: "Acknowledged by",
      footer: "Density levels: Fruin / UK Green Guide · areas and outlines are estimates · schematic map (no basemap tiles)",
      normal: "normal", elevated: "elevated", high: "high", critical: "critical", raised: "raised",
      escalated: "escalated", deescalated: "de-escalated", resolved: "resolved", unit: "p/m²", other: "ไทย",
      ackFailed: "acknowledgement failed", updated: "updated", started: "started", since: "for",
      lasted: "lasted", notAcked: "not acknowledged", history: "level history", peak: "peak",
      startShift: "Start shift", startShiftHint: "click to turn on the critical alarm sound (the browser keeps it off until a click)",
      mute: "Mute", unmute: "Unmute", soundOn: "critical alarm sound: on", soundOff: "critical alarm sound: off",
      thresholds: "thresholds", blind: "no data", h: "h", min: "min", s: "s",
      confidence: "confidence", lowConfidence: "low confidence: the density may be off",
      until: "until", by: "by", heat: "density per grid cell (bottom row = south)", cell: "cell",
      densest: "densest" },
  };
  let lang = localStorage.getItem("safetour.lang") || "th";
  const zones = new Map();     // zone_id -> {info, layer, row, points, alertThresholds}
  const episodes = new Map();  // alert_id -> {id, zone, records: Map key -> alert, steps, card}
  const acks = new Map();      // alert_id -> ack
  const LEVELS = ["normal", "elevated", "high", "critical"];
  const EPISODES_MAX = 200;    // cards kept on the page (the oldest resolved ones go first)
  const forgotten = new Set(); // alert_ids of cards dropped: a replay does not bring them back
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
  const bangkokTime = (iso) => new Date(iso).toLocaleTimeString("en-GB",
    { timeZone: "Asia/Bangkok", hour12: false, hour: "2-digit", minute: "2-digit", second: "2-digit" });
  // A zone an operator shelved (agents/shelves.py): shown until its `until` by this page's
  // own clock (a timer redraws the zone then), or until the server says it ended.
  const SHELVED = "พักการแจ้งเตือน / Shelved";
  const shelfOf = (z) => (z.info.shelf && Date.parse(z.info.shelf.until) > Date.now() ? z.info.shelf : null);
  const shelfText = (sh) => `${t("until")} ${bangkokTime(sh.until)} ICT · ${t("by")} ${sh.by}${sh.reason ? ` · ${sh.reason}` : ""}`;
  const keyOf = (a) => `${a.alert_id}:${a.status}:${a.ts}:${a.seq || ""}`;
  const duration = (ms) => {
    const s = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (h) return `${h} ${t("h")} ${m} ${t("min")}`;
    if (m) return `${m} ${t("min")} ${r} ${t("s")}`;
    return `${r} ${t("s")}`;
  };

  map.createPane("basemap").style.zIndex = 350;  // under the zones (overlay pane: 400)
  // A grid zone's cells (the heat map) lie over its outline (overlay pane) and under the
  // outlines of the other zones (a vihara inside the grounds stays in sight) and the dots.
  map.createPane("heat").style.zIndex = 450;
  map.createPane("zones").style.zIndex = 455;
  map.createPane("dots").style.zIndex = 460;
  fetch("/static/basemap.json").then((r) => r.json()).then((b) => {
    L.polyline(b.river, { pane: "basemap", color: "#90caf9", weight: 14, opacity: 0.8, interactive: false }).addTo(map);
  }).catch(() => {});

  function applyLang() {
    document.documentElement.lang = lang;
    document.querySelectorAll("[data-i18n]").forEach((n) => { n.textContent = t(n.dataset.i18n); });
    document.getElementById("lang").textContent = t("other");
    zones.forEach(renderZone);
    renderFeed();
    sound.show();
  }
  document.getElementById("lang").addEventListener("click", () => {
    lang = lang === "th" ? "en" : "th";
    localStorage.setItem("safetour.lang", lang);
    applyLang();
  });
  setInterval(() => {
    document.getElementById("clock").textContent = bangkok(new Date().toISOString()) + " ICT";
    document.querySelectorAll("#feed .elapsed[data-since]").forEach((n) => {
      n.textContent = duration(Date.now() - Date.parse(n.dataset.since));
    });
  }, 1000);

  // The last 5 minutes of density with the zone's level thresholds as lines: SVG built with
  // DOM calls and styled by app.css (no inline style: the CSP forbids it). A gap where the
  // zone was blind (density null), never a fall to zero.
  const SVG = "http://www.w3.org/2000/svg";
  const W = 120, H = 28;
  function svgEl(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    return e;
  }
  function sparkline(points, th) {
    const svg = svgEl("svg", { class: "spark", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
    const vals = points.map((p) => p[1]).filter((v) => v !== null && v !== undefined);
    const top = Math.max(1, ...vals, th ? th.critical : 0) * 1.1;
    const y = (v) => (H - 1 - (v / top) * (H - 2)).toFixed(1);
    if (th) {
      const title = svgEl("title", {});
      title.textContent = `${t("thresholds")}: ${["elevated", "high", "critical"].map((l) => `${t(l)} ${th[l]}`).join(" · ")} ${t("unit")}`;
      svg.appendChild(title);
      for (const l of ["elevated", "high", "critical"]) {
        svg.appendChild(svgEl("line", { class: `th th-${l}`, "data-level": l, "data-value": th[l], x1: 0, x2: W, y1: y(th[l]), y2: y(th[l]) }));
      }
    }
    if (points.length < 2) return svg;
    const step = W / (points.length - 1);
    let run = [];
    const flush = () => {
      if (run.length === 1) svg.appendChild(svgEl("circle", { class: "dens-pt", cx: run[0][0], cy: run[0][1], r: 1.2 }));
      else if (run.length > 1) svg.appendChild(svgEl("polyline", { class: "dens-line", points: run.map((p) => p.join(",")).join(" ") }));
      run = [];
    };
    points.forEach((p, i) => {
      if (p[1] === null || p[1] === undefined) flush();
      else run.push([(i * step).toFixed(1), y(p[1])]);
    });
    flush();
    return svg;
  }
  // Thresholds an alert carries (if the alarm ever sends them), else the registry's.
  const validTh = (th) => th && ["elevated", "high", "critical"].every((l) => typeof th[l] === "number")
    && th.elevated < th.high && th.high < th.critical;
  const thresholdsOf = (z) => (validTh(z.alertThresholds) ? z.alertThresholds : (validTh(z.info.thresholds) ? z.info.thresholds : null));

  // A cell's level by the zone's thresholds (streams/levels.py level_for); "none": no value.
  const levelOf = (d, th) => (typeof d !== "number" ? "none" : d >= th.critical ? "critical"
    : d >= th.high ? "high" : d >= th.elevated ? "elevated" : "normal");
  // The zone's newest cells, if they fit its grid and it has thresholds to colour them by.
  const cellsOf = (z) => {
    const g = z.info.grid, cells = z.info.cells;
    return g && Array.isArray(cells) && cells.length === g.rows * g.cols && thresholdsOf(z) ? cells : null;
  };

  // A zone with a grid: its newest cells as a small grid coloured by level (row 0, the
  // south, at the bottom); a cell not judged or without readings is blank.
  function heatmap(z) {
    const g = z.info.grid;
    const cells = cellsOf(z);
    const th = thresholdsOf(z);
    if (!cells) return null;
    const box = el("div", { class: "heat", role: "img", "aria-label": t("heat"), title: t("heat") });
    box.style.gridTemplateColumns = `repeat(${g.cols}, 10px)`;
    for (let r = g.rows - 1; r >= 0; r -= 1) {
      for (let c = 0; c < g.cols; c += 1) {
        const d = cells[r * g.cols + c];
        const lvl = levelOf(d, th);
        const cell = el("span", { class: `hc lvl-${lvl}`, "data-cell": `r${r}c${c}`, "data-level": lvl });
        cell.title = `${t("cell")} r${r}c${c}${typeof d === "number" ? ` · ${d.toFixed(2)} ${t("unit")}` : ""}`;
        box.append(cell);
      }
    }
    return box;
  }

  // The same cells over the zone on the map: one rectangle a cell with a value, at the
  // bounds the server computed (agents/dashboard/heatmap.py), in the "heat" pane; each says
  // its zone, cell, density and level in its <title> (colour is not the only cue), the
  // densest one above normal is outlined. None while the screen may be out of date, or when
  // the zone's newest record has no cells (or they went stale on the server). Returns how
  // many cells it shows.
  function renderHeat(z) {
    if (!z.heat) z.heat = new Map();  // cell id -> L.rectangle
    const cells = stale ? null : cellsOf(z);
    const th = thresholdsOf(z);
    const keep = new Set();
    if (cells) {
      let hot = null;
      for (const g of z.info.grid.cells || []) {
        const d = cells[g.i];
        if (typeof d === "number" && (hot === null || d > cells[hot.i])) hot = g;
      }
      for (const g of z.info.grid.cells || []) {
        const d = cells[g.i];
        if (typeof d !== "number") continue;
        const level = levelOf(d, th);
        const isHot = g === hot && level !== "normal";
        let rect = z.heat.get(g.cell);
        if (!rect) {
          rect = L.rectangle(g.bounds, { pane: "heat", className: "heat-cell" }).addTo(map);
          rect.on("click", () => z.row.scrollIntoView({ behavior: "smooth" }));
          z.heat.set(g.cell, rect);
        }
        keep.add(g.cell);
        rect.setStyle({ fillColor: COLOURS[level], fillOpacity: level === "normal" ? 0.45 : 0.85,
          color: isHot ? "#212121" : "#ffffff", weight: isHot ? 3 : 0.5, opacity: isHot ? 1 : 0.7 });
        if (isHot) rect.bringToFront();
        const path = rect.getElement && rect.getElement();
        if (!path) continue;  // drawn once the map has a view (onState renders again then)
        Object.assign(path.dataset, { zone: z.info.zone_id, cell: g.cell, level, density: String(d) });
        LEVELS.forEach((l) => path.classList.toggle(`lvl-${l}`, l === level));
        path.classList.toggle("hot", isHot);
        let title = path.querySelector("title");
        if (!title) title = path.appendChild(document.createElementNS(SVG, "title"));
        title.textContent = `${z.info.name[lang]} · ${t("cell")} ${g.cell} · ${d.toFixed(2)} ${t("unit")} · ${t(level)}${isHot ? ` · ${t("densest")}` : ""}`;
      }
    }
    for (const [id, rect] of z.heat) {
      if (!keep.has(id)) { rect.remove(); z.heat.delete(id); }
    }
    return keep.size;
  }

  function renderZone(z) {
    const level = z.info.level;
    const colour = stale ? GREY : COLOURS[level];
    const last = z.points.length ? z.points[z.points.length - 1][1] : null;
    const shelf = shelfOf(z);
    const conf = typeof z.info.confidence === "number" ? z.info.confidence : null;
    const low = conf !== null && conf < 0.5;  // the figure is dimmed: trust it less
    z.row.dataset.level = level;
    z.row.dataset.shelved = String(shelf !== null);
    const dens = el("span", { class: `dens${low ? " low-conf" : ""}` }, last === null ? "–" : `${last.toFixed(2)} ${t("unit")}`);
    if (low) dens.title = t("lowConfidence");
    const extra = el("div", { class: "zone-extra" });
    if (conf !== null) extra.append(el("span", { class: `conf${low ? " low" : ""}`, "data-confidence": String(conf) }, `${t("confidence")} ${conf.toFixed(2)}`));
    const heat = heatmap(z);
    if (heat) extra.append(heat);
    // With its cells on the map, the zone's own fill and dot are faint (its outline and the
    // dot's ring keep its level): the cells' colours are not muddied by the zone's.
    const heatOn = renderHeat(z) > 0;
    if (shelf) {
      const box = el("span", { class: "shelf", "data-until": shelf.until });
      box.append(el("span", { class: "shelf-badge" }, SHELVED), " ", el("span", { class: "shelf-info" }, shelfText(shelf)));
      extra.append(box);
    }
    z.row.replaceChildren(el("span", { class: `dot lvl-${level}`, title: t(level) }),
      el("span", { class: "name" }, z.info.name[lang]), sparkline(z.points, thresholdsOf(z)), dens,
      ...(extra.childNodes.length ? [extra] : []));
    clearTimeout(z.shelfTimer);
    if (shelf) z.shelfTimer = setTimeout(() => renderZone(z), Math.max(0, Date.parse(shelf.until) - Date.now()) + 50);
    if (z.layer) {
      z.layer.setStyle({ color: colour, fillColor: colour, fillOpacity: heatOn ? 0.05 : level === "normal" ? 0.25 : 0.55 });
      const path = z.layer.getElement && z.layer.getElement();
      if (path) { path.dataset.level = level; path.dataset.zone = z.info.zone_id; path.dataset.stale = String(stale); path.dataset.shelved = String(shelf !== null); }
      z.marker.setStyle({ color: colour, fillColor: colour, fillOpacity: heatOn ? 0 : 0.9, dashArray: shelf ? "3 3" : null });
      z.marker.setRadius(RADIUS[level]);
      z.layer.setTooltipContent(`${z.info.name[lang]} · ${t(level)}${last === null ? "" : ` · ${last.toFixed(2)} ${t("unit")}`}${conf === null ? "" : ` · ${t("confidence")} ${conf.toFixed(2)}`}${shelf ? ` · ${SHELVED} ${shelfText(shelf)}` : ""}`);
      // The marker carries a label while the zone is shelved.
      if (shelf) {
        if (!z.marker.getTooltip()) z.marker.bindTooltip("", { permanent: true, direction: "right", offset: [8, 0], className: "shelf-label" });
        z.marker.setTooltipContent(`${SHELVED} · ${t("until")} ${bangkokTime(shelf.until)}`);
        const tip = z.marker.getTooltip().getElement();
        if (tip) tip.dataset.zone = z.info.zone_id;
      } else if (z.marker.getTooltip()) {
        z.marker.unbindTooltip();
      }
    }
  }

  function onState(s) {
    const list = document.getElementById("zones");
    const bounds = [];
    for (const info of s.zones) {
      let z = zones.get(info.zone_id);
      if (!z) {
        z = { info, layer: null, row: el("li", { "data-zone": info.zone_id }), points: [], alertThresholds: null };
        list.appendChild(z.row);
        if (info.polygon) {
          z.layer = L.polygon(info.polygon, { weight: 2, pane: info.grid ? "overlayPane" : "zones" }).addTo(map);
          z.layer.bindTooltip("", { permanent: false, direction: "top" });
          z.layer.on("click", () => z.row.scrollIntoView({ behavior: "smooth" }));
          // A small zone (a vihara) vanishes at town scale: a dot sized by level marks it.
          z.marker = L.circleMarker(z.layer.getBounds().getCenter(), { pane: "dots", weight: 2, interactive: false }).addTo(map);
          bounds.push(...info.polygon);
        }
        zones.set(info.zone_id, z);
      }
      z.info = info;
      z.points = info.density.slice();
      renderZone(z);
    }
    if (!fitted && bounds.length) {
      map.fitBounds(bounds, { padding: [30, 30] });
      fitted = true;
      zones.forEach(renderZone);  // the outlines' SVG paths exist once the map has a view
    }
  }

  // -- episodes: one card per alert_id, updated in place by each of its records -------------
  const isOpen = (ep) => ep.steps.length > 0 && ep.steps[ep.steps.length - 1].status !== "resolved";
  const latest = (ep) => ep.steps[ep.steps.length - 1];
  const order = (a, b) => ((a.seq && b.seq && a.seq !== b.seq) ? a.seq - b.seq : (a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : 0));

  function onAlert(a) {
    if (forgotten.has(a.alert_id)) return;
    let ep = episodes.get(a.alert_id);
    if (!ep) {
      ep = { id: a.alert_id, zone: a.zone_id, records: new Map(), steps: [], card: null };
      episodes.set(a.alert_id, ep);
    }
    const key = keyOf(a);
    if (ep.records.has(key)) return;  // seen before (a replay after a reconnect)
    const wasCritical = isOpen(ep) && latest(ep).level === "critical";
    ep.records.set(key, a);
    ep.steps = [...ep.records.values()].sort(order);
    const newest = latest(ep) === a;
    const z = zones.get(a.zone_id);
    if (z && newest && a.exercise !== true) {  // a drill never changes a real zone's level
      z.info.level = a.status === "resolved" ? "normal" : a.level;
      if (validTh(a.thresholds)) z.alertThresholds = a.thresholds;
      renderZone(z);
    }
    // The alarm sounds when an episode turns critical (and on a critical re-alarm).
    if (newest && a.level === "critical" && a.status !== "resolved" && (!wasCritical || a.reminder)) sound.alarm();
    renderCard(ep);
    placeCards();
  }

  function onAck(ack) {
    if (acks.has(ack.alert_id)) return;  // the first acknowledgement stands
    acks.set(ack.alert_id, ack);
    const ep = episodes.get(ack.alert_id);
    if (ep) renderCard(ep);
  }

  function onDensity(d) {
    const z = zones.get(d.zone_id);
    if (!z) return;
    z.points.push(d.point);
    if (z.points.length > 60) z.points.shift();
    if ("confidence" in d) z.info.confidence = d.confidence;
    if ("cells" in d) z.info.cells = d.cells;  // a grid zone's: null takes the heat map away
    renderZone(z);
  }

  function onCells(d) {  // a grid zone's cells went stale on the server
    const z = zones.get(d.zone_id);
    if (!z) return;
    z.info.cells = d.cells;
    renderZone(z);
  }

  function onShelf(d) {
    const z = zones.get(d.zone_id);
    if (!z) return;
    z.info.shelf = d.shelf;
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
      onAck(ack);
    } catch (e) {
      button.disabled = false;
      button.title = `${t("ackFailed")}: ${e.message}`;
    }
  }

  function renderCard(ep) {
    const last = latest(ep);
    const open = isOpen(ep);
    const z = zones.get(ep.zone);
    const peak = ep.steps.reduce((p, a) => (LEVELS.indexOf(a.level) > LEVELS.indexOf(p) ? a.level : p), "normal");
    const drill = ep.steps.some((a) => a.exercise === true);
    if (!ep.card) {
      ep.card = { li: el("li", {}), input: null, button: null };
    }
    const li = ep.card.li;
    li.className = `card level-${last.level}${open ? "" : " resolved"}${drill ? " drill" : ""}`;
    Object.assign(li.dataset, { alert: ep.id, zone: ep.zone, status: last.status, level: last.level,
      peak, open: String(open), exercise: String(drill) });
    const head = el("div", { class: "head" });
    const title = el("span", { class: "title" });
    title.append(el("span", { class: `dot lvl-${last.level}` }),
      el("span", {}, ` ${z ? z.info.name[lang] : ep.zone} · ${t(open ? last.level : "resolved")}`));
    if (drill) title.append(" ", el("span", { class: "drill-badge" }, "DRILL / ฝึกซ้อม"));
    head.append(title);
    if (!open && peak !== "normal") head.append(el("span", { class: "peak" }, `${t("peak")}: ${t(peak)}`));
    const startIso = ep.steps[0].episode_start || ep.steps[0].ts;
    const since = el("div", { class: "since" });
    since.append(el("span", {}, `${t("started")} ${bangkok(startIso)} · ${t(open ? "since" : "lasted")} `));
    if (open) since.append(el("span", { class: "elapsed", "data-since": startIso }, duration(Date.now() - Date.parse(startIso))));
    else since.append(el("span", { class: "lasted" }, duration(Date.parse(last.ts) - Date.parse(startIso))));
    const history = el("ol", { class: "history", "aria-label": t("history") });
    for (const a of ep.steps.slice(-20)) {
      const step = history.appendChild(el("li", { class: "step", "data-level": a.level, "data-status": a.status, "data-ts": a.ts }));
      step.append(el("time", { datetime: a.ts }, bangkokTime(a.ts)), el("span", { class: `dot lvl-${a.level}` }),
        el("span", { class: "lvl" }, t(a.level)), el("span", { class: "st" }, `(${t(a.status)})`),
        el("span", { class: "d" }, typeof a.density === "number" ? `${a.density.toFixed(2)} ${t("unit")}` : (a.density === null ? t("blind") : "")));
    }
    const parts = [head, since, history, el("div", { class: "msg" }, (last.message || {})[lang] || "")];
    const ack = acks.get(ep.id);
    if (ack) {
      parts.push(el("div", { class: "acked" },
        `✓ ${t("ackedBy")} ${ack.operator} · ${bangkok(ack.ts)}${ack.note ? ` · ${ack.note}` : ""}`));
    } else if (open && last.level !== "normal") {
      // The note field lives as long as the card: a redraw never drops what is being typed.
      if (!ep.card.input) {
        ep.card.input = el("input", { type: "text", maxlength: "500" });
        ep.card.button = el("button", { type: "button", class: "ack-button" });
        const { input, button } = ep.card;
        button.addEventListener("click", () => acknowledge(ep.id, input, button));
      }
      ep.card.input.placeholder = t("note");
      ep.card.input.setAttribute("aria-label", t("note"));
      ep.card.button.textContent = t("ack");
      const row = el("div", { class: "ack" });
      row.append(ep.card.input, ep.card.button);
      parts.push(row);
    } else {
      parts.push(el("div", { class: "unacked" }, t("notAcked")));
    }
    const focused = ep.card.input && document.activeElement === ep.card.input;
    li.replaceChildren(...parts);
    if (focused) ep.card.input.focus();
  }

  // Open episodes first, the most severe on top, then the newest; resolved ones below, faded.
  function placeCards() {
    const rank = (ep) => [isOpen(ep) ? 0 : 1, -LEVELS.indexOf(latest(ep).level), latest(ep).ts];
    const sorted = [...episodes.values()].filter((ep) => ep.steps.length).sort((a, b) => {
      const ra = rank(a), rb = rank(b);
      return ra[0] - rb[0] || ra[1] - rb[1] || (ra[2] < rb[2] ? 1 : ra[2] > rb[2] ? -1 : 0);
    });
    for (const ep of sorted.slice(EPISODES_MAX)) {
      if (isOpen(ep)) continue;
      episodes.delete(ep.id);
      ep.card.li.remove();
      forgotten.add(ep.id);
      if (forgotten.size > 10000) forgotten.delete(forgotten.values().next().value);
    }
    const feed = document.getElementById("feed");
    const want = sorted.slice(0, EPISODES_MAX).map((ep) => ep.card.li);
    const have = [...feed.children];
    if (want.length === have.length && want.every((n, i) => n === have[i])) return;
    const active = document.activeElement;
    feed.replaceChildren(...want);
    if (active && active !== document.activeElement && document.contains(active)) active.focus();
  }

  function renderFeed() {
    episodes.forEach(renderCard);
    placeCards();
  }

  // -- the critical alarm sound --------------------------------------------------------------
  // Browsers keep a page silent until a user gesture, so the operator arms it with the "Start
  // shift" button (the AudioContext is made in that click); a mute toggle silences it. A short
  // generated beep (WebAudio), no audio file. body[data-beeps] counts the alarms played,
  // body[data-audio] says off / armed / muted.
  const sound = (function () {
    let ctx = null, muted = false, beeps = 0, silenced = 0;
    const arm = document.getElementById("arm"), mute = document.getElementById("mute");
    function show() {
      document.body.dataset.audio = ctx === null ? "off" : muted ? "muted" : "armed";
      document.body.dataset.beeps = String(beeps);
      document.body.dataset.silenced = String(silenced);
      arm.hidden = ctx !== null;
      mute.hidden = ctx === null;
      mute.setAttribute("aria-pressed", String(muted));
      mute.textContent = t(muted ? "unmute" : "mute");
      mute.title = t(muted ? "soundOff" : "soundOn");
      arm.textContent = t("startShift");
      arm.title = t("startShiftHint");
    }
    function beep() {
      const t0 = ctx.currentTime + 0.02;
      for (let i = 0; i < 3; i++) {  // three 880 Hz pips, a quarter second each
        const o = ctx.createOscillator(), g = ctx.createGain();
        o.type = "square";
        o.frequency.value = 880;
        const at = t0 + i * 0.35;
        g.gain.setValueAtTime(0.0001, at);
        g.gain.exponentialRampToValueAtTime(0.25, at + 0.02);
        g.gain.exponentialRampToValueAtTime(0.0001, at + 0.25);
        o.connect(g).connect(ctx.destination);
        o.start(at);
        o.stop(at + 0.3);
      }
    }
    arm.addEventListener("click", () => {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return;
      if (ctx === null) ctx = new Ctx();
      ctx.resume().then(show, show);
      show();
    });
    mute.addEventListener("click", () => { muted = !muted; show(); });
    return {
      show,
      alarm() {
        if (ctx === null) return;  // not armed: the browser would not play it anyway
        if (muted) { silenced += 1; show(); return; }
        if (ctx.state === "suspended") ctx.resume();
        beep();
        beeps += 1;
        show();
      },
    };
  })();

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
    es.addEventListener("ack", (e) => onAck(JSON.parse(e.data)));
    es.addEventListener("density", (e) => onDensity(JSON.parse(e.data)));
    es.addEventListener("shelf", (e) => onShelf(JSON.parse(e.data)));
    es.addEventListener("cells", (e) => onCells(JSON.parse(e.data)));
  }

  applyLang();
  connect();
})();
