//! config/relay.example.toml documents every option of `RelayConfig` with its default. This
//! test fails when an option is added without documentation, when a documented default
//! drifts from the code, or when a commented-out example would not parse.

use std::path::PathBuf;

use concord_relay::RelayConfig;
use concord_relay::config::TlsConfig;
use concord_svc::config_example;

fn example_text() -> String {
    config_example::read(env!("CARGO_MANIFEST_DIR"), "relay.example.toml")
}

#[test]
fn example_parses_to_the_defaults_and_validates() {
    let config: RelayConfig = toml::from_str(&example_text()).expect("the example parses");
    config.validate().expect("the example validates");
    assert_eq!(
        config,
        RelayConfig::default(),
        "the live values in config/relay.example.toml must be the defaults"
    );
}

#[test]
fn commented_out_options_parse_too() {
    let config: RelayConfig = toml::from_str(&config_example::uncommented(&example_text()))
        .expect("the uncommented example parses");
    config
        .validate()
        .expect("the uncommented example validates");
    assert!(config.tls.is_some(), "the example shows [tls]");
    assert!(
        config.database_url.is_some(),
        "the example shows database_url"
    );
    assert!(config.redis.url.is_some(), "the example shows redis.url");
}

#[test]
fn every_option_is_documented() {
    // Options without a default (None) are not serialised; give them values so that their
    // keys are walked too.
    let all = RelayConfig {
        tls: Some(TlsConfig {
            cert: PathBuf::from("cert.pem"),
            key: PathBuf::from("key.pem"),
        }),
        database_url: Some("postgres://localhost/concord".into()),
        voice: concord_relay::config::VoiceConfig {
            turn_secret: Some("secret".into()),
            ..Default::default()
        },
        redis: concord_relay::config::RedisConfig {
            url: Some("redis://127.0.0.1:6379".into()),
            instance_url: Some("http://10.0.0.5:8080".into()),
            ..Default::default()
        },
        telemetry: concord_relay::config::TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:4318".into()),
            ..Default::default()
        },
        retention: concord_relay::config::RetentionConfig {
            archive_location: Some("s3://bucket/prefix".into()),
            ..Default::default()
        },
        ..RelayConfig::default()
    };
    config_example::assert_every_option_documented(
        &example_text(),
        "config/relay.example.toml",
        &[RelayConfig::default(), all],
    );
}

#[test]
fn every_option_has_a_comment() {
    config_example::assert_every_option_has_a_comment(&example_text());
}
