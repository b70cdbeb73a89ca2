/**
 * The rack view's page: plain HTML, CSS and a small script (no framework, no CDN). Plans are drawn
 * as racks of HSM tiles, coloured by state; filters by state and text; a tile opens the HSM's detail
 * (its write and its verified receipt). The script listens to /api/events and reloads the inventory
 * when it changes. Everything shown is set with textContent, never as HTML.
 */
export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>hsm-onboard — rack view</title>
<link rel="stylesheet" href="/app.css">
</head>
<body>
<header>
  <h1>hsm-onboard rack view</h1>
  <span id="summary"></span>
  <label>State <select id="state"><option value="">all</option></select></label>
  <label>Find <input id="find" placeholder="serial, hostname, address"></label>
  <span id="live" title="live updates">●</span>
</header>
<main id="racks"></main>
<aside id="detail" hidden><button id="close">×</button><h2 id="detail-title"></h2><pre id="detail-body"></pre></aside>
<script src="/app.js"></script>
</body>
</html>
`;

export const PAGE_STYLE = `
body { font: 14px system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1d2330; }
header { display: flex; gap: 1.5em; align-items: center; padding: .6em 1em; background: #1d2330; color: #fff; }
header h1 { font-size: 1.1em; margin: 0; }
#live { color: #888; } #live.on { color: #3c3; }
main { display: flex; flex-wrap: wrap; gap: 1em; padding: 1em; }
section.rack { background: #fff; border: 1px solid #ccd; border-radius: 6px; padding: .5em; }
section.rack h2 { font-size: .9em; margin: 0 0 .4em; }
.tiles { display: grid; grid-template-columns: repeat(10, 5.2em); gap: 3px; }
.tile { height: 2.6em; border-radius: 3px; font-size: .7em; padding: 2px; overflow: hidden; cursor: pointer;
  border: 1px solid rgba(0,0,0,.15); }
.tile.planned { background: #e3e6ec; } .tile.on-card { background: #9cc3f0; }
.tile.onboarded { background: #5cb85c; color: #fff; } .tile.failed { background: #d9534f; color: #fff; }
.tile.receipt-bad { background: #8b1d1d; color: #fff; } .tile.dry-run { background: #f0c36d; }
aside { position: fixed; right: 0; top: 3em; bottom: 0; width: 32em; background: #fff; border-left: 1px solid #ccd;
  padding: 1em; overflow: auto; }
aside pre { white-space: pre-wrap; font-size: .8em; }
`;

export const PAGE_SCRIPT = `"use strict";
const CLASSES = { "planned": "planned", "on card": "on-card", "onboarded ✓": "onboarded", "failed ✗": "failed",
  "receipt ✗": "receipt-bad", "dry run": "dry-run" };
let hsms = [];
const $ = (id) => document.getElementById(id);
for (const s of Object.keys(CLASSES)) { const o = document.createElement("option"); o.value = s; o.textContent = s; $("state").append(o); }
function matches(h) {
  const state = $("state").value, find = $("find").value.trim().toLowerCase();
  if (state && h.state !== state) return false;
  if (!find) return true;
  return [h.serial, h.hostname, h.detail].some((t) => (t || "").toLowerCase().includes(find));
}
function render() {
  const racks = new Map();
  for (const h of hsms) {
    if (!matches(h)) continue;
    const key = h.owner + " — plan " + h.planDigest.slice(0, 12);
    if (!racks.has(key)) racks.set(key, []);
    racks.get(key).push(h);
  }
  const main = $("racks");
  main.replaceChildren();
  for (const [name, list] of racks) {
    const section = document.createElement("section"); section.className = "rack";
    const title = document.createElement("h2"); title.textContent = name + " (" + list.length + " HSMs)";
    const tiles = document.createElement("div"); tiles.className = "tiles";
    for (const h of list) {
      const t = document.createElement("div");
      t.className = "tile " + (CLASSES[h.state] || "planned");
      t.dataset.serial = h.serial; t.dataset.state = h.state;
      t.title = h.serial + " " + h.hostname + ": " + h.state + (h.detail ? " — " + h.detail : "");
      t.textContent = h.serial + " " + h.state;
      t.addEventListener("click", () => show(h));
      tiles.append(t);
    }
    section.append(title, tiles); main.append(section);
  }
  const counts = {};
  for (const h of hsms) counts[h.state] = (counts[h.state] || 0) + 1;
  $("summary").textContent = hsms.length + " HSMs: " + Object.entries(counts).map(([k, v]) => v + " " + k).join(", ");
}
function show(h) {
  $("detail").hidden = false;
  $("detail-title").textContent = h.serial + " " + h.hostname + " — " + h.state;
  $("detail-body").textContent = JSON.stringify({ detail: h.detail, written: h.written, receipt: h.receipt }, null, 2);
}
$("close").addEventListener("click", () => { $("detail").hidden = true; });
$("state").addEventListener("change", render);
$("find").addEventListener("input", render);
async function load() {
  const r = await fetch("/api/inventory", { cache: "no-store" });
  hsms = (await r.json()).hsms;
  render();
  document.body.dataset.loaded = String(hsms.length);
}
const events = new EventSource("/api/events");
events.addEventListener("hello", () => $("live").classList.add("on"));
events.addEventListener("changed", () => { load(); });
events.onerror = () => $("live").classList.remove("on");
load();
`;
