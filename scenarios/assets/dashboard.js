// fortilab dashboard: plain JS, no build step, no network access beyond the dashboard server.
'use strict';

const $ = (s, root = document) => root.querySelector(s);
const $$ = (s, root = document) => Array.from(root.querySelectorAll(s));
const esc = (v) => String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const idOf = (s) => String(s).replace(/[^A-Za-z0-9_-]/g, '-');

async function api(path, body, method) {
  const opts = { method: method || (body === undefined ? 'GET' : 'POST'), headers: {} };
  if (body !== undefined) { opts.headers['Content-Type'] = 'application/json'; opts.body = JSON.stringify(body); }
  const r = await fetch(path, opts);
  let v = null;
  try { v = await r.json(); } catch (_) { v = { ok: false, error: 'HTTP ' + r.status }; }
  if (!r.ok && v && v.ok === undefined) v.ok = false;
  return v;
}

function toast(msg, bad) {
  const box = $('#toast');
  const t = document.createElement('div');
  t.className = 't' + (bad ? ' bad' : '');
  t.textContent = msg;
  box.appendChild(t);
  setTimeout(() => t.remove(), bad ? 8000 : 3500);
  while (box.children.length > 4) box.firstChild.remove();
}

// Lab time (Unix nanoseconds) shown in the lab's time zone, as the devices print it.
let TZ_MIN = 0;
const fmtTs = (ns) => {
  if (!ns) return '--:--:--.---';
  const d = new Date(Math.floor(ns / 1e6) + TZ_MIN * 60000);
  return d.toISOString().substring(11, 23);
};

// ------------------------------------------------------------------------------------------
// Device classes (colours, filters)

function devClass(e) {
  const d = (e.device || '') + ' ' + (e.source || '');
  if (e.device === 'fortilab' || e.device === 'synthetic') return 'lab';
  if (/FGT|fortigate/i.test(d)) return 'fortigate';
  if (/FAZ|fortianalyzer/i.test(d)) return 'faz';
  if (/EMS|\bems\b/i.test(d)) return 'ems';
  if (/internet/i.test(d)) return 'internet';
  return 'endpoint';
}

// ------------------------------------------------------------------------------------------
// The event catalog (lab-core's, embedded in the page by the server; also GET
// /api/events/catalog): each kind's label, fields and the hints below say which panel cares
// about which kind. No kind name is written in this file.

const CATALOG = (() => {
  try { return JSON.parse(document.getElementById('event-catalog')?.textContent || '{}'); } catch (_) { return {}; }
})();
const KINDS = CATALOG.kinds || {};
const specOf = (e) => KINDS[e.kind] || null;
const hasMark = (e, m) => !!specOf(e)?.marks.includes(m);
const toneOf = (e) => specOf(e)?.tone || null;
const GAP_KIND = Object.keys(KINDS).find((k) => KINDS[k].tone === 'gap') || 'gap';

// Whether an event's fields meet a hint's conditions (`null`: the field is missing or empty).
function holds(when, e) {
  for (const [k, v] of Object.entries(when || {})) {
    if (v === null ? (e[k] !== undefined && e[k] !== null && e[k] !== '') : e[k] !== v) return false;
  }
  return true;
}

const ROUTINE = (e) => !!specOf(e)?.routine;

// ------------------------------------------------------------------------------------------
// Causal chain: fetch -> log -> IOC -> stitch -> EMS -> quarantine, linked by endpoint IP.

const STAGES = [
  ['fetch', 'Fetch'], ['log', 'Log'], ['ioc', 'IOC'], ['stitch', 'Stitch'], ['ems', 'EMS'], ['quarantine', 'Quarantine'],
];
const STAGE_NO = Object.fromEntries(STAGES.map(([k], i) => [k, i + 1]));

function srcipOf(text) {
  const m = /\bsrcip=([0-9.]+)/.exec(text || '');
  return m ? m[1] : null;
}

// An endpoint IP from an event, as a catalog story rule names it: `field` (an IP),
// `name:field` (an endpoint name), `fctuid:field`, `text:field` (`srcip=` in a log line).
function ipFrom(src, e) {
  const i = src.indexOf(':');
  if (i < 0) return e[src] || null;
  const how = src.slice(0, i), f = src.slice(i + 1);
  if (how === 'name') return e[f] ? ipOfName(e[f]) : null;
  if (how === 'fctuid') return ipByFctuid(e[f]);
  if (how === 'text') return srcipOf(e[f]);
  return null;
}

// Which stage an event belongs to, and for which endpoint IP (the catalog's story rules).
function stageOf(e) {
  for (const r of specOf(e)?.story || []) {
    if (!holds(r.when, e)) continue;
    for (const src of r.ip) { const ip = ipFrom(src, e); if (ip) return [r.stage, ip]; }
    return null;
  }
  return null;
}

const STORY = { list: [], recent: new Map(), fctuid: new Map(), names: new Map() };

function ipByFctuid(u) { return STORY.fctuid.get(u) || null; }
function ipOfName(n) {
  for (const ep of (STATE.endpoints || [])) if (ep.name === n) return ep.ip;
  for (const [ip, name] of STORY.names) if (name === n) return ip;
  return null;
}

function storyIngest(e) {
  if (e.fctuid && e.ip) STORY.fctuid.set(e.fctuid, e.ip);
  const s = stageOf(e);
  if (!s || !s[1]) return false;
  const [stage, ip] = s;
  const si = STAGE_NO[stage];
  const ts = e.ts || 0;
  let open = null;
  for (let i = STORY.list.length - 1; i >= 0; i--) {
    const st = STORY.list[i];
    if (st.ip === ip && !st.done) { open = st; break; }
  }
  if (si <= 2) {
    // A fetch or log belongs to a story when it happened before the story's IOC.
    if (open && ts <= open.iocTs) { addStage(open, stage, e); return true; }
    // Not a story yet: remember the latest fetch (its start, then its end) and the first log
    // after it; they join the story an IOC opens.
    const r = STORY.recent.get(ip) || { extra: [] };
    if (stage === 'fetch') {
      const isEnd = hasMark(e, 'fetch-result');
      if (isEnd && r.fetch && !hasMark(r.fetch, 'fetch-result') && !r.ended && r.fetch.url === e.url) {
        r.ended = true; r.extra.push(['fetch', e]);
      } else { r.fetch = e; r.log = null; r.ended = isEnd; r.extra = []; }
    } else if (!r.log) r.log = e;
    else r.extra.push(['log', e]);
    STORY.recent.set(ip, r);
    return false;
  }
  if (!open) {
    // Only an IOC (or the stitch it triggers, whichever stream delivers first) opens a story,
    // and only after a fetch newer than the last story's end: a second IOC record of the same
    // incident (e.g. the FortiClient's own log) joins the story it belongs to.
    let last = null;
    for (let i = STORY.list.length - 1; i >= 0; i--) if (STORY.list[i].ip === ip) { last = STORY.list[i]; break; }
    const r = STORY.recent.get(ip) || { extra: [] };
    const fresh = r.fetch && (!last || (r.fetch.ts || 0) > last.endTs);
    if (si > 4 || !fresh) {
      if (last) { addStage(last, stage, e); return true; }
      if (si > 4) return false;
    }
    open = { ip, stages: {}, events: [], done: false, n: STORY.list.length + 1, iocTs: ts };
    STORY.list.push(open);
    for (const [k, ev] of [['fetch', r.fetch], ['log', r.log], ...r.extra]) {
      if (ev && (ev.ts || 0) <= ts) addStage(open, k, ev);
    }
    STORY.recent.delete(ip);
    TL.needFull = true;
  }
  if (ts < open.iocTs) { open.iocTs = ts; }
  addStage(open, stage, e);
  if (stage === 'quarantine' && !open.done) { open.done = true; open.endTs = ts; }
  return true;
}

function addStage(st, k, e) {
  if (!st.stages[k] || (e.ts || 0) < (st.stages[k].ts || 0)) st.stages[k] = e;
  tag(e, st, k);
  STORY.dirty = true;
}

function tag(e, story, stage) {
  e._story = story.ip; e._stage = stage; e._storyN = story.n;
  story.events.push(e);
}

function renderStory() {
  if (!STORY.dirty) return;
  STORY.dirty = false;
  const box = $('#story');
  if (!STORY.list.length) return;
  const html = STORY.list.slice(-3).reverse().map((st) => {
    const name = STORY.names.get(st.ip) || '';
    const chips = STAGES.map(([k, label]) => {
      const ev = st.stages[k];
      return `<div class="chip" data-stage="${k}" data-done="${ev ? 'true' : 'false'}" data-ts="${ev ? ev.ts : ''}" data-story-ip="${esc(st.ip)}">`
        + `<span class="n">${STAGE_NO[k]}</span> ${label}<span class="t">${ev ? fmtTs(ev.ts) + ' ' + esc(ev.device) : 'waiting'}</span></div>`;
    }).join('');
    return `<div class="story" data-story-ip="${esc(st.ip)}" data-story-n="${st.n}" data-complete="${st.done}"><div class="who">#${st.n} ${esc(name)} ${esc(st.ip)}${st.done ? ' &mdash; quarantined' : ''}</div>${chips}</div>`;
  }).join('');
  box.innerHTML = html;
}

// ------------------------------------------------------------------------------------------
// Timeline: every event is kept (and filterable); at most MAX_ROWS are in the DOM; DOM
// updates are batched per animation frame.

const MAX_ROWS = 400;
const TL = {
  all: [], nextId: 1, generation: null, pending: [], late: [], needFull: true, devices: new Map(),
  filter: '', routine: false, storyOnly: false, follow: true, expanded: new Set(), matchCount: 0, rendered: [],
  stats: { received: 0, batches: 0, frames: 0, maxFrameGapMs: 0, maxRenderMs: 0, synthetic: 0, syntheticMax: 0, gaps: 0, reconnects: 0, lastFrame: 0 },
};

function matches(e) {
  if (!TL.routine && ROUTINE(e)) return false;
  if (TL.storyOnly && !e._stage) return false;
  if (TL.devices.has(e.device) && !TL.devices.get(e.device)) return false;
  if (TL.filter) {
    const f = TL.filter;
    const hay = ((e.kind || '') + ' ' + (e.device || '') + ' ' + (e._sum || '')).toLowerCase();
    if (!hay.includes(f)) return false;
  }
  return true;
}

function summarize(e) {
  for (const k of ['summary', 'msg', 'message']) if (typeof e[k] === 'string') return e[k];
  const parts = [];
  for (const [k, v] of Object.entries(e)) {
    if (k.startsWith('_') || ['seq', 'ts', 'device', 'kind', 'source', 'raw', 'line', 'sample', 'request', 'response'].includes(k)) continue;
    let s = typeof v === 'string' ? v : JSON.stringify(v);
    if (s && s.length > 60) s = s.substring(0, 60) + '…';
    parts.push(k + '=' + s);
    if (parts.length >= 5) break;
  }
  return parts.join(' ');
}

function ingest(arr) {
  TL.stats.batches++;
  for (const e of arr) {
    e._id = TL.nextId++;
    e._dev = devClass(e);
    e._sum = summarize(e);
    TL.stats.received++;
    if (hasMark(e, 'synthetic')) { TL.stats.synthetic++; if (e.n > TL.stats.syntheticMax) TL.stats.syntheticMax = e.n; }
    if (toneOf(e) === 'gap') TL.stats.gaps++;
    if (e.device && !TL.devices.has(e.device)) { TL.devices.set(e.device, true); addDeviceFilter(e.device, e._dev); }
    if (hasMark(e, 'names-endpoint') && e.endpoint) STORY.names.set(e.ip, e.endpoint);
    // Keep lab-time order: most events arrive in order; a late one is inserted in place.
    const all = TL.all;
    if (!all.length || (all[all.length - 1].ts || 0) <= (e.ts || 0)) {
      all.push(e);
      TL.pending.push(e);
    } else {
      let lo = 0, hi = all.length;
      while (lo < hi) { const mid = (lo + hi) >> 1; if ((all[mid].ts || 0) <= (e.ts || 0)) lo = mid + 1; else hi = mid; }
      all.splice(lo, 0, e);
      // Rendered in place (no full re-render): see renderTimeline.
      TL.late.push(e);
    }
    storyIngest(e);
    pulseFor(e);
    if (matches(e)) TL.matchCount++;
  }
  schedule();
}

function clearTimeline() {
  TL.all = []; TL.pending = []; TL.late = []; TL.needFull = true; TL.matchCount = 0; TL.expanded.clear();
  STORY.list = []; STORY.recent.clear(); STORY.dirty = true;
  $('#story').innerHTML = '<p class="muted">The lab was restarted.</p>';
  for (const k of Object.keys(LINKCOUNT)) delete LINKCOUNT[k];
  schedule();
}

function addDeviceFilter(dev, cls) {
  const l = document.createElement('label');
  l.innerHTML = `<input type="checkbox" checked data-device-filter="${esc(dev)}"> <span class="ev" data-dev="${cls}" style="padding:0;border:0"><span class="d" style="min-width:0">${esc(dev)}</span></span>`;
  l.querySelector('input').addEventListener('change', (ev) => { TL.devices.set(dev, ev.target.checked); refilter(); });
  $('#dev-filters').appendChild(l);
}

function refilter() {
  TL.matchCount = 0;
  for (const e of TL.all) if (matches(e)) TL.matchCount++;
  TL.needFull = true;
  schedule();
}

let scheduled = false;
function schedule() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(frame);
}

function rowHtml(e) {
  let cls = 'ev';
  const k = e.kind || '';
  const spec = specOf(e);
  const tone = toneOf(e);
  if (tone === 'gap' || tone === 'lost' || tone === 'down') cls += ' gap';
  else if (tone === 'up') cls += ' linkup';
  if (tone === 'fail' || e.ok === false) cls += ' fail';
  if (tone === 'pass') cls += ' pass';
  if (e._stage) cls += ' story';
  const stage = e._stage ? `<span class="stage">${STAGE_NO[e._stage]} ${e._stage}</span>` : '';
  const attrs = `data-id="${e._id}" data-kind="${esc(k)}" data-dev="${e._dev}" data-device="${esc(e.device)}" data-ts="${e.ts || 0}"`
    + (e._stage ? ` data-stage="${e._stage}" data-story-ip="${esc(e._story)}" data-story-n="${e._storyN}"` : '');
  let raw = '';
  if (TL.expanded.has(e._id)) raw = rawHtml(e);
  const gapText = (tone === 'gap' || tone === 'lost') ? '⚠ GAP ' : '';
  const title = spec ? ` title="${esc(spec.label + ': ' + spec.about)}"` : '';
  return `<div class="${cls}" ${attrs}><span class="t">${fmtTs(e.ts)}</span> <span class="d">${esc(e.device)}</span> <span class="k"${title}>${esc(k)}</span> ${stage}${gapText}<span class="s">${esc(e._sum)}</span>${raw}</div>`;
}

function rawHtml(e) {
  const clean = {};
  for (const [k, v] of Object.entries(e)) if (!k.startsWith('_')) clean[k] = v;
  let out = '';
  if (e.line) out += 'FortiOS log line:\n' + e.line + '\n\n';
  if (e.sample) out += 'log line (sample of the batch):\n' + e.sample + '\n\n';
  if (e.request) out += (e.api ? e.api + '\n' : '') + 'request:\n' + JSON.stringify(e.request, null, 2) + '\n\nresponse:\n' + JSON.stringify(e.response, null, 2) + '\n\n';
  out += 'event:\n' + JSON.stringify(clean, null, 2);
  return `<pre class="raw">${esc(out)}</pre>`;
}

function frame(now) {
  scheduled = false;
  void now;
  const st = TL.stats;
  st.frames++;
  const t0 = performance.now();
  if (TL.follow) renderTimeline();
  renderStory();
  const dt = performance.now() - t0;
  if (dt > st.maxRenderMs) st.maxRenderMs = dt;
}
let lastIngest = 0;

function renderTimeline() {
  const box = $('#timeline');
  if (TL.needFull) {
    TL.needFull = false;
    TL.pending = [];
    TL.late = [];
    const rows = [];
    for (let i = TL.all.length - 1; i >= 0 && rows.length < MAX_ROWS; i--) {
      const e = TL.all[i];
      if (matches(e)) rows.push(rowHtml(e));
    }
    box.innerHTML = rows.join('');
  } else if (TL.pending.length) {
    const fresh = TL.pending.filter(matches);
    TL.pending = [];
    if (fresh.length) {
      const html = fresh.slice(-MAX_ROWS).reverse().map(rowHtml).join('');
      box.insertAdjacentHTML('afterbegin', html);
    }
  }
  if (TL.late.length) {
    // Events that arrived after newer ones (another device's stream was slower): each goes
    // to its lab-time place among the rows (newest first).
    for (const e of TL.late) {
      if (!matches(e)) continue;
      const ts = e.ts || 0;
      let row = box.firstElementChild;
      while (row && Number(row.dataset.ts) >= ts) row = row.nextElementSibling;
      if (row) row.insertAdjacentHTML('beforebegin', rowHtml(e));
      else if (box.childElementCount < MAX_ROWS) box.insertAdjacentHTML('beforeend', rowHtml(e));
    }
    TL.late = [];
  }
  let extra = box.childElementCount - MAX_ROWS;
  while (extra-- > 0) box.lastElementChild.remove();
  const shown = box.childElementCount;
  const older = Math.max(0, TL.matchCount - shown);
  $('#tl-older').textContent = older ? `${older.toLocaleString()} older matching event(s) not shown (filter to see them)` : '';
  $('#tl-count').textContent = `${TL.all.length.toLocaleString()} events, ${TL.matchCount.toLocaleString()} shown by the filter`;
}

function setupTimeline() {
  $('#timeline').addEventListener('click', (ev) => {
    if (ev.target.closest('pre.raw')) return;
    const row = ev.target.closest('.ev');
    if (!row) return;
    const id = Number(row.dataset.id);
    if (TL.expanded.has(id)) { TL.expanded.delete(id); row.querySelector('pre.raw')?.remove(); }
    else {
      TL.expanded.add(id);
      const e = TL.all.find((x) => x._id === id);
      if (e) row.insertAdjacentHTML('beforeend', rawHtml(e));
    }
  });
  let ft = null;
  $('#tl-filter').addEventListener('input', (ev) => {
    clearTimeout(ft);
    ft = setTimeout(() => { TL.filter = ev.target.value.trim().toLowerCase(); refilter(); }, 120);
  });
  $('#tl-routine').addEventListener('change', (ev) => { TL.routine = ev.target.checked; refilter(); });
  $('#tl-story').addEventListener('change', (ev) => { TL.storyOnly = ev.target.checked; refilter(); });
  $('#tl-follow').addEventListener('change', (ev) => { TL.follow = ev.target.checked; TL.needFull = true; schedule(); });
  $('#story').addEventListener('click', (ev) => {
    if (!ev.target.closest('.chip')) return;
    const box = $('#tl-story');
    box.checked = !box.checked;
    TL.storyOnly = box.checked;
    refilter();
  });
}

let es = null;
function connectEvents() {
  es = new EventSource('/api/events');
  es.addEventListener('hello', (m) => {
    const h = JSON.parse(m.data);
    if (h.reset || (TL.generation !== null && h.generation !== TL.generation && !h.resumed)) clearTimeline();
    TL.generation = h.generation;
    if (typeof h.tz_minutes === 'number' && h.tz_minutes !== TZ_MIN) { TZ_MIN = h.tz_minutes; TL.needFull = true; STORY.dirty = true; }
    if (h.missed) ingest([{ kind: GAP_KIND, device: 'fortilab', ts: Date.now() * 1e6, summary: `${h.missed} older events are no longer kept by the server` }]);
  });
  es.addEventListener('batch', (m) => { lastIngest = performance.now(); ingest(JSON.parse(m.data)); });
  es.onopen = () => setConn('live');
  es.onerror = () => { TL.stats.reconnects++; setConn('reconnecting'); };
}

function setConn(s) {
  const b = $('#conn');
  b.dataset.conn = s;
  b.textContent = s === 'live' ? 'live' : s;
}

// ------------------------------------------------------------------------------------------
// Topology (SVG)

const LINKCOUNT = {};
// The topology links an event pulses (the catalog's link hints).
const LINK_OF_EVENT = (e) => {
  const out = [];
  for (const r of specOf(e)?.links || []) {
    if (!holds(r.when, e)) continue;
    if (r.link === 'endpoint-fortigate' || r.link === 'endpoint-ems') {
      const n = e.endpoint || fctName(e.fctuid) || STORY.names.get(e.ip || e.srcip);
      if (n) out.push(n + (r.link === 'endpoint-ems' ? '-ems' : '-fortigate'));
    } else if (r.link === 'sender-faz') {
      const from = e.from || '';
      if (from === (STATE.report?.fortigate?.serial)) out.push('fgt-faz');
      else { const n = fctName(from); if (n) out.push(n + '-faz'); }
    } else out.push(r.link);
  }
  return out;
};

function fctName(uid) {
  if (!uid) return null;
  for (const ep of (STATE.endpoints || [])) if (ep.fctuid === uid) return ep.name;
  return null;
}

const pulsing = new Set();
function pulseFor(e) {
  const ids = LINK_OF_EVENT(e).filter(Boolean);
  for (const id of ids) {
    LINKCOUNT[id] = (LINKCOUNT[id] || 0) + 1;
    pulsing.add(id);
  }
  if (ids.length) schedulePulse();
}
let pulseTimer = null;
function schedulePulse() {
  if (pulseTimer) return;
  pulseTimer = setTimeout(() => {
    pulseTimer = null;
    for (const id of pulsing) {
      const g = document.querySelector(`#topology [data-link="${CSS.escape(id)}"]`);
      if (g) { g.classList.remove('pulse'); void g.getBBox; g.classList.add('pulse'); setTimeout(() => g.classList.remove('pulse'), 700); }
      const lbl = document.querySelector(`#topology [data-link="${CSS.escape(id)}"] .cnt`);
      if (lbl) lbl.textContent = LINKCOUNT[id] ? ` · ${LINKCOUNT[id]}` : '';
    }
    pulsing.clear();
  }, 120);
}

function renderTopology(st) {
  const svg = $('#topology');
  const eps = (st.endpoints || []);
  const hosts = new Map((st.hosts || []).map((h) => [h.name, h]));
  const links = new Map((st.links || []).map((l) => [l.id, l]));
  const devUp = st.devices || {};
  const rep = st.report || {};
  const addr = st.addr || {};
  const shown = eps.slice(0, 6);
  const pos = {
    internet: [850, 95], fortigate: [500, 95], fortianalyzer: [150, 300], ems: [850, 300],
  };
  const n = shown.length;
  shown.forEach((e, i) => { pos[e.name] = [n === 1 ? 500 : 260 + i * (480 / Math.max(1, n - 1)), 470]; });
  const W = 250, H = 92;
  const line = (id, a, b) => {
    const l = links.get(id) || { state: 'down', kind: 'data' };
    const [x1, y1] = pos[a], [x2, y2] = pos[b];
    const mx = (x1 + x2) / 2, my = (y1 + y2) / 2;
    const label = { data: 'data', log: 'log channel', fabric: 'fabric connector', telemetry: 'telemetry' }[l.kind] || l.kind;
    return `<g class="link" data-link="${esc(id)}" data-kind="${l.kind}" data-state="${l.state}"><line x1="${x1}" y1="${y1}" x2="${x2}" y2="${y2}"/>`
      + `<text class="lbl" x="${mx}" y="${my - 8}" text-anchor="middle">${label}: ${l.state}<tspan class="cnt"></tspan></text></g>`;
  };
  let g = '';
  g += line('fgt-internet', 'fortigate', 'internet');
  g += line('fgt-faz', 'fortigate', 'fortianalyzer');
  g += line('fgt-ems', 'fortigate', 'ems');
  for (const e of shown) {
    g += line(e.name + '-fortigate', e.name, 'fortigate');
    g += line(e.name + '-faz', e.name, 'fortianalyzer');
    g += line(e.name + '-ems', e.name, 'ems');
  }
  const node = (key, title, sub, colour, up) => {
    const [x, y] = pos[key];
    return `<g class="node" data-node="${key}" data-up="${up}"><rect x="${x - W / 2}" y="${y - H / 2}" width="${W}" height="${H}" style="fill: var(--card2); stroke: ${colour}"/>`
      + `<text class="title" x="${x}" y="${y - 10}" text-anchor="middle">${esc(title)} <tspan class="downmark">DOWN</tspan></text>`
      + `<text class="sub" x="${x}" y="${y + 22}" text-anchor="middle">${esc(sub)}</text></g>`;
  };
  g += node('internet', 'Internet', `${rep.sites || 0} lab sites`, 'var(--inet)', devUp.internet !== false);
  g += node('fortigate', (rep.fortigate?.name || 'FortiGate') + ' ' + (rep.fortigate?.version || ''), `port3 ${addr.fortigate_lan || ''} · mgmt ${addr.fortigate_mgmt || ''}`, 'var(--fgt)', devUp.fortigate !== false);
  g += node('fortianalyzer', rep.fortianalyzer?.name || 'FortiAnalyzer', `${addr.fortianalyzer || ''} · v${rep.fortianalyzer?.version || ''}`, 'var(--faz)', devUp.fortianalyzer !== false);
  g += node('ems', rep.ems?.name || 'EMS', `${addr.ems || ''} · v${rep.ems?.version || ''}`, 'var(--ems)', devUp.ems !== false);
  for (const e of shown) {
    const [x, y] = pos[e.name];
    const h = hosts.get(e.name) || { state: 'down' };
    const w = n > 3 ? 150 : 210;
    g += `<g class="node ep" data-endpoint="${esc(e.name)}" data-ip="${esc(e.ip)}" data-state="${h.state}" data-up="${h.state !== 'down'}">`
      + `<rect x="${x - w / 2}" y="${y - 50}" width="${w}" height="100"/>`
      + `<text class="title" x="${x}" y="${y - 18}" text-anchor="middle">${esc(e.name)}</text>`
      + `<text class="sub" x="${x}" y="${y + 8}" text-anchor="middle">${esc(e.ip)}</text>`
      + `<text class="statelabel" x="${x}" y="${y + 34}" text-anchor="middle">${h.state.toUpperCase()}</text></g>`;
  }
  if (svg.dataset.html !== g) {
    svg.innerHTML = g;
    svg.dataset.html = g;
  }
  for (const t of svg.querySelectorAll('.link')) {
    const c = LINKCOUNT[t.dataset.link];
    const cnt = t.querySelector('.cnt');
    const txt = c ? ` · ${c}` : '';
    if (cnt.textContent !== txt) cnt.textContent = txt;
  }
  $('#topology-note').textContent = eps.length > shown.length ? `(${shown.length} of ${eps.length} endpoints shown)` : '';
}

// ------------------------------------------------------------------------------------------
// Panels

let STATE = {};

function pill(ok, yes, no, warn) {
  if (ok === 'warn') return `<span class="pill warn">${esc(warn || yes)}</span>`;
  return ok ? `<span class="pill ok">${esc(yes)}</span>` : `<span class="pill bad">${esc(no)}</span>`;
}
const names = (arr) => (Array.isArray(arr) ? arr.map((x) => x.name || x).join(', ') : '');
const errBox = (v) => (v && v.error ? `<p class="error">${esc(v.error)}</p>` : '');
const arr = (v) => (Array.isArray(v) ? v : []);
const epochStr = (s) => (s ? new Date(s * 1000).toISOString().replace('T', ' ').substring(0, 19) : '—');

function table(headers, rows, attrsFn) {
  const th = headers.map((h) => `<th>${esc(h)}</th>`).join('');
  const body = rows.map((r, i) => `<tr ${attrsFn ? attrsFn(i) : ''}>${r.map((c) => `<td>${c}</td>`).join('')}</tr>`).join('');
  return `<div class="tablewrap"><table><thead><tr>${th}</tr></thead><tbody>${body || `<tr><td colspan="${headers.length}" class="muted">none</td></tr>`}</tbody></table></div>`;
}

// Panels are re-rendered only when their data changed; inputs keep focus and text.
const panelCache = {};
function setPanel(id, html) {
  if (panelCache[id] === html) return;
  const p = document.getElementById(id);
  const keep = {};
  for (const inp of $$('input[type=text], input[type=search], select', p)) if (inp.id) keep[inp.id] = { v: inp.value, f: document.activeElement === inp };
  const results = {};
  for (const r of $$('.result', p)) if (r.id) results[r.id] = r.innerHTML;
  p.innerHTML = html;
  panelCache[id] = html;
  for (const [k, v] of Object.entries(keep)) {
    const inp = document.getElementById(k);
    if (inp) { inp.value = v.v; if (v.f) inp.focus(); }
  }
  for (const [k, v] of Object.entries(results)) { const r = document.getElementById(k); if (r && !r.innerHTML) r.innerHTML = v; }
}

function renderFgt(st) {
  const f = st.fortigate || {};
  const rep = st.report?.fortigate || {};
  if (!f.status) return setPanel('panel-fgt', '<p class="muted">The lab is restarting…</p>');
  const up = st.devices?.fortigate;
  let h = `<div class="prod fgt"><b>${esc(rep.name || 'FortiGate')}</b><span>FortiGate-VM64</span><span>v${esc(rep.version)}</span><span class="muted">${esc(rep.serial)}</span>${pill(up, 'online', 'not answering')}</div>`;
  if (!up) h += errBox(f.status);
  const faz = f.faz || {};
  const ems = arr(f.ems)[0] || {};
  h += `<h3>Security Fabric › Fabric Connectors</h3>` + table(['Connector', 'Server', 'Status', 'Registration'], [
    ['FortiAnalyzer Logging', esc(faz.server || ''), pill(!!faz.connected, 'connected', 'disconnected'), esc(faz.registration || (faz.error ? 'error' : ''))],
    ['FortiClient EMS', esc(ems.server || ''), pill(!!ems.connected, 'connected', 'disconnected'), esc(ems.status || '')],
  ]);
  h += `<h3>Policy &amp; Objects › Firewall Policy</h3>` + errBox(f.policy) + table(
    ['ID', 'Name', 'From', 'To', 'Source', 'Destination', 'Service', 'Action', 'NAT', 'Security Profiles', 'Log'],
    arr(f.policy).map((p) => [p.policyid, esc(p.name), esc(names(p.srcintf)), esc(names(p.dstintf)), esc(names(p.srcaddr)), esc(names(p.dstaddr)), esc(names(p.service)),
      p.action === 'accept' ? pill(true, 'ACCEPT') : pill(false, '', String(p.action || '').toUpperCase()), esc(p.nat), esc([p['webfilter-profile'], p['av-profile'], p['ips-sensor'], p['ssl-ssh-profile']].filter(Boolean).join(', ')), esc(p.logtraffic)]),
  );
  const stats = new Map(arr(f.stitch_stats).map((s) => [s.name, s]));
  h += `<h3>Security Fabric › Automation</h3>` + errBox(f.stitches) + table(['Stitch', 'Status', 'Trigger', 'Actions', 'Trigger Count', 'Last Triggered'],
    arr(f.stitches).map((s) => { const x = stats.get(s.name) || {}; return [`<b>${esc(s.name)}</b>`, s.status === 'enable' ? pill(true, 'enabled') : '<span class="pill off">disabled</span>', esc(s.trigger), esc(names(s.action) || names(s.actions)), `<b>${x.triggered ?? 0}</b>`, x.last_triggered ? epochStr(x.last_triggered) : '—']; }),
    (i) => `data-stitch="${esc(arr(f.stitches)[i]?.name)}"`);
  h += `<h3>Compromised Hosts <span class="crumb">(the FortiGate's list, acted on once until FortiAnalyzer acknowledges; lab surface)</span></h3>` + errBox(f.compromised) + table(['Host', 'Verdict', 'IOC level', 'Threat', 'Detect method', 'Stitches run', 'Last seen'],
    arr(f.compromised).map((c) => [esc(c.srcip) + (c.hostname ? ' ' + esc(c.hostname) : ''), pill(false, '', c.verdict), esc(c.ioc_level), esc(c.threat), esc(c.detect_method), esc((c.stitches_run || []).join(', ')), epochStr(c.last_seen)]));
  h += `<h3>Monitor › Quarantine Monitor (banned IPs)</h3>` + errBox(f.banned) + table(['IP', 'Source', 'Created', 'Expires'],
    arr(f.banned).map((b) => [esc(b.ip_address), esc(b.source), epochStr(b.created), b.expires ? epochStr(b.expires) : 'never']));
  const logs = f.logs || {};
  h += `<h3>Log &amp; Report › Web Filter</h3>` + table(['Date/Time', 'Source', 'URL', 'Category', 'Action', 'Profile'],
    arr(logs.webfilter).map((l) => [esc(l.date + ' ' + l.time), esc(l.srcip), esc((l.hostname || '') + (l.url || '')), esc(l.catdesc), l.action === 'blocked' ? pill(false, '', 'blocked') : esc(l.action), esc(l.profile)]));
  h += `<h3>Log &amp; Report › Forward Traffic</h3>` + table(['Date/Time', 'Source', 'Destination', 'Service', 'Policy', 'Action', 'Bytes'],
    arr(logs.traffic).map((l) => [esc(l.date + ' ' + l.time), esc(l.srcip), esc(l.dstip + ':' + l.dstport), esc(l.service), esc(l.policyid), esc(l.action), esc((l.sentbyte || 0) + ' / ' + (l.rcvdbyte || 0))]));
  h += `<h3>Log &amp; Report › System Events</h3>` + table(['Date/Time', 'Log ID', 'Level', 'Message'],
    arr(logs.event).map((l) => [esc(l.date + ' ' + l.time), esc(l.logid), esc(l.level), esc(l.logdesc ? l.logdesc + ': ' : '') + esc(l.msg)]));
  setPanel('panel-fgt', h);
}

function renderFaz(st) {
  const z = st.fortianalyzer || {};
  const rep = st.report?.fortianalyzer || {};
  const up = st.devices?.fortianalyzer;
  let h = `<div class="prod faz"><b>${esc(rep.name || 'FortiAnalyzer')}</b><span>FortiAnalyzer-VM64</span><span>v${esc(rep.version)}</span><span class="muted">${esc(rep.serial)}</span>${pill(up, 'online', 'not answering')}</div>`;
  h += `<h3>Incidents &amp; Events › Compromised Hosts</h3>` + errBox(z.compromised) + table(['Endpoint', 'IP', 'User', 'Verdict', 'Threats', 'Events', 'First Detected', 'Last Detected', 'Acknowledged', ''],
    arr(z.compromised).map((c) => [esc(c.epname || ''), `<b>${esc(c.epip)}</b>`, esc(c.user || ''), c.verdict === 'Infected' ? pill(false, '', 'Infected') : pill('warn', '', '', c.verdict),
      esc(c['threat-count']), esc(c['event-count']), esc(c['first-detected']), esc(c['last-detected']),
      c.ack ? pill(true, 'Acknowledged' + (c['ack-by'] ? ' by ' + c['ack-by'] : '')) : '<span class="pill warn">No</span>',
      c.ack ? '' : `<button class="ok" id="faz-ack-${idOf(c.epip)}" data-ack-ip="${esc(c.epip)}">Acknowledge</button>`]),
    (i) => { const c = arr(z.compromised)[i]; return `data-compromised-ip="${esc(c.epip)}" data-verdict="${esc(c.verdict)}" data-ack="${c.ack ? 1 : 0}"`; });
  h += `<h3>Log View <span class="crumb">search filter as in the GUI, e.g. <code>srcip==10.115.2.52 hostname=www.eicar.org</code></span></h3>`
    + `<div class="row"><select id="faz-logtype"><option value="traffic">Traffic</option><option value="webfilter">Web Filter</option><option value="event">Event</option><option value="virus">AntiVirus</option></select>`
    + `<input type="search" id="faz-filter" placeholder="filter"><button id="faz-search">Go</button></div><div id="faz-results" class="result"></div>`;
  h += `<h3>Device Manager</h3>` + errBox(z.devices) + table(['Device Name', 'Serial', 'Platform', 'IP', 'Connectivity', 'Authorized', 'Firmware'],
    arr(z.devices).map((d) => [`<b>${esc(d.name)}</b>`, esc(d.sn), esc(d.platform_str), esc(d.ip), d.conn_status === 1 ? pill(true, 'up') : pill(false, '', 'down'), d.authorized ? pill(true, 'authorized') : pill('warn', '', '', 'unauthorized'), esc(`${d.os_ver || ''} MR${d.mr ?? ''} p${d.patch ?? ''}`)]),
    (i) => `data-faz-device="${esc(arr(z.devices)[i]?.name)}"`);
  h += `<h3>Alerts</h3>` + errBox(z.alerts) + table(['Time', 'Handler', 'Subject', 'Severity', 'Ack'],
    arr(z.alerts).slice(0, 12).map((a) => [esc(a.alerttime), esc(a.triggername), esc(a.subject), a.severity === 'high' || a.severity === 'critical' ? pill(false, '', a.severity) : esc(a.severity), esc(a.ackflag)]));
  setPanel('panel-faz', h);
}

function renderEms(st) {
  const m = st.ems || {};
  const rep = st.report?.ems || {};
  const up = st.devices?.ems;
  let h = `<div class="prod ems"><b>${esc(rep.name || 'EMS')}</b><span>FortiClient EMS</span><span>v${esc(rep.version)}</span><span class="muted">${esc(rep.serial)}</span>${pill(up, 'online', 'not answering')}</div>`;
  h += `<h3>Endpoints › All Endpoints</h3>` + errBox(m.endpoints) + table(['Device', 'IP', 'MAC', 'User', 'FortiClient', 'Status', 'Quarantine', 'Access code', ''],
    arr(m.endpoints).map((e) => [`<b>${esc(e.name)}</b>`, esc(e.ip_addr), esc(e.mac_addr), esc(e.username), esc(e.fct_version), e.is_ems_online ? pill(true, 'online') : '<span class="pill off">offline</span>',
      e.is_quarantined ? pill(false, '', 'Quarantined') : pill(true, 'Not quarantined'),
      e.is_quarantined && e.quarantine_access_code ? `<span class="code" data-access-code="${esc(e.quarantine_access_code)}">${esc(e.quarantine_access_code)}</span>` : '—',
      e.is_quarantined ? `<button class="ok" id="ems-unq-${idOf(e.ip_addr)}" data-ems-action="unquarantine" data-ip="${esc(e.ip_addr)}">Unquarantine</button>`
        : `<button class="danger" id="ems-q-${idOf(e.ip_addr)}" data-ems-action="quarantine" data-ip="${esc(e.ip_addr)}">Quarantine</button>`]),
    (i) => { const e = arr(m.endpoints)[i]; return `data-ems-ip="${esc(e.ip_addr)}" data-quarantined="${e.is_quarantined ? 1 : 0}"`; });
  h += `<h3>Administration › Fabric Devices</h3>` + errBox(m.fabric) + table(['Name', 'Serial', 'Type', 'Authorized', 'Last seen'],
    arr(m.fabric).map((d) => [esc(d.name), esc(d.sn), esc(d.type), d.authorized ? pill(true, 'authorized') : pill('warn', '', '', 'pending'), epochStr(d.last_seen)]));
  setPanel('panel-ems', h);
}

function renderEndpoints(st) {
  const hosts = new Map((st.hosts || []).map((x) => [x.name, x]));
  let h = '';
  for (const e of (st.endpoints || [])) {
    const s = e.status || {};
    const hs = hosts.get(e.name) || {};
    const id = idOf(e.name);
    const stp = { clean: pill(true, 'clean'), compromised: pill('warn', '', '', 'compromised'), quarantined: pill(false, '', 'QUARANTINED'), down: pill(false, '', 'not answering') }[hs.state] || '';
    h += `<div class="epcard" data-endpoint-card="${esc(e.name)}"><div class="row"><b>${esc(e.name)}</b><span>${esc(e.ip)}</span><span class="muted">${esc(e.mac)}</span>${stp}<span class="muted small">FCTUID ${esc(e.fctuid)}</span></div>`;
    if (s.error) h += errBox(s);
    else {
      h += `<div class="small">FortiClient ${esc(s.fct_version)} · EMS ${s.registered ? 'registered' : 'not registered'} · keep-alive ${esc(s.ka_interval_ms)} ms · log upload ${s.log_upload?.connected ? 'connected' : 'disconnected'} (${esc(s.log_upload?.registration || '')})</div>`;
      if (s.quarantined) h += `<div class="error">${esc(s.quarantine_message || 'Quarantined')}</div>`;
    }
    h += `<div class="row"><label for="browse-url-${id}">Browse</label><input type="text" id="browse-url-${id}" value="http://www.eicar.org/download/eicar.com"><button data-browse="${esc(e.name)}" id="browse-${id}">Go</button></div>`;
    h += `<div class="row"><label for="code-${id}">Access code</label><input type="text" id="code-${id}" placeholder="from EMS" value=""><button data-code="${esc(e.name)}" id="code-btn-${id}">Submit</button></div>`;
    h += `<div class="result" id="ep-result-${id}"></div></div>`;
  }
  setPanel('panel-endpoints', h || '<p class="muted">No endpoints.</p>');
}

function renderDevices(st) {
  const procs = st.lab?.procs || [];
  const devs = [['fortigate', 'FortiGate'], ['fortianalyzer', 'FortiAnalyzer'], ['ems', 'EMS'], ['endpoints', 'Endpoints'], ['internet', 'lab Internet']];
  const up = st.devices || {};
  let h = '<p class="muted">Demo controls: crash (SIGKILL) or restart a device; the dashboard shows the gap and reconnects.</p>';
  h += table(['Device', 'Processes', 'API', ''], devs.map(([k, label]) => {
    const ps = procs.filter((p) => (k === 'endpoints' ? p.label.startsWith('endpoints') : p.label === k));
    const run = ps.length && ps.every((p) => p.running);
    const apiUp = k === 'endpoints' ? (st.hosts || []).every((x) => x.state !== 'down') : up[k];
    return [`<b>${label}</b>`, ps.map((p) => `${esc(p.label)} ${p.running ? pill(true, 'running') + ' pid ' + p.pid : pill(false, '', 'stopped')}`).join('<br>'), pill(!!apiUp, 'answering', 'down'),
      `<button class="danger" data-device="${k}" data-action="kill" id="dev-kill-${k}">Kill</button> <button data-device="${k}" data-action="restart" id="dev-restart-${k}">${run ? 'Restart' : 'Start'}</button>`];
  }), (i) => `data-device-row="${devs[i][0]}"`);
  setPanel('panel-devices', h);
}

// Link faults (the Links tab): the lab's links with their condition and counters.
async function renderLinks() {
  const r = await api('/api/links');
  const links = arr(r?.links);
  const sel = $('#link-pair');
  const cur = sel.value;
  sel.innerHTML = links.map((l) => `<option value="${esc(l.a + '|' + l.b)}">${esc(l.a)} &harr; ${esc(l.b)}</option>`).join('');
  if (cur) sel.value = cur;
  $('#link-table').innerHTML = table(['Link', 'State', 'Latency', 'Loss', 'Rate', 'Connections', 'Bytes'], links.map((l) => [
    `<b>${esc(l.a)} &harr; ${esc(l.b)}</b>`, pill(l.state === 'up', 'up', 'down'), esc(l.latency_ms ? l.latency_ms + ' ms' : '-'),
    esc(l.loss ? l.loss : '-'), esc(l.rate || '-'), esc(`${l.open} open, ${l.held} held, ${l.connections} in all`), esc(`${l.bytes_up} / ${l.bytes_down}`)]), (i) => `data-link-row="${esc(links[i].name)}"`);
}

function renderHeader(st) {
  const lab = st.lab || {};
  const b = $('#lab-status');
  b.dataset.status = lab.status || 'starting';
  b.textContent = lab.status === 'running' ? 'lab running' : (lab.message || lab.status || 'starting');
  if (lab.name) $('#labname').textContent = `${lab.name} · seed ${lab.seed ?? '?'} · ${lab.timing || ''}`;
  if (lab.speed) $('#speed-label').textContent = `×${lab.speed}`;
  if (lab.now) { CLOCK.lab = lab.now; CLOCK.at = performance.now(); CLOCK.speed = lab.speed || 1; }
}

const CLOCK = { lab: 0, at: 0, speed: 1 };
function tickClock() {
  if (CLOCK.lab) {
    const ns = CLOCK.lab + (performance.now() - CLOCK.at) * 1e6 * CLOCK.speed;
    $('#clock').textContent = fmtTs(ns).substring(0, 8);
  }
}

function renderPlayer(p) {
  if (!p) return;
  const b = $('#player-status');
  b.dataset.status = p.status;
  b.textContent = p.status;
  $('#player-name').textContent = p.scenario ? `${p.scenario} (${p.file})` : '';
  const ol = $('#player-steps');
  const html = (p.steps || []).map((s) => `<li data-step="${s.index}" data-step-status="${s.status}">${esc(s.name)}${s.ms != null ? ` <span class="muted small">${s.ms} ms</span>` : ''}${s.status === 'failed' ? `<span class="msg">${esc(s.message)}</span>` : ''}</li>`).join('');
  if (ol.dataset.html !== html) {
    ol.innerHTML = html;
    ol.dataset.html = html;
    const cur = ol.querySelector('[data-step-status=running]');
    if (cur) cur.scrollIntoView({ block: 'nearest' });
  }
  $('#player-error').textContent = p.error || '';
  const active = ['starting', 'running', 'paused'].includes(p.status);
  $('#btn-run').disabled = active;
  $('#btn-stop').disabled = !active;
  $('#btn-pause').disabled = !active;
  $('#btn-step').disabled = false;
  $('#btn-resume').disabled = !active;
  $('#btn-reset').disabled = active;
  $('#btn-speed').disabled = active;
}

function applyState(st) {
  STATE = st;
  window.fortilab.state = st;
  renderHeader(st);
  if (st.player) renderPlayer(st.player);
  if (!st.fortigate && st.lab?.status !== 'running') return;
  renderTopology(st);
  renderFgt(st);
  renderFaz(st);
  renderEms(st);
  renderEndpoints(st);
  renderDevices(st);
  for (const h of (st.hosts || [])) STORY.names.set(h.ip, h.name);
}

let stateEs = null;
function connectState() {
  stateEs = new EventSource('/api/state/stream');
  stateEs.addEventListener('state', (m) => applyState(JSON.parse(m.data)));
}

// ------------------------------------------------------------------------------------------
// Buttons (the server calls the vendor APIs)

async function act(btn, path, body, okMsg) {
  if (btn) btn.disabled = true;
  try {
    const r = await api(path, body);
    if (r && r.ok) { toast(okMsg(r)); return r; }
    toast((r && r.error) || 'failed', true);
    return r;
  } catch (e) {
    toast(String(e), true);
    return null;
  } finally {
    if (btn) btn.disabled = false;
  }
}

function setupButtons() {
  document.addEventListener('click', async (ev) => {
    const b = ev.target.closest('button');
    if (!b) return;
    if (b.dataset.ackIp) {
      await act(b, '/api/faz/ack', { ip: b.dataset.ackIp }, () => `FortiAnalyzer: ${b.dataset.ackIp} acknowledged`);
    } else if (b.dataset.emsAction) {
      const a = b.dataset.emsAction;
      await act(b, `/api/ems/${a}`, { ip: b.dataset.ip }, (r) => `EMS: ${a} ${b.dataset.ip}` + (r.access_code ? `\naccess code ${r.access_code}` : ''));
    } else if (b.dataset.browse) {
      const name = b.dataset.browse, id = idOf(name);
      const url = $('#browse-url-' + id).value;
      const r = await act(b, `/api/endpoint/${encodeURIComponent(name)}/fetch`, { url }, (r) => `${name}: ${r.result?.ok ? 'HTTP ' + r.result.status : 'blocked by ' + (r.result?.blocked_by || r.result?.error)}`);
      if (r) $('#ep-result-' + id).textContent = JSON.stringify(r.result || r, null, 1);
    } else if (b.dataset.code) {
      const name = b.dataset.code, id = idOf(name);
      const code = $('#code-' + id).value.trim();
      const r = await act(b, `/api/endpoint/${encodeURIComponent(name)}/access-code`, { code }, (r) => `${name}: access code ${r.result?.ok ? 'accepted' : 'refused'}`);
      if (r) $('#ep-result-' + id).textContent = JSON.stringify(r.result || r, null, 1);
    } else if (b.dataset.device && b.dataset.action) {
      await act(b, `/api/device/${b.dataset.device}/${b.dataset.action}`, {}, (r) => r.message);
    } else if (b.id === 'faz-search') {
      const r = await api('/api/faz/logsearch', { logtype: $('#faz-logtype').value, filter: $('#faz-filter').value, limit: 50 });
      const out = $('#faz-results');
      if (!r.ok) { out.innerHTML = `<p class="error">${esc(r.error)}</p>`; return; }
      const rows = arr(r.result?.data);
      out.innerHTML = `<div>${esc(r.result?.['total-count'] ?? rows.length)} log(s)</div>` + table(['Date/Time', 'Device', 'Source', 'Destination', 'Host / URL', 'Action', 'Log ID'],
        rows.map((l) => [esc((l.date || '') + ' ' + (l.time || '')), esc(l.devname || l.devid), esc(l.srcip), esc(l.dstip), esc((l.hostname || '') + (l.url || '')), esc(l.action), esc(l.logid)]));
    } else if (b.id === 'link-apply') {
      const [a, bb] = $('#link-pair').value.split('|');
      const req = { a, b: bb, state: $('#link-state').value };
      const lat = $('#link-latency').value.trim(), loss = $('#link-loss').value.trim(), rate = $('#link-rate').value.trim();
      if (lat) req.latency = lat;
      if (loss) req.loss = Number(loss);
      if (rate) req.rate = rate;
      await act(b, '/api/link', req, (r) => `link ${r.link?.name}: ${r.link?.state}`);
      await renderLinks();
    } else if (b.dataset.tab) {
      for (const t of $$('.tabs button')) t.classList.toggle('active', t === b);
      for (const p of $$('.panel')) p.classList.toggle('active', p.id === 'panel-' + b.dataset.tab);
      if (b.dataset.tab === 'links') await renderLinks();
    }
  });

  $('#btn-run').addEventListener('click', async () => {
    const file = $('#scenario-select').value;
    await act($('#btn-run'), '/api/scenario/run', { file, fresh: $('#fresh').checked }, () => `running ${file}`);
  });
  for (const cmd of ['pause', 'step', 'resume', 'stop']) {
    $('#btn-' + cmd).addEventListener('click', async () => {
      const r = await api('/api/scenario/' + cmd, {});
      if (!r.ok) toast(r.error, true);
      else if (r.player) renderPlayer(r.player);
    });
  }
  $('#btn-reset').addEventListener('click', () => act($('#btn-reset'), '/api/lab/reset', {}, () => 'restarting the lab (same seed)'));
  // Lab snapshots: the whole lab saved under a name, restored into the running lab.
  const snapList = async () => {
    const r = await api('/api/snapshots');
    const dl = $('#snap-list');
    dl.textContent = '';
    for (const s of (r && r.snapshots) || []) {
      const o = document.createElement('option');
      o.value = s.name;
      o.label = `lab time ${s.lab_time}`;
      dl.appendChild(o);
    }
  };
  const snap = (op) => async () => {
    const name = $('#snap-name').value.trim();
    const btn = $(op === 'save' ? '#btn-snap-save' : '#btn-snap-restore');
    await act(btn, '/api/snapshot', { op, name }, (v) => `snapshot ${name} ${op === 'save' ? 'saved' : 'restored'} (lab time ${v.snapshot.lab_time}, ${v.snapshot.elapsed_ms} ms)`);
    snapList();
  };
  $('#btn-snap-save').addEventListener('click', snap('save'));
  $('#btn-snap-restore').addEventListener('click', snap('restore'));
  snapList();
  $('#btn-speed').addEventListener('click', () => {
    const speed = Number($('#speed').value);
    act($('#btn-speed'), '/api/lab/speed', { speed }, () => `restarting the lab at ×${speed}`);
  });
  $('#btn-contrast').addEventListener('click', (ev) => {
    const on = document.body.classList.toggle('hc');
    ev.target.setAttribute('aria-pressed', String(on));
    try { localStorage.setItem('fortilab.hc', on ? '1' : '0'); } catch (_) { /* private mode */ }
  });
  const fs = (d) => {
    const cur = parseFloat(getComputedStyle(document.documentElement).getPropertyValue('--fs')) || 18;
    const v = Math.min(34, Math.max(12, cur + d));
    document.documentElement.style.setProperty('--fs', v + 'px');
    try { localStorage.setItem('fortilab.fs', String(v)); } catch (_) { /* ignore */ }
  };
  $('#btn-font-up').addEventListener('click', () => fs(2));
  $('#btn-font-down').addEventListener('click', () => fs(-2));
  try {
    if (localStorage.getItem('fortilab.hc') === '1') { document.body.classList.add('hc'); $('#btn-contrast').setAttribute('aria-pressed', 'true'); }
    const f = localStorage.getItem('fortilab.fs');
    if (f) document.documentElement.style.setProperty('--fs', f + 'px');
  } catch (_) { /* ignore */ }
}

async function loadScenarios() {
  const list = await api('/api/scenarios');
  const sel = $('#scenario-select');
  sel.innerHTML = (list || []).map((s) => `<option value="${esc(s.file)}">${esc(s.name)}</option>`).join('');
}

// Test and console hooks.
window.fortilab = {
  state: null,
  stats: () => Object.assign({ events: TL.all.length, rows: $('#timeline').childElementCount, matching: TL.matchCount }, TL.stats),
  resetStats: () => { Object.assign(TL.stats, { maxFrameGapMs: 0, maxRenderMs: 0, frames: 0, lastFrame: 0 }); FRAME_GAPS.length = 0; },
  // Gaps between animation frames over `ms` (a promise): UI smoothness, independent of events.
  measureFrames: (ms) => new Promise((resolve) => {
    const gaps = [];
    const t0 = performance.now();
    let last = 0;
    const f = (now) => {
      if (last) gaps.push(now - last);
      last = now;
      if (now - t0 < ms) requestAnimationFrame(f);
      else resolve({ n: gaps.length, p50: percentile(gaps, 50), p95: percentile(gaps, 95), p99: percentile(gaps, 99), max: percentile(gaps, 100) });
    };
    requestAnimationFrame(f);
  }),
  frameGaps: () => ({ n: FRAME_GAPS.length, p50: percentile(FRAME_GAPS, 50), p95: percentile(FRAME_GAPS, 95), p99: percentile(FRAME_GAPS, 99), max: percentile(FRAME_GAPS, 100) }),
  catalog: () => Object.keys(KINDS),
  stories: () => STORY.list.map((s) => ({ ip: s.ip, done: s.done, stages: Object.fromEntries(Object.entries(s.stages).map(([k, e]) => [k, { ts: e.ts, kind: e.kind, device: e.device }])) })),
};

// A frame loop that only runs while events flow measures UI stalls (gaps between frames).
const FRAME_GAPS = [];
function percentile(a, p) {
  if (!a.length) return 0;
  const s = a.slice().sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))];
}
function stallProbe() {
  requestAnimationFrame((now) => {
    const st = TL.stats;
    if (performance.now() - lastIngest < 1500) {
      if (st.lastFrame) {
        const gap = now - st.lastFrame;
        st.maxFrameGapMs = Math.max(st.maxFrameGapMs, gap);
        if (FRAME_GAPS.length < 100000) FRAME_GAPS.push(gap);
      }
      st.lastFrame = now;
    } else {
      st.lastFrame = 0;
    }
    stallProbe();
  });
}

// ------------------------------------------------------------------------------------------
// Exercise panel (`fortilab exercise`): tasks, ticks, hints on request, start a task over.

// A little Markdown: ``` blocks, `code`, **bold**, *em*, "- " lists, paragraphs. Escaped first.
function md(text) {
  const out = [];
  const blocks = String(text || '').split(/```/);
  blocks.forEach((b, i) => {
    if (i % 2 === 1) { out.push('<pre>' + esc(b.replace(/^\w*\n/, '')) + '</pre>'); return; }
    const inline = (t) => esc(t).replace(/`([^`]+)`/g, '<code>$1</code>')
      .replace(/\*\*([^*]+)\*\*/g, '<b>$1</b>').replace(/\*([^*]+)\*/g, '<i>$1</i>');
    for (const para of b.split(/\n\s*\n/)) {
      const lines = para.split('\n').filter((l) => l.trim());
      if (!lines.length) continue;
      if (lines.every((l) => /^\s*- /.test(l))) {
        out.push('<ul>' + lines.map((l) => '<li>' + inline(l.replace(/^\s*- /, '')) + '</li>').join('') + '</ul>');
      } else {
        out.push('<p>' + lines.map(inline).join(' ') + '</p>');
      }
    }
  });
  return out.join('');
}

const EX = { open: null, sig: '' };

function renderExercise(v) {
  const card = $('#exercise-card');
  if (!v || !v.exercise) { card.hidden = true; return; }
  card.hidden = false;
  const sig = JSON.stringify(v);
  if (sig === EX.sig) return;
  EX.sig = sig;
  $('#ex-title').textContent = v.exercise.title || v.exercise.name;
  const badge = $('#ex-count');
  badge.textContent = v.done + '/' + v.total;
  badge.dataset.status = v.done === v.total ? 'passed' : 'running';
  $('#ex-desc').innerHTML = md(v.exercise.description);
  const ol = $('#ex-tasks');
  ol.innerHTML = '';
  for (const t of v.tasks) {
    const li = document.createElement('li');
    const state = t.done ? 'done' : (t.id === v.current ? 'current' : 'todo');
    li.dataset.state = state;
    li.dataset.task = t.id;
    const mark = t.done ? '&#10004;' : (state === 'current' ? '&#9654;' : '&middot;');
    let html = '<span class="mark">' + mark + '</span>' + esc(t.title);
    const open = state === 'current' || EX.open === t.id;
    if (open) {
      html += '<div class="body">' + md(t.text);
      for (const h of t.hints || []) html += '<div class="hint">' + md(h) + '</div>';
      html += '<ul class="checks">' + (t.last_seen && t.last_seen.length ? t.last_seen : t.checks).map((c) => '<li>' + esc(c) + '</li>').join('') + '</ul>';
      html += '<div class="actions">';
      if (t.hints_shown < t.hints_total) html += '<button data-hint="' + esc(t.id) + '">Show a hint (' + (t.hints_shown + 1) + '/' + t.hints_total + ')</button>';
      if (t.snapshot && t.snapshot.saved) html += '<button data-restart="' + esc(t.id) + '" title="Restore the lab as it was when this task began">Start this task over</button>';
      else if (t.started && !t.snapshot) html += '<span class="muted small">saving the lab as this task begins&hellip;</span>';
      else if (t.snapshot && !t.snapshot.saved) html += '<span class="muted small">no snapshot of this task\'s start: ' + esc(t.snapshot.error) + '</span>';
      html += '</div></div>';
    }
    li.innerHTML = html;
    li.addEventListener('click', (e) => {
      if (e.target.closest('button') || e.target.closest('.body')) return;
      EX.open = EX.open === t.id ? null : t.id;
      EX.sig = '';
      renderExercise(v);
    });
    ol.appendChild(li);
  }
  for (const b of $$('button[data-hint]', ol)) {
    b.addEventListener('click', async () => {
      const r = await api('/api/exercise/hint', { task: b.dataset.hint });
      if (!r.ok) toast(r.error, true);
      pollExercise();
    });
  }
  for (const b of $$('button[data-restart]', ol)) {
    b.addEventListener('click', async () => {
      if (!confirm('Start this task over? The lab goes back to how it was when the task began.')) return;
      b.disabled = true;
      const r = await api('/api/exercise/restart', { task: b.dataset.restart });
      if (r.ok) toast('task ' + b.dataset.restart + ' started over'); else toast(r.error, true);
      pollExercise();
    });
  }
}

async function pollExercise() {
  try { renderExercise(await api('/api/exercise')); } catch (_) { /* the next poll retries */ }
}

document.addEventListener('DOMContentLoaded', () => {
  setupTimeline();
  setupButtons();
  // The page shell paints first; the streams (which may replay many events and fill every
  // panel) start after that first frame.
  requestAnimationFrame(() => setTimeout(() => {
    connectEvents();
    connectState();
    loadScenarios();
    pollExercise();
    setInterval(() => { if (!$('#exercise-card').hidden) pollExercise(); }, 700);
    setInterval(tickClock, 250);
    stallProbe();
  }, 0));
});
