//! Embeds the web client (`web/` at the repository root) into the binaries that serve it (relay and node): every file
//! becomes an `include_bytes!` entry of `$OUT_DIR/web_assets.rs` with an ETag computed from
//! its bytes (weak: the compression layer may serve it gzip- or brotli-encoded). No build step and no dependency: the files are served as they are.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let web = manifest.join("../web");
    println!("cargo:rerun-if-changed={}", web.display());
    let mut files = Vec::new();
    if web.is_dir() {
        collect(&web, &web, &mut files);
    }
    files.sort();
    let mut out = String::from("pub static ASSETS: &[Asset] = &[\n");
    for (url, path) in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let bytes = std::fs::read(path).expect("read a web/ file");
        let _ = writeln!(
            out,
            "    Asset {{ path: {url:?}, body: include_bytes!({:?}), etag: \"W/\\\"{:016x}\\\"\" }},",
            path.canonicalize().expect("canonical path"),
            fnv1a(&bytes)
        );
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    std::fs::write(dest.join("web_assets.rs"), out).expect("write web_assets.rs");
}

/// Files under `dir` as (URL path, file path); hidden files and directories are skipped.
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let entries = std::fs::read_dir(dir).expect("read web/");
    for entry in entries {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(".");
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let rel = path.strip_prefix(root).expect("under web/");
            let url: Vec<&str> = rel
                .components()
                .filter_map(|c| c.as_os_str().to_str())
                .collect();
            files.push((format!("/{}", url.join("/")), path));
        }
    }
}

/// FNV-1a, 64 bits: a stable content hash for ETags (not a security boundary).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
