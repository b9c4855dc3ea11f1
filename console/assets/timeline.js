// The timeline of one saga: each history entry a row, its bar running from
// the time the event it handled was emitted (its cause's entry) to the
// time it was recorded; forward steps, compensations, the final step and
// operator actions told apart; retries (redeliveries) and dead letters
// marked; the deadline drawn; the event the saga waits on, open-ended.

import {s, fmtDur, ms} from './dom.js';

const W = 1000; // viewBox width
const LABEL = 230; // label column
const ROW = 24;
const TOP = 28;
const RIGHT = 70;

// FAILURES are outcomes that fail a step or its compensation.
export const FAILURES = new Set(['failed', 'compensation_failed', 'timed_out', 'aborted', 'cancel_requested', 'rejected']);

export function timeline(v, now) {
  const steps = v.steps || [];
  const kinds = v.kinds || [];
  const causes = v.causes || [];
  const t0 = ms(v.created_at);
  const terminal = ['completed', 'compensated', 'compensation_failed'].includes(v.status);
  const byEvent = new Map();
  steps.forEach((e, i) => {
    if (e.event_id && !e.note && !byEvent.has(e.event_id)) byEvent.set(e.event_id, i);
  });

  const rows = steps.map((e, i) => {
    const at = ms(e.at);
    const ci = causes[i] ? byEvent.get(causes[i]) : undefined;
    const from = ci !== undefined ? ms(steps[ci].at) : at;
    let kind = kinds[i] || (e.note ? 'note' : 'operator');
    return {e, i, kind, from, to: at, failed: FAILURES.has(e.outcome)};
  });
  let end = Math.max(t0, ...rows.map((r) => r.to));
  const waiting = !terminal && v.next ? {from: ms(v.next.time), to: now} : null;
  if (!terminal) end = Math.max(end, now);
  const dls = (v.dead_letters || []).map((d) => ({d, at: ms(d.at)}));
  for (const x of dls) if (!isNaN(x.at)) end = Math.max(end, x.at);
  const span = Math.max(end - t0, 1);
  const deadline = ms(v.deadline);
  const showDeadline = !isNaN(deadline) && deadline - t0 <= span * 1.25;
  const axisEnd = showDeadline ? Math.max(end, deadline) : end;
  const total = Math.max(axisEnd - t0, 1);
  const x = (t) => LABEL + ((t - t0) / total) * (W - LABEL - RIGHT);

  const nrows = rows.length + (waiting ? 1 : 0);
  const height = TOP + nrows * ROW + 22;
  const svg = s('svg', {class: 'timeline', viewBox: `0 0 ${W} ${height}`, role: 'img', 'aria-label': 'timeline of the saga'});

  // axis
  const axis = s('g', {class: 'axis'});
  for (const t of ticks(total)) {
    const xx = x(t0 + t);
    axis.append(s('line', {x1: xx, x2: xx, y1: TOP - 6, y2: height - 18}), s('text', {x: xx, y: TOP - 10, 'text-anchor': 'middle'}, '+' + fmtDur(t)));
  }
  svg.append(axis);

  rows.forEach((r, n) => {
    const y = TOP + n * ROW;
    const g = s('g', {class: `row k-${r.kind}${r.failed ? ' failed' : ''}`, 'data-step': r.e.step, 'data-outcome': r.e.outcome, 'data-kind': r.kind});
    const label = r.e.note ? `${r.e.step || 'note'} · ${r.e.outcome}` : `${r.e.step} · ${r.e.outcome}`;
    g.append(s('text', {class: 'label', x: 6, y: y + 16}, label));
    const tip = [`${label} (${r.kind})`, `at +${fmtDur(r.to - t0)}`, `took ${fmtDur(r.to - r.from)}`, r.e.event_type, r.e.reason, r.e.actor ? 'by ' + r.e.actor : ''];
    if (r.kind === 'operator' || r.kind === 'note') {
      const cx = x(r.to);
      g.append(s('path', {class: 'mark', d: `M${cx} ${y + 4} l7 8 l-7 8 l-7 -8 z`}, s('title', {}, tip.filter(Boolean).join('\n'))));
      if (r.e.actor) {
        const left = cx > W - RIGHT - 110; // near the right edge: the name goes before the mark
        g.append(s('text', {class: 'actor', x: left ? cx - 10 : cx + 10, y: y + 16, 'text-anchor': left ? 'end' : 'start'}, r.e.actor));
      }
    } else {
      const x1 = x(r.from);
      const w = Math.max(x(r.to) - x1, 3);
      g.append(s('rect', {class: 'bar', x: x1, y: y + 5, width: w, height: ROW - 10, rx: 3}, s('title', {}, tip.filter(Boolean).join('\n'))));
      const marked = dls.some((d) => d.d.event_id && d.d.event_id === r.e.event_id);
      g.append(s('text', {class: 'took', x: x1 + w + (marked ? 16 : 5), y: y + 16}, fmtDur(r.to - r.from)));
    }
    if (r.e.redelivered > 0) {
      g.append(s('text', {class: 'retry', x: W - RIGHT + 8, y: y + 16}, `↻${r.e.redelivered}`, s('title', {}, `delivered ${r.e.redelivered} more time(s): each got the stored reply`)));
    }
    for (const d of dls) {
      if (d.d.event_id && d.d.event_id === r.e.event_id && !isNaN(d.at)) {
        const cx = x(d.at);
        g.append(s('text', {class: 'dl', x: cx, y: y + 17, 'text-anchor': 'middle'}, '✉', s('title', {}, `dead letter ${d.d.id}: ${d.d.reason}`)));
      }
    }
    svg.append(g);
  });

  if (waiting) {
    const y = TOP + rows.length * ROW;
    const from = isNaN(waiting.from) ? end : waiting.from;
    const g = s('g', {class: 'row waiting', 'data-step': 'waiting', 'data-outcome': v.next.type});
    g.append(s('text', {class: 'label', x: 6, y: y + 16}, `waiting · ${v.next.type}`));
    g.append(s('rect', {class: 'bar', x: x(from), y: y + 5, width: Math.max(x(waiting.to) - x(from), 3), height: ROW - 10, rx: 3}));
    svg.append(g);
  }

  if (showDeadline) {
    const xd = x(deadline);
    svg.append(s('g', {class: 'deadline'}, s('line', {x1: xd, x2: xd, y1: TOP - 4, y2: height - 16}), s('text', {x: xd - 4, y: height - 4, 'text-anchor': 'end'}, 'deadline')));
  } else if (!isNaN(deadline)) {
    const left = deadline - t0;
    svg.append(s('g', {class: 'deadline far'}, s('text', {x: W - 4, y: height - 4, 'text-anchor': 'end'}, `deadline at +${fmtDur(left)} →`)));
  }
  if (!terminal) {
    const xn = x(now);
    svg.append(s('line', {class: 'now', x1: xn, x2: xn, y1: TOP - 4, y2: height - 18}));
  }
  return svg;
}

// ticks returns about six round offsets (ms) within total.
function ticks(total) {
  const steps = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 3e4, 6e4, 12e4, 3e5, 6e5, 18e5, 36e5, 72e5, 216e5, 432e5, 864e5];
  const step = steps.find((x) => total / x <= 6) || total / 6;
  const out = [];
  for (let t = 0; t <= total + 1e-9; t += step) out.push(t);
  return out;
}
