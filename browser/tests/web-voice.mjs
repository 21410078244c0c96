// Browser voice through the relay's SFU (driven by testkit/tests/web_voice.rs): three
// Chromium contexts with fake microphones join one voice channel. Each receives the two
// others (getStats inbound-rtp packets and audio energy rising; the slots' contributing
// sources name exactly the two others, never oneself); a speaking indicator lights up;
// mute stops the speaker's packets (its outbound packet count freezes and its source stops
// reaching the others) and unmute brings them back; deafen silences the listener's slots
// and its microphone; a per-user volume follows its user onto whichever slot carries them;
// leaving removes the participant everywhere and closes the connection; the relay's
// statistics show every participant, without loss, with a round-trip time; a browser that
// refuses the microphone gets a clear error and stays out of the call.
//
// Usage: node tests/web-voice.mjs <relay base url> [relay-only]. Prints one JSON line.

import { launch, finish } from '../lib/chromium.mjs';
import { watch, guildOf, createAccount, audioSource, recordPeerConnections, pageApi, FAKE_MEDIA } from './web-common.mjs';

const base = process.argv[2];
const relayOnly = process.argv[3] === 'relay-only';
const origin = new URL(base).origin;
const suffix = Math.random().toString(36).slice(2, 8);
const result = { ok: false, checks: {}, console_errors: [], foreign_requests: [], dialogs: [] };
const checks = result.checks;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const api = pageApi;

async function rtp(page) {
  return page.evaluate(async () => {
    const pc = window.__pcs.at(-1);
    const out = { state: pc?.connectionState, inbound: 0, energy: 0, streams: 0, outbound: 0, sources: {}, perStream: {}, relayed: false, remote: null };
    if (!pc) return out;
    const stats = await pc.getStats();
    for (const s of stats.values()) {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        out.inbound += s.packetsReceived ?? 0;
        out.energy += s.totalAudioEnergy ?? 0;
        if ((s.packetsReceived ?? 0) > 0) out.streams += 1;
        out.perStream[s.ssrc] = { packets: s.packetsReceived ?? 0, energy: s.totalAudioEnergy ?? 0 };
      }
      if (s.type === 'outbound-rtp' && s.kind === 'audio') out.outbound += s.packetsSent ?? 0;
      // What the relay's receiver reports say of this browser's microphone.
      if (s.type === 'remote-inbound-rtp' && s.kind === 'audio') {
        out.remote = { packetsLost: s.packetsLost, fractionLost: s.fractionLost, jitter: s.jitter,
          roundTripTime: s.roundTripTime, measurements: s.roundTripTimeMeasurements };
      }
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
        const local = stats.get(s.localCandidateId);
        if (local?.candidateType === 'relay') out.relayed = true;
      }
    }
    for (const r of pc.getReceivers()) {
      for (const c of r.getContributingSources()) {
        out.sources[c.source] = Math.max(out.sources[c.source] ?? 0, c.timestamp);
      }
    }
    return out;
  });
}

let browser;
try {
  browser = await launch(FAKE_MEDIA);
  const pages = [];
  for (const who of ['A', 'B', 'C']) {
    const ctx = await browser.newContext({ permissions: ['microphone'] });
    await ctx.addInitScript(recordPeerConnections);
    if (relayOnly) await ctx.addInitScript(() => localStorage.setItem('concord-voice-relay-only', '1'));
    const page = await ctx.newPage();
    watch(page, who, result, origin);
    pages.push(page);
  }
  const [a, b, c] = pages;
  const { guild, users } = await guildOf(pages, base, ['ana', 'bo', 'cy'].map((n) => `${n}_${suffix}`), 'Voice Test');
  const lounge = await api(a, 'POST', `/api/v1/guilds/${guild.id}/channels`, { name: 'Lounge', kind: 'voice' });
  const ids = users.map((u) => u.id);
  const sources = ids.map(audioSource);

  for (const page of pages) {
    await page.getByRole('button', { name: 'Lounge' }).click();
    await page.locator('#voice-status', { hasText: 'Voice connected' }).waitFor({ timeout: 30_000 });
  }
  checks.all_connected = true;

  // Everyone hears the two others, never themselves.
  await sleep(2_000);
  const first = await Promise.all(pages.map(rtp));
  await sleep(2_000);
  const second = await Promise.all(pages.map(rtp));
  result.rtp = second.map(({ inbound, energy, streams, outbound, relayed }) => ({ inbound, energy, streams, outbound, relayed }));
  // Per slot: two of each listener's slots (one per other participant) grow in packets
  // (50/s) and in audio energy, not one busy slot standing for both.
  const grown = (now, then, key, more) => Object.entries(now.perStream)
    .filter(([ssrc, v]) => v[key] - (then.perStream[ssrc]?.[key] ?? 0) > more).length;
  result.per_stream = second.map((s) => s.perStream);
  checks.each_receives = second.every((s, i) => grown(s, first[i], 'packets', 50) >= 2);
  checks.audio_energy_rises = second.every((s, i) => grown(s, first[i], 'energy', 0) >= 2);
  checks.sources_are_the_two_others = second.every((s, i) => {
    const heard = Object.keys(s.sources).map(Number);
    const others = sources.filter((_, j) => j !== i);
    return others.every((o) => heard.includes(o)) && !heard.includes(sources[i]);
  });
  if (relayOnly) checks.through_turn = second.every((s) => s.relayed);

  // Speaking indicators light up from the fake microphones' beeps: at B, for A or C (from
  // the slots' RTP levels, not B's own microphone).
  await b.locator(`[data-voice-user="${ids[0]}"].speaking, [data-voice-user="${ids[2]}"].speaking`)
    .first().waitFor({ timeout: 15_000 });
  checks.speaking_shown = true;

  // A mutes: A's packets stop, at A and at B; C still reaches B.
  await a.locator('#voice-mute').click();
  await a.locator('#voice-mute[aria-pressed="true"]').waitFor();
  await sleep(1_000);
  const [a1, b1] = [await rtp(a), await rtp(b)];
  await sleep(2_000);
  const [a2, b2] = [await rtp(a), await rtp(b)];
  result.mute = { a_sent: a2.outbound - a1.outbound, a_at_b: [b1.sources[sources[0]], b2.sources[sources[0]]] };
  checks.mute_stops_packets = a2.outbound - a1.outbound <= 2 && b2.sources[sources[0]] === b1.sources[sources[0]]
    && b2.sources[sources[2]] > b1.sources[sources[2]];
  await b.locator(`[data-voice-user="${ids[0]}"] .role-chip`, { hasText: 'muted' }).waitFor();
  checks.mute_shown_to_others = true;
  await a.locator('#voice-mute').click();
  await sleep(1_500);
  const b3 = await rtp(b);
  checks.unmute_resumes = b3.sources[sources[0]] > b2.sources[sources[0]];

  // A per-user volume at B follows A to whichever slot carries A.
  await b.getByLabel(`Volume of ana_${suffix}`).fill('20');
  await sleep(800);
  // The element playing the slot that carries A (its newest contributing source) is at
  // 20 %, the one carrying C stays at 100 %.
  result.volumes = await b.evaluate(([sa, sc]) => {
    const pc = window.__pcs.at(-1);
    const at = (source) => {
      const r = pc.getReceivers().find((r) => {
        const newest = r.getContributingSources().reduce((x, y) => (y.timestamp > (x?.timestamp ?? -Infinity) ? y : x), null);
        return newest?.source === source;
      });
      const el = r && [...document.querySelectorAll('audio')].find((el) => el.srcObject?.getAudioTracks()[0] === r.track);
      return el ? el.volume : null;
    };
    return { a: at(sa), c: at(sc) };
  }, [sources[0], sources[2]]);
  checks.volume_follows_user = result.volumes.a !== null && Math.abs(result.volumes.a - 0.2) < 0.01
    && result.volumes.c === 1;

  // The relay's view from RTCP: all three, with no upstream loss on loopback, a sane jitter
  // (A's mute and unmute make its timestamps jump: tens of ms) and a round-trip time from
  // Chrome's reception blocks on the relay's sender reports.
  result.relay_stats = await api(a, 'GET', `/api/v1/voice/channels/${lounge.id}/sfu/stats`);
  checks.relay_rtcp_stats = Array.isArray(result.relay_stats) && result.relay_stats.length === 3
    && result.relay_stats.every((s) => s.upstream_loss < 0.05 && s.upstream_jitter_ms >= 0 && s.upstream_jitter_ms < 1_000
      && s.rtt_ms >= 0 && s.rtt_ms < 1_000 && s.rtt_from === 'rtcp');

  // The relay's receiver reports on each browser's microphone (the relay writes them itself,
  // as its short path opens the audio past the connection): Chrome takes a round-trip time
  // from their LSR and DLSR, and they report no loss on loopback.
  result.remote_inbound = [];
  for (const page of [a, b, c]) result.remote_inbound.push((await rtp(page)).remote);
  checks.relay_receiver_reports = result.remote_inbound.every((r) => r && r.measurements >= 1
    && r.roundTripTime > 0 && r.roundTripTime < 1 && r.packetsLost <= 5 && r.fractionLost < 0.05);

  // C deafens: its slots are silenced and its microphone stops too.
  await c.locator('#voice-deafen').click();
  await c.locator('#voice-deafen[aria-pressed="true"]').waitFor();
  await sleep(1_000);
  const c1 = await rtp(c);
  await sleep(1_500);
  const c2 = await rtp(c);
  checks.deafen_silences = await c.evaluate(() => [...document.querySelectorAll('audio')].every((el) => el.muted))
    && c2.outbound - c1.outbound <= 2;
  await a.locator(`[data-voice-user="${ids[2]}"] .role-chip`, { hasText: 'deafened' }).waitFor();
  checks.deafen_shown_to_others = true;

  // C leaves: gone from A's list, its connection closed.
  await c.locator('#voice-leave').click();
  await a.locator(`[data-voice-user="${ids[2]}"]`).waitFor({ state: 'detached' });
  checks.leave_removes = (await c.evaluate(() => window.__pcs.at(-1).connectionState)) === 'closed'
    && (await c.locator('#voice-status').textContent()).includes('Not in voice');

  // D refuses the microphone: a clear error, and D is in no call (its join was undone).
  const dCtx = await browser.newContext();
  await dCtx.addInitScript(recordPeerConnections);
  await dCtx.addInitScript(() => {
    navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
  });
  const d = await dCtx.newPage();
  watch(d, 'D', result, origin);
  const invite = await api(a, 'POST', `/api/v1/guilds/${guild.id}/invites`, {});
  await d.goto(`${base}/invite/${invite.code}`);
  await createAccount(d, `dee_${suffix}`);
  await d.getByRole('button', { name: 'Join guild' }).click();
  await d.getByRole('button', { name: 'Lounge' }).click();
  await d.locator('#voice-error', { hasText: 'The microphone is not available (NotAllowedError).' }).waitFor({ timeout: 15_000 });
  const dee = await api(d, 'GET', '/api/v1/users/@me');
  await a.locator(`[data-voice-user="${dee.id}"]`).waitFor({ state: 'detached' });
  checks.microphone_refused = (await d.locator('#voice-status').textContent()).includes('Not in voice')
    && (await d.evaluate(() => window.__pcs.length === 0))
    && !(await api(a, 'GET', `/api/v1/voice/channels/${lounge.id}/sfu/stats`)).some((s) => String(s.user_id) === String(dee.id));

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
