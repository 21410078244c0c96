//! A lossy UDP shim for tests: listens on a loopback port and forwards every client's
//! datagrams to one upstream address (through a socket of its own per client, at most
//! `MAX_CLIENTS`), dropping a fixed share of the client → upstream datagrams with a seeded,
//! reproducible dice; answers come back untouched. Put it in front of a TURN
//! server to give a WebRTC call real packet loss without touching the host's network.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

const MAX_CLIENTS: usize = 64;

pub struct LossyShim {
    pub addr: SocketAddr,
    /// The share of client → upstream datagrams dropped, in percent (changeable).
    pub loss_percent: Arc<AtomicU64>,
    pub forwarded: Arc<AtomicU64>,
    pub dropped: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for LossyShim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A deterministic dice (64-bit LCG).
struct Dice(u64);

impl Dice {
    fn percent(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % 100
    }
}

impl LossyShim {
    /// Forwards to `upstream`, dropping `loss_percent` of the client → upstream datagrams.
    pub async fn start(upstream: SocketAddr, loss_percent: u64, seed: u64) -> LossyShim {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("shim socket"));
        let addr = socket.local_addr().expect("shim addr");
        let forwarded = Arc::new(AtomicU64::new(0));
        let loss = Arc::new(AtomicU64::new(loss_percent));
        let loss_now = loss.clone();
        let dropped = Arc::new(AtomicU64::new(0));
        let (fwd, drop_count) = (forwarded.clone(), dropped.clone());
        let task = tokio::spawn(async move {
            let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut dice = Dice(seed);
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let up = match clients.get(&from) {
                    Some(up) => up.clone(),
                    None if clients.len() >= MAX_CLIENTS => continue,
                    None => {
                        let up = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("upstream"));
                        // The way back: upstream → this client.
                        let (up2, down) = (up.clone(), socket.clone());
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 65_536];
                            while let Ok((n, _)) = up2.recv_from(&mut buf).await {
                                let _ = down.send_to(&buf[..n], from).await;
                            }
                        });
                        clients.insert(from, up.clone());
                        up
                    }
                };
                if dice.percent() < loss_now.load(Ordering::Relaxed) {
                    drop_count.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                fwd.fetch_add(1, Ordering::Relaxed);
                let _ = up.send_to(&buf[..n], upstream).await;
            }
        });
        LossyShim {
            addr,
            loss_percent: loss,
            forwarded,
            dropped,
            task,
        }
    }
}
