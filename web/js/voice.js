// Voice channels in the browser, through the relay's SFU. Joining asks the relay for a grant
// (renewed at a third of its life), then for the SFU's offer: one receive-only transceiver
// for this browser's microphone, then send-only "slots" that carry the loudest other
// speakers (a slot changes speaker as people talk; each forwarded packet names its speaker
// in its CSRC, `audioSource(user id)`). Mute takes the microphone off the sender (no packets
// leave), deafen silences the slots (and mutes), the speaking indicators come from the RTP
// audio levels, and a per-user volume follows its user from slot to slot.

const POLL_MS = 250;
// RTCRtpSynchronizationSource.audioLevel is linear 0..1; above this someone is talking.
const SPEAKING_LEVEL = 0.02;
const GATHER_TIMEOUT_MS = 3_000;

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
    const ice = await this.api.call('GET', '/api/v1/voice/ice-servers');
    // ?relay in the page's own settings (or a TURN-only network) sends everything via TURN.
    const policy = localStorage.getItem('concord-voice-relay-only') === '1' ? 'relay' : 'all';
    const pc = new RTCPeerConnection({ iceServers: ice.ice_servers, iceTransportPolicy: policy });
    this.pc = pc;
    pc.addEventListener('track', (ev) => this.addSlot(ev.receiver, ev.track));
    pc.addEventListener('connectionstatechange', () => {
      const s = pc.connectionState;
      this.hooks.state(s === 'connected' ? 'Voice connected' : s === 'failed' ? 'Voice connection failed' : `Voice ${s}…`);
      if (s === 'failed') this.hooks.ended('The voice connection failed.');
    });
    const offer = await this.api.call('POST', this.path('/sfu'));
    await pc.setRemoteDescription({ type: 'offer', sdp: offer.sdp });
    // The first m-line is the relay's receive-only transceiver: our microphone goes there.
    const up = pc.getTransceivers()[0];
    up.direction = 'sendonly';
    await up.sender.replaceTrack(this.mic.getAudioTracks()[0]);
    this.up = up;
    await pc.setLocalDescription(await pc.createAnswer());
    await gathered(pc);
    await this.api.call('POST', this.path('/sfu/answer'), { sdp: pc.localDescription.sdp });
    this.timers.push(setInterval(() => this.sample(), POLL_MS));
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
      if (user && fresh && (sync.audioLevel ?? 0) > SPEAKING_LEVEL) speaking.add(user);
    }
    if (!this.muted && !this.serverMuted && this.up) {
      const stats = await this.up.sender.getStats();
      for (const s of stats.values()) {
        if (s.type === 'media-source' && s.kind === 'audio' && (s.audioLevel ?? 0) > SPEAKING_LEVEL) speaking.add(this.me);
      }
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
    }
  }

  close() {
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.pc?.close();
    for (const track of this.mic?.getTracks() ?? []) track.stop();
    for (const slot of this.slots) slot.audio.remove();
    this.slots = [];
  }

  async leave() {
    this.close();
    await this.api.call('POST', this.path('/leave')).catch(() => {});
  }
}
