//! Sessions revoked while their access tokens may still be unexpired. Entries are dropped
//! once every token of that session has expired anyway, so the set stays small.

use std::collections::HashMap;
use std::sync::RwLock;

use concord_proto::Id;

#[derive(Default)]
pub struct RevocationSet {
    /// session id → unix ms after which the entry is useless
    entries: RwLock<HashMap<Id, i64>>,
}

impl RevocationSet {
    pub fn insert(&self, session_id: Id, forget_after_ms: i64) {
        self.entries
            .write()
            .expect("revocation lock")
            .insert(session_id, forget_after_ms);
    }

    pub fn contains(&self, session_id: Id) -> bool {
        self.entries
            .read()
            .expect("revocation lock")
            .contains_key(&session_id)
    }

    pub fn purge(&self, now_ms: i64) {
        self.entries
            .write()
            .expect("revocation lock")
            .retain(|_, until| *until > now_ms);
    }

    pub fn len(&self) -> usize {
        self.entries.read().expect("revocation lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
