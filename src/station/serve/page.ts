/**
 * The rack view's page: plain HTML, CSS and a small script (no framework, no CDN). Plans are drawn
 * as racks of HSM tiles, coloured by state; filters by owner, state and text; a tile opens the HSM's
 * detail (its plan entry, its write and its verified receipt, fetched for that one HSM). The first
 * load is the compact list (/api/inventory: one short array per HSM); the script listens to
 * /api/events and reloads it when the inventory changes. Everything shown is set with textContent,
 * never as HTML. A view opened with a session cookie (`station serve` with a token) has a logout
 * form; when the session ends (idle, lifetime, logout elsewhere) the script goes back to the token page.
 */
/** The page; with `logout`, a logout button (POST /logout) in the header. */
export function pageHtml(logout: boolean): string {
  return `<!doctype html>
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
  <label>Owner <select id="owner"><option value="">all</option></select></label>
  <label>State <select id="state"><option value="">all</option></select></label>
  <label>Find <input id="find" placeholder="serial, hostname, address"></label>
  <span id="live" title="live updates">●</span>${
    logout
      ? '\n  <form id="logout" method="post" action="/logout"><button type="submit">Log out</button></form>'
      : ""
  }
</header>
<main id="racks"></main>
<aside id="detail" hidden><button id="close">×</button><h2 id="detail-title"></h2><dl id="detail-body"></dl></aside>
<script src="/app.js"></script>
</body>
</html>
`;
}

/**
 * Shown (with status 401, or 429 while the address is throttled) when the view needs a token and
 * the request carries none that is right; `note` (our own text, never the client's) says why.
 */
export function loginPage(note?: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>hsm-onboard — rack view: access token</title>
<link rel="stylesheet" href="/app.css">
</head>
<body>
<header><h1>hsm-onboard rack view</h1></header>
<form id="login" method="post" action="/login">
  <p>This rack view needs its access token (the file <code>serve-token</code> in the station directory, or
  the token given to <code>station serve</code>).</p>
  ${note === undefined ? "" : `<p id="wrong">${note}</p>`}
  <label>Access token <input type="password" name="token" autocomplete="off" required></label>
  <button type="submit">Open</button>
</form>
</body>
</html>
`;
}

export const PAGE_STYLE = `
body { font: 14px system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1d2330; }
header { display: flex; gap: 1.5em; align-items: center; padding: .6em 1em; background: #1d2330; color: #fff; }
header h1 { font-size: 1.1em; margin: 0; }
#live { color: #888; } #live.on { color: #3c3; }
form#logout { margin-left: auto; }
main { display: flex; flex-wrap: wrap; gap: 1em; padding: 1em; }
section.rack { background: #fff; border: 1px solid #ccd; border-radius: 6px; padding: .5em; }
section.rack h2 { font-size: .9em; margin: 0 0 .4em; }
.tiles { display: grid; grid-template-columns: repeat(10, 5.2em); gap: 3px; margin-bottom: 3px;
  content-visibility: auto; contain-intrinsic-size: auto 30em; }
.tile { height: 2.6em; border-radius: 3px; font-size: .7em; padding: 2px; overflow: hidden; cursor: pointer;
  border: 1px solid rgba(0,0,0,.15); }
.tile.planned { background: #e3e6ec; } .tile.on-card { background: #9cc3f0; }
.tile.onboarded { background: #5cb85c; color: #fff; } .tile.failed { background: #d9534f; color: #fff; }
.tile.receipt-bad { background: #8b1d1d; color: #fff; }
.tile.dry-run { background: repeating-linear-gradient(135deg, #f0c36d 0 6px, #fbe6b8 6px 12px);
  border: 1px dashed #8a6d1d; }
aside { position: fixed; right: 0; top: 3em; bottom: 0; width: 34em; background: #fff; border-left: 1px solid #ccd;
  padding: 1em; overflow: auto; }
aside dl { display: grid; grid-template-columns: 11em 1fr; gap: .25em .8em; font-size: .85em; }
aside dt { font-weight: 600; } aside dd { margin: 0; overflow-wrap: anywhere; }
aside dt.section { grid-column: 1 / 3; margin-top: .6em; border-bottom: 1px solid #ccd; }
.ok { color: #2a7a2a; } .bad { color: #b01c1c; }
form#login { max-width: 36em; margin: 2em auto; background: #fff; padding: 1em 1.5em; border: 1px solid #ccd; }
#wrong { color: #b01c1c; }
`;

export const PAGE_SCRIPT = `"use strict";
const CLASSES = { "planned": "planned", "on card": "on-card", "onboarded ✓": "onboarded", "failed ✗": "failed",
  "receipt ✗": "receipt-bad", "dry run": "dry-run" };
let data = { states: [], plans: [], hsms: [] };
const $ = (id) => document.getElementById(id);
for (const s of Object.keys(CLASSES)) { const o = document.createElement("option"); o.value = s; o.textContent = s; $("state").append(o); }
const stateOf = (h) => data.states[h[3]];
function matches(h, owner, state, find) {
  if (owner && data.plans[h[0]].owner !== owner) return false;
  if (state && stateOf(h) !== state) return false;
  if (!find) return true;
  return h[1].toLowerCase().includes(find) || h[2].toLowerCase().includes(find) || h[4].toLowerCase().includes(find);
}
function render() {
  const owner = $("owner").value, state = $("state").value, find = $("find").value.trim().toLowerCase();
  const racks = new Map();
  for (const h of data.hsms) {
    if (!matches(h, owner, state, find)) continue;
    if (!racks.has(h[0])) racks.set(h[0], []);
    racks.get(h[0]).push(h);
  }
  const main = $("racks");
  const out = document.createDocumentFragment();
  for (const [p, list] of racks) {
    const plan = data.plans[p];
    const section = document.createElement("section"); section.className = "rack";
    const title = document.createElement("h2");
    title.textContent = plan.owner + " — plan " + plan.digest.slice(0, 12) + " (" + list.length + " HSMs)";
    section.append(title);
    for (let i = 0; i < list.length; i += 100) {
      const tiles = document.createElement("div"); tiles.className = "tiles";
      for (const h of list.slice(i, i + 100)) {
        const t = document.createElement("div");
        const s = stateOf(h);
        t.className = "tile " + (CLASSES[s] || "planned");
        t.dataset.serial = h[1]; t.dataset.plan = String(h[0]); t.dataset.state = s;
        t.title = h[1] + " " + h[2] + ": " + s + (h[4] ? " — " + h[4] : "");
        t.textContent = h[1] + " " + s;
        tiles.append(t);
      }
      section.append(tiles);
    }
    out.append(section);
  }
  main.replaceChildren(out);
  const counts = {};
  for (const h of data.hsms) counts[stateOf(h)] = (counts[stateOf(h)] || 0) + 1;
  $("summary").textContent = data.hsms.length + " HSMs: " + Object.entries(counts).map(([k, v]) => v + " " + k).join(", ");
}
function row(dl, name, value, cls) {
  const dt = document.createElement("dt"); dt.textContent = name;
  const dd = document.createElement("dd"); dd.textContent = value == null || value === "" ? "—" : String(value);
  if (cls) dd.className = cls;
  dl.append(dt, dd);
}
function heading(dl, text) { const dt = document.createElement("dt"); dt.className = "section"; dt.textContent = text; dl.append(dt); }
function showDetail(h) {
  const dl = $("detail-body");
  dl.replaceChildren();
  $("detail-title").textContent = h.serial + " " + h.hostname + " — " + h.state;
  row(dl, "Owner", h.owner);
  row(dl, "State", h.state + (h.detail ? " — " + h.detail : ""));
  heading(dl, "Plan");
  row(dl, "Plan digest", h.planDigest);
  row(dl, "Planned", h.plannedAt);
  row(dl, "Planned addresses", h.plannedAddresses.join(", "));
  row(dl, "Plan state digest", h.plannedStateDigest);
  heading(dl, "Written");
  if (!h.written) row(dl, "Card", "not written yet");
  else {
    row(dl, "Configuration", h.written.configurationId);
    row(dl, "Sequence", h.written.sequence);
    row(dl, "Card", h.written.cardSerial);
    row(dl, "Officer", h.written.officer);
    row(dl, "When", h.written.at);
  }
  heading(dl, "Receipt");
  const r = h.receipt;
  if (!r) { row(dl, "Receipt", "none collected yet"); }
  else {
    row(dl, "Verified", r.verified ? "✓ verified" : "✗ not verified" + (r.reason ? ": " + r.reason : ""), r.verified ? "ok" : "bad");
    row(dl, "Signature verified by", r.verifiedBy);
    row(dl, "Device certificate", r.deviceSubject);
    row(dl, "Outcome", r.outcomeName + (r.outcome == null ? "" : " (exit " + r.outcome + ")"));
    row(dl, "Applied", r.dryRun === true ? "dry run — nothing applied" : r.dryRun === false ? "applied" : "not known");
    row(dl, "Addresses applied", r.addresses.join(", "));
    row(dl, "Channel", r.channel || (r.scp === true ? "SCP11" : r.scp === false ? "plaintext" : "not said"));
    row(dl, "Network digest", r.networkDigest);
    row(dl, "vs plan digest", r.digestMatchesPlan === true ? "✓ matches the plan state digest"
      : r.digestMatchesPlan === false ? "✗ differs from the plan state digest" : "not known",
      r.digestMatchesPlan === true ? "ok" : r.digestMatchesPlan === false ? "bad" : "");
    row(dl, "Configuration", r.configurationId);
    row(dl, "Sequence", r.sequence);
    row(dl, "HSM wrote it", r.time);
    row(dl, "Collected", r.at);
    row(dl, "From card", r.cardSerial);
  }
  $("detail").hidden = false;
  document.body.dataset.detail = h.serial;
}
async function show(plan, serial) {
  const q = new URLSearchParams({ owner: data.plans[plan].owner, serial });
  const r = await fetch("/api/hsm?" + q, { cache: "no-store" });
  if (r.ok) showDetail(await r.json());
}
$("racks").addEventListener("click", (e) => {
  const t = e.target.closest(".tile");
  if (t) show(Number(t.dataset.plan), t.dataset.serial);
});
$("close").addEventListener("click", () => { $("detail").hidden = true; });
for (const id of ["owner", "state"]) $(id).addEventListener("change", render);
$("find").addEventListener("input", render);
async function load() {
  const r = await fetch("/api/inventory", { cache: "no-store" });
  if (r.status === 401) { location.assign("/"); return; } // the session ended: back to the token page
  data = await r.json();
  const owners = [...new Set(data.plans.map((p) => p.owner))].sort();
  const select = $("owner"), chosen = select.value;
  select.replaceChildren(select.options[0]);
  for (const o of owners) { const e = document.createElement("option"); e.value = o; e.textContent = o; select.append(e); }
  select.value = owners.includes(chosen) ? chosen : "";
  render();
  document.body.dataset.loaded = String(data.hsms.length);
  document.body.dataset.mark = data.mark;
}
const events = new EventSource("/api/events");
events.addEventListener("hello", () => $("live").classList.add("on"));
events.addEventListener("changed", () => { load(); });
// The session ended (expired, or logged out in another tab): back to the token form — unless this
// page is logging out itself, whose own navigation must not be cut short (it clears the cookie).
let leaving = false;
if ($("logout")) $("logout").addEventListener("submit", () => { leaving = true; });
events.addEventListener("ended", () => { events.close(); if (!leaving) location.assign("/"); });
events.onerror = () => {
  $("live").classList.remove("on");
  if (events.readyState === EventSource.CLOSED && !leaving) load(); // refused (401): load() goes to the token page
};
load();
`;
