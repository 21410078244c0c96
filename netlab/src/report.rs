//! The report: per NAT pair, direct-connection rate, time to direct and message loss, in
//! the JSON shape the issue pins.

use serde::Serialize;

use crate::trial::{Pair, Trial};

#[derive(Debug, Serialize)]
pub struct Report {
    pub pairs: Vec<PairReport>,
}

#[derive(Debug, Serialize)]
pub struct PairReport {
    pub pair: &'static str,
    pub trials: usize,
    /// Fraction 0–1 of trials that ended with a direct connection.
    pub direct_rate: f64,
    pub time_to_direct_ms: Percentiles,
    pub messages_sent: u64,
    pub messages_lost: u64,
}

/// Over the trials that went direct; null when none did.
#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: Option<u64>,
    pub p95: Option<u64>,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub fn summarize(pair: Pair, trials: &[Trial]) -> PairReport {
    let mut times: Vec<u64> = trials.iter().filter_map(|t| t.time_to_direct_ms).collect();
    times.sort_unstable();
    let direct = trials.iter().filter(|t| t.direct).count();
    PairReport {
        pair: pair.name,
        trials: trials.len(),
        direct_rate: if trials.is_empty() {
            0.0
        } else {
            direct as f64 / trials.len() as f64
        },
        time_to_direct_ms: Percentiles {
            p50: percentile(&times, 50.0),
            p95: percentile(&times, 95.0),
        },
        messages_sent: trials.iter().map(|t| t.messages_sent).sum(),
        messages_lost: trials.iter().map(|t| t.messages_lost).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile(&v, 50.0), Some(10));
        assert_eq!(percentile(&v, 95.0), Some(19));
        assert_eq!(percentile(&[7], 95.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_counts_direct_trials_and_losses() {
        let t = |direct, ms, lost| Trial {
            direct,
            time_to_direct_ms: ms,
            messages_sent: 20,
            messages_lost: lost,
            in_order: true,
        };
        let r = summarize(
            crate::trial::PAIRS[0],
            &[
                t(true, Some(300), 0),
                t(false, None, 1),
                t(true, Some(100), 0),
                t(true, Some(200), 0),
            ],
        );
        assert_eq!(r.trials, 4);
        assert_eq!(r.direct_rate, 0.75);
        assert_eq!(r.time_to_direct_ms.p50, Some(200));
        assert_eq!(r.time_to_direct_ms.p95, Some(300));
        assert_eq!((r.messages_sent, r.messages_lost), (80, 1));
        let json = serde_json::to_value(Report { pairs: vec![r] }).unwrap();
        assert_eq!(json["pairs"][0]["pair"], "eim-eim");
        assert!(json["pairs"][0]["time_to_direct_ms"]["p50"].is_u64());
    }
}
