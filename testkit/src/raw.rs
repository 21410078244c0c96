//! A bare libp2p client speaking Concord's RPC with any device key, for tests that play a
//! node (or an attacker) against a relay or a node: it sends requests and reads answers,
//! and answers nothing itself.

use std::time::Duration;

use concord_net::protocol::{self, Request, Response};
use ed25519_dalek::SigningKey;
use futures_util::StreamExt;
use libp2p::request_response;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, noise, tcp, yamux};
use serde_json::json;

use crate::{TestNode, TestRelay};

/// A bare libp2p client speaking Concord's RPC, with any device key.
pub struct RawClient {
    swarm: Swarm<protocol::Behaviour>,
    relay: PeerId,
}

impl RawClient {
    /// Dials `addr` (a multiaddr ending in `/p2p/<peer id>`) and waits for the connection.
    pub async fn connect(device: &SigningKey, relay_addr: &str) -> RawClient {
        let mut swarm =
            libp2p::SwarmBuilder::with_existing_identity(concord_net::identity::keypair(device))
                .with_tokio()
                .with_tcp(
                    tcp::Config::default(),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .unwrap()
                .with_behaviour(|_| protocol::behaviour(Duration::from_secs(10)))
                .unwrap()
                .build();
        let addr: Multiaddr = relay_addr.parse().unwrap();
        let relay: PeerId = relay_addr.rsplit_once("/p2p/").unwrap().1.parse().unwrap();
        swarm.dial(addr).unwrap();
        loop {
            if let SwarmEvent::ConnectionEstablished { peer_id, .. } =
                swarm.select_next_some().await
                && peer_id == relay
            {
                break;
            }
        }
        RawClient { swarm, relay }
    }

    /// One request; `Err` when the connection failed before an answer.
    pub async fn call(&mut self, request: Request) -> Result<Response, String> {
        let id = self
            .swarm
            .behaviour_mut()
            .send_request(&self.relay, request);
        loop {
            match tokio::time::timeout(Duration::from_secs(15), self.swarm.select_next_some())
                .await
                .expect("an answer in time")
            {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message:
                        request_response::Message::Response {
                            request_id,
                            response,
                        },
                    ..
                }) if request_id == id => return Ok(response),
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    request_id,
                    error,
                    ..
                }) if request_id == id => return Err(error.to_string()),
                _ => {}
            }
        }
    }
}

/// The refusal code of an answer (or the answer itself, when it is no refusal).
pub fn code(r: &Result<Response, String>) -> String {
    match r {
        Ok(Response::Refused { code, .. }) => code.clone(),
        other => format!("{other:?}"),
    }
}

/// The relay's libp2p TCP address.
pub fn tcp_addr(relay: &TestRelay) -> String {
    relay
        .server()
        .p2p_addrs()
        .into_iter()
        .find(|a| a.contains("/tcp/"))
        .expect("a TCP address")
}

/// A second device of `node`'s account, registered over HTTP: a raw client with its key has a
/// peer id of its own (with the node's own key it would share the node's connection and
/// receive the relay's pushes, which it does not answer).
pub async fn second_device(node: &TestNode, relay: &TestRelay, seed: u8) -> SigningKey {
    let phone = SigningKey::from_bytes(&[seed; 32]);
    let cert = concord_node::identity::certify(
        node.node.identity(),
        &concord_proto::signed::public_key_string(&phone.verifying_key()),
        "phone",
    )
    .unwrap();
    let http = concord_node::relay_http::RelayHttp::new(&relay.url);
    http.login(node.node.identity(), None).await.unwrap();
    let _: serde_json::Value = http
        .authed(
            node.node.identity(),
            reqwest::Method::POST,
            "/api/v1/users/@me/devices",
            Some(json!({ "certificate": cert })),
        )
        .await
        .unwrap();
    phone
}
