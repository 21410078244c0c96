//! The lab's internet with everything on it: the relay and the bootstrap server on the
//! public host, and one account per NATed host, all members of one guild.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde_json::{Value, json};

use crate::lab::{Lab, PUBLIC_IP, in_netns};
use crate::procs::{self, Bins, Node, Proc};

/// Every host behind a NAT in `lab.sh`.
pub const HOSTS: [&str; 6] = ["eim1", "eim2", "sym1", "sym2", "lan1", "lan2"];

/// How nodes listen in the lab: QUIC (hole punching reuses its socket) and TCP.
pub const NODE_LISTEN: [&str; 2] = ["/ip4/0.0.0.0/udp/0/quic-v1", "/ip4/0.0.0.0/tcp/0"];

pub struct World {
    // Processes first: fields drop in order, and the lab goes last.
    _relay: Proc,
    _bootstrap: Proc,
    pub relay_url: String,
    pub bootstrap_addr: String,
    pub channel_id: String,
    nodes: HashMap<String, Node>,
    peer_ids: HashMap<String, String>,
    _root: tempfile::TempDir,
    pub lab: Lab,
}

impl World {
    pub fn start(bins: &Bins) -> anyhow::Result<World> {
        let lab = Lab::up()?;
        let root = tempfile::tempdir()?;
        let pub_ns = lab.ns("pub");
        let dir = |name: &str| root.path().join(name).to_string_lossy().into_owned();

        let (bootstrap, lines) = procs::server(
            &pub_ns,
            &bins.bootstrap,
            &[
                "--data-dir",
                &dir("bootstrap"),
                "--p2p-listen",
                &format!("/ip4/{PUBLIC_IP}/udp/4002/quic-v1"),
                "--p2p-listen",
                &format!("/ip4/{PUBLIC_IP}/tcp/4002"),
                "--log",
                "warn",
            ],
            |l| l.starts_with("concord-bootstrap http "),
        )?;
        let bootstrap_addr = lines
            .iter()
            .filter_map(|l| l.strip_prefix("concord-bootstrap listening on "))
            .find(|a| a.contains("/quic-v1/"))
            .context("the bootstrap server printed no QUIC address")?
            .to_owned();

        let (relay, lines) = procs::server(
            &pub_ns,
            &bins.relay,
            &[
                "--listen",
                &format!("{PUBLIC_IP}:8080"),
                "--data-dir",
                &dir("relay"),
                "--p2p-listen",
                &format!("/ip4/{PUBLIC_IP}/udp/4001/quic-v1,/ip4/{PUBLIC_IP}/tcp/4001"),
                "--log",
                "warn",
            ],
            |l| l.starts_with("concord-relay listening on "),
        )?;
        let relay_url = lines
            .last()
            .and_then(|l| l.strip_prefix("concord-relay listening on "))
            .context("relay URL")?
            .to_owned();

        let mut nodes = HashMap::new();
        let mut peer_ids = HashMap::new();
        for host in HOSTS {
            let node = Node {
                host: host.to_owned(),
                ns: lab.ns(host),
                dir: root.path().join(host),
                bin: bins.node.clone(),
            };
            node.run(&["init"])?;
            let id = node.json(&["id"])?;
            peer_ids.insert(
                host.to_owned(),
                id["peer_id"].as_str().context("peer_id")?.to_owned(),
            );
            nodes.insert(host.to_owned(), node);
        }

        // The first host registers and creates the guild over HTTP from the public host.
        let (url, first_dir) = (relay_url.clone(), nodes["eim1"].dir.clone());
        let (guild_id, code) = in_netns(&pub_ns, move || create_guild(&url, &first_dir))??;

        let mut daemons = Vec::new();
        for host in HOSTS {
            let node = &nodes[host];
            daemons.push(node.daemon(&[])?);
            node.json(&["join", &relay_url, &code, "--username", host])?;
        }
        let channels = nodes["eim1"].json(&["channels", &guild_id])?;
        let channel_id = channels
            .as_array()
            .and_then(|c| c.iter().find(|c| c["kind"] == "text"))
            .and_then(|c| c["id"].as_str())
            .context("the guild has a text channel")?
            .to_owned();
        drop(daemons);

        Ok(World {
            _relay: relay,
            _bootstrap: bootstrap,
            relay_url,
            bootstrap_addr,
            channel_id,
            nodes,
            peer_ids,
            _root: root,
            lab,
        })
    }

    pub fn node(&self, host: &str) -> &Node {
        &self.nodes[host]
    }

    pub fn peer_id(&self, host: &str) -> &str {
        &self.peer_ids[host]
    }

    /// Starts a host's daemon as a user would: listening on QUIC and TCP, with the lab's
    /// bootstrap server.
    pub fn daemon(&self, host: &str) -> anyhow::Result<Proc> {
        self.node(host).daemon(&[
            "--listen",
            NODE_LISTEN[0],
            "--listen",
            NODE_LISTEN[1],
            "--bootstrap",
            &self.bootstrap_addr,
        ])
    }
}

/// Registers the account in `dir` and creates a guild with an unlimited invite.
fn create_guild(url: &str, dir: &std::path::Path) -> anyhow::Result<(String, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let identity = concord_node::identity::load(dir)?;
        let http = concord_node::relay_http::RelayHttp::new(url);
        let post = |path: String, body: Value| {
            let (http, identity) = (&http, &identity);
            async move {
                tokio::time::timeout(
                    Duration::from_secs(20),
                    http.authed::<Value>(identity, reqwest::Method::POST, &path, Some(body)),
                )
                .await
                .map_err(|_| anyhow!("{path} timed out"))?
                .map_err(|e| anyhow!("{path}: {e}"))
            }
        };
        http.login(&identity, Some("eim1"))
            .await
            .map_err(|e| anyhow!("login: {e}"))?;
        let guild = post("/api/v1/guilds".into(), json!({ "name": "netlab" })).await?;
        let guild_id = guild["id"].as_str().context("guild id")?.to_owned();
        let invite = post(format!("/api/v1/guilds/{guild_id}/invites"), json!({})).await?;
        let code = invite["code"].as_str().context("invite code")?.to_owned();
        Ok((guild_id, code))
    })
}
