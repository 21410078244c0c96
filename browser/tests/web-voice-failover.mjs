// Browser voice when the room's relay instance dies (driven by
// testkit/tests/web_voice_failover.rs, which runs two instances: the page's own, in the test,
// and another as a process). Two Chromium contexts join a voice channel through the page's
// instance; the test says whether the room landed on the other instance (`again`: leave and
// try a new channel) and, once it has, SIGKILLs that instance (`killed`). Both browsers then
// notice the dead connection, join again (the page's instance takes the room) and
// renegotiate: audio flows both ways again, the call never ended, and the status is back to
// "Voice connected".
//
// Usage: node tests/web-voice-failover.mjs <relay base url>. Talks to the test on stdin and
// stdout (one JSON line per step); the last line is the result.

import readline from 'node:readline';
import { launch } from '../lib/chromium.mjs';
import { watch, guildOf, recordPeerConnections, pageApi as api, FAKE_MEDIA } from './web-common.mjs';

const base = process.argv[2];
const origin = new URL(base).origin;
const suffix = Math.random().toString(36).slice(2, 8);
const result = { ok: false, checks: {}, console_errors: [], foreign_requests: [], dialogs: [] };
const checks = result.checks;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const input = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function ask(step, extra = {}) {
  process.stdout.write(`${JSON.stringify({ step, ...extra })}\n`);
  const { value } = await input.next();
  return value?.trim();
}

// Audio packets received on the page's newest connection, and its state.
async function inbound(page) {
  return page.evaluate(async () => {
    const pc = window.__pcs.at(-1);
    let packets = 0;
    for (const s of (await pc.getStats()).values()) {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') packets += s.packetsReceived ?? 0;
    }
    return { packets, state: pc.connectionState, pcs: window.__pcs.length };
  });
}

// Whether audio is arriving now: packets grew over half a second on a connected link.
async function hearing(page) {
  const first = await inbound(page);
  await sleep(500);
  const second = await inbound(page);
  return second.state === 'connected' && second.pcs === first.pcs && second.packets > first.packets + 5;
}

async function until(what, probe, timeoutMs) {
  const start = Date.now();
  while (!(await probe())) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
  return Date.now() - start;
}

let browser;
try {
  browser = await launch(FAKE_MEDIA);
  const pages = [];
  for (const who of ['A', 'B']) {
    const ctx = await browser.newContext({ permissions: ['microphone'] });
    await ctx.addInitScript(recordPeerConnections);
    const page = await ctx.newPage();
    watch(page, who, result, origin);
    pages.push(page);
  }
  const [a] = pages;
  const { guild } = await guildOf(pages, base, [`ana_${suffix}`, `bo_${suffix}`], 'Failover');

  // Join channels until one's room is on the other instance (rendezvous hashing: one in two).
  let placed = false;
  for (let i = 0; i < 16 && !placed; i += 1) {
    const name = `Room ${i}`;
    const channel = await api(a, 'POST', `/api/v1/guilds/${guild.id}/channels`, { name, kind: 'voice' });
    for (const page of pages) {
      await page.getByRole('button', { name }).click();
      await page.locator('#voice-status', { hasText: 'Voice connected' }).waitFor({ timeout: 30_000 });
    }
    for (const page of pages) await until('audio', () => hearing(page), 15_000);
    const reply = await ask('joined', { channel: channel.id });
    if (reply === 'killed') {
      placed = true;
      break;
    }
    for (const page of pages) {
      await page.locator('#voice-leave').click();
      await page.locator('#voice-status', { hasText: 'Not in voice' }).waitFor();
    }
  }
  if (!placed) throw new Error('no room landed on the other instance');
  result.room_on_other_instance = true;

  // The owner is dead: both reconnect through the page's instance and hear each other again.
  const killed = Date.now();
  const back = await Promise.all(pages.map((page) => until('audio after the kill', () => hearing(page), 30_000)));
  result.audio_back_ms = Date.now() - killed;
  result.audio_back_each_ms = back;
  checks.audio_back = true;
  checks.new_connection = (await Promise.all(pages.map((p) => p.evaluate(() => window.__pcs.length)))).every((n) => n >= 2);
  for (const page of pages) await page.locator('#voice-status', { hasText: 'Voice connected' }).waitFor({ timeout: 5_000 });
  checks.status_connected = true;
  checks.call_not_ended = (await Promise.all(pages.map((p) => p.locator('#voice-error').textContent()))).every((t) => t === '');
  const room = (await ask('recovered'))?.split(' ') ?? [];
  checks.room_on_page_instance = room[0] === 'owner' && room[1] === '2';

  checks.no_foreign_requests = result.foreign_requests.length === 0;
  checks.no_dialogs = result.dialogs.length === 0;
  result.ok = Object.values(checks).every((v) => v === true);
} catch (err) {
  result.error = String(err?.stack ?? err);
} finally {
  await browser?.close().catch(() => {});
}
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(result.ok ? 0 : 1);
