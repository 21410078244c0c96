// Screen share and camera through the relay's SFU (driven by testkit/tests/web_voice.rs):
// three Chromium contexts with fake devices in one voice channel. A shares its screen; B
// sees A "live", watches, and decodes A's frames (starting on a keyframe); A's sender got a
// keyframe request (PLI) when B started watching, and another when C started later; B turns
// its camera on and A watches it; A stops sharing and B's viewer closes. Nobody receives
// video they do not watch.
//
// Usage: node tests/web-video.mjs <relay base url>. Prints one JSON line.

import { launch, finish } from '../lib/chromium.mjs';
import { watch, guildOf, recordPeerConnections, pageApi, FAKE_MEDIA } from './web-common.mjs';

const base = process.argv[2];
const origin = new URL(base).origin;
const suffix = Math.random().toString(36).slice(2, 8);
const result = { ok: false, checks: {}, console_errors: [], foreign_requests: [], dialogs: [] };
const checks = result.checks;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const api = pageApi;

// Video counters of the page's call: what it decodes and what its sender was asked for.
async function video(page) {
  return page.evaluate(async () => {
    const pc = window.__pcs.at(-1);
    const out = { decoded: 0, keyframes: 0, width: 0, received: 0, sent: 0, plis: 0, firs: 0 };
    if (!pc) return out;
    for (const s of (await pc.getStats()).values()) {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        out.decoded += s.framesDecoded ?? 0;
        out.keyframes += s.keyFramesDecoded ?? 0;
        out.width = Math.max(out.width, s.frameWidth ?? 0);
        out.received += s.packetsReceived ?? 0;
      }
      if (s.type === 'outbound-rtp' && s.kind === 'video') {
        out.sent += s.packetsSent ?? 0;
        out.plis += s.pliCount ?? 0;
        out.firs += s.firCount ?? 0;
      }
    }
    return out;
  });
}

async function until(what, probe, timeoutMs = 20_000) {
  const start = Date.now();
  for (;;) {
    const value = await probe();
    if (value) return Date.now() - start;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

let browser;
try {
  browser = await launch(FAKE_MEDIA);
  const pages = [];
  for (const who of ['A', 'B', 'C']) {
    const ctx = await browser.newContext({ permissions: ['microphone', 'camera'] });
    await ctx.addInitScript(recordPeerConnections);
    const page = await ctx.newPage();
    watch(page, who, result, origin);
    pages.push(page);
  }
  const [a, b, c] = pages;
  const { guild, users } = await guildOf(pages, base, ['ana', 'bo', 'cy'].map((n) => `${n}_${suffix}`), 'Video Test');
  const [me, bob] = users;
  await api(a, 'POST', `/api/v1/guilds/${guild.id}/channels`, { name: 'Stage', kind: 'voice' });
  for (const page of [a, b]) {
    await page.getByRole('button', { name: 'Stage' }).click();
    await page.locator('#voice-status', { hasText: 'Voice connected' }).waitFor({ timeout: 30_000 });
  }

  // A shares its screen: B sees it live; nothing is forwarded while nobody watches.
  await a.locator('#voice-share').click();
  await a.locator('#voice-share[aria-pressed="true"]').waitFor();
  await b.locator(`[data-voice-user="${me.id}"] .role-chip.live`).waitFor();
  checks.live_shown = true;
  await until('A sending video', async () => (await video(a)).sent > 50);
  await sleep(1_000);
  const unwatched = await video(b);
  checks.nothing_unwatched = unwatched.received === 0;
  const beforeWatch = await video(a);

  // B watches: a keyframe request reaches A, and B decodes A's frames from a keyframe on.
  await b.getByRole('button', { name: `Watch ana_${suffix}` }).click();
  await b.locator('#video-viewer:not([hidden])').waitFor();
  result.first_frame_ms = await until('B decoding A', async () => (await video(b)).decoded > 0);
  await sleep(2_000);
  const watching = await video(b);
  const afterWatch = await video(a);
  result.b_watching = watching;
  result.a_sender = { before: beforeWatch, after: afterWatch };
  checks.viewer_decodes = watching.decoded >= 10 && watching.keyframes >= 1 && watching.width > 0;
  checks.keyframe_requested_for_viewer = afterWatch.plis + afterWatch.firs > beforeWatch.plis + beforeWatch.firs;
  checks.viewer_plays = await b.evaluate(() => {
    const v = document.querySelector('#video-view');
    return v.videoWidth > 0 && !v.paused;
  });

  // C joins later and watches too: A is asked for a keyframe again, and C decodes.
  await c.getByRole('button', { name: 'Stage' }).click();
  await c.locator('#voice-status', { hasText: 'Voice connected' }).waitFor({ timeout: 30_000 });
  const beforeC = await video(a);
  await c.getByRole('button', { name: `Watch ana_${suffix}` }).click();
  result.c_first_frame_ms = await until('C decoding A', async () => (await video(c)).decoded > 0);
  const afterC = await video(a);
  checks.keyframe_requested_for_new_viewer = afterC.plis + afterC.firs > beforeC.plis + beforeC.firs;
  checks.second_viewer_decodes = (await video(c)).keyframes >= 1;

  // B turns its camera on; A watches it.
  await b.locator('#voice-camera').click();
  await b.locator('#voice-camera[aria-pressed="true"]').waitFor();
  await a.getByRole('button', { name: `Watch bo_${suffix}` }).click();
  await until('A decoding B', async () => (await video(a)).decoded > 0);
  checks.camera_watched = true;

  // A stops sharing: B's and C's viewers close, the live mark goes.
  await a.locator('#voice-share').click();
  await a.locator('#voice-share[aria-pressed="false"]').waitFor();
  await b.locator('#video-viewer').waitFor({ state: 'hidden' });
  await c.locator('#video-viewer').waitFor({ state: 'hidden' });
  await b.locator(`[data-voice-user="${me.id}"] .role-chip.live`).waitFor({ state: 'detached' });
  checks.stop_closes_viewers = true;
  // B's camera still reaches A.
  const a1 = await video(a);
  await sleep(1_500);
  checks.other_stream_unaffected = (await video(a)).decoded > a1.decoded;
  checks.camera_shown_live = await a.locator(`[data-voice-user="${bob.id}"] .role-chip.live`).count() === 1;

  checks.no_console_errors = result.console_errors.length === 0;
  checks.no_foreign_requests = result.foreign_requests.length === 0;
  checks.no_dialogs = result.dialogs.length === 0;
  result.ok = Object.values(checks).every((v) => v === true);
} catch (err) {
  result.error = String(err?.stack ?? err);
} finally {
  await browser?.close().catch(() => {});
}
finish(result);
