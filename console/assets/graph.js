// A saga definition drawn as a graph: forward steps left to right, each
// compensation under its step (undone right to left), the final step at
// the end; with a saga, the path it took: steps done, failed, and the one
// it waits on.

import {s} from './dom.js';
import {FAILURES} from './timeline.js';

const BW = 120; // box width
const BH = 34;
const GAP = 46;
const PAD = 16;

// route finds what an event type runs in def (as saga.Definition.Route):
// {i, kind} with i the step's position, -1 for the final step.
export function route(def, type) {
  const st = def.steps;
  const last = st.length - 1;
  for (let i = 0; i < st.length; i++) {
    const x = st[i];
    if (type === x.command || (i > 0 && type === st[i - 1].succeeded)) return {i, kind: 'forward'};
    if (x.compensation && (type === x.compensation || (i < last && type && (type === st[i + 1].failed || type === st[i + 1].compensated)))) return {i, kind: 'compensate'};
  }
  const f = def.finally;
  if (f && (type === f.command || type === st[last].succeeded || (st[0].compensated && type === st[0].compensated))) return {i: -1, kind: 'final'};
  return null;
}

// path computes the state of each node for a saga: 'done', 'failed' or
// 'current', keyed 'f<i>' (forward), 'c<i>' (compensation), 'final'.
export function path(def, v) {
  const state = {};
  if (!v) return state;
  const steps = v.steps || [];
  steps.forEach((e, n) => {
    if (e.note) return;
    const kind = (v.kinds || [])[n];
    const r = kind ? route(def, e.event_type) : null;
    let key;
    if (r && r.kind === 'forward') key = 'f' + r.i;
    else if (r && r.kind === 'compensate') key = 'c' + r.i;
    else if (r && r.kind === 'final') key = 'final';
    else {
      // an operator action at the step it names (an abort, a deadline)
      const i = def.steps.findIndex((x, j) => x.name === e.step && state['f' + j] !== 'done');
      if (i < 0 || !FAILURES.has(e.outcome)) return;
      key = 'f' + i;
    }
    state[key] = FAILURES.has(e.outcome) ? 'failed' : 'done';
  });
  const stack = v.compensate || [];
  if (v.status === 'running' || v.status === 'accepted') {
    let i = 0;
    if (stack.length) i = def.steps.findIndex((x) => x.name === stack[0] && x.compensation) + 1;
    if (i >= 0 && i < def.steps.length) state['f' + i] = 'current';
  } else if (v.status === 'compensating' && stack.length) {
    const i = def.steps.findIndex((x) => x.name === stack[0] && x.compensation);
    if (i >= 0) state['c' + i] = 'current';
  }
  return state;
}

export function graph(def, v) {
  const st = def.steps;
  const n = st.length + (def.finally ? 1 : 0);
  const width = PAD * 2 + n * BW + (n - 1) * GAP + 30;
  const hasComp = st.some((x) => x.compensation);
  const height = PAD * 2 + BH + (hasComp ? BH + 50 + 14 : 0) + 10;
  const state = path(def, v);
  const svg = s('svg', {class: 'graph', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `the ${def.name} saga's definition`});
  svg.append(s('defs', {}, s('marker', {id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 9, markerHeight: 9, markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse'}, s('path', {d: 'M0 0 L10 5 L0 10 z', class: 'arrowhead'}))));
  const fx = (i) => PAD + 30 + i * (BW + GAP);
  const yF = PAD;
  const yC = PAD + BH + 50;
  const edges = s('g', {class: 'edges'});
  const nodes = s('g', {class: 'nodes'});
  const edge = (x1, y1, x2, y2, cls, lit) => edges.append(s('line', {x1, y1, x2, y2, class: `edge ${cls}${lit ? ' lit' : ''}`, 'marker-end': 'url(#arrow)'}));
  const node = (key, x, y, title, sub, cls) => {
    const g = s('g', {class: `node ${cls} ${state[key] || ''}`, 'data-node': key});
    g.append(s('rect', {x, y, width: BW, height: BH, rx: 6}), s('text', {x: x + BW / 2, y: y + 15, 'text-anchor': 'middle', class: 'name'}, title), s('text', {x: x + BW / 2, y: y + 28, 'text-anchor': 'middle', class: 'sub'}, sub));
    g.append(s('title', {}, sub));
    nodes.append(g);
  };
  edge(PAD, yF + BH / 2, fx(0), yF + BH / 2, 'fwd', !!state.f0);
  st.forEach((x, i) => {
    node('f' + i, fx(i), yF, x.name, shortType(x.command), 'fwd');
    if (i + 1 < st.length) edge(fx(i) + BW, yF + BH / 2, fx(i + 1), yF + BH / 2, 'fwd', state['f' + i] === 'done' && !!state['f' + (i + 1)]);
    if (x.compensation) {
      node('c' + i, fx(i), yC, 'undo ' + x.name, shortType(x.compensation), 'comp');
      // a failure (or a compensation) of the next step undoes this one
      const fromNext = state['f' + (i + 1)] === 'failed' || state['c' + (i + 1)] === 'done';
      if (i + 1 < st.length) {
        const src = st[i + 1].compensation ? [fx(i + 1), yC + BH / 2] : [fx(i + 1) + BW / 3, yF + BH];
        edge(src[0], src[1], fx(i) + BW, yC + BH / 2, 'comp', fromNext && !!state['c' + i]);
      }
    }
  });
  if (def.finally) {
    const xf = fx(st.length);
    node('final', xf, yF, def.finally.name, shortType(def.finally.command), 'final');
    edge(fx(st.length - 1) + BW, yF + BH / 2, xf, yF + BH / 2, 'fwd', state['f' + (st.length - 1)] === 'done' && !!state.final);
    if (st[0].compensation) {
      const yb = yC + BH + 12;
      const lit = state.c0 === 'done' && !!state.final;
      edges.append(s('path', {d: `M${fx(0) + BW / 2} ${yC + BH} V${yb} H${xf + BW / 2} V${yF + BH}`, class: `edge comp${lit ? ' lit' : ''}`, 'marker-end': 'url(#arrow)'}));
    }
  }
  svg.append(edges, nodes);
  return svg;
}

// shortType drops a type's reverse-DNS prefix for the graph's small print.
function shortType(t) {
  const p = String(t || '').split('.');
  return p.length > 2 ? p.slice(-2).join('.') : String(t || '');
}
