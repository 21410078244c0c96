//! SQLite and PostgreSQL through sqlx's `Any` driver: one body of SQL (`$n` placeholders work
//! on both), with the few dialect differences (full-text search) switched on [`Backend`].
//!
//! SQLite gets a single-connection write pool (one writer, no SQLITE_BUSY on upgrades) and a
//! read-only pool beside it (WAL lets readers run during writes). PostgreSQL gets a write pool
//! and a read pool on the primary, plus one pool per read replica (readers.rs). The write and
//! read pools are separate and bounded, so slow reads cannot take the connections writes
//! need. The SQLite writer pool replaces a connection a failed write left inside a
//! transaction. New messages go through group commit (`batch.rs`); `transfer.rs` copies
//! whole databases.
//!
//! A breaker guards every call: when the background probe ([`ServerStore::ping`], every
//! `database.probe_interval_ms`) finds the database down twice, calls fail fast with
//! [`StoreError::Unavailable`] (503 `unavailable`): no restart, no pile of requests each
//! waiting out the acquire timeout; the next probe that succeeds closes it. Until it opens, calls
//! fail by themselves within `database.fail_fast_ms`: the PostgreSQL pools' acquire timeout
//! (sqlx retries a refused connection until then).

mod accounts;
mod admin;
mod archive;
mod batch;
mod guilds;
mod messages;
mod moderation;
mod readers;
mod rows;
mod search;
mod server;
pub mod transfer;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor};

use super::space::SpaceWatch;
use super::{Backend, StoreError, StoreResult};
use crate::cluster::breaker::{Breaker, State};
use readers::{Readers, Replica};

#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// PostgreSQL write pool size (SQLite always has one writer).
    pub max_write_connections: u32,
    /// Read pool size (both backends).
    pub max_read_connections: u32,
    /// SQLite: the wait for the connection a call needs.
    pub acquire_timeout: Duration,
    /// PostgreSQL: the wait for a connection (pooled, or new while the database refuses them),
    /// so that calls fail within it when the database goes away.
    pub fail_fast: Duration,
    /// PostgreSQL read replicas; reads spread over them, the primary when none answers.
    pub read_urls: Vec<String>,
    /// How long one replica may take to hand out a connection before it is skipped.
    pub replica_acquire_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            max_write_connections: 16,
            max_read_connections: 16,
            acquire_timeout: Duration::from_secs(10),
            fail_fast: Duration::from_millis(800),
            read_urls: Vec::new(),
            replica_acquire_timeout: Duration::from_secs(1),
        }
    }
}

pub struct SqlStore {
    backend: Backend,
    write: AnyPool,
    read: Readers,
    /// Open while the database is down (fed by `ping` and failed message commits).
    breaker: DbBreaker,
    /// Group commit of new messages (batch.rs).
    batcher: batch::Batcher,
    /// The free-space floor of the SQLite database's filesystem (`space.rs`); none on
    /// PostgreSQL.
    space: Option<Arc<SpaceWatch>>,
}

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../../../migrations/relay/sqlite/0001_init.sql"),
    ),
    (
        2,
        "archive",
        include_str!("../../../../migrations/relay/sqlite/0002_archive.sql"),
    ),
    (
        3,
        "admin",
        include_str!("../../../../migrations/relay/sqlite/0003_admin.sql"),
    ),
    (
        4,
        "moderation",
        include_str!("../../../../migrations/relay/sqlite/0004_moderation.sql"),
    ),
    (
        5,
        "instance_invites",
        include_str!("../../../../migrations/relay/sqlite/0005_instance_invites.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../../../migrations/relay/postgres/0001_init.sql"),
    ),
    (
        2,
        "partition_messages",
        include_str!("../../../../migrations/relay/postgres/0002_partition_messages.sql"),
    ),
    (
        3,
        "admin",
        include_str!("../../../../migrations/relay/postgres/0003_admin.sql"),
    ),
    (
        4,
        "moderation",
        include_str!("../../../../migrations/relay/postgres/0004_moderation.sql"),
    ),
    (
        5,
        "instance_invites",
        include_str!("../../../../migrations/relay/postgres/0005_instance_invites.sql"),
    ),
];

fn migrator(backend: Backend) -> Migrator {
    migrator_to(backend, i64::MAX)
}

/// The migrations up to `version`.
fn migrator_to(backend: Backend, version: i64) -> Migrator {
    let list = match backend {
        Backend::Sqlite => SQLITE_MIGRATIONS,
        Backend::Postgres => POSTGRES_MIGRATIONS,
    };
    Migrator::with_migrations(
        list.iter()
            .filter(|(v, _, _)| *v <= version)
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    (*name).into(),
                    MigrationType::Simple,
                    sqlx::SqlStr::from_static(sql),
                    false,
                )
            })
            .collect(),
    )
}

const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA temp_store = MEMORY;";

impl SqlStore {
    /// Applies migrations up to `version` only: for upgrade tests, which need a database as an
    /// older release left it.
    #[doc(hidden)]
    pub async fn migrate_to(url: &str, version: i64) -> StoreResult<()> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect_with(AnyConnectOptions::from_str(url)?)
            .await?;
        migrator_to(backend, version).run(&pool).await?;
        pool.close().await;
        Ok(())
    }

    /// Connects, creating the SQLite file if needed, and applies pending migrations.
    pub async fn connect(url: &str, config: &PoolConfig) -> StoreResult<SqlStore> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Corrupt(format!(
                "unsupported database URL scheme in {url:?} (sqlite: or postgres:)"
            )));
        };
        let options = AnyConnectOptions::from_str(url)?;
        if backend == Backend::Sqlite && !config.read_urls.is_empty() {
            return Err(StoreError::Corrupt(
                "read replicas (database.read_urls) need PostgreSQL".into(),
            ));
        }
        let (write, read) = match backend {
            Backend::Sqlite => {
                let write = AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(config.acquire_timeout)
                    .after_connect(|conn, _| {
                        Box::pin(async move { conn.execute(SQLITE_PRAGMAS).await.map(|_| ()) })
                    })
                    .after_release(|conn, _| Box::pin(sqlite_writer_usable(conn)))
                    .connect_with(options.clone())
                    .await?;
                // Migrate before the readers open, so they see the schema.
                migrator(backend).run(&write).await?;
                let read = AnyPoolOptions::new()
                    .max_connections(config.max_read_connections)
                    .acquire_timeout(config.acquire_timeout)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(SQLITE_PRAGMAS).await?;
                            conn.execute("PRAGMA query_only = ON;").await.map(|_| ())
                        })
                    })
                    .connect_with(options)
                    .await?;
                (write, read)
            }
            Backend::Postgres => {
                // sqlx retries a refused connection until the acquire deadline: with a dead
                // database every call would wait it out, so the deadline is short.
                let write = AnyPoolOptions::new()
                    .max_connections(config.max_write_connections)
                    .acquire_timeout(config.fail_fast)
                    .connect_lazy_with(options.clone());
                wait_for_database(&write, config.acquire_timeout).await?;
                migrator(backend).run(&write).await?;
                let read = AnyPoolOptions::new()
                    .max_connections(config.max_read_connections)
                    .acquire_timeout(config.fail_fast)
                    .connect_with(options)
                    .await?;
                (write, read)
            }
        };
        let mut replicas = Vec::new();
        for url in &config.read_urls {
            // Lazy: a replica that is down at start costs nothing until a read tries it.
            let pool = AnyPoolOptions::new()
                .max_connections(config.max_read_connections)
                .acquire_timeout(config.replica_acquire_timeout)
                .connect_lazy_with(AnyConnectOptions::from_str(url)?);
            replicas.push(Replica::new(pool));
        }
        let breaker = DbBreaker::new(backend);
        Ok(SqlStore {
            backend,
            batcher: batch::Batcher::spawn(write.clone(), backend, breaker.clone()),
            space: None,
            write,
            read: Readers::new(read, replicas),
            breaker,
        })
    }

    /// Starts one store call: fails fast while the breaker is open, else times it. SQLite is
    /// a local file with no outage to wait out: never gated.
    pub(crate) fn begin(&self, op: &'static str) -> StoreResult<QueryTimer> {
        if !self.breaker.is_closed() {
            metrics::counter!("concord_db_fast_failures_total").increment(1);
            return Err(StoreError::Unavailable);
        }
        Ok(QueryTimer::new(op))
    }

    /// Refuses new content while `watch` says the disk is low (SQLite only: PostgreSQL's
    /// disk is its own).
    pub fn watch_space(&mut self, watch: Arc<SpaceWatch>) {
        if self.backend == Backend::Sqlite {
            self.space = Some(watch);
        }
    }

    /// The free-space watch, when there is one.
    pub fn space(&self) -> Option<&Arc<SpaceWatch>> {
        self.space.as_ref()
    }

    /// Starts a call that adds content (a message, an edit, a reaction, a guild, an account
    /// …): refused with [`StoreError::StorageFull`] while the disk is under its floor.
    /// Deletions, logins and the relay's own bookkeeping use [`begin`](Self::begin) and go on.
    pub(crate) fn begin_write(&self, op: &'static str) -> StoreResult<QueryTimer> {
        if self.space.as_ref().is_some_and(|s| s.is_low()) {
            metrics::counter!("concord_storage_refused_total").increment(1);
            return Err(StoreError::StorageFull);
        }
        self.begin(op)
    }

    /// A write failed: a full disk marks the watch low at once (the next check clears it).
    pub(crate) fn note_write_error<T>(&self, result: StoreResult<T>) -> StoreResult<T> {
        if let (Err(StoreError::StorageFull), Some(space)) = (&result, &self.space) {
            space.mark_full();
        }
        result
    }

    /// The probe's verdict feeds the breaker; exported as a metric.
    pub(crate) fn record_probe(&self, ok: bool) {
        self.breaker.record(ok);
    }
}

/// The database breaker, shared by every store call and the group commit (none on SQLite, a
/// local file with no outage to wait out). Two failures in a row (probes every
/// `database.probe_interval_ms`, or message commits that lost the database) open it; while
/// open every call fails at once with [`StoreError::Unavailable`]; the next probe that
/// succeeds closes it.
#[derive(Clone)]
pub(super) struct DbBreaker(Option<Arc<Mutex<Breaker>>>);

impl DbBreaker {
    fn new(backend: Backend) -> DbBreaker {
        DbBreaker(
            (backend == Backend::Postgres)
                .then(|| Arc::new(Mutex::new(Breaker::new(2, Duration::from_secs(2))))),
        )
    }

    /// Whether calls may go to the database.
    pub(super) fn is_closed(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|b| b.lock().expect("db breaker").state(Instant::now()) == State::Closed)
    }

    /// A probe's or a commit's outcome; exported as `concord_breaker_state`.
    pub(super) fn record(&self, ok: bool) {
        let Some(breaker) = &self.0 else { return };
        let mut breaker = breaker.lock().expect("db breaker");
        let now = Instant::now();
        if ok {
            breaker.success();
        } else {
            breaker.failure(now);
        }
        metrics::gauge!("concord_breaker_state", "dependency" => "database")
            .set(breaker.state(now).as_gauge());
    }
}

/// At start, waits up to `patience` for PostgreSQL to accept a connection (it may be starting
/// beside the relay), although calls later fail within the pool's short acquire timeout.
async fn wait_for_database(pool: &AnyPool, patience: Duration) -> StoreResult<()> {
    let deadline = Instant::now() + patience;
    loop {
        match pool.acquire().await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(StoreError::Database(e)),
            Err(e) => {
                tracing::debug!(error = %e, "waiting for the database");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Whether the SQLite writer may go back to the pool. A statement that fails with
/// `SQLITE_FULL` (or an I/O error) makes SQLite roll the whole transaction back by itself;
/// sqlx's rollback then fails ("no transaction is active") and sqlx still counts the
/// connection as inside a transaction, so its next `begin` would issue a `SAVEPOINT` that
/// opens a transaction nobody commits (every later "commit" a `RELEASE` inside it: acked,
/// invisible to readers, lost at restart, seqs handed out again). Such a connection is closed
/// and the pool opens a fresh one. The ping first lets the worker run the rollback that the
/// dropped transaction queued.
async fn sqlite_writer_usable(conn: &mut sqlx::AnyConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::warn!("the SQLite writer was left inside a failed transaction; reopening it");
        metrics::counter!("concord_db_writer_reopened_total").increment(1);
        return Ok(false);
    }
    Ok(true)
}

/// Records how long one store operation took, by operation name.
pub(crate) struct QueryTimer {
    op: &'static str,
    start: Instant,
}

impl QueryTimer {
    pub(crate) fn new(op: &'static str) -> QueryTimer {
        QueryTimer {
            op,
            start: Instant::now(),
        }
    }
}

impl Drop for QueryTimer {
    fn drop(&mut self) {
        metrics::histogram!("concord_db_query_duration_seconds", "op" => self.op)
            .record(self.start.elapsed().as_secs_f64());
    }
}

/// `$start, $start+1, …` for `n` values.
pub(crate) fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}
