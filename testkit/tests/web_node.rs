//! Node-served mode (`concord ui`): the web client on the node's loopback control API, signed
//! in by a one-time URL that sets an HttpOnly, SameSite=Strict cookie, sending and receiving
//! through the node (`browser/tests/web-node.mjs` in Chromium; the cookie rules over HTTP).

use std::time::Duration;

use concord_testkit::{TestNode, TestRelay, browser, procs};
use serde_json::Value;

fn control_token(node: &TestNode) -> String {
    std::fs::read_to_string(
        node.dir
            .path()
            .join(concord_node::daemon::CONTROL_TOKEN_FILE),
    )
    .expect("control token")
}

/// Messages waiting in the node's outbox (control API status).
async fn outbox_len(http: &reqwest::Client, node: &TestNode) -> u64 {
    let status: Value = http
        .get(format!("http://{}/v1/status", node.node.control_addr()))
        .bearer_auth(control_token(node))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["outbox"].as_u64().expect("outbox count")
}

#[tokio::test(flavor = "multi_thread")]
async fn one_time_url_sets_a_strict_cookie_and_the_node_serves_the_api() {
    let relay = TestRelay::start().await;
    let node = TestNode::start("nia").await;
    let (_, general, _) = node.create_guild(&relay, "Node Guild").await;
    let addr = node.node.control_addr();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let me = format!("http://{addr}/api/v1/users/@me");
    // No cookie, or a made-up one: the API is closed (the page's files are not secret).
    assert_eq!(http.get(&me).send().await.unwrap().status(), 401);
    let forged = http
        .get(&me)
        .header("cookie", "concord_ui=made-up")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let index = http.get(format!("http://{addr}/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    assert!(
        index.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    assert!(
        index
            .text()
            .await
            .unwrap()
            .contains(r#"<meta name="concord-backend" content="node">"#)
    );
    // A ticket needs the control token.
    let ticket_url = format!("http://{addr}/v1/ui/ticket");
    assert_eq!(http.post(&ticket_url).send().await.unwrap().status(), 401);
    let ticket: Value = http
        .post(&ticket_url)
        .bearer_auth(control_token(&node))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = ticket["url"].as_str().expect("url");
    assert!(url.starts_with(&format!("http://127.0.0.1:{}/ui/open?ticket=", addr.port())));
    let opened = http.get(url).send().await.unwrap();
    assert_eq!(opened.status(), 303);
    assert_eq!(opened.headers()["location"], "/");
    let set_cookie = opened.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    // Spent: the same URL does not open a second session.
    assert_eq!(http.get(url).send().await.unwrap().status(), 403);
    let answer: Value = http
        .get(&me)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["username"], "nia", "{answer}");
    // The cookie does not make another origin's request local (DNS rebinding, CSRF).
    let cross = http
        .get(&me)
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    let rebound = http
        .get(&me)
        .header("cookie", &cookie)
        .header("host", format!("evil.example:{}", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    // The node signs in for the page: the page cannot log in as anyone.
    let login = http
        .post(format!("http://{addr}/api/v1/auth/challenge"))
        .header("cookie", &cookie)
        .json(&serde_json::json!({ "device_key": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 403);
    // A malformed send is refused and nothing is queued.
    let status_before = outbox_len(&http, &node).await;
    let bad = http
        .post(format!("http://{addr}/api/v1/channels/{general}/messages"))
        .header("cookie", &cookie)
        .header("content-type", "application/json")
        .body(r#"{"content":"hi","nonce":"has spaces"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let status_after = outbox_len(&http, &node).await;
    assert_eq!(status_before, status_after);

    // A send through the node comes back as the relay's stored message.
    let messages = format!("http://{addr}/api/v1/channels/{general}/messages");
    let sent: Value = http
        .post(&messages)
        .header("cookie", &cookie)
        .json(&serde_json::json!({ "content": "kept for later", "nonce": "n-1" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent["content"], "kept for later", "{sent}");
    assert_eq!(sent["device"], node.node.identity().device_key());
    // The relay's push confirms it in the node's cache.
    concord_testkit::wait_for(Duration::from_secs(10), || {
        node.node.with_cache(|c| {
            c.history(general, None, 50)
                .unwrap()
                .iter()
                .any(|m| m.content == "kept for later" && m.confirmed)
        })
    })
    .await;
    // The relay goes away: the newest page comes from the node's cache, and a new message
    // waits in the node's outbox (202) instead of failing.
    relay.stop().await;
    let offline = http
        .get(&messages)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(offline.status(), 200);
    assert!(offline.headers().contains_key("concord-channel-seq"));
    let page: Value = offline.json().await.unwrap();
    assert!(
        page.as_array()
            .unwrap()
            .iter()
            .any(|m| m["content"] == "kept for later"),
        "{page}"
    );
    let queued = http
        .post(&messages)
        .header("cookie", &cookie)
        .json(&serde_json::json!({ "content": "typed offline", "nonce": "n-2" }))
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status(), 202);
    let outbox = outbox_len(&http, &node).await;
    assert_eq!(outbox, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn node_served_client_sends_and_receives_through_the_node() {
    let relay = TestRelay::start().await;
    let node = TestNode::start("nia").await;
    let (_, general, code) = node.create_guild(&relay, "Node Guild").await;
    node.wait_connected().await;
    let concord = procs::binary("concord-node", "concord");
    let args = [
        relay.url.clone(),
        format!("{}/invite/{code}", relay.url),
        concord.display().to_string(),
        node.dir.path().display().to_string(),
        node.name.clone(),
        "Node Guild".to_owned(),
    ];
    let result = browser::run("tests/web-node.mjs", &args, Duration::from_secs(240)).await;
    eprintln!("steps (ms since start): {}", result["ms"]);
    browser::assert_checks(
        &result,
        &[
            "node_page_opened",
            "ticket_left_address_bar",
            "node_page_to_relay_user",
            "relay_user_to_node_page",
            "no_duplicates",
            "reload_keeps_session",
            "ticket_single_use",
            "no_cookie_no_access",
            "cli_echoes_the_key",
            "cli_linked_browser",
            "no_console_errors",
            "no_foreign_requests",
            "no_dialogs",
        ],
    );
    // Through the node: the page's message was signed by the node's device key, and the
    // relay user's message is in the node's cache.
    let device = node.node.identity().device_key();
    let page = node
        .node
        .with_cache(|c| c.history(general, None, 50).unwrap());
    let sent = page
        .iter()
        .find(|m| m.content == "hello from the node page")
        .expect("the page's message is in the node's cache");
    assert_eq!(sent.device, device, "signed by the node's device key");
    assert!(sent.confirmed, "and confirmed by the relay");
    assert!(
        page.iter().any(|m| m.content == "hello to the node page"),
        "the relay user's message reached the node"
    );
}
