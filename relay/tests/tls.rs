//! HTTPS and WSS with certificate files, tested with a self-signed certificate.

mod common;

use std::sync::Arc;

use common::client::{Backend, TestRelay, relaxed};
use concord_relay::config::TlsConfig;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn https_and_wss_with_a_self_signed_certificate() {
    concord_relay::listener::install_crypto_provider();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();

    let relay = TestRelay::start_with(Backend::Sqlite, |c| {
        relaxed(c);
        c.tls = Some(TlsConfig {
            cert: cert_path.clone(),
            key: key_path.clone(),
        });
    })
    .await;
    assert!(relay.url.starts_with("https://127.0.0.1:"), "{}", relay.url);

    // A client that trusts only our certificate.
    let https = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap()])
        .build()
        .unwrap();
    let health = https
        .get(format!("{}/healthz", relay.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // Plain HTTP to the TLS port fails, and a client that does not trust the certificate too.
    assert!(
        reqwest::Client::new()
            .get(format!(
                "{}/healthz",
                relay.url.replacen("https", "http", 1)
            ))
            .send()
            .await
            .is_err()
    );
    assert!(
        reqwest::Client::new()
            .get(format!("{}/healthz", relay.url))
            .send()
            .await
            .is_err()
    );

    // Log in over HTTPS (the audience is the https origin) and open the gateway over WSS.
    let over_https = TestRelay {
        server: None,
        url: relay.url.clone(),
        http: https.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    let user = over_https.register("tess").await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        format!("{}/api/v1/gateway", relay.url.replacen("https", "wss", 1)),
        None,
        false,
        Some(Connector::Rustls(Arc::new(config))),
    )
    .await
    .unwrap();
    ws.send(Message::text(
        json!({ "op": "identify", "d": { "token": user.access } }).to_string(),
    ))
    .await
    .unwrap();
    let ready = ws.next().await.unwrap().unwrap();
    let ready: serde_json::Value = serde_json::from_str(ready.to_text().unwrap()).unwrap();
    assert_eq!(ready["op"], "ready");
    assert_eq!(ready["d"]["user"]["username"], "tess");
    relay.shutdown().await;
}
