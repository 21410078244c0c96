//! The `concord` CLI end to end against a `concord-relay` binary started by the test: init,
//! daemon, join (no prompt without a terminal), guilds, channels, send, history, search, tail,
//! status, peers, a linked second device, and DMs reaching both devices of an account.

use std::time::Duration;

use concord_proto::Id;
use concord_testkit::procs::{self, Cli};
use serde_json::{Value, json};

fn wait_until(what: &str, f: impl FnMut() -> bool) {
    procs::wait_until(what, Duration::from_secs(30), f);
}

const DAEMON: &[&str] = &[
    "--listen",
    "/ip4/127.0.0.1/tcp/0",
    "--listen",
    "/ip4/127.0.0.1/udp/0/quic-v1",
    "--no-mdns",
];

#[test]
fn the_cli_end_to_end() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, b2, relay_dir) = (
        root.path().join("ana"),
        root.path().join("bob"),
        root.path().join("bob-phone"),
        root.path().join("relay"),
    );

    // The relay binary, loopback ports.
    let relay_dir = relay_dir.to_str().unwrap().to_owned();
    let (_relay, url) = procs::relay(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &relay_dir,
        "--p2p-listen",
        "/ip4/127.0.0.1/tcp/0",
        "--p2p-listen",
        "/ip4/127.0.0.1/udp/0/quic-v1",
        "--log",
        "warn",
    ]);
    let (ca, cb, cb2) = (Cli::new(&a), Cli::new(&b), Cli::new(&b2));

    // ana creates her identity and a guild (guild creation is the web client's job; here the
    // test uses the relay's HTTP API with ana's device key).
    ca.ok(&["init", "--label", "laptop"]);
    let id = ca.json(&["id"]);
    assert!(id["peer_id"].as_str().unwrap().starts_with("12D3Koo"));
    let _ana = ca.daemon(DAEMON);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (guild, general, code) = rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let identity = concord_node::identity::load(&a).unwrap();
        let http = concord_node::relay_http::RelayHttp::new(&url);
        http.login(&identity, Some("ana")).await.unwrap();
        let g: Value = http
            .authed(
                &identity,
                reqwest::Method::POST,
                "/api/v1/guilds",
                Some(json!({ "name": "cli" })),
            )
            .await
            .unwrap();
        let guild: Id = serde_json::from_value(g["id"].clone()).unwrap();
        let general: Id = serde_json::from_value(
            g["channels"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["kind"] == "text")
                .unwrap()["id"]
                .clone(),
        )
        .unwrap();
        let inv: Value = http
            .authed(
                &identity,
                reqwest::Method::POST,
                &format!("/api/v1/guilds/{guild}/invites"),
                Some(json!({})),
            )
            .await
            .unwrap();
        (guild, general, inv["code"].as_str().unwrap().to_owned())
    });
    ca.ok(&["join", &url, &code]);

    // bob: a new account; without a terminal a missing username is an error, not a prompt.
    cb.ok(&["init", "--label", "desktop"]);
    let _bob = cb.daemon(DAEMON);
    let (ok, _, err) = cb.run(&["join", &url, &code]);
    assert!(!ok && err.contains("username"), "{err}");
    let joined = cb.json(&[
        "join",
        &url,
        &format!("{url}/invite/{code}"),
        "--username",
        "bob",
    ]);
    assert_eq!(joined["name"], "cli");
    let guilds = cb.ok(&["guilds"]);
    assert!(guilds.contains("cli") && guilds.contains(&guild.to_string()));
    assert!(
        cb.ok(&["channels", &guild.to_string()])
            .contains("#general")
    );
    wait_until("bob connected", || {
        cb.json(&["status"])["relay"]["connected"] == true
    });
    wait_until("ana connected", || {
        ca.json(&["status"])["relay"]["connected"] == true
    });

    // A live tail on bob's side.
    let mut tail = std::process::Command::new(procs::binary("concord-node", "concord"))
        .arg("--data-dir")
        .arg(&b)
        .args(["tail", &general.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    // ana sends (waits for the relay's ack), bob sees it in history, search and tail.
    let sent = ca.ok(&["send", &general.to_string(), "hello from the cli"]);
    assert!(sent.starts_with("sent "), "{sent}");
    wait_until("bob's history", || {
        cb.ok(&["history", &general.to_string()])
            .contains("hello from the cli")
    });
    let found = cb.json(&["search", "cli hello"]);
    assert_eq!(found.as_array().unwrap().len(), 1);
    {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(tail.stdout.take().unwrap()).lines();
        let line = lines.next().unwrap().unwrap();
        assert!(line.contains("hello from the cli"), "{line}");
    }
    let _ = tail.kill();
    let _ = tail.wait();
    let queued = ca.ok(&["send", "--no-wait", &general.to_string(), "fire and forget"]);
    assert!(
        queued.starts_with("queued") || queued.starts_with("sent"),
        "{queued}"
    );
    assert!(ca.ok(&["peers"]).contains("(relay)"));
    let (ok, _, err) = ca.run(&["send", "123", "nowhere"]);
    assert!(!ok && err.contains("unknown channel"), "{err}");

    // bob links a second device; both of bob's devices receive ana's DM.
    let link = cb2.ok(&["init", "--link"]);
    let code2 = link.split_whitespace().last().unwrap().to_owned();
    cb.ok(&["device", "link", &code2, "--label", "phone"]);
    assert!(cb.ok(&["device", "list"]).contains("phone"));
    let _phone = cb2.daemon(DAEMON);
    cb2.ok(&["join", &url, &code]);
    wait_until("phone connected", || {
        cb2.json(&["status"])["relay"]["connected"] == true
    });
    let bob_id = cb.json(&["status"])["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dm = ca.json(&["dm", &bob_id, "psst, both devices"]);
    let dm_channel = dm["channel_id"].as_str().unwrap().to_owned();
    wait_until("bob's desktop got the DM", || {
        cb.ok(&["history", &dm_channel])
            .contains("psst, both devices")
    });
    wait_until("bob's phone got the DM", || {
        cb2.ok(&["history", &dm_channel])
            .contains("psst, both devices")
    });
}
