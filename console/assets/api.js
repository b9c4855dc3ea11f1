// The console's calls: reads of the admin API (/api/v1) and of the
// console's own (/console/v1), and actions with the operator's identity.

// APIError is a failed call, with the API's message.
export class APIError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function answer(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  if (!resp.ok) {
    const msg = body && typeof body.error === 'string' ? body.error : `HTTP ${resp.status}`;
    throw new APIError(resp.status, msg);
  }
  return body;
}

// get reads a path of the console's origin (a plain request, so a read
// the document preloaded is used).
export async function get(path, signal) {
  return answer(await fetch(path, {signal}));
}

// query builds a path with the non-empty parameters.
export function query(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== '' && v !== false) q.set(k, String(v));
  }
  const t = q.toString();
  return t ? `${path}?${t}` : path;
}

// The operator's identity lives in this tab's sessionStorage only: it is
// never written into a page, a URL or a cookie, and is gone with the tab.
const ACTOR = 'ksaga.actor';
const TOKEN = 'ksaga.token';

export const identity = {
  get actor() {
    return sessionStorage.getItem(ACTOR) || '';
  },
  get hasToken() {
    return !!sessionStorage.getItem(TOKEN);
  },
  set(actor, token) {
    sessionStorage.setItem(ACTOR, actor);
    if (token) sessionStorage.setItem(TOKEN, token);
  },
  forget() {
    sessionStorage.removeItem(ACTOR);
    sessionStorage.removeItem(TOKEN);
  },
};

// act POSTs an action with the operator's token and name.
export async function act(path) {
  const headers = {Accept: 'application/json'};
  const token = sessionStorage.getItem(TOKEN);
  if (token) headers.Authorization = 'Bearer ' + token;
  const actor = identity.actor;
  if (actor) headers['Ksaga-Actor'] = actor;
  return answer(await fetch(path, {method: 'POST', headers}));
}
