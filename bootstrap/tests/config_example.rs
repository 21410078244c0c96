//! config/bootstrap.example.toml documents every option of `BootstrapConfig` with its
//! default, each with a comment above it.

use std::collections::BTreeSet;

use concord_bootstrap::BootstrapConfig;

fn example() -> String {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/bootstrap.example.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

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

#[test]
fn example_is_the_defaults_and_lists_every_option() {
    let text = example();
    let parsed: BootstrapConfig = toml::from_str(&text).expect("the example parses");
    assert_eq!(
        parsed,
        BootstrapConfig::default(),
        "documented defaults match the code"
    );
    parsed.validate().expect("the defaults validate");

    let defaults = toml::Table::try_from(BootstrapConfig::default()).expect("serialises");
    let mut expected = BTreeSet::new();
    leaf_keys(&defaults, "", &mut expected);
    let in_file: toml::Table = toml::from_str(&text).expect("a table");
    let mut documented = BTreeSet::new();
    leaf_keys(&in_file, "", &mut documented);
    assert_eq!(documented, expected, "every option appears in the example");
}

#[test]
fn every_option_has_a_comment() {
    let text = example();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        assert!(
            i > 0 && lines[i - 1].trim().starts_with('#'),
            "line {} has no comment above it: {line}",
            i + 1
        );
    }
}
