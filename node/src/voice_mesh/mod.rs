//! The voice mesh: one WebRTC peer connection per pair of nodes in a voice channel (bounded
//! by the mesh size), carrying the voice engine's Opus packets as RTP with the RFC 6464
//! audio level. This module owns the links and the audio clock; the daemon does the
//! signalling (offers and answers over libp2p, grants checked on both sides).
//!
//! `Mesh`: links bounded and keyed by device key, with generations so a late answer never
//! lands on a newer link, and the clock task (`media.rs`). On the SFU, one link under
//! `SFU_KEY` answers the relay's offer; each slot is mixed as its own stream keyed by
//! `peer::slot_id(ssrc)`, and the slot's last speaker is read from the CSRC. `rtp.rs`: the
//! engine's packets as RTP; `probe.rs`: mouth-to-ear latency for benchmarks.
//!
//! Tested in `testkit/tests/voice_mesh.rs`: three nodes checked by FFT, mute, no `speak` or
//! `connect`, forced TURN, 5 % loss through `testkit::lossy`, six nodes moving from the mesh
//! to the SFU, a node with two browsers.

pub mod media;
pub mod peer;
pub mod probe;
pub mod rtp;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concord_proto::Id;
use serde::Serialize;
use tokio::task::JoinHandle;

use media::{Capture, Media, Playback, SourceSpec, SpeakerStats};
use peer::{IceConfig, Link, LinkInfo};

use crate::voice_engine::FRAME_MS;
use crate::voice_engine::sink::WavSink;

/// The key of the link to the relay's SFU among the links (never a device key).
pub const SFU_KEY: &str = "sfu";

#[derive(Debug, Clone)]
pub struct MeshConfig {
    pub ice: IceConfig,
    /// Peer connections at most (the channel's mesh size minus ourselves).
    pub max_links: usize,
    pub source: SourceSpec,
    /// Where what we hear is written (WAV), if anywhere.
    pub sink: Option<PathBuf>,
    /// Play what we hear on the default speaker (`cpal` feature).
    pub speaker: bool,
    /// Mouth-to-ear latency measurement (benchmarks).
    pub probe: Option<Arc<probe::LatencyProbe>>,
}

/// One peer as `concord voice status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    #[serde(flatten)]
    pub link: LinkInfo,
    /// What we received from this peer (absent until its first packet).
    pub audio: Option<SpeakerStats>,
}

struct Entry {
    link: Arc<Link>,
    watcher: JoinHandle<()>,
}

pub struct Mesh {
    config: MeshConfig,
    media: Arc<Media>,
    /// device key → link
    links: Mutex<HashMap<String, Entry>>,
    generation: AtomicU64,
    clock: Mutex<Option<JoinHandle<Playback>>>,
    stop: tokio_util::sync::CancellationToken,
}

impl Mesh {
    /// Starts the audio clock (the source is opened and the sink created here, so a bad
    /// path fails the join with a clear error).
    pub fn start(me: Id, config: MeshConfig) -> Result<Arc<Mesh>, String> {
        let capture = Capture::new(config.source.open()?)?;
        let playback = Playback::new(
            config.sink.as_deref().map(WavSink::create).transpose()?,
            config.speaker,
        )?;
        let mesh = Arc::new(Mesh {
            media: Arc::new(Media::new(me, config.probe.clone())),
            config,
            links: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            clock: Mutex::new(None),
            stop: tokio_util::sync::CancellationToken::new(),
        });
        let clock = tokio::spawn(run_clock(mesh.clone(), capture, playback));
        *mesh.clock.lock().expect("clock") = Some(clock);
        Ok(mesh)
    }

    pub fn media(&self) -> &Media {
        &self.media
    }

    pub fn set_muted(&self, muted: bool) {
        self.media.muted.store(muted, Ordering::Relaxed);
    }

    pub fn set_deafened(&self, deafened: bool) {
        self.media.deafened.store(deafened, Ordering::Relaxed);
    }

    pub fn set_allowed(&self, user: Id, allowed: bool) {
        self.media.set_allowed(user, allowed);
    }

    /// Device keys with a live (not failed or closed) link.
    pub fn live(&self) -> Vec<String> {
        self.links
            .lock()
            .expect("links")
            .iter()
            .filter(|(_, e)| !e.link.is_dead())
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn link_count(&self) -> usize {
        self.links.lock().expect("links").len()
    }

    /// A new link to `device_key`, replacing any previous one; refused past the bound.
    async fn new_link(&self, user_id: Id, device_key: &str) -> Result<Arc<Link>, String> {
        self.new_link_of(user_id, device_key, false).await
    }

    async fn new_link_of(
        &self,
        user_id: Id,
        device_key: &str,
        sfu: bool,
    ) -> Result<Arc<Link>, String> {
        // An offer still under way when the call ended makes no link that nobody would close.
        if self.stop.is_cancelled() {
            return Err("the call has ended".into());
        }
        {
            let links = self.links.lock().expect("links");
            if !links.contains_key(device_key) && links.len() >= self.config.max_links {
                return Err(format!(
                    "the mesh is full ({} peer connections)",
                    self.config.max_links
                ));
            }
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let link = Arc::new(
            Link::new(
                generation,
                user_id,
                device_key,
                &self.config.ice,
                self.media.clone(),
                sfu,
            )
            .await?,
        );
        let watcher = link.watch();
        let old = self.links.lock().expect("links").insert(
            device_key.to_owned(),
            Entry {
                link: link.clone(),
                watcher,
            },
        );
        if let Some(old) = old {
            close(old).await;
        }
        Ok(link)
    }

    /// The SFU: our answer to the relay's offer on a new link (our voice on its first
    /// transceiver, the loudest others on its slots). Mesh links must be closed first.
    pub async fn answer_sfu(&self, me: Id, offer: String) -> Result<String, String> {
        let link = self.new_link_of(me, SFU_KEY, true).await?;
        match link.answer(offer).await {
            Ok(answer) => Ok(answer),
            Err(e) => {
                self.close_generation(SFU_KEY, link.generation).await;
                Err(e)
            }
        }
    }

    /// Offerer, step one: a new link and its complete offer. Returns the generation to
    /// name the link in `accept`.
    pub async fn offer(&self, user_id: Id, device_key: &str) -> Result<(u64, String), String> {
        let link = self.new_link(user_id, device_key).await?;
        match link.offer(false).await {
            Ok(sdp) => Ok((link.generation, sdp)),
            Err(e) => {
                self.close_generation(device_key, link.generation).await;
                Err(e)
            }
        }
    }

    /// Offerer, ICE restart of a live link (after a network change): a new offer with new
    /// ICE credentials on the same connection.
    pub async fn restart(&self, device_key: &str) -> Result<(u64, String), String> {
        let link = self
            .links
            .lock()
            .expect("links")
            .get(device_key)
            .map(|e| e.link.clone())
            .ok_or("no link to restart")?;
        Ok((link.generation, link.offer(true).await?))
    }

    /// Offerer, step two: the answer for the link of this generation.
    pub async fn accept(
        &self,
        device_key: &str,
        generation: u64,
        sdp: String,
    ) -> Result<(), String> {
        let link = self
            .links
            .lock()
            .expect("links")
            .get(device_key)
            .filter(|e| e.link.generation == generation)
            .map(|e| e.link.clone())
            .ok_or("the link was replaced or closed")?;
        let accepted = link.accept(sdp).await;
        if accepted.is_err() {
            self.close_generation(device_key, generation).await;
        }
        accepted
    }

    /// Answerer: a restart applies to the live link; anything else makes a new link.
    pub async fn answer(
        &self,
        user_id: Id,
        device_key: &str,
        sdp: String,
        restart: bool,
    ) -> Result<String, String> {
        if restart {
            let live = self
                .links
                .lock()
                .expect("links")
                .get(device_key)
                .map(|e| e.link.clone());
            if let Some(link) = live
                && let Ok(answer) = link.answer(sdp.clone()).await
            {
                return Ok(answer);
            }
        }
        let link = self.new_link(user_id, device_key).await?;
        match link.answer(sdp).await {
            Ok(answer) => Ok(answer),
            Err(e) => {
                self.close_generation(device_key, link.generation).await;
                Err(e)
            }
        }
    }

    pub async fn close_generation(&self, device_key: &str, generation: u64) {
        let gone = {
            let mut links = self.links.lock().expect("links");
            match links.get(device_key) {
                Some(e) if e.link.generation == generation => links.remove(device_key),
                _ => None,
            }
        };
        if let Some(entry) = gone {
            close(entry).await;
        }
    }

    /// Closes the link to a device (it left, or said bye).
    pub async fn close_link(&self, device_key: &str) {
        let gone = self.links.lock().expect("links").remove(device_key);
        if let Some(entry) = gone {
            self.media
                .forget(entry.link.info.lock().expect("link info").user_id);
            close(entry).await;
        }
    }

    /// Links whose connection failed or closed (the daemon rebuilds them).
    pub async fn drop_dead(&self) -> Vec<String> {
        let dead: Vec<(String, Entry)> = {
            let mut links = self.links.lock().expect("links");
            let keys: Vec<String> = links
                .iter()
                .filter(|(_, e)| e.link.is_dead())
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| links.remove(&k).map(|e| (k, e)))
                .collect()
        };
        let mut keys = Vec::new();
        for (k, e) in dead {
            close(e).await;
            keys.push(k);
        }
        keys
    }

    /// Device keys of links that are up but disconnected (candidates for an ICE restart).
    pub fn disconnected(&self) -> Vec<String> {
        self.links
            .lock()
            .expect("links")
            .iter()
            .filter(|(_, e)| e.link.info.lock().expect("link info").state == "disconnected")
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn status(&self) -> Vec<PeerStatus> {
        let mut out: Vec<PeerStatus> = self
            .links
            .lock()
            .expect("links")
            .values()
            .map(|e| {
                let link = e.link.info.lock().expect("link info").clone();
                let audio = self.media.stats(link.user_id);
                PeerStatus { link, audio }
            })
            .collect();
        out.sort_by(|a, b| a.link.device_key.cmp(&b.link.device_key));
        out
    }

    /// Stops the clock (finishing the sink) and closes every link.
    pub async fn stop(&self) {
        self.stop.cancel();
        let clock = self.clock.lock().expect("clock").take();
        if let Some(clock) = clock
            && let Ok(playback) = clock.await
        {
            playback.finish();
        }
        let all: Vec<Entry> = self
            .links
            .lock()
            .expect("links")
            .drain()
            .map(|(_, e)| e)
            .collect();
        for e in all {
            close(e).await;
        }
    }
}

async fn close(entry: Entry) {
    entry.watcher.abort();
    let _ = entry.link.pc.close().await;
}

/// The 20 ms clock: capture and send, then play out and write the sink.
async fn run_clock(mesh: Arc<Mesh>, mut capture: Capture, mut playback: Playback) -> Playback {
    let mut tick = tokio::time::interval(Duration::from_millis(FRAME_MS as u64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut first_of_spurt = true;
    loop {
        tokio::select! {
            _ = mesh.stop.cancelled() => return playback,
            _ = tick.tick() => {}
        }
        let muted = mesh.media.muted.load(Ordering::Relaxed);
        let captured_at = std::time::Instant::now();
        match capture.next(muted) {
            Ok(Some(packet)) => {
                if let Some(probe) = &mesh.config.probe {
                    probe.captured(mesh.media.me(), packet.timestamp, captured_at);
                }
                let targets: Vec<(Arc<Link>, u8)> = mesh
                    .links
                    .lock()
                    .expect("links")
                    .values()
                    .filter(|e| e.link.is_connected())
                    .filter_map(|e| e.link.payload_type().map(|pt| (e.link.clone(), pt)))
                    .collect();
                for (link, pt) in targets {
                    let wire = rtp::to_rtp(&packet, link.ssrc, pt, first_of_spurt);
                    if let Err(e) = link
                        .track
                        .write_rtp_with_extensions(wire, &[rtp::audio_level(packet.level)])
                        .await
                    {
                        tracing::debug!(error = %e, "voice packet not sent");
                    } else {
                        mesh.media.packets_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                first_of_spurt = false;
            }
            Ok(None) => first_of_spurt = true,
            Err(e) => tracing::warn!(error = %e, "voice capture failed"),
        }
        let frame = mesh.media.play();
        playback.write(&frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn links_are_bounded_and_a_new_offer_replaces_the_old_link() {
        let mesh = Mesh::start(
            Id(1),
            MeshConfig {
                ice: IceConfig::default(),
                max_links: 1,
                source: SourceSpec::Silence,
                sink: None,
                speaker: false,
                probe: None,
            },
        )
        .unwrap();
        let (first, sdp) = mesh.offer(Id(2), "device-a").await.unwrap();
        assert!(
            sdp.contains("m=audio") && sdp.contains(rtp::AUDIO_LEVEL_URI),
            "{sdp}"
        );
        let full = mesh.offer(Id(3), "device-b").await.unwrap_err();
        assert!(full.contains("full"), "{full}");
        // The same device again (a rebuild) replaces its link; an answer for the old
        // generation is refused.
        let (second, _) = mesh.offer(Id(2), "device-a").await.unwrap();
        assert!(second > first);
        assert_eq!(mesh.link_count(), 1);
        let late = mesh.accept("device-a", first, "v=0".into()).await;
        assert!(late.is_err());
        mesh.close_link("device-a").await;
        assert_eq!(mesh.link_count(), 0);
        mesh.stop().await;
    }
}
