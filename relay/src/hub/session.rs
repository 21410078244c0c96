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
    detached_at: Option<Instant>,
    close: Option<CloseReason>,
}

pub struct Session {
    pub id: String,
    pub user_id: Id,
    /// The auth session (token family) this gateway session belongs to.
    pub auth_session: Id,
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
            auth_session,
            buffer_cap,
            max_pending,
            state: Mutex::new(State {
                last_s: 0,
                buffer: VecDeque::new(),
                sent_s: 0,
                attached: true,
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
        self.notify.notify_one();
    }

    /// Takes the events not yet sent, in order, and marks them sent.
    pub fn take_unsent(&self) -> Vec<Queued> {
        let mut st = self.lock();
        let from = st.sent_s;
        st.sent_s = st.last_s;
        st.buffer.iter().filter(|q| q.s > from).cloned().collect()
    }

    pub fn close(&self, reason: CloseReason) {
        let mut st = self.lock();
        if st.close.is_none() {
            st.close = Some(reason);
        }
        drop(st);
        self.notify.notify_one();
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.lock().close
    }

    pub fn detach(&self) {
        let mut st = self.lock();
        st.attached = false;
        st.detached_at = Some(Instant::now());
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

    /// Re-attaches a detached session for a client that saw everything up to `seq`.
    pub fn resume(&self, seq: u64) -> Option<Resume> {
        let mut st = self.lock();
        if st.attached || st.close.is_some() || seq > st.last_s {
            return None;
        }
        let oldest = st.buffer.front().map_or(st.last_s + 1, |q| q.s);
        if seq + 1 < oldest {
            return Some(Resume::TooOld);
        }
        st.attached = true;
        st.detached_at = None;
        st.sent_s = st.last_s;
        Some(Resume::Replay(
            st.buffer.iter().filter(|q| q.s > seq).cloned().collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Arc<str> {
        Arc::from(text)
    }

    #[test]
    fn numbering_and_draining() {
        let s = Session::new("a".into(), Id(1), Id(2), 4, 10);
        s.push("t", d("1"));
        s.push("t", d("2"));
        let got = s.take_unsent();
        assert_eq!(got.iter().map(|q| q.s).collect::<Vec<_>>(), [1, 2]);
        assert!(s.take_unsent().is_empty());
        s.push("t", d("3"));
        assert_eq!(s.take_unsent()[0].s, 3);
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
        s.take_unsent();
        // attached sessions cannot be resumed
        assert!(s.resume(5).is_none());
        s.detach();
        s.push("t", d("6"));
        // buffer holds s = 4, 5, 6
        assert!(matches!(s.resume(1), Some(Resume::TooOld)));
        match s.resume(4) {
            Some(Resume::Replay(events)) => {
                assert_eq!(events.iter().map(|q| q.s).collect::<Vec<_>>(), [5, 6])
            }
            _ => panic!("expected a replay"),
        }
        assert!(s.is_attached());
        // a seq from the future is refused
        s.detach();
        assert!(s.resume(99).is_none());
    }
}
