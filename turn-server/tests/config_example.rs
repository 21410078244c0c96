//! config/turn.example.toml documents every option of `TurnConfig` with its default. This
//! test fails when an option is added without documentation, when a documented default
//! drifts from the code, or when a commented-out example would not parse.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use concord_turn::TurnConfig;
use concord_turn::config::TlsConfig;

fn example_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/turn.example.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Dotted paths of every leaf value in a TOML table (arrays count as leaves).
fn leaf_keys(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
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
fn commented_out(line: &str) -> Option<&str> {
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
fn documented_keys(text: &str) -> BTreeSet<String> {
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
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|line| commented_out(line.trim()).unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn example_parses_to_the_defaults_and_validates() {
    let config: TurnConfig = toml::from_str(&example_text()).expect("the example parses");
    config.validate().expect("the example validates");
    assert_eq!(
        config,
        TurnConfig::default(),
        "the live values in config/turn.example.toml must be the defaults"
    );
}

#[test]
fn commented_out_options_parse_too() {
    let config: TurnConfig =
        toml::from_str(&uncommented(&example_text())).expect("the uncommented example parses");
    config
        .validate()
        .expect("the uncommented example validates");
    assert!(config.tls.is_some(), "the example shows [tls]");
    for (shown, key) in [
        (config.auth_secret.is_some(), "auth_secret"),
        (config.relay_ip.is_some(), "relay_ip"),
        (config.external_ip.is_some(), "external_ip"),
    ] {
        assert!(shown, "the example shows {key}");
    }
}

#[test]
fn every_option_is_documented() {
    // Options without a default (None) are not serialised; give them values so that their
    // keys are walked too.
    let all = TurnConfig {
        tls: Some(TlsConfig {
            listen: "127.0.0.1:5349".parse().unwrap(),
            cert: PathBuf::from("cert.pem"),
            key: PathBuf::from("key.pem"),
        }),
        auth_secret: Some("secret".into()),
        relay_ip: Some("127.0.0.1".parse().unwrap()),
        external_ip: Some("127.0.0.2".parse().unwrap()),
        ..TurnConfig::default()
    };
    let mut expected = BTreeSet::new();
    for config in [TurnConfig::default(), all] {
        let text = toml::to_string(&config).expect("the config serialises");
        let table: toml::Table = toml::from_str(&text).expect("serialised config parses");
        leaf_keys(&table, "", &mut expected);
    }
    assert!(expected.contains("limits.user_quota"));
    assert!(expected.contains("tls.cert"));

    let documented = documented_keys(&example_text());
    let missing: Vec<_> = expected.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "options missing from config/turn.example.toml (add them with their default and a comment): {missing:?}"
    );
    let unknown: Vec<_> = documented.difference(&expected).collect();
    assert!(
        unknown.is_empty(),
        "config/turn.example.toml documents options TurnConfig does not have: {unknown:?}"
    );
}

#[test]
fn every_option_has_a_comment() {
    let text = example_text();
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
