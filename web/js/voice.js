// Voice channels in the browser, through the relay's SFU. Joining asks the relay for a grant
// (renewed at a third of its life), then for the SFU's offer: one transceiver for this
// browser's microphone (it brings the first slot back), then send-only "slots": together the
// slots carry the loudest other
// speakers (a slot changes speaker as people talk; each forwarded packet names its speaker
// in its CSRC, `audioSource(user id)`). Mute takes the microphone off the sender (no packets
// leave), deafen silences the slots (and mutes), the speaking indicators come from the RTP
// audio levels, and a per-user volume follows its user from slot to slot.
//
// Video (screen share or camera): the offer also carries one video m-line, both ways: what
// this browser shows goes out on it (its track swapped in and out without renegotiating),
// and whoever this browser watches comes in on it (`watch(user)` asks the relay, which asks
// that publisher for a keyframe so the picture starts at once).
//
// Failover: a transport that receives nothing for 2.2 s (the relay's ICE consent checks come
// every second) or a failed connection makes the call join again and renegotiate, keeping
// mute, the shared screen and whom it watches (`testkit/tests/web_voice_failover.rs`). Mute
// is `replaceTrack(null)`. Speaking is each slot's mean level since the last poll (the
// stats' audio energy, so a short burst between polls counts) or its last packet's RFC 6464
// level. `audioSource(user)` is FNV-1a of the id, as `concord_media::audio_source` computes
// it for the SFU.

const POLL_MS = 250;
// RTCRtpSynchronizationSource.audioLevel is linear 0..1; above this someone is talking.
const SPEAKING_LEVEL = 0.02;
const GATHER_TIMEOUT_MS = 3_000;
// How long a disconnected call waits before it reconnects, and how often it tries.
const QUIET_MS = 1_000;
const RECONNECT_ATTEMPTS = 5;
// The relay's ICE consent checks reach us every second even when nobody speaks: nothing at
// all for this long means its instance is gone, well before the browser's own ICE says so.
const STALL_MS = 2_200;
const STALL_POLL_MS = 500;

// The root mean square audio level (linear 0..1) since the last call for `holder` (a slot or
// the upstream), from the `type` stats' total audio energy and duration; 0 on the first call.
function meanLevel(holder, stats, type) {
  const s = [...stats.values()].find((x) => x.type === type && x.kind === 'audio');
  const energy = s?.totalAudioEnergy ?? 0;
  const duration = s?.totalSamplesDuration ?? 0;
  const last = holder.energy;
  holder.energy = { energy, duration };
  if (!last || duration <= last.duration) return 0;
  return Math.sqrt(Math.max(0, energy - last.energy) / (duration - last.duration));
}

// FNV-1a (32 bits) of the decimal user id: the CSRC the relay puts on a speaker's packets.
export function audioSource(userId) {
  let hash = 0x811c9dc5;
  for (const ch of String(userId)) hash = Math.imul(hash ^ ch.charCodeAt(0), 0x01000193);
  return hash >>> 0;
}

function gathered(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== 'complete') return;
      pc.removeEventListener('icegatheringstatechange', done);
      resolve();
    };
    pc.addEventListener('icegatheringstatechange', done);
    // Some candidates are enough; a slow STUN/TURN server must not block the call.
    setTimeout(resolve, GATHER_TIMEOUT_MS);
  });
}

export class VoiceCall {
  // hooks: { speaking(Set of user ids), state(text), ended(reason) }
  constructor(api, channel, me, hooks) {
    this.api = api;
    this.channel = channel;
    this.me = me;
    this.hooks = hooks;
    this.pc = null;
    this.mic = null;
    this.slots = []; // { receiver, audio, user }
    this.videoUp = null; // the transceiver our screen or camera goes out on
    this.videoSlot = null; // the track of whoever we watch
    this.video = null; // { kind: 'screen' | 'camera', track } while we share
    this.watching = null; // the user id we watch
    this.muted = false;
    this.deafened = false;
    this.serverMuted = false;
    this.volumes = new Map(); // user id → 0..1
    this.users = new Map(); // audio source → user id
    this.speaking = new Set();
    this.timers = [];
    this.closed = false;
  }

  path(tail = '') {
    return `/api/v1/voice/channels/${this.channel.id}${tail}`;
  }

  async join() {
    const joined = await this.api.call('POST', this.path('/join'), { client: 'browser', self_mute: false, self_deaf: false });
    this.learn(joined.participants);
    this.renewEvery(joined.grant.expires_at);
    try {
      this.mic = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (err) {
      await this.leave();
      throw new Error(`The microphone is not available (${err.name}).`);
    }
    await this.connect();
    this.timers.push(setInterval(() => this.sample(), POLL_MS));
    this.timers.push(setInterval(() => this.checkStall(), STALL_POLL_MS));
  }

  // Bytes received on the connection's transport: when they stop for STALL_MS, reconnect.
  async checkStall() {
    const pc = this.pc;
    if (!pc || this.reconnecting || pc.connectionState !== 'connected') return;
    let bytes = 0;
    for (const s of (await pc.getStats()).values()) if (s.type === 'transport') bytes += s.bytesReceived ?? 0;
    const now = Date.now();
    if (pc !== this.lastStall?.pc || bytes !== this.lastStall.bytes) {
      this.lastStall = { pc, bytes, at: now };
    } else if (now - this.lastStall.at > STALL_MS) {
      this.lastStall = null;
      this.reconnect();
    }
  }

  // One peer connection to the SFU: the relay's offer, answered with the microphone (and the
  // screen or camera, if one is shared).
  async connect() {
    const ice = await this.api.call('GET', '/api/v1/voice/ice-servers');
    // ?relay in the page's own settings (or a TURN-only network) sends everything via TURN.
    const policy = localStorage.getItem('concord-voice-relay-only') === '1' ? 'relay' : 'all';
    const pc = new RTCPeerConnection({ iceServers: ice.ice_servers, iceTransportPolicy: policy });
    this.pc = pc;
    pc.addEventListener('track', (ev) => {
      if (ev.track.kind === 'audio') this.addSlot(ev.receiver, ev.track);
    });
    pc.addEventListener('connectionstatechange', () => this.connectionChanged(pc));
    const offer = await this.api.call('POST', this.path('/sfu'), { video: true });
    await pc.setRemoteDescription({ type: 'offer', sdp: offer.sdp });
    // The first m-line takes our microphone and brings the first slot (the relay's upstream
    // transceiver and its first slot share it); the other audio m-lines are slots.
    const transceivers = pc.getTransceivers();
    const up = transceivers[0];
    up.direction = 'sendrecv';
    // After the audio, one video m-line both ways: our screen or camera (none yet) goes
    // out on it, whoever we watch comes in on it.
    const video = transceivers.find((t) => t.receiver.track.kind === 'video');
    this.videoUp = video ?? null;
    if (video) video.direction = 'sendrecv';
    this.videoSlot = video?.receiver.track ?? null;
    this.up = up;
    this.upMeter = {};
    await this.sendMic();
    if (this.video) await this.videoUp?.sender.replaceTrack(this.video.track);
    await pc.setLocalDescription(await pc.createAnswer());
    await gathered(pc);
    await this.api.call('POST', this.path('/sfu/answer'), { sdp: pc.localDescription.sdp });
  }

  connectionChanged(pc) {
    if (pc !== this.pc || this.closed) return;
    const s = pc.connectionState;
    if (s === 'connected') {
      clearTimeout(this.quiet);
      this.hooks.state('Voice connected');
    } else if (s === 'failed') {
      this.reconnect();
    } else if (s === 'disconnected') {
      // The relay went quiet: its instance may be gone. A short wait rides out a blip.
      this.hooks.state('Voice disconnected…');
      clearTimeout(this.quiet);
      this.quiet = setTimeout(() => {
        if (pc === this.pc && pc.connectionState !== 'connected') this.reconnect();
      }, QUIET_MS);
    } else {
      this.hooks.state(`Voice ${s}…`);
    }
  }

  // The connection to the SFU broke (its instance died, the network changed): join again —
  // another instance takes the room if its owner is gone — and renegotiate, keeping the
  // microphone, mute, the shared screen and whom we watch.
  async reconnect() {
    if (this.reconnecting || this.closed) return;
    this.reconnecting = true;
    clearTimeout(this.quiet);
    this.hooks.state('Reconnecting voice…');
    try {
      for (let attempt = 0; attempt < RECONNECT_ATTEMPTS && !this.closed; attempt += 1) {
        this.dropConnection();
        try {
          const again = await this.api.call('POST', this.path('/join'), {
            client: 'browser', self_mute: this.muted, self_deaf: this.deafened,
          });
          this.learn(again.participants);
          await this.connect();
          if (this.video) await this.api.call('PATCH', this.path('/state'), { self_video: true });
          if (this.watching) {
            await this.api.call('POST', this.path('/sfu/watch'), { user_id: this.watching });
            this.hooks.watching?.(this.videoSlot);
          }
          return;
        } catch (err) {
          if (err?.status === 403 || err?.status === 404) break; // no longer allowed here
          await new Promise((r) => setTimeout(r, 500 * 2 ** attempt));
        }
      }
      if (!this.closed) this.hooks.ended('The voice connection failed.');
    } finally {
      this.reconnecting = false;
    }
  }

  // Closes the peer connection and its slots, keeping the call's own state.
  dropConnection() {
    this.pc?.close();
    this.pc = null;
    for (const slot of this.slots) slot.audio.remove();
    this.slots = [];
  }

  renewEvery(expiresAt) {
    const life = Math.max(5_000, expiresAt - Date.now());
    this.timers.push(setInterval(async () => {
      try {
        const again = await this.api.call('POST', this.path('/join'), {
          client: 'browser', self_mute: this.muted, self_deaf: this.deafened,
        });
        this.learn(again.participants);
      } catch (err) {
        this.hooks.ended(`Left voice: ${err.message}`);
      }
    }, Math.floor(life / 3)));
  }

  // Participants' audio sources, to name the speaker on each slot.
  learn(participants) {
    for (const p of participants ?? []) this.users.set(audioSource(p.user_id), p.user_id);
  }

  addSlot(receiver, track) {
    const audio = document.createElement('audio');
    audio.autoplay = true;
    audio.srcObject = new MediaStream([track]);
    audio.muted = this.deafened;
    audio.hidden = true;
    document.body.append(audio);
    this.slots.push({ receiver, audio, user: null });
  }

  // Who is on each slot and who is speaking; applies per-user volumes as speakers move.
  // Speaking is the mean level since the last poll (from the audio energy the stats count),
  // so a short burst between two polls lights the indicator too, not only a loud last packet.
  async sample() {
    if (this.closed) return;
    const speaking = new Set();
    for (const slot of this.slots) {
      const sources = slot.receiver.getContributingSources();
      const newest = sources.reduce((a, b) => (b.timestamp > (a?.timestamp ?? -Infinity) ? b : a), null);
      const user = newest ? this.users.get(newest.source) ?? null : null;
      slot.user = user;
      slot.audio.volume = user ? this.volumes.get(user) ?? 1 : 1;
      const sync = slot.receiver.getSynchronizationSources()[0];
      const fresh = sync && newest && Math.abs(sync.timestamp - newest.timestamp) < 1_000 && sync.timestamp !== slot.lastSeen;
      slot.lastSeen = sync?.timestamp;
      const level = meanLevel(slot, await slot.receiver.getStats(), 'inbound-rtp');
      if (user && fresh && Math.max(level, sync.audioLevel ?? 0) > SPEAKING_LEVEL) speaking.add(user);
    }
    if (this.closed) return;
    if (!this.muted && !this.serverMuted && this.up) {
      const stats = await this.up.sender.getStats();
      const level = meanLevel(this.upMeter, stats, 'media-source');
      const now = [...stats.values()].find((s) => s.type === 'media-source' && s.kind === 'audio')?.audioLevel ?? 0;
      if (Math.max(level, now) > SPEAKING_LEVEL) speaking.add(this.me);
    }
    const changed = speaking.size !== this.speaking.size || [...speaking].some((u) => !this.speaking.has(u));
    this.speaking = speaking;
    if (changed) this.hooks.speaking(speaking);
  }

  async sendMic() {
    const on = !this.muted && !this.deafened && !this.serverMuted;
    await this.up?.sender.replaceTrack(on ? this.mic.getAudioTracks()[0] : null);
  }

  async setMuted(muted) {
    this.muted = muted;
    await this.sendMic();
    await this.api.call('PATCH', this.path('/state'), { self_mute: muted });
  }

  async setDeafened(deafened) {
    this.deafened = deafened;
    for (const slot of this.slots) slot.audio.muted = deafened;
    await this.sendMic();
    await this.api.call('PATCH', this.path('/state'), { self_deaf: deafened });
  }

  // Shares the screen or the camera (one at a time: starting one stops the other).
  async startVideo(kind) {
    if (!this.videoUp) throw new Error('This relay takes no video.');
    let stream;
    try {
      stream = kind === 'screen'
        ? await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: 15 }, audio: false })
        : await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 } });
    } catch (err) {
      throw new Error(kind === 'screen' ? `Screen sharing did not start (${err.name}).` : `The camera is not available (${err.name}).`);
    }
    const track = stream.getVideoTracks()[0];
    // Text and lines stay sharp on a shared screen; a camera favours motion.
    track.contentHint = kind === 'screen' ? 'detail' : 'motion';
    const previous = this.video;
    this.video = { kind, track };
    previous?.track.stop();
    // The browser's own "Stop sharing" bar ends the track.
    track.addEventListener('ended', () => {
      if (this.video?.track === track) this.stopVideo().then(() => this.hooks.video?.(), () => {});
    });
    await this.videoUp.sender.replaceTrack(track);
    await this.api.call('PATCH', this.path('/state'), { self_video: true });
  }

  async stopVideo(announce = true) {
    const video = this.video;
    if (!video) return;
    this.video = null;
    video.track.stop();
    await this.videoUp?.sender.replaceTrack(null);
    if (announce) await this.api.call('PATCH', this.path('/state'), { self_video: false });
  }

  // Receives `userId`'s screen or camera on our video slot; returns its track.
  async watch(userId) {
    await this.api.call('POST', this.path('/sfu/watch'), { user_id: userId });
    this.watching = userId;
    return this.videoSlot;
  }

  async stopWatching() {
    if (!this.watching) return;
    this.watching = null;
    await this.api.call('POST', this.path('/sfu/watch'), { user_id: null });
  }

  setVolume(userId, volume) {
    this.volumes.set(userId, Math.min(1, Math.max(0, volume)));
    for (const slot of this.slots) if (slot.user === userId) slot.audio.volume = this.volumes.get(userId);
  }

  // A voice_state_update: new participants' sources; a server mute stops our microphone.
  update(v) {
    if (v.channel_id === this.channel.id) this.users.set(audioSource(v.user_id), v.user_id);
    if (v.user_id === this.me) {
      const serverMuted = Boolean(v.server_mute) || v.speak === false;
      if (serverMuted !== this.serverMuted) {
        this.serverMuted = serverMuted;
        this.sendMic();
      }
      // A server mute ends our share too (the relay already cleared it).
      if (this.video && serverMuted) this.stopVideo(false).then(() => this.hooks.video?.(), () => {});
    }
  }

  close() {
    this.closed = true;
    clearTimeout(this.quiet);
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.pc?.close();
    for (const track of this.mic?.getTracks() ?? []) track.stop();
    this.video?.track.stop();
    this.video = null;
    for (const slot of this.slots) slot.audio.remove();
    this.slots = [];
  }

  async leave() {
    this.close();
    await this.api.call('POST', this.path('/leave')).catch(() => {});
  }
}
