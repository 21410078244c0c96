//! config/turn.example.toml documents every option of `TurnConfig` with its default. This
//! test fails when an option is added without documentation, when a documented default
//! drifts from the code, or when a commented-out example would not parse.

use std::path::PathBuf;

use concord_svc::config_example;
use concord_turn::TurnConfig;
use concord_turn::config::TlsConfig;

fn example_text() -> String {
    config_example::read(env!("CARGO_MANIFEST_DIR"), "turn.example.toml")
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
    let config: TurnConfig = toml::from_str(&config_example::uncommented(&example_text()))
        .expect("the uncommented example parses");
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
    config_example::assert_every_option_documented(
        &example_text(),
        "config/turn.example.toml",
        &[TurnConfig::default(), all],
    );
}

#[test]
fn every_option_has_a_comment() {
    config_example::assert_every_option_has_a_comment(&example_text());
}
