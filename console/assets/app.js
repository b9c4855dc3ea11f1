// The console's pages: one document, routed by its path (/, /sagas,
// /sagas/{id}, /deadletters), drawn from the admin API. No saga is known
// here: definitions, records and views come from the server.

import {h, replace, on, fmtTime, fmtDur, ms, statusBadge} from './dom.js';
import {get, query, identity} from './api.js';
import {sagaPage} from './saga.js';
import {defs, confirmAction, deadLetterTable} from './ui.js';

const STATUSES = ['accepted', 'running', 'compensating', 'completed', 'compensated', 'compensation_failed'];
const main = document.getElementById('main');
let cleanup = null; // what the current page leaves behind (a live stream)

// navigate shows path without reloading the document.
function navigate(path) {
  history.pushState(null, '', path);
  route();
}

async function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  const url = new URL(location.href);
  const p = url.pathname;
  for (const a of document.querySelectorAll('header nav a')) {
    a.classList.toggle('active', a.dataset.nav === (p === '/' ? 'overview' : p.split('/')[1]));
  }
  const ctl = new AbortController();
  cleanup = () => ctl.abort();
  try {
    if (p === '/') await overviewPage(ctl.signal);
    else if (p === '/sagas') await listPage(url.searchParams, ctl.signal);
    else if (p.startsWith('/sagas/')) {
      const stop = await sagaPage(main, decodeURIComponent(p.slice('/sagas/'.length)), ctl.signal);
      cleanup = () => {
        ctl.abort();
        stop();
      };
    } else if (p === '/deadletters') await deadLettersPage(url.searchParams, ctl.signal);
    else replace(main, h('h1', {}, 'Not found'), h('p', {}, h('a', {href: '/'}, 'Overview')));
  } catch (e) {
    if (e.name === 'AbortError') return;
    replace(main, h('h1', {}, 'Cannot show this page'), h('p', {class: 'error'}, e.message));
  }
}

// ---- overview ----

async function overviewPage(signal) {
  const [ov, recent] = await Promise.all([get('/api/v1/overview', signal), get(query('/api/v1/sagas', {summary: true, limit: 15}), signal)]);
  const cards = (ov.sagas || []).map((o, i) => {
    const total = STATUSES.reduce((n, st) => n + (o.by_status[st] || 0), 0);
    const link = (label, n, params, cls) =>
      h('a', {class: 'stat ' + (cls || '') + (n > 0 && cls ? ' hot' : ''), href: query('/sagas', {saga: o.saga, ...params})}, h('span', {class: 'n'}, n.toLocaleString()), h('span', {class: 'l'}, label));
    return h('section', {class: 'card', 'data-saga': o.saga},
      h('h2', {}, h('a', {href: query('/sagas', {saga: o.saga}), elementtiming: i === 0 ? 'overview' : null}, o.saga), h('span', {class: 'total'}, `${total.toLocaleString()} sagas`)),
      statusBar(o, total),
      h('div', {class: 'stats'},
        link('in flight', o.in_flight, {}, ''),
        link('overdue', o.overdue, {overdue: true}, 'warn'),
        link('compensation failed', o.by_status.compensation_failed || 0, {status: 'compensation_failed'}, 'bad'),
        h('a', {class: 'stat' + (o.dead_letters ? ' bad hot' : ''), href: '/deadletters'}, h('span', {class: 'n'}, String(o.dead_letters)), h('span', {class: 'l'}, 'dead letters')),
        h('span', {class: 'stat'}, h('span', {class: 'n'}, (o.per_second * 60).toFixed(o.per_second * 60 < 10 ? 1 : 0)), h('span', {class: 'l'}, 'finished / min')),
        h('span', {class: 'stat'}, h('span', {class: 'n'}, o.finished_sampled ? fmtDur(o.p50_ms) : '–'), h('span', {class: 'l'}, 'p50 duration')),
        h('span', {class: 'stat'}, h('span', {class: 'n'}, o.finished_sampled ? fmtDur(o.p99_ms) : '–'), h('span', {class: 'l'}, 'p99 duration'))));
  });
  replace(main,
    h('h1', {}, 'Overview'),
    cards.length ? h('div', {class: 'cards'}, cards) : h('p', {class: 'empty'}, 'No saga definitions are served.'),
    h('h2', {class: 'section'}, 'Recent sagas ', h('a', {class: 'more', href: '/sagas'}, 'all sagas →')),
    sagaTable(recent.sagas || []));
}

function statusBar(o, total) {
  const bar = h('div', {class: 'statusbar', role: 'img', 'aria-label': 'sagas by status'});
  const legend = h('ul', {class: 'legend'});
  for (const st of STATUSES) {
    const n = o.by_status[st] || 0;
    if (total > 0 && n > 0) {
      const seg = h('a', {class: 'seg st-' + st, href: query('/sagas', {saga: o.saga, status: st}), title: `${st}: ${n}`});
      seg.style.flexGrow = String(n); // CSSOM, allowed by the policy (no style attributes)
      bar.append(seg);
    }
    legend.append(h('li', {}, h('a', {href: query('/sagas', {saga: o.saga, status: st})}, statusBadge(st), ' ', n.toLocaleString())));
  }
  return h('div', {}, bar, legend);
}

// sagaTable lists sagas (summaries), each linking to its page.
function sagaTable(sagas) {
  if (!sagas.length) return h('p', {class: 'empty'}, 'No sagas match.');
  const now = Date.now();
  return h('table', {class: 'list sagas'},
    h('thead', {}, h('tr', {}, ['Saga', 'Definition', 'Key', 'Status', 'Step', 'Created', 'Took', ''].map((t) => h('th', {}, t)))),
    h('tbody', {}, sagas.map((v, i) => {
      const end = ['completed', 'compensated', 'compensation_failed'].includes(v.status) ? ms(v.updated_at) : now;
      return h('tr', {'data-id': v.id, 'data-status': v.status},
        h('td', {class: 'id', elementtiming: i === 0 ? 'saga-list' : null}, h('a', {href: '/sagas/' + encodeURIComponent(v.id)}, v.id)),
        h('td', {}, v.saga),
        h('td', {class: 'key'}, v.key || ''),
        h('td', {}, statusBadge(v.status)),
        h('td', {}, v.step || ''),
        h('td', {class: 'time'}, fmtTime(v.created_at)),
        h('td', {class: 'num'}, fmtDur(end - ms(v.created_at))),
        h('td', {}, v.overdue ? h('span', {class: 'badge overdue'}, 'overdue') : '', v.reason ? h('span', {class: 'reason', title: v.reason}, v.reason) : ''));
    })));
}

// ---- list ----

async function listPage(params, signal) {
  const [ds, page] = await Promise.all([defs(), get(query('/api/v1/sagas', {
    summary: true, saga: params.get('saga'), status: params.get('status'), overdue: params.get('overdue'),
    from: toRFC3339(params.get('from')), to: toRFC3339(params.get('to')), q: params.get('q'), cursor: params.get('cursor'), limit: 50,
  }), signal)]);
  const form = h('form', {class: 'filters', role: 'search'},
    h('label', {}, 'Definition ', h('select', {name: 'saga'}, h('option', {value: ''}, 'all'), ds.map((d) => h('option', {value: d.name, selected: params.get('saga') === d.name}, d.name)))),
    h('label', {}, 'Status ', h('select', {name: 'status'}, h('option', {value: ''}, 'any'), STATUSES.map((st) => h('option', {value: st, selected: params.get('status') === st}, st)))),
    h('label', {}, h('input', {type: 'checkbox', name: 'overdue', value: 'true', checked: params.get('overdue') === 'true'}), ' overdue'),
    h('label', {}, 'Created from ', h('input', {type: 'datetime-local', name: 'from', step: 1, value: params.get('from') || ''})),
    h('label', {}, 'to ', h('input', {type: 'datetime-local', name: 'to', step: 1, value: params.get('to') || ''})),
    h('label', {class: 'grow'}, 'Search ', h('input', {type: 'search', name: 'q', placeholder: 'saga id, correlation id or business key', value: params.get('q') || ''})),
    h('button', {type: 'submit'}, 'Show'));
  on(form, 'submit', (ev) => {
    ev.preventDefault();
    const p = {};
    for (const [k, v] of new FormData(form)) p[k] = v;
    navigate(query('/sagas', p));
  });
  const rest = Object.fromEntries([...params].filter(([k]) => k !== 'cursor'));
  const pager = h('nav', {class: 'pager'},
    params.get('cursor') ? h('a', {href: query('/sagas', rest)}, '« newest') : '',
    page.next ? h('a', {href: query('/sagas', {...rest, cursor: page.next}), rel: 'next'}, 'next page »') : '');
  replace(main, h('h1', {}, 'Sagas'), form, sagaTable(page.sagas || []), pager);
}

// toRFC3339 turns a datetime-local value (the browser's zone) into RFC 3339.
function toRFC3339(v) {
  if (!v) return '';
  const d = new Date(v);
  return isNaN(d) ? '' : d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

// ---- dead letters ----

async function deadLettersPage(params, signal) {
  const filter = {saga: params.get('saga'), type: params.get('type'), destination: params.get('destination')};
  const page = await get(query('/api/v1/deadletters', {...filter, cursor: params.get('cursor'), limit: 50}), signal);
  const form = h('form', {class: 'filters', role: 'search'},
    h('label', {}, 'Saga id ', h('input', {name: 'saga', value: filter.saga || ''})),
    h('label', {}, 'Event type ', h('input', {name: 'type', value: filter.type || ''})),
    h('label', {class: 'grow'}, 'Destination ', h('input', {name: 'destination', value: filter.destination || ''})),
    h('button', {type: 'submit'}, 'Show'));
  on(form, 'submit', (ev) => {
    ev.preventDefault();
    const p = {};
    for (const [k, v] of new FormData(form)) p[k] = v;
    navigate(query('/deadletters', p));
  });
  const filtered = !!(filter.saga || filter.type || filter.destination);
  const all = h('button', {type: 'button', class: 'action', disabled: !filtered || !(page.dead_letters || []).length, title: filtered ? '' : 'filter first: replaying all needs a saga, type or destination'}, 'Replay all matching');
  on(all, 'click', () => confirmAction(`Replay every dead letter matching ${describe(filter)}? Each event is published again as it was first sent.`,
    query('/api/v1/deadletters/replay', filter), (r) => `replayed ${(r.replayed || []).length}`, () => route()));
  const rest = Object.fromEntries([...params].filter(([k]) => k !== 'cursor'));
  replace(main, h('h1', {}, 'Dead letters'), form, h('div', {class: 'toolbar'}, all),
    deadLetterTable(page.dead_letters || [], true, () => route()),
    h('nav', {class: 'pager'}, params.get('cursor') ? h('a', {href: query('/deadletters', rest)}, '« newest') : '',
      page.next ? h('a', {href: query('/deadletters', {...rest, cursor: page.next}), rel: 'next'}, 'next page »') : ''));
}

function describe(f) {
  return Object.entries(f).filter(([, v]) => v).map(([k, v]) => `${k} "${v}"`).join(', ');
}

// ---- identity and actions ----

const who = document.getElementById('who');
const idDialog = document.getElementById('identity');
const idForm = document.getElementById('identity-form');

function showIdentity() {
  who.textContent = identity.actor ? `acting as ${identity.actor}` : 'Sign in to act';
  who.classList.toggle('signed', identity.hasToken);
}

on(who, 'click', () => {
  idForm.elements.actor.value = identity.actor;
  idForm.elements.token.value = '';
  idDialog.showModal();
});
on(idForm, 'submit', (ev) => {
  ev.preventDefault();
  if (ev.submitter && ev.submitter.value === 'forget') identity.forget();
  else if (ev.submitter && ev.submitter.value === 'save') {
    const name = idForm.elements.actor.value.replace(/[^\x20-\x7e]/g, '').trim().slice(0, 64);
    identity.set(name, idForm.elements.token.value);
  }
  idForm.elements.token.value = '';
  idDialog.close();
  showIdentity();
});

// ---- routing ----

on(document, 'click', (ev) => {
  const a = ev.target.closest && ev.target.closest('a[href]');
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || a.target) return;
  const u = new URL(a.href);
  if (u.origin !== location.origin || u.pathname.startsWith('/api/') || u.pathname.startsWith('/assets/')) return;
  ev.preventDefault();
  if (u.href !== location.href) navigate(u.pathname + u.search);
});
addEventListener('popstate', route);
showIdentity();
route();
