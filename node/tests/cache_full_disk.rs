//! The node's cache on a disk that fills up: writes fail with an error (no panic), nothing
//! committed is lost or corrupted, the outbox keeps every envelope it took, and the cache
//! takes writes again once there is room, also after a reopen.
//!
//! The cache lives on a 4 MiB tmpfs in a private mount namespace: the test runs itself again
//! under `unshare --mount` (root; CI runs as root), so the mount ends with that process.

use std::path::Path;
use std::process::Command;

use concord_node::cache::{Cache, CacheLimits};
use concord_proto::Id;
use concord_proto::signed::Envelope;

const INSIDE: &str = "CONCORD_TEST_IN_MOUNT_NS";

fn envelope(i: usize) -> Envelope {
    Envelope {
        channel_id: Id(42),
        device_key: "device".into(),
        nonce: format!("n{i}"),
        // Big enough that a few hundred fill the disk.
        content: format!("{i} {}", "x".repeat(3_000)),
        reply_to: None,
        created_at: 1_800_000_000_000,
        signature: "unchecked".into(),
    }
}

#[test]
fn a_full_disk_keeps_the_outbox_and_the_cache_whole() {
    if std::env::var_os(INSIDE).is_some() {
        return inside();
    }
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args([
            "--exact",
            "a_full_disk_keeps_the_outbox_and_the_cache_whole",
            "--nocapture",
        ])
        .env(INSIDE, "1")
        .status()
        .expect("unshare runs");
    assert!(
        status.success(),
        "the test inside the mount namespace failed"
    );
}

fn inside() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("disk");
    std::fs::create_dir(&dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a tmpfs needs root");
    let path = dir.join("cache.db");

    let mut cache = Cache::open(&path, CacheLimits::default()).unwrap();
    // Something else fills the disk, leaving the cache about a megabyte.
    let filler = dir.join("filler");
    fill_leaving(&filler, 1 << 20);
    let mut taken = Vec::new();
    let mut refused = 0;
    for i in 0..2_000 {
        match cache.outbox_push(&envelope(i), 1_800_000_000_000) {
            Ok(()) => taken.push(format!("n{i}")),
            Err(e) => {
                refused += 1;
                assert!(e.to_string().contains("full"), "a full disk says so: {e}");
                if refused == 20 {
                    break;
                }
            }
        }
    }
    assert!(refused > 0, "the disk never filled up");
    assert!(!taken.is_empty());
    assert_eq!(
        cache.outbox_len().unwrap(),
        taken.len(),
        "the outbox holds what it took"
    );

    // Reopened on the full disk: every envelope it took is there, in order, and due.
    drop(cache);
    let mut cache = Cache::open(&path, CacheLimits::default()).unwrap();
    let due: Vec<String> = cache
        .outbox_due(i64::MAX, 10_000)
        .unwrap()
        .into_iter()
        .map(|item| item.envelope.nonce)
        .collect();
    assert_eq!(due, taken);
    check_integrity(&path);

    // Room again (the other file goes): the same cache takes writes and acks, no reopen.
    std::fs::remove_file(&filler).unwrap();
    cache
        .outbox_push(&envelope(100_000), 1_800_000_000_000)
        .expect("room again");
    for nonce in &taken[..taken.len() / 2] {
        cache.outbox_ack(nonce).unwrap();
    }
    assert_eq!(
        cache.outbox_len().unwrap(),
        taken.len() - taken.len() / 2 + 1
    );
    drop(cache);
    check_integrity(&path);
    eprintln!(
        "{} envelopes taken before the disk filled, {refused} refused; all kept",
        taken.len()
    );
    let _ = Command::new("umount").arg(&dir).status();
}

/// Writes `path` until the disk is full, then gives back `leave` bytes.
fn fill_leaving(path: &Path, leave: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(leave)).unwrap();
}

fn check_integrity(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(verdict, "ok");
}
