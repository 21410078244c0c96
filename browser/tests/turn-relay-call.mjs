// A WebRTC call between two peer connections in Chromium, forced through TURN with
// iceTransportPolicy "relay".
//   node turn-relay-call.mjs ICE_SERVERS_JSON [TIMEOUT_MS]
// ICE_SERVERS_JSON is an RTCIceServer array (what /api/v1/voice/ice-servers returns).
// Prints one JSON line {"ok", "echo", "local", "remote", "state", "candidates"}: the selected
// candidate pair's types and the text echoed over a data channel.
import { launch, finish } from '../lib/chromium.mjs';

const [serversJson, timeoutArg] = process.argv.slice(2);
if (!serversJson) {
  console.error('usage: turn-relay-call.mjs ICE_SERVERS_JSON [TIMEOUT_MS]');
  process.exit(2);
}
const iceServers = JSON.parse(serversJson);
const timeoutMs = Number(timeoutArg || 15000);

const browser = await launch();
try {
  const page = await browser.newPage();
  const result = await page.evaluate(async ({ iceServers, timeoutMs }) => {
    const config = { iceServers, iceTransportPolicy: 'relay' };
    const a = new RTCPeerConnection(config);
    const b = new RTCPeerConnection(config);
    const candidates = { a: [], b: [] };
    a.onicecandidate = (e) => { if (e.candidate) { candidates.a.push(e.candidate.type); b.addIceCandidate(e.candidate); } };
    b.onicecandidate = (e) => { if (e.candidate) { candidates.b.push(e.candidate.type); a.addIceCandidate(e.candidate); } };
    const echoed = new Promise((resolve) => {
      b.ondatachannel = (e) => { e.channel.onmessage = (m) => e.channel.send('echo:' + m.data); };
      const channel = a.createDataChannel('probe');
      channel.onopen = () => channel.send('hello through turn');
      channel.onmessage = (m) => resolve(m.data);
    });
    await a.setLocalDescription();
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription();
    await a.setRemoteDescription(b.localDescription);
    const timeout = new Promise((resolve) => setTimeout(() => resolve(null), timeoutMs));
    const echo = await Promise.race([echoed, timeout]);
    let local = null, remote = null, relayProtocol = null;
    const stats = await a.getStats();
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        const pair = stats.get(s.selectedCandidatePairId);
        const l = stats.get(pair.localCandidateId);
        local = l?.candidateType ?? null;
        relayProtocol = l?.relayProtocol ?? null;
        remote = stats.get(pair.remoteCandidateId)?.candidateType ?? null;
      }
    });
    const state = a.iceConnectionState;
    a.close(); b.close();
    return { echo, local, remote, relayProtocol, state, candidates };
  }, { iceServers, timeoutMs });
  finish({ ok: result.echo === 'echo:hello through turn' && result.local === 'relay', ...result });
} catch (err) {
  finish({ ok: false, error: String(err) });
} finally {
  await browser.close();
}
