//! Which reads may go to a read replica. By default none do: the gateway, libp2p sync,
//! permission loads and every write path read the primary, because they replay by seq or
//! must see what was just written. Only code run inside [`on_replica`] (plain HTTP reads,
//! see `api/read_your_writes.rs`) spreads its reads over replicas. A task-local, so the
//! store API stays the same and nested calls inherit it.

use std::future::Future;

tokio::task_local! {
    static REPLICA_OK: ();
}

/// Runs `f` with its store reads allowed on replicas.
pub async fn on_replica<F: Future>(f: F) -> F::Output {
    REPLICA_OK.scope((), f).await
}

/// Whether the current task's reads may go to a replica.
pub fn replica_ok() -> bool {
    REPLICA_OK.try_with(|_| ()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scope_is_seen_inside_only() {
        assert!(!replica_ok());
        assert!(on_replica(async { replica_ok() }).await);
        assert!(!replica_ok());
    }
}
