//! The deployment files in `compose/` parse, and everything they name exists: Dockerfiles and
//! the workspace binaries they build, every flag and `CONCORD_*` variable given to a Concord
//! binary (checked against its real command line), the ports Prometheus scrapes, the
//! metrics the Grafana dashboard queries, the files the compose services mount.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn load(path: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

/// Long flags and environment variables a binary accepts.
struct Accepts {
    flags: BTreeSet<String>,
    env: BTreeSet<String>,
}

fn accepts(cmd: clap::Command) -> Accepts {
    let mut flags = BTreeSet::new();
    let mut env = BTreeSet::new();
    let mut walk = vec![cmd];
    while let Some(c) = walk.pop() {
        for a in c.get_arguments() {
            if let Some(l) = a.get_long() {
                flags.insert(format!("--{l}"));
            }
            if let Some(e) = a.get_env() {
                env.insert(e.to_string_lossy().into_owned());
            }
        }
        walk.extend(c.get_subcommands().cloned());
    }
    Accepts { flags, env }
}

fn binaries() -> HashMap<&'static str, Accepts> {
    HashMap::from([
        ("concord-relay", accepts(concord_relay::cli::Cli::command())),
        ("concord-turn", accepts(concord_turn::cli::Cli::command())),
        (
            "concord-bootstrap",
            accepts(concord_bootstrap::cli::Cli::command()),
        ),
    ])
}

/// The binary a Dockerfile builds (`--bin NAME`), checked to be a workspace binary.
fn dockerfile_binary(path: &str) -> &'static str {
    let text = std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let bins = binaries();
    let built = text
        .split_whitespace()
        .skip_while(|w| *w != "--bin")
        .nth(1)
        .unwrap_or_else(|| panic!("{path} builds no --bin"));
    let (name, _) = bins
        .get_key_value(built)
        .unwrap_or_else(|| panic!("{path} builds {built}, not a Concord server binary"));
    assert!(
        text.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{built}\"]")),
        "{path}: the entrypoint is the binary it builds"
    );
    name
}

fn strings(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Yaml::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// `--flag=value` or `--flag` → `--flag`.
fn flag_name(arg: &str) -> Option<&str> {
    arg.starts_with("--")
        .then(|| arg.split('=').next().unwrap_or(arg))
}

fn check_args(what: &str, binary: &str, args: &[String], env_keys: &[String]) {
    let bins = binaries();
    let accepts = &bins[binary];
    for arg in args {
        if let Some(flag) = flag_name(arg) {
            assert!(
                accepts.flags.contains(flag),
                "{what}: {binary} has no flag {flag}"
            );
        }
    }
    for key in env_keys.iter().filter(|k| k.starts_with("CONCORD_")) {
        assert!(accepts.env.contains(key), "{what}: {binary} reads no {key}");
    }
}

fn env_keys(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Hash(h) => h
            .keys()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect(),
        // Kubernetes: a list of {name, value}.
        Yaml::Array(a) => a
            .iter()
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn compose_files_name_only_what_exists() {
    let mut seen_binaries = BTreeSet::new();
    for file in ["compose/single-vps.yml", "compose/cluster.yml"] {
        let doc = &load(file)[0];
        let services = doc["services"]
            .as_hash()
            .unwrap_or_else(|| panic!("{file}: services"));
        for (name, svc) in services {
            let name = name.as_str().unwrap();
            let what = format!("{file} service {name}");
            if let Some(dockerfile) = svc["build"]["dockerfile"].as_str() {
                let binary = dockerfile_binary(dockerfile);
                seen_binaries.insert(binary);
                // YAML anchors are resolved by the loader (x-relay-env).
                check_args(
                    &what,
                    binary,
                    &strings(&svc["command"]),
                    &env_keys(&svc["environment"]),
                );
            } else {
                assert!(
                    svc["image"].as_str().is_some(),
                    "{what}: an image or a build"
                );
            }
            for volume in strings(&svc["volumes"]) {
                if let Some(local) = volume.strip_prefix("./") {
                    let local = local.split(':').next().unwrap();
                    assert!(
                        root().join("compose").join(local).exists(),
                        "{what}: mounts ./{local}, which is missing"
                    );
                }
            }
        }
        assert!(
            services.contains_key(&Yaml::String("relay".into())),
            "{file}: a relay"
        );
    }
    assert_eq!(
        seen_binaries,
        BTreeSet::from(["concord-relay", "concord-turn", "concord-bootstrap"]),
        "every server binary is deployed"
    );
}

#[test]
fn kubernetes_manifests_name_only_what_exists() {
    let images = HashMap::from([
        ("concord/relay:latest", "concord-relay"),
        ("concord/turn:latest", "concord-turn"),
        ("concord/bootstrap:latest", "concord-bootstrap"),
    ]);
    let mut kinds = BTreeSet::new();
    for file in [
        "compose/k8s/relay.yml",
        "compose/k8s/turn.yml",
        "compose/k8s/bootstrap.yml",
    ] {
        for doc in load(file) {
            let kind = doc["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: kind"))
                .to_owned();
            assert!(doc["apiVersion"].as_str().is_some(), "{file}: apiVersion");
            for c in doc["spec"]["template"]["spec"]["containers"]
                .as_vec()
                .into_iter()
                .flatten()
            {
                let image = c["image"].as_str().unwrap();
                let binary = images
                    .get(image)
                    .unwrap_or_else(|| panic!("{file}: unknown image {image}"));
                check_args(
                    &format!("{file} {kind}"),
                    binary,
                    &strings(&c["args"]),
                    &env_keys(&c["env"]),
                );
            }
            kinds.insert(kind);
        }
    }
    for k in [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "DaemonSet",
        "StatefulSet",
    ] {
        assert!(kinds.contains(k), "k8s manifests include a {k}");
    }
}

#[test]
fn prometheus_scrapes_the_ports_the_services_serve_metrics_on() {
    let doc = &load("compose/prometheus.yml")[0];
    let cluster = &load("compose/cluster.yml")[0];
    let mut jobs = BTreeSet::new();
    for job in doc["scrape_configs"].as_vec().unwrap() {
        let name = job["job_name"].as_str().unwrap();
        jobs.insert(name.to_owned());
        let targets: Vec<String> = job["static_configs"]
            .as_vec()
            .into_iter()
            .flatten()
            .flat_map(|s| strings(&s["targets"]))
            .chain(
                job["dns_sd_configs"]
                    .as_vec()
                    .into_iter()
                    .flatten()
                    .flat_map(|d| {
                        let port = d["port"].as_i64().unwrap();
                        strings(&d["names"])
                            .into_iter()
                            .map(move |n| format!("{n}:{port}"))
                    }),
            )
            .collect();
        for target in targets {
            let (service, port) = target.split_once(':').unwrap();
            let svc = &cluster["services"][service];
            assert!(!svc.is_badvalue(), "{name}: no service {service}");
            let command = strings(&svc["command"]).join(" ");
            assert!(
                command.contains(&format!("0.0.0.0:{port}")),
                "{name}: {service} does not listen on {port} ({command})"
            );
        }
    }
    assert_eq!(
        jobs,
        BTreeSet::from(["relay".into(), "turn".into(), "bootstrap".into()])
    );
}

#[test]
fn the_dashboard_queries_only_real_metrics() {
    let text = std::fs::read_to_string(root().join("compose/grafana/concord.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut known: BTreeSet<String> = concord_relay::metrics::METRICS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    known.extend(
        concord_turn::metrics::METRICS
            .iter()
            .map(|(n, _)| n.to_string()),
    );
    known.extend(
        concord_bootstrap::metrics::METRICS
            .iter()
            .map(|(n, _, _)| n.to_string()),
    );
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for p in panels {
        let expr = p["targets"][0]["expr"].as_str().unwrap();
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if let Some(base) = word.strip_prefix("concord_") {
                let name = format!("concord_{base}");
                let name = name.strip_suffix("_bucket").unwrap_or(&name);
                assert!(
                    known.contains(name),
                    "{}: unknown metric {name}",
                    p["title"]
                );
            }
        }
    }
}
