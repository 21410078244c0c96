//! OpenTelemetry across instances: two `concord-relay` processes export OTLP/HTTP (JSON) to
//! a collector of the test's own. A message sent through instance A gives one trace: A's
//! HTTP span at the root, its database call as a child, and instance B's span applying the
//! fan-out it received through Redis, parented by A's span.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concord_node::identity::{self, Identity};
use concord_node::relay_http::RelayHttp;
use concord_testkit::procs::{self, Proc};
use serde_json::{Value, json};

/// Every span the collector received: (service.name, span).
type Spans = Arc<Mutex<Vec<(String, Value)>>>;

async fn collector() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let store = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                let export: Value = serde_json::from_slice(&body).expect("OTLP JSON");
                let mut spans = store.lock().unwrap();
                for rs in export["resourceSpans"].as_array().into_iter().flatten() {
                    let service = rs["resource"]["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|a| a["key"] == "service.name")
                        .and_then(|a| a["value"]["stringValue"].as_str())
                        .unwrap_or("")
                        .to_owned();
                    for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                        for span in ss["spans"].as_array().into_iter().flatten() {
                            spans.push((service.clone(), span.clone()));
                        }
                    }
                }
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, spans)
}

fn relay(dir: &Path, db: &str, prefix: &str, otlp: &str, name: &str) -> (Proc, String) {
    let redis =
        std::env::var("CONCORD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // Spans are exported every 100 ms instead of every 5 s.
    procs::relay_with_env(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.to_str().unwrap(),
            "--database-url",
            db,
            "--redis-url",
            &redis,
            "--redis-prefix",
            prefix,
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
            "--otlp-endpoint",
            otlp,
            "--otlp-service-name",
            name,
            "--log",
            "warn",
        ],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )
}

/// What arrived, for failure messages: (service, name, op, trace, parent).
fn summary(spans: &Spans) -> Vec<String> {
    spans
        .lock()
        .unwrap()
        .iter()
        .map(|(svc, s)| {
            format!(
                "{svc} {} {:?} {} {}",
                s["name"],
                attr(s, "op"),
                s["traceId"],
                s["parentSpanId"]
            )
        })
        .take(60)
        .collect()
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"]["stringValue"]
        .as_str()
}

async fn post(http: &RelayHttp, who: &Identity, path: &str, body: Value) -> Value {
    http.authed(who, reqwest::Method::POST, path, Some(body))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_http_the_database_and_the_other_instance() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (otlp, spans) = collector().await;
    let root = tempfile::tempdir().unwrap();
    let db = concord_testkit::fresh_postgres_url();
    let prefix = format!("otel{}", std::process::id());
    let (_a, url_a) = relay(&root.path().join("a"), &db, &prefix, &otlp, "relay-a");
    let (_b, url_b) = relay(&root.path().join("b"), &db, &prefix, &otlp, "relay-b");

    let ana = identity::init(&root.path().join("ana"), "ana").unwrap();
    let bob = identity::init(&root.path().join("bob"), "bob").unwrap();
    let (http_a, http_b) = (RelayHttp::new(&url_a), RelayHttp::new(&url_b));
    http_a.login(&ana, Some("ana")).await.unwrap();
    http_b.login(&bob, Some("bob")).await.unwrap();
    let guild = post(&http_a, &ana, "/api/v1/guilds", json!({ "name": "traced" })).await;
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
    .await;
    let code = invite["code"].as_str().unwrap();
    post(
        &http_b,
        &bob,
        &format!("/api/v1/invites/{code}/accept"),
        json!({}),
    )
    .await;
    post(
        &http_a,
        &ana,
        &format!("/api/v1/channels/{channel}/messages"),
        json!({ "content": "traced hello", "nonce": "t1" }),
    )
    .await;

    // A's database span for the insert names the trace.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (trace, http_root) = loop {
        let found = {
            let spans = spans.lock().unwrap();
            spans
                .iter()
                .find(|(svc, s)| {
                    svc == "relay-a" && s["name"] == "db" && attr(s, "op") == Some("insert_message")
                })
                .map(|(_, db)| {
                    let trace = db["traceId"].as_str().unwrap().to_owned();
                    let root = spans
                        .iter()
                        .find(|(svc, s)| {
                            svc == "relay-a"
                                && s["traceId"] == trace.as_str()
                                && s["name"] == "http"
                                && s["parentSpanId"].as_str().unwrap_or("").is_empty()
                        })
                        .map(|(_, s)| s.clone());
                    (trace, root)
                })
        };
        if let Some((trace, Some(root))) = found {
            break (trace, root);
        }
        assert!(
            Instant::now() < deadline,
            "no exported insert_message span under an http root on relay-a; got {:?}",
            summary(&spans)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(attr(&http_root, "method"), Some("POST"));
    assert_eq!(
        attr(&http_root, "route"),
        Some("/api/v1/channels/{channel_id}/messages")
    );

    // B applied the fan-out inside the same trace, with a parent span from A.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = {
            let spans = spans.lock().unwrap();
            spans
                .iter()
                .filter(|(svc, s)| {
                    svc == "relay-b"
                        && s["name"] == "cluster.apply"
                        && s["traceId"] == trace.as_str()
                })
                .any(|(_, applied)| {
                    let parent = applied["parentSpanId"].as_str().unwrap_or("");
                    spans.iter().any(|(svc, s)| {
                        svc == "relay-a" && s["spanId"] == parent && s["traceId"] == trace.as_str()
                    })
                })
        };
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relay-b never exported a cluster.apply span in trace {trace}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
