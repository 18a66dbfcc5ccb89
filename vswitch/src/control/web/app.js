// vfabric web console: a dependency-free single-page app (plain ES2020, no build step).
// It reads the read-only JSON API, polls only while the page is visible and computes rates
// client-side from successive samples. No data string ever goes through innerHTML: every
// element is built with createElement / textContent.
'use strict';
(() => {
// ---- Constants ---------------------------------------------------------------------
const POLL_MS = 1000;          // /api/stats (and /api/fdb on a port page)
const PORTS_MS = 5000;         // /api/ports, /api/port/NAME
const HISTORY_MS = 300000;     // sparkline window: 5 minutes
const MAX_GAP_MS = 5000;       // samples further apart restart the rate computation
const SVGNS = 'http://www.w3.org/2000/svg';
const KINDS = { 'vhost-user-net': 'vm', tap: 'tap', vxlan: 'vxlan', nat: 'nat' };
const KIND_LABEL = { vm: 'VM', tap: 'TAP', vxlan: 'VXLAN', nat: 'NAT' };
const GAUGES = new Set(['fdb_port_entries']);
const FIRST_COUNTERS = ['rx_frames', 'rx_bytes', 'tx_frames', 'tx_bytes'];

// ---- State (exposed as window.vfabric.state for debugging) -------------------------
const state = {
  ports: [], disks: [], portsAt: 0, portsStale: true,
  samples: new Map(),   // "port:N" / "disk:N" -> {t, counters, connected, connections}
  rates: new Map(),     // same keys -> {valid, dt, d:{}, r:{}, rxbps, txbps, bps, pps, drops}
  history: new Map(),   // "port:N" -> [[t, rxbps, txbps], ...] (last 5 minutes)
  switches: new Map(),  // switch name -> {cur, prev} FDB totals lines
  drops: [],            // drop counters that grew in the last interval
  fdb: null,            // /api/fdb rows (port page only)
  detail: null, detailFor: null, detailAt: 0, detailErr: null,
  updates: 0, lastUpdate: null, error: null,
  route: { view: 'overview' }, timer: null, busy: false,
  trace: { values: null, result: null },
  capture: null,        // AbortController of a running capture
};
window.vfabric = { state };
let view = null;

// ---- DOM helpers -------------------------------------------------------------------
function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}
function add(el, kids) {
  for (const k of kids.flat(3)) {
    if (k == null || k === false) continue;
    el.append(k instanceof Node ? k : String(k)); // strings become text nodes
  }
  return el;
}
const h = (tag, attrs, ...kids) => {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  return add(el, kids);
};
const sv = (tag, attrs, ...kids) => {
  const el = document.createElementNS(SVGNS, tag);
  setAttrs(el, attrs);
  return add(el, kids);
};
const $ = (sel) => document.querySelector(sel);
const setText = (el, t) => { t = String(t); if (el.textContent !== t) el.textContent = t; };
const setData = (el, k, v) => { v = String(v); if (el.dataset[k] !== v) el.dataset[k] = v; };
const enc = encodeURIComponent;
const portHref = (name) => '#/port/' + enc(name);
const safeDecode = (s) => { try { return decodeURIComponent(s); } catch (_) { return s; } };

// Keyed table rows: keeps existing <tr>s (so clicks and focus survive updates).
function syncRows(tbody, items, keyOf, create, update) {
  const old = new Map();
  for (const tr of tbody.children) old.set(tr._key, tr);
  const rows = items.map((it) => {
    const k = keyOf(it);
    let tr = old.get(k);
    if (tr) old.delete(k);
    else { tr = create(it); tr._key = k; }
    update(tr, it);
    return tr;
  });
  for (const tr of old.values()) tr.remove();
  rows.forEach((tr, i) => { if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null); });
}

// ---- Formatting --------------------------------------------------------------------
function si(n, unit) {
  const a = Math.abs(n);
  for (const [d, p] of [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']]) {
    if (a >= d) return (n / d).toFixed(n / d >= 100 ? 0 : 1) + ' ' + p + unit;
  }
  return (a >= 100 || Number.isInteger(n) ? Math.round(n) : n.toFixed(1)) + ' ' + unit;
}
const fmtBps = (b) => si(b, 'bit/s');
const fmtPps = (p) => si(p, 'pps');
const fmtInt = (n) => (typeof n === 'number' ? n.toLocaleString('en-US') : String(n));
const fmtRate = (r) => (r === 0 ? '0' : r < 10 ? r.toFixed(1) : fmtInt(Math.round(r)));
function fmtVal(v, nullAs) {
  if (v == null) return nullAs || '—';
  if (Array.isArray(v)) return v.length ? v.map((x) => fmtVal(x)).join(', ') : 'none';
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}
const kindOf = (p) => KINDS[p.type] || 'vm';
const isDrop = (c) => c.startsWith('rx_drop_') || c.startsWith('tx_drop_') || c.startsWith('drop_') ||
  c === 'impair_lost' || c === 'impair_over_rate';
const basename = (p) => String(p || '').split('/').pop();
function loadColor(bps) {
  if (!(bps > 0)) return '#9ca3af';
  const x = Math.min(1, Math.max(0, (Math.log10(bps) - 3) / 7)); // 1 kbit/s .. 10 Gbit/s
  return `hsl(${Math.round(130 - 130 * x)}, 72%, ${x < 0.5 ? 38 : 45}%)`;
}

// ---- Data: fetching and rates ------------------------------------------------------
async function getJSON(url) {
  const r = await fetch(url, { cache: 'no-store' });
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) {
    const e = new Error((body && body.error) || `HTTP ${r.status}`);
    e.status = r.status;
    throw e;
  }
  if (body == null) throw new Error(`${url}: not JSON`);
  return body;
}

function ingestPorts(items) {
  if (!Array.isArray(items)) return;
  state.ports = items.filter((x) => x && x.port != null);
  state.disks = items.filter((x) => x && x.disk != null && x.port == null);
  state.portsAt = performance.now();
  state.portsStale = false;
}

function ingestStats(lines, now) {
  if (!Array.isArray(lines)) throw new Error('/api/stats: not an array');
  const seen = new Set();
  const drops = [];
  const switches = new Map();
  for (const l of lines) {
    if (!l || typeof l !== 'object') continue;
    let key;
    if (l.port != null) key = 'port:' + l.port;
    else if (l.disk != null) key = 'disk:' + l.disk;
    else if (l.switch != null) {
      const old = state.switches.get(l.switch);
      switches.set(l.switch, { cur: l, prev: old ? old.cur : null });
      continue;
    } else continue;
    seen.add(key);
    const counters = l.counters || {};
    const prev = state.samples.get(key);
    state.samples.set(key, { t: now, counters, connected: l.connected, connections: l.connections });
    const rate = { valid: false, dt: 0, d: {}, r: {}, rxbps: 0, txbps: 0, bps: 0, pps: 0, drops: 0 };
    if (prev && now > prev.t && now - prev.t <= MAX_GAP_MS) {
      const dt = (now - prev.t) / 1000;
      let dropDelta = 0;
      rate.valid = true;
      rate.dt = dt;
      for (const [c, v] of Object.entries(counters)) {
        const p = prev.counters[c];
        // A counter that went backwards (port re-created) counts as 0, never negative.
        const d = typeof v === 'number' && typeof p === 'number' && v >= p ? v - p : 0;
        rate.d[c] = d;
        rate.r[c] = d / dt;
        if (d > 0 && isDrop(c)) {
          dropDelta += d;
          if (l.port != null) drops.push({ port: l.port, switch: l.switch, counter: c, delta: d, rate: d / dt });
        }
      }
      rate.rxbps = (rate.r.rx_bytes || 0) * 8;
      rate.txbps = (rate.r.tx_bytes || 0) * 8;
      rate.bps = rate.rxbps + rate.txbps;
      rate.pps = (rate.r.rx_frames || 0) + (rate.r.tx_frames || 0);
      rate.drops = dropDelta / dt;
      if (l.port != null) {
        let hist = state.history.get(key);
        if (!hist) state.history.set(key, (hist = []));
        hist.push([now, rate.rxbps, rate.txbps]);
        while (hist.length && hist[0][0] < now - HISTORY_MS) hist.shift();
      }
    }
    state.rates.set(key, rate);
  }
  for (const k of [...state.samples.keys()]) {
    if (!seen.has(k)) { state.samples.delete(k); state.rates.delete(k); state.history.delete(k); }
  }
  state.switches = switches;
  drops.sort((a, b) => b.rate - a.rate || a.port.localeCompare(b.port) || a.counter.localeCompare(b.counter));
  state.drops = drops;
  // A port set that differs from /api/ports: refresh the port list at the next poll.
  const names = state.ports.map((p) => 'port:' + p.port);
  const statPorts = [...seen].filter((k) => k.startsWith('port:'));
  if (names.length !== statPorts.length || names.some((n) => !seen.has(n))) state.portsStale = true;
}

const rateOf = (name) => state.rates.get('port:' + name) || { valid: false, bps: 0, pps: 0, drops: 0, rxbps: 0, txbps: 0, d: {}, r: {} };
function isUp(p) {
  const s = state.samples.get('port:' + p.port);
  return s && typeof s.connected === 'boolean' ? s.connected : !!p.connected;
}

// ---- Polling (only while the page is visible) --------------------------------------
const visible = () => document.visibilityState === 'visible';
function schedule(ms) {
  clearTimeout(state.timer);
  state.timer = visible() ? setTimeout(tick, ms) : null;
}

async function tick() {
  state.timer = null;
  if (state.busy || !visible()) return;
  state.busy = true;
  const started = performance.now();
  const r = state.route;
  const onPort = r.view === 'port';
  const wantPorts = state.portsStale || started - state.portsAt >= PORTS_MS;
  const wantDetail = onPort && (state.detailFor !== r.port || started - state.detailAt >= PORTS_MS);
  const [stats, ports, fdb, detail] = await Promise.allSettled([
    getJSON('/api/stats'),
    wantPorts ? getJSON('/api/ports') : null,
    onPort ? getJSON('/api/fdb') : null,
    wantDetail ? getJSON('/api/port/' + enc(r.port)) : null,
  ]);
  const now = performance.now();
  let err = null;
  if (wantPorts) {
    if (ports.status === 'fulfilled') ingestPorts(ports.value);
    else err = ports.reason;
  }
  if (stats.status === 'fulfilled') {
    try {
      ingestStats(stats.value, now);
      state.updates += 1;
      state.lastUpdate = new Date();
    } catch (e) { err = e; }
  } else err = stats.reason;
  if (onPort && fdb.status === 'fulfilled' && Array.isArray(fdb.value)) state.fdb = fdb.value;
  if (wantDetail && state.route === r) {
    if (detail.status === 'fulfilled') {
      state.detail = detail.value; state.detailErr = null;
      state.detailFor = r.port; state.detailAt = now;
    } else if (detail.reason && detail.reason.status) {
      state.detail = null; state.detailErr = detail.reason.message;
      state.detailFor = r.port; state.detailAt = now;
    }
  }
  state.error = err ? (err.message || String(err)) : null;
  state.busy = false;
  try { render(); } catch (e) { console.error(e); } // keep polling whatever happens
  schedule(Math.max(100, POLL_MS - (performance.now() - started)));
}

document.addEventListener('visibilitychange', () => {
  if (visible()) { if (!state.timer && !state.busy) schedule(0); }
  else { clearTimeout(state.timer); state.timer = null; }
  renderChrome();
});

// ---- Page chrome: banner, last update, poll counter --------------------------------
function renderChrome() {
  document.body.dataset.updates = String(state.updates);
  const b = $('#banner');
  if (state.error) {
    setText(b, `fabric not reachable (${state.error}): retrying every second`);
    b.hidden = false;
  } else b.hidden = true;
  if (state.lastUpdate) setText($('#last-update'), state.lastUpdate.toLocaleTimeString());
  setText($('#poll-state'), visible() ? (state.error ? 'offline' : 'live') : 'paused');
}
function render() {
  renderChrome();
  if (view) view.update();
}

// ---- Router ------------------------------------------------------------------------
function parseRoute() {
  const hash = location.hash.replace(/^#/, '') || '/';
  let m = hash.match(/^\/port\/(.+)$/);
  if (m) return { view: 'port', port: safeDecode(m[1]) };
  m = hash.match(/^\/trace(?:\/(.+))?$/);
  if (m) return { view: 'overview', trace: true, port: m[1] ? safeDecode(m[1]) : null };
  return { view: 'overview' };
}
function route() {
  if (state.capture) { state.capture.abort(); state.capture = null; }
  const r = parseRoute();
  const prev = state.route;
  // "trace from this port": the port's first learned MAC becomes the source.
  const srcMac = r.trace && r.port ? learnedMac(r.port) : '';
  state.route = r;
  if (r.view !== 'port' || r.port !== prev.port) { state.fdb = null; state.detail = null; state.detailErr = null; state.detailFor = null; }
  view = r.view === 'port' ? portPage(r.port) : overview();
  $('#app').replaceChildren(view.root);
  view.update();
  document.title = r.view === 'port' ? `${r.port} · vfabric` : 'vfabric console';
  if (r.trace) {
    if (r.port) view.trace.prefill(r.port, srcMac);
    view.trace.root.scrollIntoView({ block: 'start' });
  } else window.scrollTo(0, 0);
  if (r.view === 'port' && !state.busy) schedule(0);
}
window.addEventListener('hashchange', route);
function learnedMac(port) {
  const d = state.detail;
  const rows = (state.fdb || []).concat(d && Array.isArray(d.fdb) ? d.fdb : []);
  const e = rows.find((x) => x && x.port === port && !x.static) || rows.find((x) => x && x.port === port);
  return e ? String(e.mac) : '';
}

// ---- Topology graph (inline SVG, own layout) ---------------------------------------
function shape(kind) {
  switch (kind) {
    case 'tap': return sv('circle', { class: 'shape', r: 15 });
    case 'vxlan': return sv('polygon', { class: 'shape', points: '0,-18 18,0 0,18 -18,0' });
    case 'nat': return sv('polygon', { class: 'shape', points: hexPoints(17) });
    default: return sv('rect', { class: 'shape', x: -18, y: -13, width: 36, height: 26, rx: 4 });
  }
}
function hexPoints(r) {
  const pts = [];
  for (let i = 0; i < 6; i++) pts.push(`${(r * Math.cos(Math.PI / 3 * i)).toFixed(1)},${(r * Math.sin(Math.PI / 3 * i)).toFixed(1)}`);
  return pts.join(' ');
}
const textW = (s, px = 6.4) => String(s).length * px;

// A multi-line label; returns {el, tspans, w, h}.
function label(lines, x, y, anchor, cls) {
  const t = sv('text', { class: 'label ' + (cls || ''), x, y, 'text-anchor': anchor });
  const tspans = lines.map((ln, i) => sv('tspan', { x, dy: i ? 13 : 0, class: ln.cls }, ln.text));
  add(t, tspans);
  const w = Math.max(...lines.map((ln) => textW(ln.text, ln.cls === 'name' ? 7.2 : 6.4)));
  return { el: t, tspans, w, h: lines.length * 13 };
}

function portDetailLine(p) {
  switch (kindOf(p)) {
    case 'tap': return p.ifname ? 'if ' + p.ifname : 'tap';
    case 'nat': return p.subnet ? String(p.subnet) : 'nat';
    case 'vxlan': return 'VNI ' + fmtVal(p.vni);
    default: return 'vhost-user';
  }
}

// Lays out one switch with its ports on a circle; coordinates relative to the switch.
function switchCell(name, ports, refs) {
  const n = ports.length;
  const R = Math.max(165, (n * 132) / (2 * Math.PI));
  const bb = { x0: -80, x1: 80, y0: -40, y1: 40 };
  const grow = (x0, y0, x1, y1) => {
    bb.x0 = Math.min(bb.x0, x0); bb.y0 = Math.min(bb.y0, y0);
    bb.x1 = Math.max(bb.x1, x1); bb.y1 = Math.max(bb.y1, y1);
  };
  const gLinks = sv('g', { class: 'links' });
  const gNodes = sv('g', { class: 'nodes' });
  const HW = 66, HH = 24;
  ports.forEach((p, i) => {
    const kind = kindOf(p);
    const a = -Math.PI / 2 + ((i + 0.5) * 2 * Math.PI) / n;
    const c = Math.cos(a), s = Math.sin(a);
    const cx = R * c, cy = R * s;
    // Link: switch -> port, with its live rate label between the box and the node.
    const line = sv('line', { x1: 0, y1: 0, x2: cx.toFixed(1), y2: cy.toFixed(1) });
    const edge = Math.min(HW / Math.max(Math.abs(c), 1e-6), HH / Math.max(Math.abs(s), 1e-6));
    const d = edge + (R - 20 - edge) * 0.58;
    // The rate label sits beside the link: above/below a flat one, right of the others.
    const px = d * c, py = d * s;
    let lt, ls;
    if (Math.abs(s) < 0.3) {
      lt = sv('text', { class: 'rate', 'text-anchor': 'middle' });
      ls = [py - 5, py + 14, py + 26].map((y, j) => sv('tspan', { x: px.toFixed(1), y: y.toFixed(1), class: ['bps', 'pps', 'drops'][j] }));
    } else {
      const nx = s < 0 ? -s : s, ny = s < 0 ? c : -c;
      const top = py + ny * 10 - 12 + ny * 12;
      lt = sv('text', { class: 'rate', 'text-anchor': 'start' });
      ls = [0, 1, 2].map((j) => sv('tspan', { x: (px + nx * 9).toFixed(1), y: (top + 9 + j * 12).toFixed(1), class: ['bps', 'pps', 'drops'][j] }));
    }
    add(lt, ls);
    const link = sv('g', { class: 'link', 'data-link': p.port, 'data-bps': 0, 'data-pps': 0, 'data-drops': 0 }, line, lt);
    gLinks.append(link);
    // Node: shape by kind, label outside (below, above at the top, beside for a VXLAN at top/bottom).
    const node = sv('g', {
      class: 'node port', 'data-port': p.port, 'data-kind': kind, 'data-up': String(isUp(p)),
      transform: `translate(${cx.toFixed(1)},${cy.toFixed(1)})`, tabindex: 0, role: 'link',
    }, shape(kind), sv('text', { class: 'icon', y: 4, 'text-anchor': 'middle' }, kind === 'vxlan' ? 'VX' : kind === 'vm' ? 'VM' : kind[0].toUpperCase()),
    sv('title', null, `${p.port} (${KIND_LABEL[kind]}) on ${p.switch}: ${p.vlan || ''}`));
    const go = () => { location.hash = portHref(p.port); };
    node.addEventListener('click', go);
    node.addEventListener('keydown', (e) => { if (e.key === 'Enter') go(); });
    const lines = [{ text: p.port, cls: 'name' }, { text: `${p.vlan || ''} · up`, cls: 'state' }, { text: portDetailLine(p), cls: 'detail' }];
    let pos = s < -0.5 ? 'above' : 'below';
    if (kind === 'vxlan' && Math.abs(s) > 0.5) pos = 'side';
    let lb;
    if (pos === 'side') {
      const right = c >= -0.01;
      lb = label(lines, right ? 24 : -24, -9, right ? 'start' : 'end');
      grow(cx + (right ? 0 : -24 - lb.w), cy - 20, cx + (right ? 24 + lb.w : 0), cy + 30);
    } else {
      const y = pos === 'above' ? -24 - (lines.length - 1) * 13 : 32;
      lb = label(lines, 0, y, 'middle');
      grow(cx - lb.w / 2, cy + y - 12, cx + lb.w / 2, cy + y + lb.h);
    }
    node.append(lb.el);
    gNodes.append(node);
    grow(cx - 22, cy - 22, cx + 22, cy + 22);
    // VXLAN remotes: extra nodes further out, linked with dashed lines.
    const remotes = kind === 'vxlan' && Array.isArray(p.remote) ? p.remote : [];
    remotes.forEach((ip, j) => {
      const off = (j - (remotes.length - 1) / 2) * (pos === 'side' ? 96 : 40);
      const out = R + (pos === 'side' ? 95 : 105);
      const rx = out * c - off * s, ry = out * s + off * c;
      gLinks.append(sv('line', { class: 'remote-link', x1: cx.toFixed(1), y1: cy.toFixed(1), x2: rx.toFixed(1), y2: ry.toFixed(1) }));
      const side = Math.abs(c) > 0.5;
      const tl = side
        ? sv('text', { class: 'label detail', x: c > 0 ? 14 : -14, y: 4, 'text-anchor': c > 0 ? 'start' : 'end' }, String(ip))
        : sv('text', { class: 'label detail', x: 0, y: s > 0 ? 24 : -16, 'text-anchor': 'middle' }, String(ip));
      gNodes.append(sv('g', { class: 'node remote', 'data-remote': String(ip), transform: `translate(${rx.toFixed(1)},${ry.toFixed(1)})` },
        sv('ellipse', { class: 'shape', rx: 11, ry: 8 }), tl, sv('title', null, `VXLAN remote ${ip} of ${p.port}`)));
      const w = textW(ip);
      grow(rx - 14 - (side && c < 0 ? w : side ? 0 : w / 2), ry - 28, rx + 14 + (side && c > 0 ? w : side ? 0 : w / 2), ry + 28);
    });
    refs.links.set(p.port, { link, line, ls, node, stateSpan: lb.tspans[1], vlan: p.vlan || '' });
  });
  const fdbText = sv('tspan', { x: 0, dy: 15, class: 'sub' }, `${n} port${n === 1 ? '' : 's'}`);
  const sw = sv('g', { class: 'node switch', 'data-switch': name },
    sv('rect', { class: 'shape', x: -HW, y: -HH, width: 2 * HW, height: 2 * HH, rx: 8 }),
    sv('text', { class: 'swname', x: 0, y: -3, 'text-anchor': 'middle' }, name, fdbText),
    sv('title', null, `switch ${name}`));
  refs.switches.set(name, { fdbText, n });
  return { g: sv('g', null, gLinks, sw, gNodes), bb };
}

// The disks group: cylinders in a column.
function diskCell(disks, refs) {
  const g = sv('g', { class: 'disks' });
  const hgt = disks.length * 64 + 30;
  let w = 150;
  const items = disks.map((dk, i) => {
    const y = 44 + i * 64;
    const io = sv('tspan', { x: 24, dy: 13, class: 'detail' }, '');
    const l = sv('text', { class: 'label', x: 24, y: -4 }, sv('tspan', { class: 'name' }, dk.disk),
      sv('tspan', { x: 24, dy: 13, class: 'detail' }, `${basename(dk.path)}${dk.readonly ? ' (ro)' : ''}`), io);
    w = Math.max(w, 30 + textW(basename(dk.path) + ' (ro)'), 30 + textW(dk.disk, 7.2));
    refs.disks.set(dk.disk, io);
    return sv('g', { class: 'node disk', 'data-disk': dk.disk, transform: `translate(0,${y})` },
      sv('path', { class: 'shape', d: 'M-14,-11 a14,5 0 0 0 28,0 a14,5 0 0 0 -28,0 v22 a14,5 0 0 0 28,0 v-22' }),
      sv('title', null, `disk ${dk.disk}: ${dk.path || ''}`), l);
  });
  g.append(sv('rect', { class: 'group', x: -30, y: 0, width: w + 44, height: hgt, rx: 10 }),
    sv('text', { class: 'group-title', x: -18, y: 18 }, 'disks'), ...items);
  return { g, bb: { x0: -32, y0: -2, x1: w + 16, y1: hgt + 2 } };
}

function buildTopology(wrap) {
  const refs = { links: new Map(), switches: new Map(), disks: new Map() };
  const bySwitch = new Map();
  for (const p of state.ports) {
    if (!bySwitch.has(p.switch)) bySwitch.set(p.switch, []);
    bySwitch.get(p.switch).push(p);
  }
  for (const name of state.switches.keys()) if (!bySwitch.has(name)) bySwitch.set(name, []);
  const cells = [...bySwitch].map(([name, ports]) => switchCell(name, ports, refs));
  if (state.disks.length) cells.push(diskCell(state.disks, refs));
  if (!cells.length) {
    wrap.replaceChildren(h('p', { class: 'empty' }, state.portsAt ? 'no switches' : 'loading…'));
    return refs;
  }
  // Pack the cells in rows: the row count that lets the drawing fit its box at the largest scale.
  const GAP = 36, BOXW = wrap.clientWidth || 1240, BOXH = 640;
  const cw = (c) => c.bb.x1 - c.bb.x0, ch = (c) => c.bb.y1 - c.bb.y0;
  const total = cells.reduce((a, c) => a + cw(c) + GAP, 0);
  let best = null;
  for (let n = 1; n <= cells.length; n++) {
    const limit = Math.max(total / n, ...cells.map(cw));
    const rows = [[]];
    let x = 0;
    for (const c of cells) {
      if (x > 0 && x + cw(c) > limit + 1) { rows.push([]); x = 0; }
      rows[rows.length - 1].push(c);
      x += cw(c) + GAP;
    }
    const W = Math.max(...rows.map((r) => r.reduce((a, c) => a + cw(c) + GAP, -GAP)));
    const H = rows.reduce((a, r) => a + Math.max(...r.map(ch)) + GAP, -GAP);
    const scale = Math.min(1, BOXW / (W + 20), BOXH / (H + 20));
    if (!best || scale > best.scale + 1e-3) best = { rows, scale };
  }
  const rows = best.rows;
  const svg = sv('svg', { class: 'topo', role: 'img', 'aria-label': 'fabric topology' });
  let x, y = 0, W = 0;
  for (const row of rows) {
    const rh = Math.max(...row.map((c) => c.bb.y1 - c.bb.y0));
    x = 0;
    for (const c of row) {
      c.g.setAttribute('transform', `translate(${(x - c.bb.x0).toFixed(1)},${(y + (rh - ch(c)) / 2 - c.bb.y0).toFixed(1)})`);
      svg.append(c.g);
      x += cw(c) + GAP;
    }
    W = Math.max(W, x - GAP);
    y += rh + GAP;
  }
  const H = y - GAP;
  svg.setAttribute('viewBox', `-10 -10 ${(W + 20).toFixed(0)} ${(H + 20).toFixed(0)}`);
  svg.style.maxWidth = `${(W + 20).toFixed(0)}px`; // never drawn larger than 1:1
  wrap.replaceChildren(svg);
  return refs;
}

function updateTopology(refs) {
  for (const p of state.ports) {
    const ref = refs.links.get(p.port);
    if (!ref) continue;
    const r = rateOf(p.port);
    const up = isUp(p);
    setData(ref.link, 'bps', Math.round(r.bps));
    setData(ref.link, 'pps', Math.round(r.pps * 10) / 10);
    setData(ref.link, 'drops', Math.round(r.drops * 10) / 10);
    ref.line.style.stroke = r.drops > 0 ? '#dc2626' : up ? loadColor(r.bps) : '#cbd5e1';
    ref.line.style.strokeWidth = String(r.bps > 0 ? 1.5 + Math.min(4, Math.log10(Math.max(r.bps, 1000)) - 2.5) : 1.5);
    ref.link.classList.toggle('dropping', r.drops > 0);
    ref.link.classList.toggle('down', !up);
    setText(ref.ls[0], !r.valid ? '…' : r.bps > 0 ? fmtBps(r.bps) : 'idle');
    setText(ref.ls[1], r.valid && r.pps > 0 ? fmtPps(r.pps) : '');
    setText(ref.ls[2], r.drops > 0 ? `drops ${fmtRate(r.drops)}/s` : '');
    setData(ref.node, 'up', up);
    setText(ref.stateSpan, `${ref.vlan} · ${up ? 'up' : 'down'}`);
  }
  for (const [name, ref] of refs.switches) {
    const sw = state.switches.get(name);
    setText(ref.fdbText, `${ref.n} port${ref.n === 1 ? '' : 's'}${sw ? ` · ${fmtInt(sw.cur.fdb_entries)} MACs` : ''}`);
  }
  for (const [name, io] of refs.disks) {
    const r = state.rates.get('disk:' + name);
    let b = 0;
    if (r && r.valid) for (const [c, v] of Object.entries(r.r)) if (/bytes$/.test(c)) b += v;
    setText(io, r && r.valid ? (b > 0 ? si(b, 'B/s') : 'idle') : '');
  }
}

// Topology is rebuilt only when the structure changes (not on every poll).
function topoSignature() {
  const strip = (p) => { const { connected, connections, learned, ...rest } = p; return rest; };
  return JSON.stringify([state.ports.map(strip), state.disks.map(strip), [...state.switches.keys()], !!state.portsAt]);
}

// ---- Overview page -----------------------------------------------------------------
const th = (...cols) => h('thead', null, h('tr', null, cols.map((c) => (Array.isArray(c) ? h('th', { title: c[1] || null, class: c[2] }, c[0]) : h('th', null, c)))));
const card = (title, attrs, ...kids) => h('section', Object.assign({ class: 'card' }, attrs), h('h2', null, title), ...kids);

function legend() {
  const item = (cls, text) => h('span', { class: 'lg' }, h('i', { class: cls }), text);
  return h('div', { class: 'legend' }, item('sw-vm', 'VM'), item('sw-tap', 'TAP'), item('sw-vxlan', 'VXLAN'), item('sw-nat', 'NAT'),
    item('sw-disk', 'disk'), item('ln-idle', 'idle'), item('ln-low', 'low'), item('ln-mid', 'busy'), item('ln-high', 'high'), item('ln-drop', 'drops'));
}

function overview() {
  const topo = h('div', { class: 'topo-wrap' });
  const portsBody = h('tbody');
  const dropsBody = h('tbody');
  const dropsEmpty = h('p', { class: 'empty' }, 'no drops in the last interval');
  const fdbBody = h('tbody');
  const disksBody = h('tbody');
  const disksCard = card('Disks', { hidden: true }, h('table', { class: 'grid' }, th('disk', 'counter', ['total', '', 'num'], ['/s', '', 'num']), disksBody));
  const trace = traceForm();
  const root = h('div', { class: 'overview' },
    h('section', { class: 'card topo-card' }, h('div', { class: 'card-head' }, h('h2', null, 'Topology'), legend()), topo),
    h('div', { class: 'cols' },
      card('Ports', { class: 'card ports-card' }, h('table', { class: 'grid', id: 'ports-table' },
        th('port', 'switch', 'type', 'VLAN', 'link', ['rx', 'received by the switch from the port', 'num'],
          ['tx', 'sent by the switch to the port', 'num'], ['pps', 'frames per second, rx + tx', 'num'], ['drops/s', '', 'num']), portsBody)),
      h('div', { class: 'side' },
        card('Drops', { id: 'drops' }, h('table', { class: 'grid' }, th('port', 'counter', ['+delta', 'growth in the last interval', 'num'], ['/s', '', 'num']), dropsBody), dropsEmpty),
        card('FDB', null, h('table', { class: 'grid' }, th('switch', ['entries', '', 'num'], ['learned', '', 'num'], ['moves', '', 'num'], ['aged out', '', 'num'], ['table full', '', 'num']), fdbBody)),
        disksCard)),
    trace.root);
  let sig = null, refs = null;
  return {
    root, trace,
    update() {
      const s = topoSignature();
      if (s !== sig) { sig = s; refs = buildTopology(topo); }
      updateTopology(refs);
      syncRows(portsBody, state.ports, (p) => p.port, (p) => {
        const a = h('a', { href: portHref(p.port) }, p.port);
        const c = ['switch', 'type', 'vlan', 'link', 'rx', 'tx', 'pps', 'drops'].map((k) => h('td', { class: /rx|tx|pps|drops/.test(k) ? 'num' : k === 'vlan' ? 'mono' : null }));
        const tr = h('tr', { 'data-port': p.port }, h('td', { class: 'name' }, a), c);
        tr._c = c;
        return tr;
      }, (tr, p) => {
        const r = rateOf(p.port), up = isUp(p), [sw, ty, vl, ln, rx, tx, pps, dr] = tr._c;
        setText(sw, p.switch); setText(ty, KIND_LABEL[kindOf(p)]); setText(vl, p.vlan || '');
        setText(ln, up ? 'up' : 'down'); ln.className = up ? 'up' : 'down';
        setText(rx, r.valid ? fmtBps(r.rxbps) : '—'); setText(tx, r.valid ? fmtBps(r.txbps) : '—');
        setText(pps, r.valid ? fmtPps(r.pps) : '—'); setText(dr, r.valid ? fmtRate(r.drops) : '—');
        dr.classList.toggle('bad', r.drops > 0);
        tr.classList.toggle('is-down', !up);
      });
      const known = new Set(state.ports.map((p) => p.port));
      const drops = state.drops.filter((d) => known.has(d.port));
      syncRows(dropsBody, drops, (d) => d.port + '\u0000' + d.counter, (d) => {
        const c = [h('td', { class: 'mono' }, d.counter), h('td', { class: 'num bad' }), h('td', { class: 'num' })];
        const tr = h('tr', { 'data-port': d.port, 'data-counter': d.counter }, h('td', null, h('a', { href: portHref(d.port) }, d.port)), c);
        tr._c = c;
        return tr;
      }, (tr, d) => {
        setData(tr, 'delta', d.delta);
        setText(tr._c[1], '+' + fmtInt(d.delta)); setText(tr._c[2], fmtRate(d.rate));
      });
      dropsEmpty.hidden = drops.length > 0;
      syncRows(fdbBody, [...state.switches.values()], (s) => s.cur.switch, (s) => {
        const c = [0, 1, 2, 3, 4].map(() => h('td', { class: 'num' }));
        const tr = h('tr', { 'data-switch': s.cur.switch }, h('td', null, s.cur.switch), c);
        tr._c = c;
        return tr;
      }, (tr, s) => {
        ['fdb_entries', 'fdb_learned', 'fdb_moves', 'fdb_aged_out', 'fdb_table_full'].forEach((k, i) => {
          const grew = s.prev && s.cur[k] > s.prev[k] && k !== 'fdb_entries';
          setText(tr._c[i], fmtInt(s.cur[k] ?? 0) + (grew ? ` (+${fmtInt(s.cur[k] - s.prev[k])})` : ''));
          tr._c[i].classList.toggle('bad', !!grew && k === 'fdb_table_full');
        });
      });
      const diskRows = [];
      for (const dk of state.disks) {
        const smp = state.samples.get('disk:' + dk.disk), r = state.rates.get('disk:' + dk.disk);
        for (const [c, v] of Object.entries((smp && smp.counters) || {})) diskRows.push({ disk: dk.disk, c, v, rate: r && r.valid ? r.r[c] || 0 : null });
      }
      disksCard.hidden = !state.disks.length;
      syncRows(disksBody, diskRows, (x) => x.disk + '\u0000' + x.c, (x) => {
        const c = [h('td', { class: 'num' }), h('td', { class: 'num' })];
        const tr = h('tr', { 'data-disk': x.disk, 'data-counter': x.c }, h('td', null, x.disk), h('td', { class: 'mono' }, x.c), c);
        tr._c = c;
        return tr;
      }, (tr, x) => { setText(tr._c[0], fmtInt(x.v)); setText(tr._c[1], x.rate == null ? '—' : fmtRate(x.rate)); });
      trace.updatePorts();
    },
  };
}

// ---- Trace form --------------------------------------------------------------------
function traceForm() {
  const f = (lbl, input, cls) => h('label', { class: 'field ' + (cls || '') }, h('span', null, lbl), input);
  const port = h('select', { name: 'port' });
  const inputs = {
    port,
    src: h('input', { name: 'src', placeholder: '52:54:00:00:00:01', spellcheck: 'false' }),
    dst: h('input', { name: 'dst', placeholder: 'ff:ff:ff:ff:ff:ff', spellcheck: 'false' }),
    vlan: h('input', { name: 'vlan', type: 'number', min: 1, max: 4094, placeholder: 'untagged' }),
    ethertype: h('select', { name: 'ethertype' }, h('option', { value: '' }, 'none'), ['ipv4', 'ipv6', 'arp'].map((e) => h('option', { value: e }, e))),
    ip_src: h('input', { name: 'ip_src', placeholder: 'optional', spellcheck: 'false' }),
    ip_dst: h('input', { name: 'ip_dst', placeholder: 'optional', spellcheck: 'false' }),
  };
  const btn = h('button', { type: 'submit' }, 'Trace');
  const err = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const result = h('div', { id: 'trace-result', class: 'trace-result' });
  const form = h('form', { id: 'trace-form', class: 'trace-form', novalidate: true, autocomplete: 'off' },
    f('port', port), f('source MAC', inputs.src, 'mac'), f('destination MAC', inputs.dst, 'mac'), f('VLAN', inputs.vlan, 'short'),
    f('ethertype', inputs.ethertype, 'short'), f('IP source', inputs.ip_src), f('IP destination', inputs.ip_dst), h('div', { class: 'field btn' }, btn));
  const root = card('Trace a frame', { class: 'card trace-card' },
    h('p', { class: 'muted' }, 'What the switch would do with a frame entering at a port (nothing is sent).'), form, err, result);
  let wanted = null; // a port to select once the port list is known
  if (state.trace.values) for (const [k, v] of Object.entries(state.trace.values)) if (inputs[k]) inputs[k].value = v;
  if (state.trace.values) wanted = state.trace.values.port;
  const showError = (m) => { setText(err, m); err.hidden = !m; };

  function updatePorts() {
    const names = state.ports.map((p) => p.port);
    const have = [...port.options].map((o) => o.value);
    if (names.join('\u0000') !== have.join('\u0000')) {
      const cur = port.value;
      port.replaceChildren(...names.map((n) => h('option', { value: n }, n)));
      if (names.includes(cur)) port.value = cur;
    }
    if (wanted != null && names.includes(wanted)) { port.value = wanted; wanted = null; }
  }
  function prefill(name, mac) {
    wanted = name;
    updatePorts();
    if (mac) inputs.src.value = mac;
    (mac ? inputs.dst : inputs.src).focus({ preventScroll: true });
  }

  function renderResult(v) {
    result.replaceChildren();
    if (!v) { delete result.dataset.action; return; }
    const verdict = v.verdict || {};
    setData(result, 'action', verdict.action || '');
    const steps = (v.steps || []).map((s) => h('li', { class: 'step ' + (s.pass ? 'pass' : 'fail'), 'data-step': s.step, 'data-pass': String(!!s.pass) },
      h('span', { class: 'icon', 'aria-label': s.pass ? 'pass' : 'fail' }, s.pass ? '✓' : '✗'), h('b', null, s.step), ' ', s.text || ''));
    const outs = v.outputs || [];
    add(result, [
      h('p', { class: 'frame' }, h('b', null, `${fmtVal(v.frame && v.frame.len)} bytes`), ' ', h('span', { class: 'mono' }, (v.frame && v.frame.summary) || ''),
        ` entering ${v.port || ''} on switch ${v.switch || ''}`),
      h('ol', { class: 'steps' }, steps),
      h('p', { class: 'verdict v-' + (verdict.action || 'none') }, h('b', null, String(verdict.action || '?').toUpperCase()), ' ', verdict.text || '',
        verdict.vlan != null ? ` · VLAN ${verdict.vlan}` : '', verdict.counter ? ` · counter ${verdict.counter}` : '', verdict.reason ? ` · reason ${verdict.reason}` : ''),
      outs.length ? h('table', { class: 'grid outputs' }, th('out port', 'edit', 'link', 'impairment', 'captured', 'detail'),
        h('tbody', null, outs.map((o) => h('tr', { 'data-out-port': o.port },
          h('td', null, h('a', { href: portHref(o.port) }, o.port)), h('td', { class: 'mono' }, fmtVal(o.edit)),
          h('td', { class: o.link === 'down' ? 'down' : 'up' }, fmtVal(o.link)), h('td', null, fmtVal(o.impairment, 'none')),
          h('td', null, o.captured == null ? '—' : fmtVal(o.captured)), h('td', null, fmtVal(o.text, '')))))) : h('p', { class: 'muted' }, 'no output port'),
    ]);
  }
  if (state.trace.result) renderResult(state.trace.result);

  const save = () => {
    const vals = {};
    for (const [k, el] of Object.entries(inputs)) vals[k] = el.value.trim();
    return (state.trace.values = vals);
  };
  form.addEventListener('input', save);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const vals = save();
    if (!vals.port) return showError('choose a port');
    if (!vals.src || !vals.dst) return showError('give a source and a destination MAC address');
    if (!vals.ip_src !== !vals.ip_dst) return showError('give both IP addresses, or neither');
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(vals)) if (v) q.set(k, v);
    showError('');
    btn.disabled = true;
    result.classList.add('stale');
    try {
      const v = await getJSON('/api/trace?' + q);
      state.trace.result = v;
      renderResult(v);
    } catch (ex) {
      state.trace.result = null;
      renderResult(null);
      showError(ex.status ? ex.message : `fabric not reachable: ${ex.message}`);
    } finally {
      btn.disabled = false;
      result.classList.remove('stale');
    }
  });
  return { root, form, updatePorts, prefill };
}

// ---- Port page ---------------------------------------------------------------------
const NULL_AS = { allowed_macs: 'any', allowed_ips: 'any', max_macs: 'unlimited', storm_limit: 'none', netns: 'host', bridge: 'none', vmm: 'unknown' };
function kv(dl, obj, skip) {
  const json = JSON.stringify(obj);
  if (dl._json === json) return;
  dl._json = json;
  dl.replaceChildren();
  for (const [k, v] of Object.entries(obj || {})) {
    if (skip && skip.includes(k)) continue;
    add(dl, [h('dt', null, k.replace(/_/g, ' ')), h('dd', { class: 'mono' }, fmtVal(v, NULL_AS[k]))]);
  }
}

function spark(id, title, color) {
  const area = sv('polygon', { class: 'area', fill: color });
  const pl = sv('polyline', { class: 'line', stroke: color, 'vector-effect': 'non-scaling-stroke' });
  const svg = sv('svg', { id, class: 'spark', viewBox: '0 0 300 60', preserveAspectRatio: 'none', role: 'img', 'aria-label': title }, area, pl);
  const now = h('b'), max = h('span', { class: 'muted' });
  const root = h('div', { class: 'spark-box' }, h('div', { class: 'spark-head' }, h('span', null, title), now, max), svg);
  return {
    root,
    update(hist, idx) {
      // The x axis spans the history kept so far (at least 10 s, at most 5 minutes).
      const t1 = performance.now();
      const span = Math.min(HISTORY_MS, Math.max(10000, hist.length ? t1 - hist[0][0] : 0));
      const t0 = t1 - span;
      const peak = Math.max(1, ...hist.map((p) => p[idx]));
      const pts = hist.map((p) => `${Math.max(0, ((p[0] - t0) / span) * 300).toFixed(1)},${(58 - (p[idx] / peak) * 54).toFixed(1)}`);
      pl.setAttribute('points', pts.join(' '));
      area.setAttribute('points', pts.length ? `${pts[0].split(',')[0]},60 ${pts.join(' ')} ${pts[pts.length - 1].split(',')[0]},60` : '');
      setData(svg, 'points', hist.length);
      setText(now, hist.length ? fmtBps(hist[hist.length - 1][idx]) : '—');
      const ago = span >= 60000 ? `${Math.round(span / 60000)} min` : `${Math.round(span / 1000)} s`;
      setText(max, hist.length ? `peak ${fmtBps(Math.max(0, ...hist.map((p) => p[idx])))} · last ${ago}` : 'no data yet');
    },
  };
}

function portPage(name) {
  const title = h('h1', null, name);
  const kindBadge = h('span', { class: 'badge' });
  const linkBadge = h('span', { class: 'badge' });
  const notice = h('p', { class: 'notice', hidden: true });
  const info = h('dl', { class: 'kv' });
  const policy = h('dl', { class: 'kv' });
  const guestBody = h('div');
  const guest = card('Guest connection', { id: 'port-guest' }, guestBody);
  const impBody = h('dl', { class: 'kv' });
  const imp = card('Impairment', { class: 'card imp', hidden: true }, impBody);
  const rx = spark('spark-rx', 'rx (into the switch)', '#2563eb');
  const tx = spark('spark-tx', 'tx (out to the port)', '#059669');
  const ctrBody = h('tbody');
  const fdbBody = h('tbody');
  const fdbEmpty = h('p', { class: 'empty' }, 'no MAC learned on this port');
  const cap = captureCard(name);
  const cards = h('div', { class: 'port-grid' },
    card('Port', null, info), card('Policy', null, policy), guest, h('div', { class: 'stack' }, imp, cap.root),
    card('Traffic', { class: 'card full' }, h('div', { class: 'sparks' }, rx.root, tx.root)),
    card('Counters', { class: 'card wide' }, h('table', { class: 'grid', id: 'port-counters' }, th('counter', ['total', '', 'num'], ['/s', 'last interval', 'num']), ctrBody)),
    card('Learned MACs', { class: 'card wide' }, h('table', { class: 'grid', id: 'port-fdb' }, th(['VLAN', '', 'num'], 'MAC', 'static', ['age', '', 'num']), fdbBody), fdbEmpty));
  const root = h('div', { id: 'port-page', class: 'port-page', 'data-port': name },
    h('div', { class: 'page-head' }, h('a', { class: 'back', href: '#/' }, '← overview'), title, kindBadge, linkBadge,
      h('span', { class: 'spacer' }), h('a', { class: 'button', href: '#/trace/' + enc(name) }, 'trace from this port')),
    notice, cards);

  function update() {
    const p = state.ports.find((x) => x.port === name);
    const d = state.detail && state.detailFor === name ? state.detail : null;
    const gone = (!p && state.portsAt && !state.portsStale) || (state.detailErr && state.detailFor === name && !d);
    notice.hidden = !gone;
    cards.hidden = kindBadge.hidden = linkBadge.hidden = !!gone;
    if (gone) { setText(notice, state.detailErr || `no port ${name} (it may have been removed)`); return; }
    const item = p || (d && d.port);
    if (!item) return;
    const up = isUp(item), kind = kindOf(item);
    setText(kindBadge, KIND_LABEL[kind]); kindBadge.className = 'badge k-' + kind;
    setText(linkBadge, up ? 'link up' : 'link down'); linkBadge.className = 'badge ' + (up ? 'up' : 'down');
    const smp = state.samples.get('port:' + name);
    kv(info, Object.assign({}, item, { connected: up, connections: smp && smp.connections != null ? smp.connections : item.connections }), ['port']);
    if (d) {
      kv(policy, d.policy || {});
      renderGuest(d.guest);
      imp.hidden = !d.impairment;
      if (d.impairment) {
        const i = d.impairment;
        kv(impBody, { loss: `${fmtVal(i.loss_pct)} %`, delay: `${fmtVal(i.delay_ms)} ms`, jitter: `${fmtVal(i.jitter_ms)} ms`, rate: i.rate_mbit ? `${i.rate_mbit} Mbit/s` : 'unlimited' });
      }
    }
    // Counters: totals from the last /api/stats, rates from the last interval.
    const r = rateOf(name);
    const counters = Object.entries((smp && smp.counters) || (d && d.counters) || {});
    const rank = (c) => { const i = FIRST_COUNTERS.indexOf(c); return i < 0 ? (isDrop(c) ? 20 : 10) : i; };
    counters.sort((a, b) => rank(a[0]) - rank(b[0]) || a[0].localeCompare(b[0]));
    syncRows(ctrBody, counters, (c) => c[0], ([c]) => {
      const tr = h('tr', { 'data-counter': c, class: isDrop(c) ? 'drop' : null }, h('td', { class: 'mono' }, c), h('td', { class: 'num' }), h('td', { class: 'num' }));
      return tr;
    }, (tr, [c, v]) => {
      const rate = r.valid ? r.r[c] || 0 : 0;
      setData(tr, 'total', v);
      setData(tr, 'rate', Math.round(rate * 100) / 100);
      setText(tr.children[1], fmtInt(v));
      setText(tr.children[2], !r.valid || GAUGES.has(c) ? '—' : /bytes$/.test(c) && rate ? `${fmtRate(rate)} (${fmtBps(rate * 8)})` : fmtRate(rate));
      tr.classList.toggle('growing', isDrop(c) && (r.d[c] || 0) > 0);
    });
    const hist = state.history.get('port:' + name) || [];
    rx.update(hist, 1);
    tx.update(hist, 2);
    // FDB rows: /api/fdb (every second) or, until it arrives, the port's own list.
    const rows = (state.fdb ? state.fdb.filter((e) => e.port === name && (!item.switch || e.switch === item.switch)) : (d && d.fdb) || [])
      .slice().sort((a, b) => a.vlan - b.vlan || String(a.mac).localeCompare(String(b.mac)));
    syncRows(fdbBody, rows, (e) => `${e.vlan}/${e.mac}`, (e) => {
      const tr = h('tr', { 'data-mac': e.mac, 'data-vlan': e.vlan }, h('td', { class: 'num' }, fmtVal(e.vlan)), h('td', { class: 'mono' }, e.mac), h('td'), h('td', { class: 'num' }));
      return tr;
    }, (tr, e) => { setText(tr.children[2], e.static ? 'static' : 'learned'); setText(tr.children[3], `${fmtVal(e.age_s)} s`); });
    fdbEmpty.hidden = rows.length > 0;
  }

  function renderGuest(g) {
    const json = JSON.stringify(g);
    if (guestBody._json === json) return;
    guestBody._json = json;
    setData(guest, 'connected', !!g);
    if (!g) { guestBody.replaceChildren(h('p', { class: 'empty' }, 'no guest connected')); return; }
    const dl = h('dl', { class: 'kv' });
    const vmm = g.vmm ? `${g.vmm.program || '?'} (pid ${fmtVal(g.vmm.pid)}, uid ${fmtVal(g.vmm.uid)})` : null;
    kv(dl, Object.assign({ 'queue pairs': g.queue_pairs, ring: g.packed ? 'packed' : 'split', event_idx: g.event_idx }, vmm ? { vmm } : {}));
    guestBody.replaceChildren(h('div', { class: 'badges' }, (g.features || []).map((f) => h('span', { class: 'badge feat' }, f))), dl);
  }
  return { root, update };
}

// ---- Capture: fetch a pcap, save it, check and count it ----------------------------
function parsePcap(buf) {
  const dv = new DataView(buf), len = buf.byteLength;
  const res = { valid: false, frames: 0, bytes: len };
  if (len < 24) return res;
  const magics = [0xa1b2c3d4, 0xa1b23c4d];
  let le;
  if (magics.includes(dv.getUint32(0, true))) le = true;
  else if (magics.includes(dv.getUint32(0, false))) le = false;
  else return res;
  let off = 24;
  while (off + 16 <= len) {
    const next = off + 16 + dv.getUint32(off + 8, le);
    if (next > len) break;
    res.frames += 1;
    off = next;
  }
  res.valid = off === len;
  return res;
}

function captureCard(name) {
  const count = h('input', { id: 'capture-count', type: 'number', min: 1, max: 1000000, value: 100 });
  const secs = h('input', { id: 'capture-seconds', type: 'number', min: 1, max: 600, value: 10 });
  const btn = h('button', { id: 'capture-button', type: 'button' }, 'Capture');
  const status = h('p', { id: 'capture-status', class: 'status', 'data-state': 'idle' }, 'saves a pcap file of the frames this port sends and receives');
  const set = (st, text, info) => {
    setData(status, 'state', st);
    for (const k of ['frames', 'bytes', 'valid']) { if (info) setData(status, k, info[k]); else delete status.dataset[k]; }
    setText(status, text);
  };
  const int = (el, lo, hi, dflt) => { const v = Math.floor(Number(el.value)); return Number.isFinite(v) && v >= lo ? Math.min(v, hi) : dflt; };
  btn.addEventListener('click', async () => {
    if (state.capture) return;
    const n = int(count, 1, 1000000, 100), s = int(secs, 1, 600, 10);
    const ac = new AbortController();
    state.capture = ac;
    btn.disabled = true;
    set('running', `capturing up to ${n} frames for at most ${s} s…`);
    try {
      const r = await fetch('/api/capture?' + new URLSearchParams({ port: name, count: n, seconds: s }), { cache: 'no-store', signal: ac.signal });
      if (!r.ok) {
        let msg = `HTTP ${r.status}`;
        try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
        throw new Error(msg);
      }
      const blob = await r.blob();
      const info = parsePcap(await blob.arrayBuffer());
      const file = name.replace(/[^A-Za-z0-9_-]/g, '_') + '.pcap';
      const url = URL.createObjectURL(blob);
      const a = h('a', { href: url, download: file, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      set('done', `downloaded ${file}: ${info.frames} frame${info.frames === 1 ? '' : 's'}, ${info.bytes} bytes${info.valid ? '' : ' (not a valid pcap file)'}`, info);
    } catch (e) {
      if (e.name === 'AbortError') set('idle', 'capture cancelled');
      else set('error', `capture failed: ${e.message}`);
    } finally {
      if (state.capture === ac) state.capture = null;
      btn.disabled = false;
    }
  });
  const root = card('Capture', { class: 'card capture' },
    h('div', { class: 'row' }, h('label', { class: 'field short' }, h('span', null, 'frames'), count),
      h('label', { class: 'field short' }, h('span', null, 'seconds'), secs), h('div', { class: 'field btn' }, btn)), status);
  return { root };
}

// ---- Start -------------------------------------------------------------------------
route();
renderChrome();
schedule(0);
})();
