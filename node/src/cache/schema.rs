//! Opening the file (permissions, pragmas) and the migrations in `migrations/node`.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::{CacheError, Result};

/// `(version, sql)`, in order; version N is `migrations/node/000N_*.sql`. A test checks that
/// this list and the directory agree.
pub(super) const MIGRATIONS: &[(i64, &str)] =
    &[(1, include_str!("../../../migrations/node/0001_init.sql"))];

/// Page cache per connection (filled only as pages are read): searches over a large cache
/// touch many FTS pages. No mmap: an I/O error on a mapped file is a crash, not an error.
const CACHE_SIZE_KIB: i64 = 32 * 1024;

pub(super) fn open_file(path: &Path) -> Result<Connection> {
    create_private(path)?;
    let conn = Connection::open(path)?;
    configure(&conn)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(CacheError::Corrupt(format!(
            "journal_mode is {mode}, WAL expected"
        )));
    }
    migrate(&conn)?;
    Ok(conn)
}

pub(super) fn open_memory() -> Result<Connection> {
    let conn = Connection::open_in_memory()?;
    configure(&conn)?;
    migrate(&conn)?;
    Ok(conn)
}

/// Creates the file with mode 0600 before SQLite opens it (SQLite gives the -wal and -shm
/// files the same mode), and tightens the mode of an existing file.
#[cfg(unix)]
fn create_private(path: &Path) -> Result<()> {
    use std::fs::{OpenOptions, Permissions};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, Permissions::from_mode(0o600))?;
    Ok(())
}

#[cfg(not(unix))]
fn create_private(_path: &Path) -> Result<()> {
    Ok(())
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "cache_size", -CACHE_SIZE_KIB)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Applies every migration above the file's `user_version`, each in its own transaction.
fn migrate(conn: &Connection) -> Result<()> {
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > known {
        return Err(CacheError::TooNew { found, known });
    }
    for &(version, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;"
        ))
        .inspect_err(|_| {
            // A failed batch leaves its transaction open; end it so nothing half-applied stays.
            let _ = conn.execute_batch("ROLLBACK");
        })?;
    }
    Ok(())
}
