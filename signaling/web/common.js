// Helpers shared by the try-it and status pages. Everything a participant or a room names
// (identities, names, messages) reaches the page through textContent, never as HTML.
'use strict';

const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text nodes). */
function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fmtBitrate(bps) {
  if (!Number.isFinite(bps)) return '–';
  if (bps >= 1e6) return (bps / 1e6).toFixed(bps >= 1e7 ? 0 : 1) + ' Mb/s';
  if (bps >= 1e3) return Math.round(bps / 1e3) + ' kb/s';
  return Math.round(bps) + ' b/s';
}

function fmtBytes(n) {
  if (!Number.isFinite(n)) return '–';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}

function fmtRate(perSecond) {
  if (!Number.isFinite(perSecond)) return '–';
  if (perSecond >= 1e6) return (perSecond / 1e6).toFixed(1) + 'M';
  if (perSecond >= 1e4) return Math.round(perSecond / 1e3) + 'k';
  if (perSecond >= 1e3) return (perSecond / 1e3).toFixed(1) + 'k';
  return Math.round(perSecond).toString();
}

function fmtPercent(x) {
  if (!Number.isFinite(x)) return '–';
  if (x === 0) return '0%';
  return (x < 0.001 ? '<0.1' : (x * 100).toFixed(x < 0.1 ? 1 : 0)) + '%';
}

function fmtDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return s + ' s';
  const m = Math.floor(s / 60);
  if (m < 60) return m + ' min ' + (s % 60) + ' s';
  return Math.floor(m / 60) + ' h ' + (m % 60) + ' min';
}

function initials(name) {
  const parts = String(name || '?').trim().split(/[\s._-]+/).filter(Boolean);
  const s = parts.length > 1 ? parts[0][0] + parts[1][0] : (parts[0] || '?').slice(0, 2);
  return s.toUpperCase();
}

/** A stable hue for a name, so each person keeps their colour. */
function hue(name) {
  let x = 0;
  for (const c of String(name)) x = (x * 31 + c.codePointAt(0)) >>> 0;
  return x % 360;
}

function toast(message, kind) {
  const box = $('toasts');
  if (!box) return;
  const t = h('div', { class: 'toast ' + (kind || '') }, message);
  box.append(t);
  setTimeout(() => t.classList.add('fade'), 3500);
  setTimeout(() => t.remove(), 4200);
}

/** Rate of change of a counter between two snapshots, per second. */
function rate(now, before, dtMs) {
  if (before === undefined || !(dtMs > 0) || now < before) return NaN;
  return ((now - before) * 1000) / dtMs;
}
