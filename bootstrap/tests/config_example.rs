//! config/bootstrap.example.toml documents every option of `BootstrapConfig` with its
//! default, each with a comment above it.

use concord_bootstrap::BootstrapConfig;
use concord_svc::config_example;

fn example_text() -> String {
    config_example::read(env!("CARGO_MANIFEST_DIR"), "bootstrap.example.toml")
}

#[test]
fn example_is_the_defaults_and_lists_every_option() {
    let parsed: BootstrapConfig = toml::from_str(&example_text()).expect("the example parses");
    parsed.validate().expect("the defaults validate");
    assert_eq!(
        parsed,
        BootstrapConfig::default(),
        "documented defaults match the code"
    );
    config_example::assert_every_option_documented(
        &example_text(),
        "config/bootstrap.example.toml",
        &[BootstrapConfig::default()],
    );
}

#[test]
fn every_option_has_a_comment() {
    config_example::assert_every_option_has_a_comment(&example_text());
}
