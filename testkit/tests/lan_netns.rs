//! LAN mode: two nodes in their own network namespaces, joined by a bridge, find each other by
//! mDNS and exchange DMs while no relay runs; the DMs are confirmed by the relay once it is
//! back. Needs root (network namespaces); CI runs as root. libp2p-mdns ignores loopback, and
//! mDNS on the host would leak onto a real LAN, hence the namespaces.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use concord_proto::Id;
use concord_testkit::procs::{self, Cli, Proc};
use serde_json::{Value, json};

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces on a bridge; removed on drop.
struct Lab {
    tag: String,
    subnet: u8,
}

impl Lab {
    fn new() -> Lab {
        let n = std::process::id() % 200 + 20;
        let lab = Lab {
            tag: format!("cc{n}"),
            subnet: n as u8,
        };
        lab.teardown();
        let br = format!("{}br", lab.tag);
        sh(&["ip", "link", "add", &br, "type", "bridge"]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("10.77.{}.1/24", lab.subnet),
            "dev",
            &br,
        ]);
        sh(&["ip", "link", "set", &br, "up"]);
        for (i, side) in ["a", "b"].iter().enumerate() {
            let ns = lab.ns(side);
            let (inside, outside) = (format!("{}{side}", lab.tag), format!("{}{side}p", lab.tag));
            sh(&["ip", "netns", "add", &ns]);
            sh(&[
                "ip", "link", "add", &inside, "type", "veth", "peer", "name", &outside,
            ]);
            sh(&["ip", "link", "set", &inside, "netns", &ns]);
            sh(&["ip", "link", "set", &outside, "master", &br, "up"]);
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.77.{}.{}/24", lab.subnet, i + 2),
                "dev",
                &inside,
            ]);
            sh(&["ip", "-n", &ns, "link", "set", &inside, "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            sh(&[
                "ip",
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &format!("10.77.{}.1", lab.subnet),
            ]);
        }
        lab
    }

    fn ns(&self, side: &str) -> String {
        format!("{}-{side}", self.tag)
    }

    fn gateway(&self) -> String {
        format!("10.77.{}.1", self.subnet)
    }

    fn teardown(&self) {
        for side in ["a", "b"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(side)])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}br", self.tag)])
            .output();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn relay(lab: &Lab, dir: &Path, http_port: u16, p2p_port: u16) -> (Proc, String) {
    procs::relay(&[
        "--listen",
        &format!("{}:{http_port}", lab.gateway()),
        "--data-dir",
        dir.to_str().unwrap(),
        "--p2p-listen",
        &format!("/ip4/{}/tcp/{p2p_port}", lab.gateway()),
        "--log",
        "warn",
    ])
}

fn wait_until(what: &str, f: impl FnMut() -> bool) {
    procs::wait_until(what, Duration::from_secs(45), f);
}

const DAEMON: &[&str] = &[
    "--listen",
    "/ip4/0.0.0.0/tcp/0",
    "--listen",
    "/ip4/0.0.0.0/udp/0/quic-v1",
];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn two_nodes_on_a_lan_exchange_dms_without_a_relay() {
    assert!(
        rustix_is_root(),
        "the NAT/LAN lab needs root (CI runs as root)"
    );
    let lab = Lab::new();
    let root = tempfile::tempdir().unwrap();
    let (a, b, relay_dir) = (
        root.path().join("ana"),
        root.path().join("bob"),
        root.path().join("relay"),
    );
    let (http_port, p2p_port) = (free_port(), free_port());
    let (relay_proc, url) = relay(&lab, &relay_dir, http_port, p2p_port);
    let (ns_a, ns_b) = (lab.ns("a"), lab.ns("b"));
    let (ca, cb) = (Cli::in_netns(&a, &ns_a), Cli::in_netns(&b, &ns_b));

    // Both join the relay once: accounts, a shared guild, and a DM channel exist.
    assert!(ca.run(&["init"]).0);
    assert!(cb.run(&["init"]).0);
    let _ana = ca.daemon(DAEMON);
    let mut bob = cb.daemon(DAEMON);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let code = rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let identity = concord_node::identity::load(&a).unwrap();
        let http = concord_node::relay_http::RelayHttp::new(&url);
        http.login(&identity, Some("ana")).await.unwrap();
        let g: Value = http
            .authed(
                &identity,
                reqwest::Method::POST,
                "/api/v1/guilds",
                Some(json!({ "name": "lan" })),
            )
            .await
            .unwrap();
        let inv: Value = http
            .authed(
                &identity,
                reqwest::Method::POST,
                &format!("/api/v1/guilds/{}/invites", g["id"].as_str().unwrap()),
                Some(json!({})),
            )
            .await
            .unwrap();
        inv["code"].as_str().unwrap().to_owned()
    });
    assert!(ca.run(&["join", &url, &code]).0);
    assert!(cb.run(&["join", &url, &code, "--username", "bob"]).0);
    let ana_id: Id = ca.json(&["status"])["user"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let bob_id: Id = cb.json(&["status"])["user"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let first = cb.json(&["dm", &ana_id.to_string(), "hello through the relay"]);
    let dm = first["channel_id"]
        .as_str()
        .unwrap_or_else(|| panic!("dm failed: {first}"))
        .to_owned();
    wait_until("ana has the DM", || {
        ca.json(&["history", &dm])
            .to_string()
            .contains("hello through the relay")
    });

    // The relay goes away; bob restarts, so only mDNS can bring the two nodes together.
    drop(relay_proc);
    drop(bob);
    bob = cb.daemon(DAEMON);
    let bob_peer = cb.json(&["id"])["peer_id"].as_str().unwrap().to_owned();
    wait_until("mDNS connects ana to bob", || {
        ca.json(&["peers"])
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["peer_id"] == bob_peer.as_str() && p["kind"] == "direct")
    });
    assert_eq!(ca.json(&["status"])["relay"]["connected"], false);

    // DMs both ways with no relay: shown at once, unconfirmed, kept in the outbox.
    ca.json(&["dm", "--no-wait", &bob_id.to_string(), "over the lan"]);
    wait_until("bob gets ana's LAN DM", || {
        cb.json(&["history", &dm])
            .to_string()
            .contains("over the lan")
    });
    cb.json(&["dm", "--no-wait", &ana_id.to_string(), "got it"]);
    wait_until("ana gets bob's LAN reply", || {
        ca.json(&["history", &dm]).to_string().contains("got it")
    });
    let history = cb.json(&["history", &dm]);
    let lan = history
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["content"] == "over the lan")
        .unwrap();
    assert_eq!(lan["confirmed"], false);
    assert_eq!(ca.json(&["status"])["outbox"], 1);

    // The relay comes back on the same address: the outboxes drain and both confirm.
    let (_relay, _) = relay(&lab, &relay_dir, http_port, p2p_port);
    wait_until("both confirmed", || {
        [&ca, &cb].iter().all(|cli| {
            let h = cli.json(&["history", &dm]);
            let msgs = h.as_array().unwrap();
            msgs.len() == 3 && msgs.iter().all(|m| m["confirmed"] == true)
        })
    });
    assert_eq!(ca.json(&["status"])["outbox"], 0);
    drop(bob);
}

fn rustix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
