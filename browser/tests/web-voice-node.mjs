// A node and two browsers in one voice channel (driven by testkit/tests/voice_mesh.rs): the
// node is in the channel first; two Chromium contexts with fake microphones open the
// guild's invite, join and click the voice channel, which moves the channel to the SFU.
// Each browser receives the node and the other browser (their audio sources on its slots,
// inbound packets rising), and stays in the call a few seconds for the node to hear them.
//
// Usage: node tests/web-voice-node.mjs <relay base url> <invite url> <node user id>.
// Prints one JSON line.

import { launch, finish } from '../lib/chromium.mjs';
import { watch, createAccount, audioSource, recordPeerConnections, FAKE_MEDIA } from './web-common.mjs';

const [base, invite, nodeUser] = process.argv.slice(2);
const origin = new URL(base).origin;
const suffix = Math.random().toString(36).slice(2, 8);
const result = { ok: false, checks: {}, console_errors: [], foreign_requests: [], dialogs: [] };
const checks = result.checks;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const heard = (page) => page.evaluate(async () => {
  const pc = window.__pcs.at(-1);
  const sources = new Set();
  for (const r of pc.getReceivers()) for (const c of r.getContributingSources()) sources.add(c.source);
  let inbound = 0;
  for (const s of (await pc.getStats()).values()) if (s.type === 'inbound-rtp' && s.kind === 'audio') inbound += s.packetsReceived ?? 0;
  return { sources: [...sources], inbound };
});

let browser;
try {
  browser = await launch(FAKE_MEDIA);
  const pages = [];
  for (const who of ['B', 'C']) {
    const ctx = await browser.newContext({ permissions: ['microphone'] });
    await ctx.addInitScript(recordPeerConnections);
    const page = await ctx.newPage();
    watch(page, who, result, origin);
    await page.goto(invite);
    await createAccount(page, `${who.toLowerCase()}_${suffix}`);
    await page.getByRole('button', { name: 'Join guild' }).click();
    await page.locator('#composer-input[placeholder="Message #general"]').waitFor();
    pages.push(page);
  }
  const ids = [];
  for (const page of pages) {
    ids.push(await page.evaluate(async () => {
      const { kv } = await import('/js/store.js');
      return (await kv.get('user')).id;
    }));
  }
  for (const page of pages) {
    await page.getByRole('button', { name: 'Lounge' }).click();
    await page.locator('#voice-status', { hasText: 'Voice connected' }).waitFor({ timeout: 30_000 });
  }
  checks.browsers_connected = true;
  // Each browser hears the node and the other browser.
  const want = (i) => [audioSource(nodeUser), audioSource(ids[1 - i])];
  const deadline = Date.now() + 30_000;
  for (;;) {
    const now = await Promise.all(pages.map(heard));
    result.heard = now;
    if (now.every((h, i) => want(i).every((s) => h.sources.includes(s)))) break;
    if (Date.now() > deadline) throw new Error(`not everyone heard: ${JSON.stringify(now)}`);
    await sleep(250);
  }
  const first = await Promise.all(pages.map(heard));
  await sleep(4_000);
  const second = await Promise.all(pages.map(heard));
  checks.browsers_hear_node_and_each_other = true;
  checks.packets_keep_coming = second.every((h, i) => h.inbound - first[i].inbound >= 200);
  checks.no_console_errors = result.console_errors.length === 0;
  checks.no_foreign_requests = result.foreign_requests.length === 0;
  result.ok = Object.values(checks).every((v) => v === true);
} catch (err) {
  result.error = String(err?.stack ?? err);
} finally {
  await browser?.close().catch(() => {});
}
finish(result);
