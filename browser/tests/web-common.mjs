// Helpers shared by the web client's Chromium scripts (web-*.mjs).

export const TIMEOUT = 15_000;

// Records console errors, uncaught exceptions, requests to other origins and dialogs
// (alert/confirm/prompt: the client never opens one, so one would mean injected script).
export function watch(page, who, result, origin) {
  page.on('console', (msg) => {
    if (msg.type() === 'error') result.console_errors.push(`${who}: ${msg.text()}`);
  });
  page.on('pageerror', (err) => result.console_errors.push(`${who}: uncaught ${err.message}`));
  page.on('request', (req) => {
    const url = new URL(req.url());
    if (url.origin !== origin && url.protocol !== 'data:') result.foreign_requests.push(req.url());
  });
  page.on('response', (resp) => {
    if (resp.status() >= 400) {
      result.failed_requests ??= [];
      result.failed_requests.push(`${who}: ${resp.status()} ${resp.request().method()} ${new URL(resp.url()).pathname}`);
    }
  });
  page.on('dialog', (dialog) => {
    result.dialogs.push(`${who}: ${dialog.type()} ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  page.setDefaultTimeout(TIMEOUT);
}

export const messageItem = (page, text) => page.locator('#messages li.message', { has: page.locator('.content', { hasText: text }) });
export const messageText = (page, text) => page.locator('#messages .content', { hasText: text });

export async function createAccount(page, name) {
  await page.getByLabel('Username', { exact: true }).fill(name);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.locator('#app').waitFor({ state: 'visible' });
  await page.locator('#me-name', { hasText: name }).waitFor();
}

export async function send(page, text) {
  const input = page.getByLabel('Message', { exact: true });
  await input.fill(text);
  await input.press('Enter');
}

// A creates an account and the guild "Rust Meetup" and an invite; B opens the invite,
// creates an account and joins. Both end in #general.
export async function guildPair(pageA, pageB, base, nameA, nameB) {
  await pageA.goto(`${base}/`);
  await createAccount(pageA, nameA);
  await pageA.getByRole('button', { name: 'New guild' }).click();
  await pageA.getByLabel('Guild name').fill('Rust Meetup');
  await pageA.getByRole('button', { name: 'Create guild' }).click();
  await pageA.getByRole('heading', { name: '#general' }).waitFor();
  await pageA.getByRole('button', { name: 'Invite people' }).click();
  await pageA.getByLabel('Invite link').waitFor({ state: 'visible' });
  const invite = await pageA.getByLabel('Invite link').inputValue();
  await pageA.getByRole('button', { name: 'Done' }).click();
  await pageB.goto(invite);
  await createAccount(pageB, nameB);
  await pageB.getByRole('button', { name: 'Join guild' }).click();
  await pageB.locator('#composer-input[placeholder="Message #general"]').waitFor();
  return invite;
}

// Sends through the HTTP API with the page's own stored session (no UI).
export async function apiSend(page, contents) {
  await page.evaluate(async (list) => {
    const { kv } = await import('/js/store.js');
    const { access_token: token } = await kv.get('session');
    const channel = document.querySelector('#messages').dataset.channel;
    for (const content of list) {
      for (let attempt = 0; ; attempt += 1) {
        let resp = null;
        try {
          resp = await fetch(`/api/v1/channels/${channel}/messages`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
            body: JSON.stringify({ content, nonce: `api-${content}`.slice(0, 64).replace(/[^\x21-\x7e]/g, '_'), reply_to: null }),
          });
        } catch {
          resp = null;
        }
        if (resp?.ok) break;
        if (attempt > 50) throw new Error(`send ${content}: ${resp?.status ?? 'network'}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }, contents);
}

// Voice tests: the CSRC the relay writes for a speaker, computed as the client does (the
// relay's own unit test pins the same function's value).
export { audioSource } from '../../web/js/voice.js';

// Voice tests, as an init script: records every RTCPeerConnection the page makes (the client
// keeps its own private) in window.__pcs.
export function recordPeerConnections() {
  const Original = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = class extends Original {
    constructor(...args) {
      super(...args);
      window.__pcs.push(this);
    }
  };
}

// Voice tests: the first page creates an account (names[0]) and the guild `guildName`; the
// others open its invite, create accounts (names[1..]) and join. Returns the guild and the
// users (ids in page order).
export async function guildOf(pages, base, names, guildName) {
  const [first, ...others] = pages;
  await first.goto(`${base}/`);
  await createAccount(first, names[0]);
  await first.getByRole('button', { name: 'New guild' }).click();
  await first.getByLabel('Guild name').fill(guildName);
  await first.getByRole('button', { name: 'Create guild' }).click();
  await first.getByRole('heading', { name: '#general' }).waitFor();
  const guilds = await pageApi(first, 'GET', '/api/v1/users/@me/guilds');
  const guild = guilds.find((g) => g.name === guildName);
  const invite = await pageApi(first, 'POST', `/api/v1/guilds/${guild.id}/invites`, {});
  for (const [i, page] of others.entries()) {
    await page.goto(`${base}/invite/${invite.code}`);
    await createAccount(page, names[i + 1]);
    await page.getByRole('button', { name: 'Join guild' }).click();
    await page.locator('#composer-input[placeholder="Message #general"]').waitFor();
  }
  const users = [];
  for (const page of pages) users.push(await pageApi(page, 'GET', '/api/v1/users/@me'));
  return { guild, users };
}

// Voice tests: an API call from the page with its session's token (204 → null).
export async function pageApi(page, method, path, body) {
  return page.evaluate(async ([m, p, b]) => {
    const { kv } = await import('/js/store.js');
    const { access_token: token } = await kv.get('session');
    const resp = await fetch(p, {
      method: m,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: b === undefined ? undefined : JSON.stringify(b),
    });
    return resp.status === 204 ? null : resp.json();
  }, [method, path, body]);
}

// Chromium with fake microphones that need no permission prompt, and audio that plays
// without a user gesture.
export const FAKE_MEDIA = [
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', '--autoplay-policy=no-user-gesture-required',
];
