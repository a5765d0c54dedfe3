"""The review page: one self-contained ``index.html`` (HTML, CSS, JavaScript and the lesion list
inline), opened from the file system; nothing is fetched from the network.

The page's contract (what the browser tests drive):

- one ``.card`` per lesion (``data-key``), in score order; the current one has class ``current``;
- keys: ``a`` accept, ``r`` reject, ``u`` unsure (each moves to the next shown card), ``x`` clear,
  arrow keys (right/down, left/up) move between cards, ``,`` / ``.`` (or the mouse wheel on the
  picture) step through the neighbouring slices, ``e`` exports;
- filters: minimum score, minimum size (mm), volume, verdict; ``#counter`` says how many are done;
- verdicts live in ``localStorage["uld-review:<review id>"]``; Export downloads
  ``verdicts.json`` (:data:`VERDICTS_FORMAT`, with the review id, which ``uld review apply`` checks);
- images are ``loading="lazy"``; neighbouring slices load only when stepped to;
- ``window.uldFirstCardsMs``: milliseconds from navigation start until the first cards were in the
  page, and ``window.uldFirstImageMs`` until the first card's picture had loaded (the 2 s target).
"""

from __future__ import annotations

import html
import json
from typing import Any

VERDICTS_FORMAT = "uld-verdicts"
VERDICTS = ("accept", "reject", "unsure")

_CSS = """
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.35 system-ui, sans-serif; background: #111; color: #ddd; }
header { position: sticky; top: 0; z-index: 2; background: #1d1d1d; padding: 6px 10px;
  border-bottom: 1px solid #333; display: flex; flex-wrap: wrap; gap: 12px; align-items: center; }
header h1 { font-size: 14px; margin: 0 8px 0 0; }
header label { display: flex; gap: 4px; align-items: center; }
header input { width: 64px; }
#counter { font-weight: 600; }
.help { color: #999; }
kbd { border: 1px solid #555; border-radius: 3px; padding: 0 3px; background: #222; }
#cards { display: flex; flex-wrap: wrap; gap: 8px; padding: 10px; }
.card { width: 404px; background: #1b1b1b; border: 2px solid #333; border-radius: 6px; padding: 6px;
  content-visibility: auto; contain-intrinsic-size: 404px 260px; scroll-margin: 96px 0 12px; }
.card.current { border-color: #fff; box-shadow: 0 0 0 2px #888; }
.card.accept { border-color: #2e9e44; } .card.reject { border-color: #c0392b; }
.card.unsure { border-color: #d4a017; }
.card.accept.current, .card.reject.current, .card.unsure.current { box-shadow: 0 0 0 3px #fff; }
.views { display: flex; gap: 6px; }
.views img { width: 192px; height: 192px; background: #000; image-rendering: auto; display: block; }
.views .ctx { object-fit: contain; }
.meta { margin-top: 4px; display: flex; flex-wrap: wrap; gap: 2px 10px; }
.meta b { color: #fff; }
.verdict { font-weight: 700; text-transform: uppercase; }
.accept .verdict { color: #2e9e44; } .reject .verdict { color: #e05545; } .unsure .verdict { color: #d4a017; }
.hidden { display: none; }
"""

_JS = r"""
"use strict";
const R = JSON.parse(document.getElementById("review-data").textContent);
const STORE = "uld-review:" + R.review_id;
const NAMES = {a: "accept", r: "reject", u: "unsure"};
let verdicts = {};
try { verdicts = JSON.parse(localStorage.getItem(STORE) || "{}") || {}; } catch (e) { verdicts = {}; }
const cardsEl = document.getElementById("cards");
const cards = [];
let shown = [];
let cur = 0;

const ENT = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"};
function esc(s) { return String(s).replace(/[&<>"]/g, c => ENT[c]); }
function img(L, z) { return "images/" + L.dir + "/z" + z + ".png"; }

function build() {
  const parts = [];
  R.lesions.forEach((L, i) => {
    const size = L.size_mm === null ? "" : `<span>size <b>${L.size_mm.toFixed(1)} mm</b></span>`;
    parts.push(`<div class="card" data-i="${i}" data-key="${esc(L.key)}">` +
      `<div class="views"><img class="crop" loading="lazy" decoding="async" alt="slice ${L.peak}"` +
      ` src="${esc(img(L, L.peak))}"><img class="ctx" loading="lazy" decoding="async"` +
      ` alt="whole slice" src="images/${esc(L.dir)}/context.png"></div>` +
      `<div class="meta"><span><b>${esc(L.key)}</b></span><span>score <b>${L.score.toFixed(3)}</b></span>` +
      `<span>volume <b>${esc(L.volume)}</b></span>` +
      `<span>slices <b>${L.z1}&ndash;${L.z2}</b> (peak ${L.peak})</span>` +
      size + `<span class="slice">showing slice ${L.peak}</span><span class="verdict"></span></div></div>`);
  });
  cardsEl.innerHTML = parts.join("");
  cardsEl.querySelectorAll(".card").forEach((el, i) => {
    cards.push({el: el, L: R.lesions[i], z: R.lesions[i].peak, crop: el.querySelector(".crop"),
                label: el.querySelector(".slice"), verdict: el.querySelector(".verdict")});
  });
  cards.forEach(paint);
  const first = cards.length ? cards[0].crop : null;
  window.uldFirstCardsMs = performance.now();
  if (first) {
    const done = () => { window.uldFirstImageMs = performance.now(); };
    if (first.complete && first.naturalWidth) done(); else first.addEventListener("load", done, {once: true});
  }
}

function paint(c) {
  const v = verdicts[c.L.key] || "";
  c.el.classList.remove("accept", "reject", "unsure");
  if (v) c.el.classList.add(v);
  c.verdict.textContent = v;
}

function volumesSelect() {
  const sel = document.getElementById("f-volume");
  [...new Set(R.lesions.map(L => L.volume))].sort().forEach(v => {
    const o = document.createElement("option"); o.value = v; o.textContent = v; sel.appendChild(o);
  });
}

function applyFilters() {
  const minScore = parseFloat(document.getElementById("f-score").value) || 0;
  const minSize = parseFloat(document.getElementById("f-size").value) || 0;
  const vol = document.getElementById("f-volume").value;
  const status = document.getElementById("f-status").value;
  const key = cards.length && shown.length ? shown[Math.min(cur, shown.length - 1)].L.key : null;
  shown = [];
  cards.forEach(c => {
    const v = verdicts[c.L.key] || "";
    const ok = c.L.score >= minScore && (c.L.size_mm === null || c.L.size_mm >= minSize) &&
      (!vol || c.L.volume === vol) &&
      (status === "all" || (status === "open" ? !v : v === status));
    c.el.classList.toggle("hidden", !ok);
    if (ok) shown.push(c);
  });
  const at = shown.findIndex(c => c.L.key === key);
  select(at >= 0 ? at : 0, false);
  count();
}

function count() {
  const n = {accept: 0, reject: 0, unsure: 0};
  R.lesions.forEach(L => { const v = verdicts[L.key]; if (v in n) n[v] += 1; });
  const done = n.accept + n.reject + n.unsure;
  document.getElementById("counter").textContent =
    `done ${done} / ${R.lesions.length} (accepted ${n.accept}, rejected ${n.reject}, ` +
    `unsure ${n.unsure}); shown ${shown.length}`;
}

function select(i, scroll = true) {
  document.querySelectorAll(".card.current").forEach(el => el.classList.remove("current"));
  if (!shown.length) return;
  cur = Math.max(0, Math.min(i, shown.length - 1));
  const c = shown[cur];
  c.el.classList.add("current");
  if (scroll) c.el.scrollIntoView({block: "nearest"});
}

function setSlice(c, z) {
  const L = c.L;
  z = Math.max(L.zmin, Math.min(L.zmax, z));
  if (z === c.z) return;
  c.z = z;
  c.crop.src = img(L, z);
  c.crop.alt = "slice " + z;
  c.label.textContent = "showing slice " + z + (z === L.peak ? "" : " (peak " + L.peak + ")");
}

function decide(v) {
  if (!shown.length) return;
  const c = shown[cur];
  if (v) verdicts[c.L.key] = v; else delete verdicts[c.L.key];
  try { localStorage.setItem(STORE, JSON.stringify(verdicts)); } catch (e) { /* full or blocked */ }
  paint(c);
  count();
  if (v) select(cur + 1);
}

function exportVerdicts() {
  const n = {accept: 0, reject: 0, unsure: 0};
  const out = {};
  R.lesions.forEach(L => { const v = verdicts[L.key]; if (v in n) { n[v] += 1; out[L.key] = v; } });
  const doc = {format: R.verdicts_format, version: 1, review_id: R.review_id, review_dir: R.review_dir,
               kind: R.kind, exported: new Date().toISOString(), lesions: R.lesions.length, counts: n,
               verdicts: out};
  const blob = new Blob([JSON.stringify(doc, null, 1) + "\n"], {type: "application/json"});
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "verdicts.json";
  document.body.appendChild(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

document.addEventListener("keydown", ev => {
  const t = ev.target;
  if (t && (t.tagName === "INPUT" || t.tagName === "SELECT")) {
    if (ev.key === "Escape" || ev.key === "Enter") t.blur();
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const k = ev.key;
  if (k in NAMES) decide(NAMES[k]);
  else if (k === "x") decide("");
  else if (k === "ArrowRight" || k === "ArrowDown") select(cur + 1);
  else if (k === "ArrowLeft" || k === "ArrowUp") select(cur - 1);
  else if (k === "." && shown.length) setSlice(shown[cur], shown[cur].z + 1);
  else if (k === "," && shown.length) setSlice(shown[cur], shown[cur].z - 1);
  else if (k === "e") exportVerdicts();
  else return;
  ev.preventDefault();
});
cardsEl.addEventListener("wheel", ev => {
  const el = ev.target.closest(".card");
  if (!el || !ev.target.classList.contains("crop")) return;
  ev.preventDefault();
  setSlice(cards[+el.dataset.i], cards[+el.dataset.i].z + (ev.deltaY > 0 ? 1 : -1));
}, {passive: false});
cardsEl.addEventListener("click", ev => {
  const el = ev.target.closest(".card");
  if (el) { const at = shown.indexOf(cards[+el.dataset.i]); if (at >= 0) select(at, false); }
});
["f-score", "f-size", "f-volume", "f-status"].forEach(id =>
  document.getElementById(id).addEventListener("change", applyFilters));
document.getElementById("export").addEventListener("click", exportVerdicts);
build();
volumesSelect();
applyFilters();
"""


def _script_json(data: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">`` (no ``</`` or ``<!--``)."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def page_html(data: dict[str, Any]) -> str:
    """The whole ``index.html`` for ``data``: ``review_id``, ``review_dir``, ``kind``, ``title``,
    ``lesions`` (each ``key``, ``volume``, ``score``, ``z1``, ``z2``, ``peak``, ``zmin``, ``zmax``
    (the slices rendered), ``size_mm`` or None, ``dir`` (its folder under ``images/``))."""
    payload = {**data, "verdicts_format": VERDICTS_FORMAT}
    title = html.escape(str(data.get("title", "uld review")))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{_CSS}</style>
</head>
<body>
<header>
<h1>{title}</h1>
<span id="counter"></span>
<label>score &ge; <input id="f-score" type="number" min="0" max="1" step="0.05" value="0"></label>
<label>size &ge; <input id="f-size" type="number" min="0" step="1" value="0"> mm</label>
<label>volume <select id="f-volume"><option value="">all</option></select></label>
<label>show <select id="f-status"><option value="all">all</option><option value="open">undecided</option>
<option value="accept">accepted</option><option value="reject">rejected</option>
<option value="unsure">unsure</option></select></label>
<button id="export" type="button">Export verdicts.json</button>
<span class="help"><kbd>a</kbd> accept <kbd>r</kbd> reject <kbd>u</kbd> unsure <kbd>x</kbd> clear
<kbd>&larr;</kbd><kbd>&rarr;</kbd> move <kbd>,</kbd><kbd>.</kbd> slice <kbd>e</kbd> export</span>
</header>
<main id="cards"></main>
<script type="application/json" id="review-data">{_script_json(payload)}</script>
<script>{_JS}</script>
</body>
</html>
"""
