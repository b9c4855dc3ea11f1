// DOM building without markup: every value becomes a text node or an
// attribute, never HTML (the page runs under Trusted Types, so a string
// assigned as markup would throw).

const SVGNS = 'http://www.w3.org/2000/svg';

// h builds an element: h('a', {href: '/x', class: 'y'}, 'text', child...).
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

// s builds an SVG element.
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVGNS, tag), attrs, children);
}

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') || k === 'style') throw new Error('h: no ' + k + ' attributes');
    if (k === 'href' && !safeHref(String(v))) continue;
    el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

// safeHref allows the console's own paths and http(s) URLs only.
export function safeHref(v) {
  if (v.startsWith('/') && !v.startsWith('//')) return true;
  try {
    const u = new URL(v);
    return u.protocol === 'http:' || u.protocol === 'https:';
  } catch {
    return false;
  }
}

// replace puts children in place of el's content.
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// on listens to an event.
export function on(el, type, fn) {
  el.addEventListener(type, fn);
  return el;
}

// Time formats.
export function fmtTime(iso) {
  if (!iso || iso.startsWith('0001-')) return '';
  const d = new Date(iso);
  if (isNaN(d)) return '';
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

export function fmtDur(ms) {
  if (ms === null || ms === undefined || isNaN(ms)) return '';
  const neg = ms < 0;
  ms = Math.abs(ms);
  let t;
  if (ms < 1000) t = `${Math.round(ms)} ms`;
  else if (ms < 60000) t = `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  else if (ms < 3600000) t = `${Math.floor(ms / 60000)}m${String(Math.round((ms % 60000) / 1000)).padStart(2, '0')}s`;
  else t = `${Math.floor(ms / 3600000)}h${String(Math.floor((ms % 3600000) / 60000)).padStart(2, '0')}m`;
  return neg ? '-' + t : t;
}

export function ms(iso) {
  if (!iso || iso.startsWith('0001-')) return NaN;
  return Date.parse(iso);
}

// statusBadge is a saga status as a coloured label.
export function statusBadge(status) {
  return h('span', {class: 'badge st-' + String(status).replace(/[^a-z_]/g, '')}, status);
}

// pretty is JSON, indented, as text.
export function pretty(v) {
  if (v === undefined || v === null) return '';
  try {
    return JSON.stringify(v, null, 2);
  } catch {
    return String(v);
  }
}
