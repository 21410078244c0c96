//! Relay and nodes in one process: messages submitted over libp2p are stored once, pushed to
//! every online authorised node, and caught up by seq after downtime.

use concord_testkit::{TestNode, TestRelay};

#[tokio::test]
async fn a_message_reaches_every_member_through_the_relay() {
    let relay = TestRelay::start().await;
    let ana = TestNode::start("ana").await;
    let bob = TestNode::start("bob").await;
    let (_guild, general, code) = ana.create_guild(&relay, "lab").await;
    bob.join(&relay, &code).await;
    ana.wait_connected().await;
    bob.wait_connected().await;

    let sent = ana
        .node
        .send(general, "hello over libp2p", true)
        .await
        .expect("sent");
    assert!(sent.acknowledged, "the relay acked");
    let message = sent.message.expect("acked message");
    assert_eq!(message.seq, 1);
    let page = bob
        .wait_history(general, |h| {
            h.iter()
                .any(|m| m.content == "hello over libp2p" && m.confirmed)
        })
        .await;
    assert_eq!(
        page.iter()
            .filter(|m| m.content == "hello over libp2p")
            .count(),
        1
    );
    // The sender's own copy is confirmed too (one row, not two).
    let mine = ana
        .wait_history(general, |h| {
            h.iter()
                .any(|m| m.confirmed && m.content == "hello over libp2p")
        })
        .await;
    assert_eq!(mine.len(), 1);
    assert_eq!(ana.node.outbox_len(), 0);
}
