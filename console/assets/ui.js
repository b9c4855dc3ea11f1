// What the pages share: the definitions and configuration (read once),
// confirmed actions, messages, and the dead letters table.

import {h, on, fmtTime} from './dom.js';
import {get, act, identity, APIError} from './api.js';

let definitions = null;
let config = null;

// defs returns the definitions served (read once).
export async function defs() {
  if (!definitions) definitions = get('/api/v1/definitions').then((r) => r.definitions || []);
  return definitions;
}

// consoleConfig returns the console's configuration (read once).
export async function consoleConfig() {
  if (!config) config = get('/console/v1/config');
  return config;
}

const confirmDialog = document.getElementById('confirm');
const confirmForm = document.getElementById('confirm-form');
let pending = null;

// confirmAction asks, then POSTs the action and reports its result.
export function confirmAction(question, path, summary, done) {
  document.getElementById('confirm-text').textContent = question;
  document.getElementById('confirm-who').textContent = identity.hasToken
    ? `It is recorded in the saga's history as done by ${identity.actor || 'the token'}.`
    : 'You have not entered a token: the console will refuse. Sign in first.';
  pending = {path, summary, done};
  confirmDialog.showModal();
}

on(confirmForm, 'submit', async (ev) => {
  ev.preventDefault();
  confirmDialog.close();
  const p = pending;
  pending = null;
  if (!p || !ev.submitter || ev.submitter.value !== 'yes') return;
  try {
    const r = await act(p.path);
    toast(p.summary(r), 'ok');
    if (p.done) p.done(r);
  } catch (e) {
    const hint = e instanceof APIError && e.status === 401 ? ' (sign in with the console token)' : '';
    toast(e.message + hint, 'bad');
  }
});

// toast shows a short message.
export function toast(text, cls) {
  const t = h('div', {class: 'toast ' + (cls || ''), role: 'status'}, text);
  document.getElementById('toasts').append(t);
  setTimeout(() => t.remove(), 6000);
}

// deadLetterTable lists dead letters with a replay button each.
export function deadLetterTable(dls, withSaga, done) {
  if (!dls.length) return h('p', {class: 'empty'}, 'No dead letters.');
  return h('table', {class: 'list deadletters'},
    h('thead', {}, h('tr', {}, ['Time', withSaga ? 'Saga' : null, 'Event', 'Destination', 'Code', 'Body', 'Handling', 'Replayed', ''].filter((x) => x !== null).map((t) => h('th', {}, t)))),
    h('tbody', {}, dls.map((d) => {
      const replay = h('button', {type: 'button', class: 'action small', 'data-action': 'replay'}, 'Replay');
      on(replay, 'click', () => confirmAction(`Replay dead letter ${d.id} (${d.event_type})? Its event is published again as it was first sent.`,
        `/api/v1/deadletters/${encodeURIComponent(d.id)}/replay`, () => 'replayed', done));
      return h('tr', {'data-id': d.id},
        h('td', {class: 'time'}, fmtTime(d.at)),
        withSaga ? h('td', {class: 'id'}, d.saga_id ? h('a', {href: '/sagas/' + encodeURIComponent(d.saga_id)}, d.saga_id) : '') : null,
        h('td', {}, h('div', {}, d.event_type), h('div', {class: 'sub'}, d.event_id)),
        h('td', {class: 'dest'}, d.destination || ''),
        h('td', {class: 'num'}, d.code || ''),
        h('td', {class: 'body'}, d.body ? h('details', {}, h('summary', {}, d.body.length > 60 ? d.body.slice(0, 60) + '…' : d.body), h('pre', {}, d.body)) : ''),
        h('td', {}, d.handling),
        h('td', {}, d.replayed_by ? `${d.replayed_by}, ${fmtTime(d.replayed_at)}` : ''),
        h('td', {}, replay));
    })));
}

