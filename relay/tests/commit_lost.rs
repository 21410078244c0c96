//! The connection to PostgreSQL lost during a message's COMMIT, after PostgreSQL committed:
//! the relay cannot know the outcome, answers 503 `retry`, and a retry with the same nonce
//! returns the stored message (200, its seq) instead of storing it twice.
//!
//! A proxy between the relay and PostgreSQL reads the frontend protocol: it remembers which
//! prepared statements insert messages, and when a transaction that ran one sends `COMMIT`
//! while the proxy is armed, it forwards the COMMIT, swallows PostgreSQL's answer and cuts
//! both connections.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::client::{Backend, TestRelay, relaxed};
use common::ledger::Ledger;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The proxy's switches, shared with the test.
#[derive(Default)]
struct Switch {
    /// Cut the next COMMIT of a transaction that inserted messages.
    armed: AtomicBool,
    /// COMMITs cut so far.
    cut: AtomicUsize,
}

/// Listens on a free loopback port and forwards each connection to `upstream`.
async fn start_proxy(upstream: String, switch: Arc<Switch>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let (upstream, switch) = (upstream.clone(), switch.clone());
            tokio::spawn(async move {
                if let Ok(server) = TcpStream::connect(&upstream).await {
                    proxy(client, server, switch).await;
                }
            });
        }
    });
    port
}

/// A null-terminated string at the start of `bytes`, and the rest.
fn cstr(bytes: &[u8]) -> (&[u8], &[u8]) {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    (&bytes[..end], bytes.get(end + 1..).unwrap_or(&[]))
}

async fn proxy(client: TcpStream, server: TcpStream, switch: Arc<Switch>) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    // PostgreSQL's answers, unless the connection is being cut.
    let swallow = Arc::new(AtomicBool::new(false));
    let answers = {
        let swallow = swallow.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match server_rx.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                // Swallowed, and the client's socket kept open (dropping its write half
                // would end the stream at once) until the cut.
                if swallow.load(Ordering::SeqCst) {
                    continue;
                }
                if client_tx.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        })
    };

    // The startup message has no type byte (the URL disables TLS, so it comes first).
    let mut len = [0u8; 4];
    if client_rx.read_exact(&mut len).await.is_err() {
        return;
    }
    let mut startup = vec![0u8; u32::from_be_bytes(len) as usize - 4];
    if client_rx.read_exact(&mut startup).await.is_err() {
        return;
    }
    if server_tx.write_all(&len).await.is_err() || server_tx.write_all(&startup).await.is_err() {
        return;
    }

    // Then typed messages: a type byte, a length that counts itself, the body.
    let mut inserting_statements: HashMap<Vec<u8>, bool> = HashMap::new();
    let mut inserted = false;
    loop {
        let mut head = [0u8; 5];
        if client_rx.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        if client_rx.read_exact(&mut body).await.is_err() {
            break;
        }
        match head[0] {
            // Parse: statement name, query text.
            b'P' => {
                let (name, rest) = cstr(&body);
                let (query, _) = cstr(rest);
                let query = String::from_utf8_lossy(query);
                inserting_statements.insert(name.to_vec(), query.contains("INSERT INTO messages"));
            }
            // Bind: portal name, statement name.
            b'B' => {
                let (_, rest) = cstr(&body);
                let (statement, _) = cstr(rest);
                if inserting_statements.get(statement) == Some(&true) {
                    inserted = true;
                }
            }
            b'Q' => {
                let (query, _) = cstr(&body);
                let query = String::from_utf8_lossy(query).trim().to_ascii_uppercase();
                if query.starts_with("COMMIT") || query.starts_with("ROLLBACK") {
                    let cut = query.starts_with("COMMIT")
                        && inserted
                        && switch.armed.swap(false, Ordering::SeqCst);
                    inserted = false;
                    if cut {
                        // PostgreSQL gets the COMMIT and commits; its answer never arrives.
                        swallow.store(true, Ordering::SeqCst);
                        let _ = server_tx.write_all(&head).await;
                        let _ = server_tx.write_all(&body).await;
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        switch.cut.fetch_add(1, Ordering::SeqCst);
                        answers.abort();
                        return;
                    }
                }
            }
            _ => {}
        }
        if server_tx.write_all(&head).await.is_err() || server_tx.write_all(&body).await.is_err() {
            break;
        }
    }
    answers.abort();
}

#[tokio::test]
async fn a_commit_whose_answer_is_lost_is_a_retry_that_stores_once() {
    let base = common::db::fresh_postgres_url().await;
    let mut url = reqwest::Url::parse(&base).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let switch = Arc::new(Switch::default());
    let port = start_proxy(upstream, switch.clone()).await;
    url.set_port(Some(port)).unwrap();
    url.query_pairs_mut().append_pair("sslmode", "disable");
    let via_proxy = url.to_string();

    let relay = TestRelay::start_with(Backend::Postgres, move |c| {
        relaxed(c);
        c.database_url = Some(via_proxy);
    })
    .await;
    let ana = relay.register("ana").await;
    let (_, channel) = ana.create_guild("lost answers").await;
    let path = format!("/api/v1/channels/{channel}/messages");
    let mut ledger = Ledger::default();

    for round in 0..3 {
        let nonce = format!("before-{round}");
        let r = ana
            .post(&path, json!({ "content": "x", "nonce": nonce }))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        ledger.ack(&nonce, r.body["seq"].as_i64().unwrap());

        // The COMMIT reaches PostgreSQL; its answer does not reach the relay.
        let nonce = format!("lost-{round}");
        switch.armed.store(true, Ordering::SeqCst);
        let r = ana
            .post(&path, json!({ "content": "x", "nonce": nonce }))
            .await;
        assert_eq!(
            switch.cut.load(Ordering::SeqCst),
            round + 1,
            "the COMMIT was cut"
        );
        assert_eq!(
            (r.status, r.body["code"].as_str()),
            (503, Some("retry")),
            "an unknown outcome is a retry: {}",
            r.body
        );
        ledger.refuse(r.status, "retry");
        assert!(r.header("retry-after").is_some(), "503 says when to retry");

        // The retry, as a client makes it: the same nonce, until an answer. It finds the
        // message PostgreSQL committed and returns it (200), not a second copy.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let stored = loop {
            let r = ana
                .post(&path, json!({ "content": "x", "nonce": nonce }))
                .await;
            if r.status == 503 {
                assert!(std::time::Instant::now() < deadline, "no answer after 10 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            break r;
        };
        assert_eq!(
            stored.status, 200,
            "the retry finds the committed message: {}",
            stored.body
        );
        assert_eq!(stored.body["nonce"], nonce.as_str());
        ledger.ack(&nonce, stored.body["seq"].as_i64().unwrap());
    }
    let after = ana
        .post(&path, json!({ "content": "x", "nonce": "after" }))
        .await;
    assert_eq!(after.status, 201, "{}", after.body);
    ledger.ack("after", after.body["seq"].as_i64().unwrap());

    // Everything acknowledged is stored once, at its seq, with gapless seqs.
    let stored = ledger.verify_against(&base, channel).await;
    assert_eq!(stored, 7);
    relay.shutdown().await;
}
