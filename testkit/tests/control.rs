//! The node's control API answers only its own loopback origin, with its token.

use concord_testkit::TestNode;

#[tokio::test]
async fn control_api_refuses_other_origins_and_missing_tokens() {
    let node = TestNode::start("ctl").await;
    let addr = node.node.control_addr();
    assert!(addr.ip().is_loopback());
    let token = std::fs::read_to_string(
        node.dir
            .path()
            .join(concord_node::daemon::CONTROL_TOKEN_FILE),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(
            node.dir
                .path()
                .join(concord_node::daemon::CONTROL_ADDR_FILE)
        )
        .unwrap(),
        addr.to_string()
    );
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/v1/status");
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(http.get(&url).bearer_auth(&token).send().await.unwrap()),
        200
    );
    assert_eq!(status(http.get(&url).send().await.unwrap()), 401);
    assert_eq!(
        status(http.get(&url).bearer_auth("wrong").send().await.unwrap()),
        401
    );
    // DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends its own Host.
    assert_eq!(
        status(
            http.get(&url)
                .bearer_auth(&token)
                .header("host", format!("evil.example:{}", addr.port()))
                .send()
                .await
                .unwrap()
        ),
        403
    );
    // CSRF: a page elsewhere posting to the loopback address carries its Origin.
    assert_eq!(
        status(
            http.get(&url)
                .bearer_auth(&token)
                .header("origin", "http://evil.example")
                .send()
                .await
                .unwrap()
        ),
        403
    );
    assert_eq!(
        status(
            http.get(&url)
                .bearer_auth(&token)
                .header("origin", format!("http://localhost:{}", addr.port()))
                .send()
                .await
                .unwrap()
        ),
        200
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(
            node.dir
                .path()
                .join(concord_node::daemon::CONTROL_TOKEN_FILE),
        )
        .unwrap()
        .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}
