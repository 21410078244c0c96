//! Set-ups shared by the voice tests (mesh between nodes, browsers on the SFU, rooms across
//! relay instances). Each test binary uses a part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use concord_node::daemon::VoiceOptions;
use concord_node::voice_mesh::media::SourceSpec;
use concord_testkit::audio::{read_wav, strength};
use concord_testkit::{TestNode, TestRelay};

const TURN_SECRET: &str = "voice-test-secret";

/// concord-turn on loopback (loopback and private peers allowed: every participant lives
/// on this machine).
pub async fn turn_server() -> concord_turn::TurnServer {
    concord_turn::TurnServer::spawn(concord_turn::TurnConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        realm: "concord.test".into(),
        auth_secret: Some(TURN_SECRET.into()),
        // The relay's SFU gathers on every interface, so its candidates can be this
        // machine's private addresses too.
        allow_peers: [
            "127.0.0.0/8",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
        ]
        .iter()
        .map(|n| n.parse().expect("net"))
        .collect(),
        shutdown_grace_secs: 1,
        ..concord_turn::TurnConfig::default()
    })
    .await
    .expect("turn server starts")
}

/// A relay whose ice-servers answer sends clients to TURN at `addr` (the server itself, or
/// a shim in front of it) with ephemeral credentials.
pub async fn relay_with_turn(addr: std::net::SocketAddr) -> TestRelay {
    TestRelay::start_with(tempfile::tempdir().expect("temp dir"), |c| {
        c.voice.turn_urls = vec![format!("turn:{addr}?transport=udp")];
        c.voice.turn_secret = Some(TURN_SECRET.into());
    })
    .await
}

/// Samples per 20 ms frame.
pub const FRAME: usize = 960;

pub struct Speaker {
    pub node: TestNode,
    pub hz: f64,
    pub sink: PathBuf,
    _sink_dir: tempfile::TempDir,
}

pub async fn speaker(name: &str, hz: f64, force_turn: bool) -> Speaker {
    speaker_with(name, hz, force_turn, |_| {}).await
}

pub async fn speaker_with(
    name: &str,
    hz: f64,
    force_turn: bool,
    tweak: impl FnOnce(&mut concord_node::NodeConfig),
) -> Speaker {
    let sink_dir = tempfile::tempdir().expect("temp dir");
    let sink = sink_dir.path().join(format!("{name}.wav"));
    let node = TestNode::start_with(name, |c| {
        tweak(c);
        c.voice = VoiceOptions {
            source: SourceSpec::Sine(hz),
            sink: Some(sink.clone()),
            speaker: false,
            force_turn,
            probe: None,
        };
    })
    .await;
    Speaker {
        node,
        hz,
        sink,
        _sink_dir: sink_dir,
    }
}

pub fn frames_played(s: &Speaker) -> usize {
    s.node
        .node
        .voice_status()
        .map(|v| v.frames_played as usize)
        .unwrap_or(0)
}

/// The sink's samples between two frame counts.
pub fn window(samples: &[i16], from_frame: usize, to_frame: usize) -> &[i16] {
    let end = (to_frame * FRAME).min(samples.len());
    &samples[(from_frame * FRAME).min(end)..end]
}

/// Waits until `s` is on the SFU: mode `sfu`, its one link (to the relay) connected and no
/// mesh link left.
pub async fn wait_on_sfu(s: &Speaker) {
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let status = s.node.node.voice_status();
        let ready = status.as_ref().is_some_and(|v| {
            v.mode == "sfu"
                && v.peers.len() == 1
                && v.peers[0].link.device_key == concord_node::voice_mesh::SFU_KEY
                && v.peers[0].link.state == "connected"
        });
        if ready {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} not on the SFU: {}",
            s.node.name,
            serde_json::to_string_pretty(&status.map(|v| (v.mode, v.peers))).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every other speaker's tone is heard (at least 0.3 of the loudest) and one's own is not:
/// below `own_max` (five full-scale tones clip in the mixer, and the intermodulation of
/// tones 200 Hz apart lands on the sixth's frequency at a few percent).
pub fn hears_all_others(s: &Speaker, all: &[&Speaker], from: usize, to: usize, own_max: f64) {
    let samples = read_wav(&s.sink);
    let talk = window(&samples, from, to);
    let levels: Vec<(f64, f64)> = all
        .iter()
        .filter(|o| o.hz != s.hz)
        .map(|o| (o.hz, strength(talk, o.hz)))
        .collect();
    let own = strength(talk, s.hz);
    eprintln!("{}: others {levels:?}, own {own:.5}", s.node.name);
    for (hz, level) in levels {
        assert!(level > 0.3, "{} hears {hz} Hz at {level}", s.node.name);
    }
    assert!(own < own_max, "{} hears itself at {own}", s.node.name);
}
