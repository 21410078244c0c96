//! Periodic work: readiness checks (database, free space), expiring resumable sessions, purging limiter windows,
//! revocations and challenges, renewing the worker-id lease, exporting pool gauges.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::app::{App, now_ms};
use crate::ratelimit::MemoryLimiter;

fn every<F, Fut>(app: &Arc<App>, period: Duration, mut work: F) -> JoinHandle<()>
where
    F: FnMut(Arc<App>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let app = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => work(app.clone()).await,
                _ = app.shutdown.cancelled() => return,
            }
        }
    })
}

pub fn spawn_all(app: Arc<App>, limiter: Arc<MemoryLimiter>) -> Vec<JoinHandle<()>> {
    let probe = Duration::from_millis(app.config.database.probe_interval_ms);
    vec![
        // The database probe: feeds the store's breaker (`ping`) and `/readyz`.
        every(&app, probe, |app| async move {
            let ok = match tokio::time::timeout(Duration::from_secs(2), app.store.ping()).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    if app.db_ok() {
                        tracing::warn!(error = %e, "database check failed");
                    }
                    false
                }
                Err(_) => false,
            };
            if ok && !app.db_ok() {
                tracing::warn!("the database answers again");
            }
            app.set_db_ok(ok);
            metrics::gauge!("concord_ready").set(if app.is_ready() { 1.0 } else { 0.0 });
        }),
        every(&app, crate::voice::AUDIT_EVERY, |app| async move {
            crate::voice::audit(&app).await;
        }),
        every(&app, Duration::from_secs(2), |app| async move {
            let stats = app.store.pool_stats();
            for (pool, state, n) in [
                ("write", "open", stats.write_size),
                ("write", "idle", stats.write_idle),
                ("read", "open", stats.read_size),
                ("read", "idle", stats.read_idle),
            ] {
                metrics::gauge!("concord_db_pool_connections", "pool" => pool, "state" => state)
                    .set(f64::from(n));
            }
        }),
        every(&app, Duration::from_secs(1), |app| async move {
            crate::voice::expire(&app).await;
            if let Some(space) = &app.space {
                let space = space.clone();
                // statvfs can block on a sick filesystem: off the runtime's threads.
                let _ = tokio::task::spawn_blocking(move || space.check()).await;
                metrics::gauge!("concord_ready").set(if app.is_ready() { 1.0 } else { 0.0 });
            }
        }),
        every(&app, Duration::from_secs(5), |app| async move {
            app.voice.sfu.record_room_quality();
            let window = Duration::from_secs(app.config.gateway.resume_window_secs);
            app.hub.sweep(window);
            metrics::gauge!("concord_gateway_sessions").set(app.hub.session_count() as f64);
        }),
        every(&app, Duration::from_secs(30), move |app| {
            let limiter = limiter.clone();
            async move {
                limiter.purge();
                app.revoked.purge(now_ms());
                app.refresh_archived_before().await;
            }
        }),
        every(&app, Duration::from_secs(60), |app| async move {
            if let Err(e) = app.store.purge_challenges(now_ms()).await {
                tracing::warn!(error = %e, "purging challenges failed");
            }
        }),
        every(&app, Duration::from_secs(20), |app| async move {
            match app
                .store
                .renew_worker_id(app.worker_id, &app.instance, now_ms(), 60_000)
                .await
            {
                Ok(true) => {}
                Ok(false) => tracing::error!(
                    worker_id = app.worker_id,
                    "lost the worker-id lease; ids may collide"
                ),
                Err(e) => tracing::warn!(error = %e, "renewing the worker-id lease failed"),
            }
        }),
    ]
}
