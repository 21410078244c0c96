//! One gateway session: a bounded buffer of numbered events that outlives its socket for the
//! resume window. The hub pushes, the socket task drains; neither blocks the other.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use concord_proto::Id;
use tokio::sync::Notify;

/// Why the server ends a session's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    TooSlow,
    Revoked,
    GoingAway,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        use concord_proto::gateway::close;
        match self {
            CloseReason::TooSlow => close::TOO_SLOW,
            CloseReason::Revoked => close::SESSION_REVOKED,
            CloseReason::GoingAway => close::GOING_AWAY,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            CloseReason::TooSlow => "too slow: events queued faster than they were read",
            CloseReason::Revoked => "session revoked",
            CloseReason::GoingAway => "server going away; reconnect",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Queued {
    pub s: u64,
    pub t: &'static str,
    pub d: Arc<str>,
}

struct State {
    last_s: u64,
    /// Sent and unsent events, oldest first, at most `buffer_cap` long.
    buffer: VecDeque<Queued>,
    /// Highest `s` handed to the socket.
    sent_s: u64,
    attached: bool,
    /// Bumped whenever a connection takes the session over (resume); a socket task holding
    /// an older epoch stops.
    epoch: u64,
    detached_at: Option<Instant>,
    close: Option<CloseReason>,
}

pub struct Session {
    pub id: String,
    pub user_id: Id,
    /// The auth session (token family) this gateway session belongs to: the identifying
    /// token's, then the token of the latest resume (`rebind`).
    auth_session: std::sync::atomic::AtomicI64,
    buffer_cap: usize,
    max_pending: usize,
    state: Mutex<State>,
    pub notify: Notify,
}

/// What a resume attempt found.
pub enum Resume {
    /// Events after the client's seq, to send before anything new.
    Replay(Vec<Queued>),
    /// The buffer no longer holds everything the client missed.
    TooOld,
}

impl Session {
    /// The auth session this gateway session belongs to now.
    pub fn auth_session(&self) -> Id {
        Id(self.auth_session.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Binds the session to the auth session of the token that resumed it: revoking that
    /// token closes it from now on (and revoking the old one no longer does).
    pub fn rebind(&self, auth_session: Id) {
        self.auth_session
            .store(auth_session.0, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn new(
        id: String,
        user_id: Id,
        auth_session: Id,
        buffer_cap: usize,
        max_pending: usize,
    ) -> Arc<Session> {
        Arc::new(Session {
            id,
            user_id,
            auth_session: std::sync::atomic::AtomicI64::new(auth_session.0),
            buffer_cap,
            max_pending,
            state: Mutex::new(State {
                last_s: 0,
                buffer: VecDeque::new(),
                sent_s: 0,
                attached: true,
                epoch: 1,
                detached_at: None,
                close: None,
            }),
            notify: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("session lock")
    }

    /// Queues an event. A session whose client has fallen `max_pending` events behind is
    /// closed as too slow rather than buffered without limit.
    pub fn push(&self, t: &'static str, d: Arc<str>) {
        let mut st = self.lock();
        if st.close.is_some() {
            return;
        }
        st.last_s += 1;
        let s = st.last_s;
        st.buffer.push_back(Queued { s, t, d });
        while st.buffer.len() > self.buffer_cap {
            st.buffer.pop_front();
        }
        if (st.last_s - st.sent_s) as usize > self.max_pending {
            st.close = Some(CloseReason::TooSlow);
        }
        drop(st);
        self.notify.notify_waiters();
    }

    /// The epoch of the connection that identified (the first one).
    pub const FIRST_EPOCH: u64 = 1;

    /// Takes the events not yet sent, in order, and marks them sent; `None` when another
    /// connection has taken the session over.
    pub fn take_unsent(&self, epoch: u64) -> Option<Vec<Queued>> {
        let mut st = self.lock();
        if st.epoch != epoch {
            return None;
        }
        let from = st.sent_s;
        st.sent_s = st.last_s;
        Some(st.buffer.iter().filter(|q| q.s > from).cloned().collect())
    }

    pub fn is_current(&self, epoch: u64) -> bool {
        self.lock().epoch == epoch
    }

    pub fn close(&self, reason: CloseReason) {
        let mut st = self.lock();
        if st.close.is_none() {
            st.close = Some(reason);
        }
        drop(st);
        self.notify.notify_waiters();
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.lock().close
    }

    /// The socket of `epoch` is gone; the session waits for a resume.
    pub fn detach(&self, epoch: u64) {
        let mut st = self.lock();
        if st.epoch == epoch {
            st.attached = false;
            st.detached_at = Some(Instant::now());
        }
    }

    pub fn is_attached(&self) -> bool {
        self.lock().attached
    }

    /// True when detached for longer than `window` or closed for good.
    pub fn is_expired(&self, window: std::time::Duration) -> bool {
        let st = self.lock();
        matches!(st.close, Some(CloseReason::TooSlow | CloseReason::Revoked))
            || st
                .detached_at
                .is_some_and(|t| !st.attached && t.elapsed() > window)
    }

    /// Attaches the session to a new connection for a client that saw everything up to
    /// `seq`. A session still attached to an old socket (a client that changed networks
    /// before the server noticed) is taken over. Returns the new epoch and what to replay.
    pub fn resume(&self, seq: u64) -> Option<(u64, Resume)> {
        let mut st = self.lock();
        if st.close.is_some() || seq > st.last_s {
            return None;
        }
        let oldest = st.buffer.front().map_or(st.last_s + 1, |q| q.s);
        if seq + 1 < oldest {
            return Some((st.epoch, Resume::TooOld));
        }
        st.epoch += 1;
        st.attached = true;
        st.detached_at = None;
        st.sent_s = st.last_s;
        let replay = st.buffer.iter().filter(|q| q.s > seq).cloned().collect();
        let epoch = st.epoch;
        drop(st);
        // Wake the old socket task so it sees it was replaced.
        self.notify.notify_waiters();
        Some((epoch, Resume::Replay(replay)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Arc<str> {
        Arc::from(text)
    }

    const E: u64 = Session::FIRST_EPOCH;

    #[test]
    fn numbering_and_draining() {
        let s = Session::new("a".into(), Id(1), Id(2), 4, 10);
        s.push("t", d("1"));
        s.push("t", d("2"));
        let got = s.take_unsent(E).unwrap();
        assert_eq!(got.iter().map(|q| q.s).collect::<Vec<_>>(), [1, 2]);
        assert!(s.take_unsent(E).unwrap().is_empty());
        s.push("t", d("3"));
        assert_eq!(s.take_unsent(E).unwrap()[0].s, 3);
    }

    #[test]
    fn slow_consumer_is_closed() {
        let s = Session::new("a".into(), Id(1), Id(2), 4, 3);
        for i in 0..4 {
            s.push("t", d(&i.to_string()));
        }
        assert_eq!(s.close_reason(), Some(CloseReason::TooSlow));
    }

    #[test]
    fn resume_replays_or_refuses() {
        let s = Session::new("a".into(), Id(1), Id(2), 3, 100);
        for i in 0..5 {
            s.push("t", d(&i.to_string()));
        }
        s.take_unsent(E);
        s.detach(E);
        s.push("t", d("6"));
        // buffer holds s = 4, 5, 6
        assert!(matches!(s.resume(1), Some((_, Resume::TooOld))));
        let Some((epoch, Resume::Replay(events))) = s.resume(4) else {
            panic!("expected a replay")
        };
        assert_eq!(events.iter().map(|q| q.s).collect::<Vec<_>>(), [5, 6]);
        assert!(s.is_attached());
        // the old connection's epoch is stale now
        assert!(s.take_unsent(E).is_none());
        assert!(s.take_unsent(epoch).unwrap().is_empty());
        // a seq from the future is refused
        assert!(s.resume(99).is_none());
    }

    #[test]
    fn resume_takes_over_a_still_attached_session() {
        let s = Session::new("a".into(), Id(1), Id(2), 8, 100);
        s.push("t", d("1"));
        let Some((epoch, Resume::Replay(events))) = s.resume(0) else {
            panic!("expected a replay")
        };
        assert_eq!(events.len(), 1);
        assert!(!s.is_current(E) && s.is_current(epoch));
        // a late detach by the old socket does not detach the new one
        s.detach(E);
        assert!(s.is_attached());
    }
}
