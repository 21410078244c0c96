//! The free-space floor of the filesystem that holds the SQLite database.
//!
//! A write that runs the disk full fails inside SQLite; long before that, the relay refuses
//! new content (messages, edits, reactions, guilds, channels, invites, accounts …) with 507
//! `storage_full` once the free space is under the floor, while reads, logins, deletions and
//! the relay's own bookkeeping go on. The floor is the larger of `storage.min_free_mib` and
//! `storage.min_free_percent` of the filesystem (both 0: no floor; a real `SQLITE_FULL` is
//! still answered 507 and the writer keeps working).
//!
//! [`SpaceWatch::check`] reads `statvfs` (the background task calls it every second); a write
//! that failed with "disk full" marks the watch low at once ([`SpaceWatch::mark_full`]) until
//! the next check finds room again. Transitions are logged once each and exported as
//! `concord_storage_low` and `concord_storage_free_bytes`. PostgreSQL has its own disk: no
//! floor there, but its `disk_full` error is answered 507 too.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The floor in bytes for a filesystem of `total` bytes: the larger of the two settings.
pub fn floor(total: u64, min_free_bytes: u64, min_free_percent: f64) -> u64 {
    let share = (total as f64 * min_free_percent.clamp(0.0, 100.0) / 100.0) as u64;
    share.max(min_free_bytes)
}

/// Watches one directory's filesystem against the floor.
#[derive(Debug)]
pub struct SpaceWatch {
    path: PathBuf,
    min_free_bytes: u64,
    min_free_percent: f64,
    low: AtomicBool,
    free: AtomicU64,
}

impl SpaceWatch {
    /// Watches the filesystem of `path` (a directory). Starts "not low"; call [`check`]
    /// (Self::check) before serving.
    pub fn new(path: &Path, min_free_bytes: u64, min_free_percent: f64) -> SpaceWatch {
        SpaceWatch {
            path: path.to_path_buf(),
            min_free_bytes,
            min_free_percent,
            low: AtomicBool::new(false),
            free: AtomicU64::new(u64::MAX),
        }
    }

    /// The watched directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the filesystem's free space, updates the state and says whether it is low.
    /// An unreadable filesystem keeps the previous state (and is logged).
    pub fn check(&self) -> bool {
        match rustix::fs::statvfs(&self.path) {
            Ok(st) => {
                let block = st.f_frsize.max(1);
                let free = st.f_bavail.saturating_mul(block);
                let total = st.f_blocks.saturating_mul(block);
                self.free.store(free, Ordering::Relaxed);
                metrics::gauge!("concord_storage_free_bytes").set(free as f64);
                let floor = floor(total, self.min_free_bytes, self.min_free_percent);
                self.set_low(free < floor, free, floor);
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "reading free space failed");
            }
        }
        self.is_low()
    }

    /// A write failed because the disk is full: refuse writes until a check finds room.
    pub fn mark_full(&self) {
        self.set_low(true, 0, 0);
    }

    /// Whether new content is refused.
    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::Relaxed)
    }

    /// Free bytes at the last check (`u64::MAX` before the first).
    pub fn free_bytes(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }

    fn set_low(&self, low: bool, free: u64, floor: u64) {
        metrics::gauge!("concord_storage_low").set(if low { 1.0 } else { 0.0 });
        if self.low.swap(low, Ordering::Relaxed) == low {
            return;
        }
        if low && floor == 0 {
            tracing::error!(path = %self.path.display(), "the disk is full: refusing new content (507 storage_full) until there is room");
        } else if low {
            tracing::error!(path = %self.path.display(), free, floor, "free space is under the floor: refusing new content (507 storage_full) until there is room");
        } else {
            tracing::warn!(path = %self.path.display(), free, "free space is back over the floor: accepting writes again");
        }
        metrics::counter!("concord_storage_transitions_total", "to" => if low { "low" } else { "ok" })
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_the_larger_setting() {
        const MIB: u64 = 1 << 20;
        // 10 GiB: 1 % is 102 MiB, under 256 MiB.
        assert_eq!(floor(10 * 1024 * MIB, 256 * MIB, 1.0), 256 * MIB);
        // 100 GiB: 1 % is 1 GiB.
        assert_eq!(floor(100 * 1024 * MIB, 256 * MIB, 1.0), 1024 * MIB);
        assert_eq!(floor(100 * MIB, 0, 0.0), 0);
        assert_eq!(floor(100 * MIB, 0, 250.0), 100 * MIB);
    }

    #[test]
    fn a_disk_full_write_marks_it_low_until_a_check_finds_room() {
        let dir = tempfile::tempdir().unwrap();
        let watch = SpaceWatch::new(dir.path(), 0, 0.0);
        assert!(!watch.check());
        watch.mark_full();
        assert!(watch.is_low());
        assert!(!watch.check(), "no floor: any free space is room");
        let huge = SpaceWatch::new(dir.path(), u64::MAX, 0.0);
        assert!(huge.check());
        assert!(huge.free_bytes() < u64::MAX);
    }
}
