// The gateway WebSocket (docs/protocols/gateway.md): identify or resume, heartbeats,
// reconnect with jittered backoff; the caller gets ready/resumed/events and the state.
// A heartbeat left unacknowledged drops the socket and resumes; close codes decide what
// follows (resume, a fresh identify, a token refresh or a new login).

const ENDED = new Set([4002, 4003, 4008, 4029]);

export class Gateway {
  constructor(api, handlers) {
    this.api = api;
    this.handlers = handlers; // { ready(d), resumed(d), event(t, d), state(s) }
    this.ws = null;
    this.sessionId = null;
    this.seq = 0;
    this.interval = 41_250;
    this.heartbeat = null;
    this.retry = null;
    this.attempts = 0;
    this.stopped = true;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retry);
    clearInterval(this.heartbeat);
    this.ws?.close(1000);
    this.ws = null;
  }

  connect() {
    const ws = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/api/v1/gateway`);
    this.ws = ws;
    ws.onopen = async () => {
      let token;
      try {
        token = await this.api.token();
      } catch (err) {
        ws.close(1000);
        return;
      }
      if (this.ws !== ws) return;
      if (this.sessionId) {
        this.send('resume', { token, session_id: this.sessionId, seq: this.seq });
      } else {
        this.send('identify', { token });
      }
    };
    ws.onmessage = (msg) => {
      if (this.ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(msg.data);
      } catch {
        return;
      }
      switch (frame.op) {
        case 'ready':
          this.sessionId = frame.d.session_id;
          this.seq = 0;
          this.interval = frame.d.heartbeat_interval_ms ?? this.interval;
          this.connected();
          this.handlers.ready(frame.d);
          break;
        case 'resumed':
          this.connected();
          this.handlers.resumed?.(frame.d);
          break;
        case 'heartbeat_ack':
          this.awaitingAck = false;
          break;
        case 'event':
          if (typeof frame.s === 'number') this.seq = frame.s;
          this.handlers.event(frame.t, frame.d);
          break;
        default:
          break;
      }
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      clearInterval(this.heartbeat);
      this.ws = null;
      if (this.stopped) return;
      if (ev.code === 4009) {
        // Revoked: these tokens are dead; log in again with the device key.
        this.sessionId = null;
        this.handlers.state('reconnecting');
        this.api.relogin().then(() => this.schedule(), () => this.handlers.state('logged_out'));
        return;
      }
      if (ev.code === 4001) {
        this.sessionId = null;
        this.handlers.state('reconnecting');
        this.api.refresh().then(() => this.schedule(), () => this.schedule());
        return;
      }
      if (ENDED.has(ev.code)) this.sessionId = null;
      this.handlers.state('reconnecting');
      this.schedule();
    };
  }

  connected() {
    this.attempts = 0;
    this.awaitingAck = false;
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => this.beat(), this.interval);
    this.handlers.state('connected');
  }

  // A heartbeat whose predecessor was never acknowledged means a dead connection that the
  // browser has not noticed: drop it and reconnect. The session stays resumable on the
  // server (our close frame most likely never reaches it).
  beat() {
    if (this.awaitingAck) {
      const ws = this.ws;
      this.ws = null;
      clearInterval(this.heartbeat);
      try {
        ws?.close(4000);
      } catch {
        // already closing
      }
      this.handlers.state('reconnecting');
      this.schedule();
      return;
    }
    this.awaitingAck = true;
    this.send('heartbeat');
  }

  // Reconnect after 1–5 s (jittered, growing with failed attempts).
  schedule() {
    clearTimeout(this.retry);
    const base = Math.min(1000 * 2 ** this.attempts, 5000);
    this.attempts += 1;
    const delay = this.attempts === 1 ? 250 + Math.random() * 750 : base / 2 + Math.random() * (base / 2);
    this.retry = setTimeout(() => {
      if (!this.stopped) this.connect();
    }, delay);
  }

  send(op, d) {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(d === undefined ? { op } : { op, d }));
    return true;
  }

  typing(channelId) {
    return this.send('typing', { channel_id: channelId });
  }
}
