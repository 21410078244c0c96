//! One trial of one NAT pair: two daemons start, get their relay reservations, learn each
//! other's addresses from the relay, connect (directly if the NATs allow a hole punch,
//! through the relay if not), and exchange messages in the guild's text channel.
//! Times come from the nodes' own `reserved_at_ms`, `learnt_at_ms` and `established_at_ms`
//! (time to direct counts from both holding a reservation and knowing each other); messages
//! are checked for loss and order.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use crate::procs::{Node, wait_until};
use crate::world::World;

#[derive(Debug, Clone, Copy)]
pub struct Pair {
    /// The report's name for it.
    pub name: &'static str,
    pub a: &'static str,
    pub b: &'static str,
    /// Loss each host's NAT router applies to what it forwards, both ways.
    pub loss_percent: u8,
}

pub const PAIRS: [Pair; 5] = [
    Pair {
        name: "eim-eim",
        a: "eim1",
        b: "eim2",
        loss_percent: 0,
    },
    Pair {
        name: "eim-sym",
        a: "eim1",
        b: "sym1",
        loss_percent: 0,
    },
    Pair {
        name: "sym-sym",
        a: "sym1",
        b: "sym2",
        loss_percent: 0,
    },
    Pair {
        name: "same-lan",
        a: "lan1",
        b: "lan2",
        loss_percent: 0,
    },
    Pair {
        name: "eim-eim-loss5",
        a: "eim1",
        b: "eim2",
        loss_percent: 5,
    },
];

#[derive(Debug, Clone)]
pub struct Trial {
    pub direct: bool,
    /// From the moment both hold a reservation and each knows the other's addresses from
    /// the relay to the first direct connection between them (0 if it came first).
    pub time_to_direct_ms: Option<u64>,
    pub messages_sent: u64,
    pub messages_lost: u64,
    /// Each side saw the other's messages in the order they were sent, once each.
    pub in_order: bool,
}

/// How long a pair gets to go direct after both are ready, before the trial counts it as
/// relayed.
const DIRECT_WINDOW: Duration = Duration::from_secs(10);
/// How long the messages get to arrive.
const DELIVERY_WINDOW: Duration = Duration::from_secs(30);

/// Loss removed when the trial ends, however it ends.
struct LossGuard<'a>(&'a World, Pair);

impl Drop for LossGuard<'_> {
    fn drop(&mut self) {
        if self.1.loss_percent > 0 {
            let _ = self.0.lab.set_loss(0, &[self.1.a, self.1.b]);
        }
    }
}

pub fn run(
    world: &World,
    pair: Pair,
    trial: usize,
    messages_per_side: usize,
) -> anyhow::Result<Trial> {
    let _loss = LossGuard(world, pair);
    if pair.loss_percent > 0 {
        world.lab.set_loss(pair.loss_percent, &[pair.a, pair.b])?;
    }
    let (na, nb) = (world.node(pair.a), world.node(pair.b));
    let (pa, pb) = (world.peer_id(pair.a), world.peer_id(pair.b));
    let phase = Instant::now();
    let da = world.daemon(pair.a)?;
    let db = world.daemon(pair.b)?;

    wait_until(Duration::from_secs(30), || {
        [na, nb].iter().all(|n| {
            n.json(&["status"])
                .is_ok_and(|s| s["relay"]["ready"] == true && s["relay"]["reserved_at_ms"].is_i64())
        })
    })
    .with_context(|| {
        format!(
            "{}: both nodes connected and reserved at the relay",
            pair.name
        )
    })?;
    let ready_after = phase.elapsed();

    // Watch until a direct connection exists and both have heard of each other, or the
    // window closes.
    let started = Instant::now();
    let (mut direct_at, mut t0);
    loop {
        direct_at = min_some(direct_since(na, pb), direct_since(nb, pa));
        let learnt = [learnt_at(na, pb), learnt_at(nb, pa)];
        let reserved = [reserved_at(na), reserved_at(nb)];
        t0 = reserved.iter().chain(&learnt).flatten().copied().max();
        let all_known = learnt.iter().all(Option::is_some);
        if (direct_at.is_some() && all_known) || started.elapsed() > DIRECT_WINDOW {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let time_to_direct_ms = direct_at.map(|d| d.saturating_sub(t0.unwrap_or(d)).max(0) as u64);
    let watched_after = phase.elapsed();

    // Messages both ways, each acknowledged by the relay before the next.
    let tag = format!("{}#{trial}", pair.name);
    let mut sent = 0;
    for i in 0..messages_per_side {
        for (node, side) in [(na, "a"), (nb, "b")] {
            sent += 1;
            let began = Instant::now();
            if let Err(e) = node.json(&["send", &world.channel_id, &format!("{tag} {side} {i}")]) {
                eprintln!("{}: send failed: {e:#}", pair.name);
            }
            if began.elapsed() > Duration::from_secs(1) {
                eprintln!(
                    "{}: {side} {i} took {:?} to be acknowledged",
                    pair.name,
                    began.elapsed()
                );
            }
        }
    }
    // Delivered = in the other's history; then wait for every one to be confirmed by the
    // relay (seq order; until then a message that came by gossip sorts after confirmed ones).
    let seen = |node: &Node, side: &str| received(node, &world.channel_id, &tag, side);
    let all_confirmed = |v: &[(usize, bool)]| {
        v.len() == messages_per_side && v.iter().all(|(_, confirmed)| *confirmed)
    };
    let _ = wait_until(DELIVERY_WINDOW, || {
        all_confirmed(&seen(nb, "a")) && all_confirmed(&seen(na, "b"))
    });
    let numbers = |v: Vec<(usize, bool)>| v.into_iter().map(|(i, _)| i).collect::<Vec<_>>();
    let (at_b, at_a) = (numbers(seen(nb, "a")), numbers(seen(na, "b")));
    if std::env::var_os("NETLAB_DEBUG").is_some() && direct_at.is_none() {
        for n in [na, nb] {
            let log = std::fs::read_to_string(n.dir.join("daemon.log")).unwrap_or_default();
            eprintln!("--- {} daemon.log\n{log}", n.host);
        }
        eprintln!(
            "{} #{trial}: ready {ready_after:?}, watched {watched_after:?}, delivered {:?}; at a {at_a:?}, at b {at_b:?}\n{:#}\n{:#}",
            pair.name,
            phase.elapsed(),
            describe(na),
            describe(nb)
        );
    }
    da.stop();
    db.stop();
    let in_sequence = |v: &[usize]| v.windows(2).all(|w| w[0] < w[1]);
    if !in_sequence(&at_a) || !in_sequence(&at_b) {
        eprintln!(
            "{} #{trial}: out of order: at a {at_a:?}, at b {at_b:?}",
            pair.name
        );
    }
    let distinct = |v: &[usize]| {
        let mut d = v.to_vec();
        d.sort_unstable();
        d.dedup();
        d.len() as u64
    };
    Ok(Trial {
        direct: direct_at.is_some(),
        time_to_direct_ms,
        messages_sent: sent,
        messages_lost: sent - distinct(&at_b) - distinct(&at_a),
        in_order: in_sequence(&at_b) && in_sequence(&at_a),
    })
}

fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When the node's first direct (not relayed) connection to `peer` was established.
fn direct_since(node: &Node, peer: &str) -> Option<i64> {
    let peers = node.json(&["peers"]).ok()?;
    peers
        .as_array()?
        .iter()
        .filter(|c| c["peer_id"] == peer && c["kind"] != "relayed")
        .filter_map(|c| c["established_at_ms"].as_i64())
        .min()
}

fn learnt_at(node: &Node, peer: &str) -> Option<i64> {
    let members = node.json(&["members"]).ok()?;
    members.as_array()?.iter().find(|m| m["peer_id"] == peer)?["learnt_at_ms"].as_i64()
}

fn reserved_at(node: &Node) -> Option<i64> {
    node.json(&["status"]).ok()?["relay"]["reserved_at_ms"].as_i64()
}

/// The numbers of `side`'s messages of this trial in `node`'s history, in history order,
/// and whether each is confirmed by the relay.
fn received(node: &Node, channel: &str, tag: &str, side: &str) -> Vec<(usize, bool)> {
    let prefix = format!("{tag} {side} ");
    let Ok(history) = node.json(&["history", channel, "--limit", "500"]) else {
        return Vec::new();
    };
    history
        .as_array()
        .map(|msgs| {
            msgs.iter()
                .filter_map(|m| {
                    let n = m["content"].as_str()?.strip_prefix(&prefix)?.parse().ok()?;
                    Some((n, m["confirmed"] == true))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// For logs: what one node sees.
pub fn describe(node: &Node) -> Value {
    serde_json::json!({
        "host": node.host,
        "status": node.json(&["status"]).ok(),
        "peers": node.json(&["peers"]).ok(),
        "members": node.json(&["members"]).ok(),
    })
}
