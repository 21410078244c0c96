//! Running retention in the relay: every `check_interval_secs` each instance creates the
//! coming partitions and looks for months due for the archive. Alone, it archives them
//! itself; in a cluster it offers them to the durable job queue (once per month across all
//! instances) and every instance's worker takes jobs from it, so a month whose instance
//! dies mid-way is finished by another.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{Archiver, Month};
use crate::app::{App, now_ms};
use crate::cluster::jobs::{Job, JobQueue};

/// How long a job may stay unacknowledged before another instance takes it over: longer than
/// archiving a month takes.
pub const CLAIM_AFTER: Duration = Duration::from_secs(600);

pub fn spawn(
    app: Arc<App>,
    archiver: Arc<Archiver>,
    queue: Option<Arc<JobQueue>>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(schedule(
        app.clone(),
        archiver.clone(),
        queue.clone(),
    ))];
    if let Some(queue) = queue {
        tasks.push(tokio::spawn(work(app, archiver, queue)));
    }
    tasks
}

async fn schedule(app: Arc<App>, archiver: Arc<Archiver>, queue: Option<Arc<JobQueue>>) {
    let period = Duration::from_secs(app.config.retention.check_interval_secs);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = archiver.ensure_partitions(now_ms()).await {
            tracing::warn!(error = %e, "creating the coming months' partitions failed");
        }
        let keep = app.config.retention.archive_after_days;
        if keep > 0 {
            match archiver.due_months(now_ms(), keep).await {
                Ok(months) => {
                    for month in months {
                        offer(&app, &archiver, queue.as_deref(), month, period).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "looking for months to archive failed"),
            }
        }
        app.refresh_archived_before().await;
        purge_audit(&app).await;
    }
}

/// Audit entries (guild and instance) older than `retention.audit_log_days` are deleted.
async fn purge_audit(app: &App) {
    let days = app.config.retention.audit_log_days;
    if days == 0 {
        return;
    }
    let before = now_ms() - i64::from(days) * 86_400_000;
    match app.store.purge_audit(before).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(entries = n, days, "old audit entries deleted"),
        Err(e) => tracing::warn!(error = %e, "purging old audit entries failed"),
    }
}

async fn offer(
    app: &App,
    archiver: &Archiver,
    queue: Option<&JobQueue>,
    month: Month,
    period: Duration,
) {
    match queue {
        Some(queue) => {
            let job = Job::ArchiveMonth {
                month: month.to_string(),
            };
            if let Err(e) = queue
                .enqueue_once(&job, &format!("archive:{month}"), period)
                .await
            {
                tracing::warn!(error = %e, %month, "could not queue the archive job; next check retries");
            }
        }
        None => {
            if let Err(e) = archiver.archive_month(month, now_ms()).await {
                tracing::error!(error = %e, %month, "archiving failed; next check retries");
            }
            app.refresh_archived_before().await;
        }
    }
}

async fn work(app: Arc<App>, archiver: Arc<Archiver>, queue: Arc<JobQueue>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let next = tokio::select! {
            _ = app.shutdown.cancelled() => return,
            n = queue.next(crate::cluster::jobs::MAX_BLOCK) => n,
        };
        match next {
            Ok(Some((id, Job::ArchiveMonth { month }))) => {
                backoff = Duration::from_millis(500);
                let Ok(parsed) = month.parse::<Month>() else {
                    tracing::warn!(%month, "archive job for a malformed month dropped");
                    let _ = queue.ack(&id).await;
                    continue;
                };
                match archiver.archive_month(parsed, now_ms()).await {
                    Ok(_) => {
                        app.refresh_archived_before().await;
                        if let Err(e) = queue.ack(&id).await {
                            tracing::warn!(error = %e, "acknowledging a finished job failed; it will run again");
                        }
                    }
                    // Left unacknowledged: an instance takes it over after CLAIM_AFTER.
                    Err(e) => tracing::error!(error = %e, %month, "archive job failed"),
                }
            }
            Ok(None) => backoff = Duration::from_millis(500),
            Err(e) => {
                tracing::debug!(error = %e, "job queue unreachable");
                tokio::select! {
                    _ = app.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}
