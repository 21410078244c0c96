//! The `concord` CLI end to end against a `concord-relay` binary started by the test: init,
//! daemon, join (no prompt without a terminal), guilds, channels, send, history, search, tail,
//! status, peers, a linked second device, and DMs reaching both devices of an account.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use concord_proto::Id;
use serde_json::{Value, json};

fn concord_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_concord"))
}

/// The relay binary sits beside ours in the target dir; build it when this test runs alone.
fn relay_bin() -> PathBuf {
    let path = concord_bin().parent().unwrap().join("concord-relay");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "concord-relay", "--bin", "concord-relay"])
            .status()
            .unwrap();
        assert!(status.success(), "building concord-relay");
    }
    path
}

struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `concord --data-dir DIR args…` with no terminal on stdin; returns (ok, stdout, stderr).
fn concord(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(concord_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn concord_ok(dir: &Path, args: &[&str]) -> String {
    let (ok, out, err) = concord(dir, args);
    assert!(ok, "concord {args:?} failed: {err}{out}");
    out
}

fn concord_json(dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&concord_ok(dir, &all)).unwrap()
}

fn start_daemon(dir: &Path) -> Daemon {
    let _ = std::fs::remove_file(dir.join("control.addr"));
    let child = Command::new(concord_bin())
        .arg("--data-dir")
        .arg(dir)
        .args([
            "daemon",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--no-mdns",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !dir.join("control.addr").exists() {
        assert!(std::time::Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Daemon(child)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

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
    let mut relay = Command::new(relay_bin())
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&relay_dir)
        .args([
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
            "--p2p-listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--log",
            "warn",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let url = {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(relay.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("relay prints its URL").unwrap();
            if let Some(u) = line.strip_prefix("concord-relay listening on ") {
                break u.to_owned();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        url
    };
    let _relay = Daemon(relay);

    // ana creates her identity and a guild (guild creation is the web client's job; here the
    // test uses the relay's HTTP API with ana's device key).
    concord_ok(&a, &["init", "--label", "laptop"]);
    let id = concord_json(&a, &["id"]);
    assert!(id["peer_id"].as_str().unwrap().starts_with("12D3Koo"));
    let _ana = start_daemon(&a);
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
    concord_ok(&a, &["join", &url, &code]);

    // bob: a new account; without a terminal a missing username is an error, not a prompt.
    concord_ok(&b, &["init", "--label", "desktop"]);
    let _bob = start_daemon(&b);
    let (ok, _, err) = concord(&b, &["join", &url, &code]);
    assert!(!ok && err.contains("username"), "{err}");
    let joined = concord_json(
        &b,
        &[
            "join",
            &url,
            &format!("{url}/invite/{code}"),
            "--username",
            "bob",
        ],
    );
    assert_eq!(joined["name"], "cli");
    let guilds = concord_ok(&b, &["guilds"]);
    assert!(guilds.contains("cli") && guilds.contains(&guild.to_string()));
    assert!(concord_ok(&b, &["channels", &guild.to_string()]).contains("#general"));
    wait_until("bob connected", || {
        concord_json(&b, &["status"])["relay"]["connected"] == true
    });
    wait_until("ana connected", || {
        concord_json(&a, &["status"])["relay"]["connected"] == true
    });

    // A live tail on bob's side.
    let mut tail = Command::new(concord_bin())
        .arg("--data-dir")
        .arg(&b)
        .args(["tail", &general.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    // ana sends (waits for the relay's ack), bob sees it in history, search and tail.
    let sent = concord_ok(&a, &["send", &general.to_string(), "hello from the cli"]);
    assert!(sent.starts_with("sent "), "{sent}");
    wait_until("bob's history", || {
        concord_ok(&b, &["history", &general.to_string()]).contains("hello from the cli")
    });
    let found = concord_json(&b, &["search", "cli hello"]);
    assert_eq!(found.as_array().unwrap().len(), 1);
    {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(tail.stdout.take().unwrap()).lines();
        let line = lines.next().unwrap().unwrap();
        assert!(line.contains("hello from the cli"), "{line}");
    }
    let _ = tail.kill();
    let _ = tail.wait();
    let queued = concord_ok(
        &a,
        &["send", "--no-wait", &general.to_string(), "fire and forget"],
    );
    assert!(
        queued.starts_with("queued") || queued.starts_with("sent"),
        "{queued}"
    );
    assert!(concord_ok(&a, &["peers"]).contains("(relay)"));
    let (ok, _, err) = concord(&a, &["send", "123", "nowhere"]);
    assert!(!ok && err.contains("unknown channel"), "{err}");

    // bob links a second device; both of bob's devices receive ana's DM.
    let link = concord_ok(&b2, &["init", "--link"]);
    let code2 = link.split_whitespace().last().unwrap().to_owned();
    concord_ok(&b, &["device", "link", &code2, "--label", "phone"]);
    assert!(concord_ok(&b, &["device", "list"]).contains("phone"));
    let _phone = start_daemon(&b2);
    concord_ok(&b2, &["join", &url, &code]);
    wait_until("phone connected", || {
        concord_json(&b2, &["status"])["relay"]["connected"] == true
    });
    let bob_id = concord_json(&b, &["status"])["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dm = concord_json(&a, &["dm", &bob_id, "psst, both devices"]);
    let dm_channel = dm["channel_id"].as_str().unwrap().to_owned();
    wait_until("bob's desktop got the DM", || {
        concord_ok(&b, &["history", &dm_channel]).contains("psst, both devices")
    });
    wait_until("bob's phone got the DM", || {
        concord_ok(&b2, &["history", &dm_channel]).contains("psst, both devices")
    });
}
