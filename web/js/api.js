// The relay's HTTP API (docs/protocols/http-auth.md): challenge login with the device key,
// tokens kept in IndexedDB, refresh under a Web Lock so several tabs share one rotation.
// Login checks the challenge's `audience` is `location.origin`; a call that fails with
// `token_expired` is retried once after a refresh.

import { kv } from './store.js';
import { loginBytes, sign } from './signed.js';

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message || code);
    this.status = status;
    this.code = code;
    // Seconds from the Retry-After header (429, 503, 507), when the relay sent one.
    this.retryAfter = retryAfter;
  }
}

// Codes after which the same request, sent again unchanged (a message with the same nonce),
// may succeed: concord_proto::api::RETRYABLE_CODES, plus `network` (no answer at all).
export const RETRYABLE = new Set(['busy', 'internal', 'rate_limited', 'retry', 'storage_full', 'unavailable', 'unknown_device', 'network']);

const REFRESH_MARGIN_MS = 60_000;

export class Api {
  constructor(device) {
    this.device = device;
    this.session = null;
    this.onLoggedOut = () => {};
  }

  // One HTTP call; JSON in and out; non-2xx becomes an ApiError with the relay's code.
  async raw(method, path, body, token) {
    const headers = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (token) headers.authorization = `Bearer ${token}`;
    let resp;
    try {
      resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      throw new ApiError(0, 'network', 'the relay cannot be reached');
    }
    if (resp.status === 204) return null;
    // History says where the relay's archive begins: older messages left history.
    const archived = resp.headers.get('concord-archived-before');
    if (archived !== null) this.archivedBefore = archived;
    const data = await resp.json().catch(() => null);
    if (!resp.ok) {
      const retryAfter = Number(resp.headers.get('retry-after')) || null;
      throw new ApiError(resp.status, data?.code ?? `http_${resp.status}`, data?.message ?? resp.statusText, retryAfter);
    }
    // History pages say up to which seq they are current (catch-up starts after it).
    const seq = resp.headers.get('concord-channel-seq');
    if (seq !== null && Array.isArray(data)) Object.defineProperty(data, 'channelSeq', { value: Number(seq) });
    return data;
  }

  async save(answer) {
    this.session = {
      access_token: answer.access_token,
      refresh_token: answer.refresh_token,
      expires_at: Date.now() + answer.expires_in * 1000,
      session_id: answer.session_id,
      user: answer.user,
    };
    await kv.set('session', this.session);
    await kv.set('user', answer.user);
  }

  // Challenge → signature → login. `certificate`/`username` only for a new device/account.
  // `invite`: on an invite-only relay a new account's first login carries one.
  async login({ certificate = null, username = null, invite = null } = {}) {
    const device = this.device;
    const c = await this.raw('POST', '/api/v1/auth/challenge', { device_key: device.public });
    if (c.audience !== location.origin) {
      throw new ApiError(0, 'wrong_audience', `the relay answered for ${c.audience}, not ${location.origin}`);
    }
    const signature = await sign(device.privateKey, loginBytes(c.audience, c.challenge));
    const body = { device_key: device.public, challenge: c.challenge, signature, certificate, username };
    if (invite) body.invite = invite;
    const answer = await this.raw('POST', '/api/v1/auth/login', body);
    await this.save(answer);
    return answer;
  }

  // A valid access token, refreshed first when it is about to expire.
  async token() {
    if (!this.session) this.session = (await kv.get('session')) ?? null;
    if (!this.session) {
      await this.login();
    } else if (Date.now() >= this.session.expires_at - REFRESH_MARGIN_MS) {
      await this.refresh();
    }
    return this.session.access_token;
  }

  // Rotates the refresh token. Tabs take turns (Web Lock); a tab that finds a newer session
  // stored by another tab uses it instead of spending its own (already rotated) token.
  async refresh() {
    const spent = this.session?.refresh_token;
    const work = async () => {
      const stored = await kv.get('session');
      if (stored && stored.refresh_token !== spent && Date.now() < stored.expires_at - REFRESH_MARGIN_MS) {
        this.session = stored;
        return;
      }
      try {
        await this.save(await this.raw('POST', '/api/v1/auth/refresh', { refresh_token: stored?.refresh_token ?? spent }));
      } catch (err) {
        if (err.status !== 401) throw err;
        // Spent, reused or revoked: log in again with the device key.
        await kv.del('session');
        this.session = null;
        await this.relogin();
      }
    };
    if (navigator.locks) await navigator.locks.request('concord-refresh', work);
    else await work();
  }

  async relogin() {
    try {
      await this.login();
    } catch (err) {
      if (err.status === 401 || err.status === 400) this.onLoggedOut(err);
      throw err;
    }
  }

  // An authenticated call; an expired token is refreshed and the call retried once.
  async call(method, path, body) {
    const token = await this.token();
    try {
      return await this.raw(method, path, body, token);
    } catch (err) {
      if (err.status === 401 && (err.code === 'token_expired' || err.code === 'invalid_token')) {
        await this.refresh();
        return this.raw(method, path, body, this.session.access_token);
      }
      if (err.status === 401 && err.code === 'session_revoked') {
        await kv.del('session');
        this.session = null;
        await this.relogin();
        return this.raw(method, path, body, this.session.access_token);
      }
      throw err;
    }
  }

  async logout() {
    const refresh = this.session?.refresh_token;
    this.session = null;
    await kv.del('session');
    if (refresh) await this.raw('POST', '/api/v1/auth/logout', { refresh_token: refresh }).catch(() => {});
  }
}

// Node-served mode (`concord ui`): the page's origin is a node's loopback control API, which
// signed this browser in with an HttpOnly cookie. The node speaks to the relay with its own
// device key, so the page holds no key and no token: the gateway's identify carries a
// placeholder the node replaces.
export class NodeApi extends Api {
  constructor() {
    super(null);
  }

  async token() {
    return 'node';
  }

  async login() {
    throw new ApiError(401, 'ui_signed_out', 'Run `concord ui` to open this page again.');
  }

  async refresh() {
    this.onLoggedOut();
  }

  async call(method, path, body) {
    try {
      return await this.raw(method, path, body);
    } catch (err) {
      if (err.status === 401) this.onLoggedOut(err);
      throw err;
    }
  }

  async logout() {}
}
