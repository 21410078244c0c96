// B's network drops for a moment, then the relay restarts, under two open clients (driven
// by testkit/tests/web_reconnect.rs; the relay sends 1 s heartbeats):
// a banner shows while the connection is lost, a message typed offline waits in the outbox,
// and after the restart both clients reconnect (a new gateway session, then catch-up by
// channel seq): every message sent meanwhile appears exactly once, the offline message is
// sent exactly once, and live delivery works again. Last, a send whose answer is lost (503
// `retry`) and one refused for a full disk (507) are retried with their nonce and shown once.
//
// Usage: node tests/web-reconnect.mjs <relay base url>. Talks to the Rust test over
// stdin/stdout: prints {"step":"stop"} / {"step":"start"} and waits for a line "ok".
// The last line is the JSON result.

import { createInterface } from 'node:readline';
import { launch, finish } from '../lib/chromium.mjs';
import { watch, messageText, send, guildPair, apiSend } from './web-common.mjs';

const base = process.argv[2];
const origin = new URL(base).origin;
const suffix = Math.random().toString(36).slice(2, 8);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

const result = { ok: false, checks: {}, console_errors: [], foreign_requests: [], dialogs: [] };
const checks = result.checks;

async function step(name) {
  process.stdout.write(`${JSON.stringify({ step: name })}\n`);
  const answer = await lines.next();
  if (answer.value?.trim() !== 'ok') throw new Error(`step ${name}: ${answer.value}`);
}

const count = (page, text) => page.locator('#messages .content').filter({ hasText: new RegExp(`^${text}$`) }).count();

let browser;
try {
  browser = await launch();
  const pageA = await (await browser.newContext()).newPage();
  const pageB = await (await browser.newContext()).newPage();
  watch(pageA, 'A', result, origin);
  watch(pageB, 'B', result, origin);
  result.gateway_b = { ready: 0, resumed: 0 };
  pageB.on('websocket', (ws) => ws.on('framereceived', (f) => {
    let op = null;
    try {
      op = JSON.parse(String(f.payload)).op;
    } catch {
      return;
    }
    if (op === 'ready' || op === 'resumed') result.gateway_b[op] += 1;
  }));
  await guildPair(pageA, pageB, base, `ana_${suffix}`, `bo_${suffix}`);
  await send(pageA, 'before restart');
  await messageText(pageB, 'before restart').waitFor();
  // B's network drops for a moment (no close frame): A's messages meanwhile arrive once B
  // is back (the gateway resumes its session, or identifies and catches up).
  await pageB.context().setOffline(true);
  const dropped = Date.now();
  await pageB.locator('#banner', { hasText: 'Reconnecting' }).waitFor();
  result.drop_noticed_ms = Date.now() - dropped;
  await apiSend(pageA, ['while B was offline 1', 'while B was offline 2']);
  await pageB.context().setOffline(false);
  for (const t of ['while B was offline 1', 'while B was offline 2']) await messageText(pageB, t).waitFor({ timeout: 30_000 });
  await pageB.locator('#banner').waitFor({ state: 'hidden', timeout: 30_000 });
  checks.network_drop_recovered = true;
  checks.resumed_after_drop = result.gateway_b.resumed === 1;
  checks.no_console_errors_before = result.console_errors.filter((e) => !e.includes('ERR_INTERNET_DISCONNECTED') && !e.includes('WebSocket')).length === 0;
  result.console_errors_before = [...result.console_errors];

  await step('stop');
  await pageB.locator('#banner', { hasText: 'Reconnecting' }).waitFor();
  checks.banner_shown = true;
  await send(pageB, 'typed offline');
  await pageB.locator('#messages li.pending', { hasText: 'waiting for the connection' }).waitFor();
  checks.offline_message_waits = true;

  await step('start');
  // Sent as soon as the relay is back, most likely before the clients' gateways return.
  const during = Array.from({ length: 5 }, (_, i) => `after restart ${i}`);
  await apiSend(pageA, during);
  await pageB.locator('#banner').waitFor({ state: 'hidden', timeout: 30_000 });
  await pageA.locator('#banner').waitFor({ state: 'hidden', timeout: 30_000 });
  checks.banner_hidden = true;
  for (const text of during) await messageText(pageB, text).waitFor();
  await messageText(pageA, 'typed offline').waitFor();
  await pageB.locator('#messages li.pending').waitFor({ state: 'detached' });
  await send(pageA, 'live again');
  await messageText(pageB, 'live again').waitFor();
  checks.live_again = true;

  // A send the relay stored but whose answer was lost (503 `retry`: it could not know the
  // outcome), and one refused for a full disk (507 `storage_full`): the client tries again
  // after Retry-After with the same nonce, and each message appears once.
  const posts = {};
  const faults = { 'answer lost': 'retry', 'disk was full': 'storage_full' };
  await pageB.route('**/api/v1/channels/*/messages', async (route) => {
    const req = route.request();
    if (req.method() !== 'POST') return route.fallback();
    const body = req.postDataJSON();
    (posts[body.content] ??= []).push(body.nonce);
    const code = faults[body.content];
    if (!code) return route.fallback();
    delete faults[body.content];
    if (code === 'retry') {
      // The relay stores it; its answer never arrives.
      result.lost_answer_status = (await route.fetch()).status();
    }
    return route.fulfill({
      status: code === 'retry' ? 503 : 507,
      headers: { 'content-type': 'application/json', 'retry-after': '1' },
      body: JSON.stringify({ code, message: code === 'retry' ? 'the outcome is unknown; send again with the same nonce' : 'the relay is out of disk space' }),
    });
  });
  await send(pageB, 'answer lost');
  await send(pageB, 'disk was full');
  for (const t of ['answer lost', 'disk was full']) await messageText(pageA, t).waitFor();
  await pageB.locator('#messages li.pending').waitFor({ state: 'detached' });
  await pageB.unrouteAll();
  result.posts = posts;
  // The stored one may also come back over the gateway first (its nonce settles the outbox
  // entry, so no retry is needed); the refused one must be sent again.
  const sameNonce = (list) => list.length >= 1 && list.every((n) => n === list[0]);
  checks.retried_with_the_same_nonce = result.lost_answer_status === 201
    && sameNonce(posts['answer lost'] ?? []) && posts['answer lost'].length <= 2
    && posts['disk was full']?.length === 2 && sameNonce(posts['disk was full']);

  const expected = ['before restart', 'while B was offline 1', 'while B was offline 2', ...during, 'typed offline', 'live again', 'answer lost', 'disk was full'];
  const seen = {
    a: await Promise.all(expected.map((t) => count(pageA, t))),
    b: await Promise.all(expected.map((t) => count(pageB, t))),
  };
  result.seen = seen;
  checks.each_once = [...seen.a, ...seen.b].every((n) => n === 1);
  checks.no_duplicate_ids = await pageB.evaluate(() => {
    const ids = [...document.querySelectorAll('#messages li[data-id]')].map((li) => li.dataset.id);
    return ids.length === new Set(ids).size && ids.length === 12;
  });
  // The history the relay holds agrees: reloading shows the same 12 messages.
  await pageB.reload();
  await messageText(pageB, 'live again').waitFor();
  checks.history_complete = (await pageB.locator('#messages li[data-id]').count()) === 12;
  checks.no_foreign_requests = result.foreign_requests.length === 0;
  checks.no_dialogs = result.dialogs.length === 0;
  result.ok = Object.values(checks).every((v) => v === true);
} catch (err) {
  result.error = String(err?.stack ?? err);
} finally {
  await browser?.close().catch(() => {});
}
finish(result);
