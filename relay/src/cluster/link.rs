//! The Redis the instances share: one server, or a Redis Cluster (several seed nodes, keys
//! routed by slot). Commands go through one connection type either way; pub/sub uses a
//! plain connection to one node, because classic PUBLISH is broadcast over the cluster bus
//! to every node, so a subscriber on any node hears every instance.
//!
//! A cluster is `--redis-cluster` with the seed URLs comma-separated; the pub/sub connection
//! goes to the first cluster node that answers. Every key one Lua script touches shares a hash tag,
//! so the script runs on one slot.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// How long connecting and one reply may take before the call fails (and counts against
/// the breaker) instead of stalling the request behind it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub enum Redis {
    Standalone(redis::Client),
    Cluster {
        client: Box<ClusterClient>,
        /// The seed nodes, tried in turn for the subscription.
        nodes: Vec<redis::Client>,
    },
}

impl Redis {
    /// `urls`: one URL, or in cluster mode one or more seed URLs separated by commas.
    pub fn open(urls: &str, cluster: bool) -> RedisResult<Redis> {
        let list: Vec<&str> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        if !cluster {
            return Ok(Redis::Standalone(redis::Client::open(urls.trim())?));
        }
        let nodes = list
            .iter()
            .map(|u| redis::Client::open(*u))
            .collect::<RedisResult<Vec<_>>>()?;
        let client = ClusterClient::builder(list)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .build()?;
        Ok(Redis::Cluster {
            client: Box::new(client),
            nodes,
        })
    }

    pub fn mode(&self) -> &'static str {
        match self {
            Redis::Standalone(_) => "standalone",
            Redis::Cluster { .. } => "cluster",
        }
    }

    /// A command connection that reconnects by itself (standalone) or follows the cluster's
    /// topology (cluster).
    pub async fn connect(&self) -> RedisResult<Conn> {
        match self {
            Redis::Standalone(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                Ok(Conn::Standalone(
                    ConnectionManager::new_with_config(client.clone(), config).await?,
                ))
            }
            Redis::Cluster { client, .. } => {
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// A subscription connection: the server, or the first cluster node that answers.
    pub async fn pubsub(&self) -> RedisResult<PubSub> {
        match self {
            Redis::Standalone(client) => client.get_async_pubsub().await,
            Redis::Cluster { nodes, .. } => {
                let mut last = None;
                for node in nodes {
                    match tokio::time::timeout(CONNECT_TIMEOUT, node.get_async_pubsub()).await {
                        Ok(Ok(p)) => return Ok(p),
                        Ok(Err(e)) => last = Some(e),
                        Err(_) => {
                            last = Some(redis::RedisError::from(std::io::Error::from(
                                std::io::ErrorKind::TimedOut,
                            )))
                        }
                    }
                }
                Err(last.unwrap_or_else(|| {
                    redis::RedisError::from(std::io::Error::other("no Redis Cluster node"))
                }))
            }
        }
    }
}

/// A command connection to either kind of Redis.
#[derive(Clone)]
pub enum Conn {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Standalone(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Standalone(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_mode_takes_several_seeds() {
        let r = Redis::open("redis://127.0.0.1:7000, redis://127.0.0.1:7001", true).unwrap();
        match r {
            Redis::Cluster { nodes, .. } => assert_eq!(nodes.len(), 2),
            Redis::Standalone(_) => panic!("expected cluster"),
        }
        assert_eq!(
            Redis::open("redis://127.0.0.1:6379", false).unwrap().mode(),
            "standalone"
        );
        assert!(Redis::open("http://x", false).is_err());
    }
}
