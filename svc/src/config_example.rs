//! Checks that a `config/*.example.toml` documents every option of its config struct with
//! the default value and a comment, and that its commented-out examples parse. Used by each
//! server's `tests/config_example.rs`.

use std::collections::BTreeSet;

use serde::Serialize;

/// Dotted paths of every leaf value in a TOML table (arrays count as leaves).
pub fn leaf_keys(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => leaf_keys(inner, &path, out),
            _ => {
                out.insert(path);
            }
        }
    }
}

/// `# key = value` or `# [table]`: a commented-out option rather than prose.
pub fn commented_out(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('#')?.trim_start();
    let is_header = rest.starts_with('[') && rest.trim_end().ends_with(']');
    let is_key = rest
        .split_once('=')
        .map(|(k, _)| k.trim())
        .is_some_and(|k| {
            !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
    (is_header || is_key).then_some(rest)
}

/// Dotted paths of every key the file mentions, live or commented out, following the table
/// headers (live or commented out) above them.
pub fn documented_keys(text: &str) -> BTreeSet<String> {
    let mut table = String::new();
    let mut keys = BTreeSet::new();
    for raw in text.lines() {
        let line = raw.trim();
        let line = if line.starts_with('#') {
            match commented_out(line) {
                Some(rest) => rest,
                None => continue,
            }
        } else {
            line
        };
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = header.trim().to_owned();
        } else if let Some((key, _)) = line.split_once('=') {
            let key = key.trim();
            keys.insert(if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            });
        }
    }
    keys
}

/// The example with its commented-out options switched on.
pub fn uncommented(text: &str) -> String {
    text.lines()
        .map(|line| commented_out(line.trim()).unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every option the serialised `configs` contain (give `None` options values in one of them)
/// is in the example, and the example names no option the struct lacks.
pub fn assert_every_option_documented<T: Serialize>(text: &str, file: &str, configs: &[T]) {
    let mut expected = BTreeSet::new();
    for config in configs {
        let text = toml::to_string(config).expect("the config serialises");
        let table: toml::Table = toml::from_str(&text).expect("serialised config parses");
        leaf_keys(&table, "", &mut expected);
    }
    let documented = documented_keys(text);
    let missing: Vec<_> = expected.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "options missing from {file} (add them with their default and a comment): {missing:?}"
    );
    let unknown: Vec<_> = documented.difference(&expected).collect();
    assert!(
        unknown.is_empty(),
        "{file} documents options the config does not have: {unknown:?}"
    );
}

/// Every option line, live or commented out, has a one-line comment of prose above it.
pub fn assert_every_option_has_a_comment(text: &str) {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for (i, line) in lines.iter().enumerate() {
        let is_option = !line.is_empty()
            && (commented_out(line).is_some_and(|l| !l.starts_with('['))
                || (!line.starts_with('#') && !line.starts_with('[')));
        if is_option {
            let previous = i.checked_sub(1).map(|j| lines[j]).unwrap_or("");
            assert!(
                previous.starts_with('#') && commented_out(previous).is_none(),
                "line {}: `{line}` needs a one-line comment above it",
                i + 1
            );
        }
    }
}

/// The text of `config/<name>` from a crate directly below the workspace root.
pub fn read(manifest_dir: &str, name: &str) -> String {
    let path = std::path::Path::new(manifest_dir)
        .join("../config")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
