// One saga: its facts and actions, its timeline, its definition with the
// path it took, its history with each event's id, source, type and cause,
// the event it waits on, its data and outputs, its domain views and its
// dead letters. Updated live from the admin API's watch stream.

import {h, replace, on, fmtTime, fmtDur, ms, statusBadge, pretty} from './dom.js';
import {get} from './api.js';
import {defs, consoleConfig, confirmAction, deadLetterTable} from './ui.js';
import {timeline} from './timeline.js';
import {graph} from './graph.js';

const TERMINAL = ['completed', 'compensated', 'compensation_failed'];

export async function sagaPage(main, id, signal) {
  const path = '/api/v1/sagas/' + encodeURIComponent(id);
  const [ds, cfg, first] = await Promise.all([defs(), consoleConfig(), get(path, signal)]);
  const def = ds.find((d) => d.name === first.saga);
  const live = h('span', {class: 'live', title: 'updates as the saga moves'}, 'live');
  const head = h('div', {class: 'sagahead'});
  const sections = {
    timeline: h('div', {class: 'panel', id: 'timeline'}),
    graph: h('div', {class: 'panel', id: 'graph'}),
    history: h('div', {class: 'panel scroll', id: 'history'}),
    record: h('div', {class: 'panel', id: 'record'}),
    deadletters: h('div', {class: 'panel', id: 'saga-deadletters'}),
  };
  const views = (cfg.views || []).filter((x) => !x.saga || x.saga === first.saga);
  const viewsPanel = views.length ? h('div', {class: 'panel', id: 'views'}) : null;
  replace(main,
    head,
    h('h2', {class: 'section'}, 'Timeline'), sections.timeline,
    h('h2', {class: 'section'}, 'Definition and path'), sections.graph,
    h('h2', {class: 'section'}, 'History'), sections.history,
    viewsPanel ? [h('h2', {class: 'section'}, 'Views ', refreshButton(() => loadViews(viewsPanel, id))), viewsPanel] : null,
    h('h2', {class: 'section'}, 'Record'), sections.record,
    h('h2', {class: 'section'}, 'Dead letters'), sections.deadletters);

  let current = first;
  let lastStatus = first.status;
  const draw = (v) => {
    current = v;
    document.title = `${v.id} · ${v.status} · ksaga`;
    drawHead(head, v, live, cfg, refresh);
    replace(sections.timeline, timeline(v, Date.now()));
    replace(sections.graph, def ? graph(def, v) : h('p', {class: 'empty'}, `The ${v.saga} definition is not served here.`));
    replace(sections.history, historyTable(v));
    replace(sections.record, record(v));
    replace(sections.deadletters, deadLetterTable(v.dead_letters || [], false, refresh));
    if (viewsPanel && v.status !== lastStatus && TERMINAL.includes(v.status)) loadViews(viewsPanel, id);
    lastStatus = v.status;
  };
  async function refresh() {
    try {
      draw(await get(path));
    } catch {
      // the stream brings the next state
    }
  }
  draw(first);
  if (viewsPanel) loadViews(viewsPanel, id);

  // live: the watch stream sends the record on every change
  const es = new EventSource(path + '/watch');
  on(es, 'saga', (ev) => {
    try {
      draw(JSON.parse(ev.data));
      live.className = 'live on';
    } catch {
      live.className = 'live off';
    }
  });
  on(es, 'open', () => (live.className = 'live on'));
  on(es, 'error', () => (live.className = 'live off'));
  // a running saga's clock moves even when it does not
  const tick = setInterval(() => {
    if (!TERMINAL.includes(current.status)) replace(sections.timeline, timeline(current, Date.now()));
  }, 1000);
  return () => {
    es.close();
    clearInterval(tick);
  };
}

function refreshButton(fn) {
  const b = h('button', {type: 'button', class: 'small'}, 'refresh');
  on(b, 'click', fn);
  return b;
}

function drawHead(head, v, live, cfg, refresh) {
  const facts = [
    ['Definition', h('a', {href: '/sagas?saga=' + encodeURIComponent(v.saga)}, v.saga)],
    ['Business key', v.key || '—'],
    ['Version', String(v.version)],
    ['Created', fmtTime(v.created_at)],
    ['Updated', fmtTime(v.updated_at)],
    ['Took', fmtDur((TERMINAL.includes(v.status) ? ms(v.updated_at) : Date.now()) - ms(v.created_at))],
    ['Deadline', fmtTime(v.deadline)],
    v.due && !TERMINAL.includes(v.status) ? ['Due', fmtTime(v.due)] : null,
    v.failed_step ? ['Failed step', v.failed_step] : null,
    v.compensate && v.compensate.length ? ['To undo', v.compensate.join(' → ')] : null,
  ].filter(Boolean);
  const actions = h('div', {class: 'actions'});
  if (!TERMINAL.includes(v.status)) {
    const b = h('button', {type: 'button', class: 'action', 'data-action': 'abort', disabled: !cfg.actions}, 'Abort');
    on(b, 'click', () => confirmAction(`Abort saga ${v.id}? The step it waits on fails and the saga compensates.`,
      `/api/v1/sagas/${encodeURIComponent(v.id)}/abort`, (r) => `aborted at the ${r.step} step`, refresh));
    actions.append(b);
  }
  if (v.status === 'compensation_failed') {
    const b = h('button', {type: 'button', class: 'action', 'data-action': 'redrive', disabled: !cfg.actions}, 'Redrive');
    on(b, 'click', () => confirmAction(`Redrive saga ${v.id}? Its compensation resumes at the ${v.failed_step || 'failed'} step; fix that step first.`,
      `/api/v1/sagas/${encodeURIComponent(v.id)}/redrive`, () => 'redriven: the compensation resumes', refresh));
    actions.append(b);
  }
  if (!cfg.actions && actions.childElementCount) actions.append(h('span', {class: 'sub'}, 'actions are off: the console has no token configured'));
  replace(head,
    h('h1', {}, h('span', {class: 'kicker'}, 'saga '), h('span', {class: 'sagaid'}, v.id), ' ', statusBadge(v.status), v.overdue ? h('span', {class: 'badge overdue'}, 'overdue') : '', ' ', live),
    v.reason ? h('p', {class: 'reason-line'}, h('strong', {}, 'Reason: '), v.reason) : null,
    h('dl', {class: 'facts'}, facts.map(([k, val]) => [h('dt', {}, k), h('dd', {}, val)])),
    v.trace_url ? h('p', {}, h('a', {href: v.trace_url, target: '_blank', rel: 'noopener noreferrer', class: 'trace'}, 'Open its trace ↗')) : null,
    actions);
}

function historyTable(v) {
  const steps = v.steps || [];
  if (!steps.length) return h('p', {class: 'empty'}, 'No history.');
  const t0 = ms(v.created_at);
  return h('table', {class: 'list history'},
    h('thead', {}, h('tr', {}, ['#', 'Step', 'Outcome', 'At', 'Ver.', 'Event type', 'Event id', 'Source', 'Caused by', 'Emitted', 'Reason / actor'].map((t) => h('th', {}, t)))),
    h('tbody', {}, steps.map((e, i) => h('tr', {class: `k-${(v.kinds || [])[i] || (e.note ? 'note' : 'operator')}`},
      h('td', {class: 'num'}, String(i + 1)),
      h('td', {}, e.step),
      h('td', {}, e.outcome, e.redelivered ? h('span', {class: 'retry', title: 'redeliveries, each answered with the stored reply'}, ` ↻${e.redelivered}`) : ''),
      h('td', {class: 'time', title: fmtTime(e.at)}, '+' + fmtDur(ms(e.at) - t0)),
      h('td', {class: 'num'}, String(e.version)),
      h('td', {}, e.event_type),
      h('td', {class: 'mono'}, e.event_id || ''),
      h('td', {class: 'mono'}, e.event_source || ''),
      h('td', {class: 'mono'}, (v.causes || [])[i] || ''),
      h('td', {}, e.emitted || ''),
      h('td', {}, e.reason || '', e.actor ? h('div', {class: 'actor'}, 'by ' + e.actor) : '')))));
}

function record(v) {
  const parts = [];
  if (v.next) {
    parts.push(h('h3', {}, TERMINAL.includes(v.status) ? 'Last event emitted' : 'Waits on'),
      h('dl', {class: 'facts'}, [['Type', v.next.type], ['Id', v.next.id], ['Source', v.next.source], ['Version', String(v.next.version)], ['Time', fmtTime(v.next.time)]]
        .map(([k, val]) => [h('dt', {}, k), h('dd', {class: 'mono'}, val)])));
  }
  parts.push(h('h3', {}, 'Data'), h('pre', {class: 'json', id: 'data'}, pretty(v.data) || '—'));
  const outs = Object.entries(v.outputs || {});
  parts.push(h('h3', {}, 'Outputs'));
  if (!outs.length) parts.push(h('p', {class: 'empty'}, 'No step recorded an output.'));
  for (const [step, out] of outs) parts.push(h('h4', {}, step), h('pre', {class: 'json'}, pretty(out)));
  return h('div', {}, parts);
}

async function loadViews(panel, id) {
  replace(panel, h('p', {class: 'sub'}, 'Loading…'));
  try {
    const r = await get(`/console/v1/sagas/${encodeURIComponent(id)}/views`);
    const list = r.views || [];
    replace(panel, list.length ? h('div', {class: 'views'}, list.map(viewCard)) : h('p', {class: 'empty'}, 'No views.'));
  } catch (e) {
    replace(panel, h('p', {class: 'error'}, e.message));
  }
}

function viewCard(x) {
  let body;
  if (x.error) body = h('p', {class: 'error'}, x.error);
  else if (x.data && typeof x.data === 'object' && !Array.isArray(x.data)) {
    body = h('dl', {class: 'facts'}, Object.entries(x.data).map(([k, val]) => [h('dt', {}, k), h('dd', {class: 'mono'}, typeof val === 'object' ? pretty(val) : String(val))]));
  } else body = h('pre', {class: 'json'}, pretty(x.data));
  return h('section', {class: 'view' + (x.status >= 400 || x.error ? ' bad' : ''), 'data-view': x.name},
    h('h3', {}, x.title, x.status && x.status !== 200 ? h('span', {class: 'sub'}, ` HTTP ${x.status}`) : ''),
    body,
    x.path ? h('div', {class: 'sub mono'}, x.path) : null);
}
