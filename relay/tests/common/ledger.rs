//! What a fault test's senders were told, and the check that the store agrees: every
//! acknowledged nonce stored once at the seq it was acknowledged with, seqs gapless, nothing
//! stored that was not acknowledged.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use concord_proto::Id;
use concord_relay::store::sql::{PoolConfig, SqlStore};
use concord_relay::store::{MessageStore, ServerStore};

/// Acknowledged nonces with their seqs, and the refusals (status, code) seen on the way.
#[derive(Debug, Default)]
pub struct Ledger {
    pub acked: BTreeMap<String, i64>,
    pub refused: Vec<(u16, String)>,
}

impl Ledger {
    /// Records one acknowledgement; the same nonce acknowledged again (a retry answered with
    /// the stored message) must carry the same seq.
    pub fn ack(&mut self, nonce: &str, seq: i64) {
        if let Some(before) = self.acked.insert(nonce.to_owned(), seq) {
            assert_eq!(before, seq, "{nonce} acknowledged under two seqs");
        }
    }

    /// Records one refusal.
    pub fn refuse(&mut self, status: u16, code: &str) {
        self.refused.push((status, code.to_owned()));
    }

    /// How many refusals carried `code`.
    pub fn refused_with(&self, code: &str) -> usize {
        self.refused.iter().filter(|(_, c)| c == code).count()
    }

    /// Reads every event of `channel` from the store at `url` and checks the promise: each
    /// event's nonce (its content's `nonce`) stored once, seqs `1..=n`, every acknowledged
    /// nonce stored at its seq, nothing stored that was not acknowledged. Returns how many
    /// messages are stored.
    pub async fn verify_against(&self, url: &str, channel: Id) -> usize {
        let store = SqlStore::connect(url, &PoolConfig::default())
            .await
            .expect("the store opens for verification");
        let mut stored: HashMap<String, i64> = HashMap::new();
        let mut seqs = Vec::new();
        let mut after = 0;
        loop {
            let page = store.events(channel, after, 100).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in &page {
                seqs.push(e.seq);
                let nonce = e.data["nonce"].as_str().unwrap().to_owned();
                assert!(
                    stored.insert(nonce.clone(), e.seq).is_none(),
                    "{nonce} stored twice"
                );
            }
        }
        assert_eq!(
            seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "seqs are gapless"
        );
        for (nonce, seq) in &self.acked {
            assert_eq!(
                stored.get(nonce),
                Some(seq),
                "acknowledged {nonce} is stored at its seq"
            );
        }
        assert_eq!(
            stored.len(),
            self.acked.len(),
            "nothing stored that was not acknowledged"
        );
        store.close().await;
        stored.len()
    }
}
