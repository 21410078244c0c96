//! Nodes on different relay instances of one cluster (PostgreSQL + Redis): each node talks
//! only to its own instance (relay-only: no gossip or direct links that could carry the
//! message instead), and still gets the other's messages, pushed by its instance.

use concord_testkit::{TestNode, TestRelay};

#[tokio::test]
async fn nodes_on_two_instances_get_each_others_messages() {
    let (a, b) = TestRelay::cluster_pair("nodes").await;
    let relay_only = |c: &mut concord_node::NodeConfig| c.relay_only = true;
    let ana = TestNode::start_with("ana", relay_only).await;
    let bob = TestNode::start_with("bob", relay_only).await;
    let (_, channel, code) = ana.create_guild(&a, "cluster").await;
    bob.join(&b, &code).await;
    ana.wait_connected().await;
    bob.wait_connected().await;

    ana.node.send(channel, "from ana on A", true).await.unwrap();
    bob.wait_history(channel, |h| {
        h.iter()
            .any(|m| m.content == "from ana on A" && m.confirmed)
    })
    .await;
    bob.node.send(channel, "from bob on B", true).await.unwrap();
    ana.wait_history(channel, |h| {
        h.iter()
            .any(|m| m.content == "from bob on B" && m.confirmed)
    })
    .await;
    a.stop().await;
    b.stop().await;
}
