//! Two `concord-relay` processes on one PostgreSQL schema and one Redis. Two clients send
//! steadily, one through each instance; instance A is SIGKILLed mid-stream. Its client
//! retries the message in flight on B with the same nonce and carries on there. Afterwards
//! every message is in the channel exactly once, with gapless seqs, for both clients.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_node::identity::{self, Identity};
use concord_node::relay_http::RelayHttp;
use concord_testkit::procs;
use serde_json::{Value, json};

struct Client {
    identity: Identity,
    name: &'static str,
}

async fn post(
    http: &RelayHttp,
    who: &Client,
    path: &str,
    body: Value,
) -> Result<Value, concord_node::relay_http::HttpError> {
    http.authed(&who.identity, reqwest::Method::POST, path, Some(body))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_an_instance_loses_and_duplicates_no_acknowledged_message() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("relay.toml");
    // Steady load: the per-account send limit must not be what stops the clients.
    std::fs::write(
        &config,
        "[rate_limits.message_send]\nrequests = 100000\nwindow_secs = 10\n",
    )
    .unwrap();
    let db = concord_testkit::fresh_postgres_url();
    let prefix = format!("failover{}", std::process::id());
    let (proc_a, url_a) = procs::cluster_relay(&root.path().join("a"), &config, &db, &prefix);
    let (_proc_b, url_b) = procs::cluster_relay(&root.path().join("b"), &config, &db, &prefix);

    let client = |name: &'static str| Client {
        identity: identity::init(&root.path().join(name), name).unwrap(),
        name,
    };
    let (ana, bob) = (Arc::new(client("ana")), Arc::new(client("bob")));
    let (http_a, http_b) = (RelayHttp::new(&url_a), RelayHttp::new(&url_b));
    http_a.login(&ana.identity, Some("ana")).await.unwrap();
    http_b.login(&bob.identity, Some("bob")).await.unwrap();
    let guild = post(
        &http_a,
        &ana,
        "/api/v1/guilds",
        json!({ "name": "failover" }),
    )
    .await
    .unwrap();
    let channel = guild["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "text")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let invite = post(
        &http_a,
        &ana,
        &format!("/api/v1/guilds/{}/invites", guild["id"].as_str().unwrap()),
        json!({}),
    )
    .await
    .unwrap();
    post(
        &http_b,
        &bob,
        &format!(
            "/api/v1/invites/{}/accept",
            invite["code"].as_str().unwrap()
        ),
        json!({}),
    )
    .await
    .unwrap();

    // Each client sends for 3 s; ana starts on A and moves to B when A stops answering.
    let path = format!("/api/v1/channels/{channel}/messages");
    let sender = |who: Arc<Client>, first: String, fallback: String, path: String| async move {
        let urls = [RelayHttp::new(&first), RelayHttp::new(&fallback)];
        let mut current = 0;
        let mut acked: Vec<(String, i64)> = Vec::new();
        let mut failovers = 0;
        let until = Instant::now() + Duration::from_secs(3);
        let mut i = 0;
        while Instant::now() < until {
            let nonce = format!("{}-{i}", who.name);
            let body = json!({ "content": nonce, "nonce": nonce });
            // Retry this message (same nonce) until acknowledged, switching instance on a
            // transport error.
            loop {
                match post(&urls[current], &who, &path, body.clone()).await {
                    Ok(m) => {
                        acked.push((nonce.clone(), m["seq"].as_i64().unwrap()));
                        break;
                    }
                    Err(e) => {
                        assert!(failovers < 5, "{}: gave up: {e}", who.name);
                        failovers += 1;
                        current = 1 - current;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            i += 1;
        }
        (acked, failovers)
    };
    let ana_task = tokio::spawn(sender(
        ana.clone(),
        url_a.clone(),
        url_b.clone(),
        path.clone(),
    ));
    let bob_task = tokio::spawn(sender(
        bob.clone(),
        url_b.clone(),
        url_a.clone(),
        path.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    drop(proc_a); // SIGKILL
    let (ana_acked, ana_failovers) = ana_task.await.unwrap();
    let (bob_acked, _) = bob_task.await.unwrap();
    assert!(ana_failovers >= 1, "ana's instance died under her");
    assert!(!ana_acked.is_empty() && !bob_acked.is_empty());

    // Both clients read the whole channel from the surviving instance.
    for who in [&ana, &bob] {
        let mut history: Vec<Value> = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let q = before
                .as_ref()
                .map_or(String::new(), |b| format!("&before={b}"));
            let page: Vec<Value> = http_b
                .authed(
                    &who.identity,
                    reqwest::Method::GET,
                    &format!("{path}?limit=100{q}"),
                    None,
                )
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            before = page
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
                .min_by_key(|id| id.parse::<i64>().unwrap());
            history.extend(page);
        }
        let mut seqs: Vec<i64> = history.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (1..=history.len() as i64).collect::<Vec<_>>(),
            "{}: gapless seqs",
            who.name
        );
        let mut by_nonce: HashMap<String, usize> = HashMap::new();
        for m in &history {
            *by_nonce
                .entry(m["nonce"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        for (nonce, seq) in ana_acked.iter().chain(&bob_acked) {
            assert_eq!(by_nonce.get(nonce), Some(&1), "{nonce} exactly once");
            assert!(
                history
                    .iter()
                    .any(|m| m["nonce"] == nonce.as_str() && m["seq"] == *seq),
                "{nonce} kept the seq it was acknowledged with"
            );
        }
        let acked: HashSet<&String> = ana_acked.iter().chain(&bob_acked).map(|(n, _)| n).collect();
        assert_eq!(
            by_nonce.len(),
            acked.len(),
            "nothing unacknowledged crept in"
        );
    }
    eprintln!(
        "ana: {} acked ({} failovers), bob: {} acked",
        ana_acked.len(),
        ana_failovers,
        bob_acked.len()
    );
}
