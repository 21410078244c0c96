//! The relay's layers: transports (`api/`, `gateway/`, `p2p/`, `web.rs`) call the domain
//! (`domain/`, `messaging.rs`, `perms.rs`, `voice/`, …) and the store; nothing below a
//! transport imports one, and `domain/` and `store/` never do. The composition root
//! (`server.rs`, `cli.rs`, `main.rs`) wires them together.

use std::path::{Path, PathBuf};

/// Where transports live (relative to `relay/src`).
const TRANSPORTS: &[&str] = &["api/", "gateway/", "p2p/", "web.rs"];
/// Files that wire transports to the rest.
const ROOTS: &[&str] = &["server.rs", "cli.rs", "main.rs", "lib.rs"];
/// How code names a transport module.
const TRANSPORT_PATHS: &[&str] = &[
    "crate::api",
    "crate::gateway",
    "crate::p2p",
    "crate::web",
    "super::api",
    "super::gateway",
    "super::p2p",
    "super::super::api",
];
/// Known exceptions, each with its reason. Shrinks; never grows.
const ALLOWED: &[(&str, &str)] = &[("app.rs", "crate::p2p")];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn nothing_below_the_transports_imports_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if TRANSPORTS.iter().any(|t| rel.starts_with(t)) || ROOTS.contains(&rel.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for path in TRANSPORT_PATHS {
                if code.contains(path)
                    && !ALLOWED
                        .iter()
                        .any(|(f, p)| *f == rel && path.starts_with(p))
                {
                    found.push(format!("{rel}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "below the transports, these import one:\n{}",
        found.join("\n")
    );
    // The check sees the tree: the domain and the store are there to be checked.
    assert!(files.iter().any(|f| f.ends_with("domain/error.rs")));
    assert!(files.iter().any(|f| f.ends_with("store/sql/admin.rs")));
}
