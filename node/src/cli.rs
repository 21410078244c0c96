//! The `concord` command line. `init`, `id` and `daemon` work on the data dir directly; every
//! other command talks to the running daemon through its control API (address and token in
//! the data dir).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crate::daemon::{CONTROL_ADDR_FILE, CONTROL_TOKEN_FILE};

/// Concord node: your device on the Concord network. Start `concord daemon`, then use the
/// other commands from another terminal.
#[derive(Debug, Parser)]
#[command(name = "concord", version, about)]
pub struct Cli {
    /// Data directory (keys, cache, control API address) [default: $CONCORD_HOME or
    /// ~/.local/share/concord].
    #[arg(long, env = "CONCORD_HOME", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the account key and this device's key (or only a device key with --link).
    Init {
        #[arg(long, default_value = "concord node")]
        label: String,
        /// Create only a device key, to be certified by another device of the account.
        #[arg(long)]
        link: bool,
    },
    /// Print the account key, the device key and the PeerId.
    Id,
    /// Run the node in the foreground.
    Daemon {
        /// libp2p listen multiaddr; repeatable [default: QUIC and TCP on all interfaces,
        /// OS-assigned ports].
        #[arg(long)]
        listen: Vec<String>,
        /// Control API address (loopback only) [default: 127.0.0.1:0].
        #[arg(long, default_value = "127.0.0.1:0")]
        control_listen: SocketAddr,
        /// Relay only: no mDNS, no hole punching, no direct connections; your IP stays private.
        #[arg(long)]
        relay_only: bool,
        /// Do not accept direct connections from guild members.
        #[arg(long)]
        no_direct: bool,
        /// Do not look for peers on the LAN.
        #[arg(long)]
        no_mdns: bool,
        /// Bootstrap server multiaddr ending in /p2p/<peer id>; repeatable (the relay's
        /// `/.well-known/concord` adds its own list).
        #[arg(long)]
        bootstrap: Vec<String>,
        /// Confirmed messages kept per channel in the local cache.
        #[arg(long, default_value_t = 50_000)]
        max_messages_per_channel: usize,
        /// Drop cached messages older than this many days [default: keep].
        #[arg(long)]
        max_age_days: Option<u32>,
        /// What this node says in voice channels: `silence`, `sine:HZ`, `wav:PATH` (48 kHz
        /// mono 16-bit) or `device` (the default microphone; needs the `cpal` feature).
        #[arg(long, default_value = "silence", value_parser = clap::value_parser!(crate::voice_mesh::media::SourceSpec))]
        voice_source: crate::voice_mesh::media::SourceSpec,
        /// Write what this node hears in voice channels to this WAV file.
        #[arg(long)]
        voice_sink: Option<PathBuf>,
        /// Play what this node hears in voice channels on the default speaker (needs the
        /// `cpal` feature).
        #[arg(long)]
        voice_speaker: bool,
        /// Voice goes through TURN only (relay candidates; always so with --relay-only).
        #[arg(long)]
        voice_force_turn: bool,
    },
    /// Join a guild on a relay by invite (registers this account on its first join).
    Join {
        relay_url: String,
        /// The invite code or link (codes may start with `-`).
        #[arg(allow_hyphen_values = true)]
        invite: String,
        /// Username for a new account (asked for on a terminal when missing).
        #[arg(long)]
        username: Option<String>,
    },
    /// List your guilds.
    Guilds,
    /// List a guild's channels.
    Channels { guild: String },
    /// Send a message; returns once the relay has acknowledged it.
    Send {
        channel: String,
        /// The message (it may start with `-`).
        #[arg(allow_hyphen_values = true)]
        text: String,
        /// Return at once; the outbox delivers the message when the relay is reachable.
        #[arg(long)]
        no_wait: bool,
    },
    /// Follow a channel live (unconfirmed messages are marked).
    Tail { channel: String },
    /// Show a channel's recent history from the local cache.
    History {
        channel: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Search the local cache (works offline).
    Search {
        query: String,
        #[arg(long, default_value_t = 25)]
        limit: usize,
    },
    /// Send a direct message to a user (by account id).
    Dm {
        user: String,
        /// The message (it may start with `-`).
        #[arg(allow_hyphen_values = true)]
        text: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Open connections: direct, hole-punched or relayed, transport, RTT.
    Peers,
    /// Guild members' devices the relay told this node about, with their addresses.
    Members,
    /// Node status: identity, relay connection, outbox.
    Status,
    /// Open the web client on this node (a one-time URL on the control API's loopback
    /// address; the page then talks to this node).
    Ui {
        /// Print the URL only; do not start a browser.
        #[arg(long)]
        no_open: bool,
    },
    /// Manage this account's devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Voice channels: join, leave, mute, unmute, deafen, undeafen, status.
    #[command(subcommand)]
    Voice(VoiceCommand),
}

#[derive(Debug, Subcommand)]
pub enum VoiceCommand {
    /// Join a voice channel (by id); the node keeps its place until `leave`.
    Join {
        channel: String,
        /// Join muted.
        #[arg(long)]
        muted: bool,
    },
    /// Leave the voice channel.
    Leave,
    Mute,
    Unmute,
    /// Hear nothing (and mute the microphone).
    Deafen,
    Undeafen,
    /// The channel, its mode (mesh or SFU), whether you may speak, and who is in it.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Certify another device (its code is the device key `concord init --link` printed).
    Link {
        /// The code `concord init --link` printed on the new device (it may start with `-`).
        #[arg(allow_hyphen_values = true)]
        code: String,
        #[arg(long, default_value = "linked device")]
        label: String,
    },
    List,
    Revoke {
        device_key: String,
    },
}

/// Starts the desktop's browser on a URL ($BROWSER, else xdg-open / open); false if none ran.
fn open_browser(url: &str) -> bool {
    let candidates: Vec<String> = std::env::var("BROWSER")
        .ok()
        .into_iter()
        .chain(["xdg-open".to_owned(), "open".to_owned()])
        .collect();
    candidates.iter().any(|program| {
        std::process::Command::new(program)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok()
    })
}

pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("concord");
    }
    std::env::var_os("HOME").map_or_else(
        || PathBuf::from(".concord"),
        |h| PathBuf::from(h).join(".local/share/concord"),
    )
}

pub struct ControlClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ControlClient {
    pub fn open(dir: &Path) -> anyhow::Result<ControlClient> {
        let addr = std::fs::read_to_string(dir.join(CONTROL_ADDR_FILE)).map_err(|_| {
            anyhow::anyhow!(
                "no daemon found in {}: start `concord daemon` first",
                dir.display()
            )
        })?;
        let token = std::fs::read_to_string(dir.join(CONTROL_TOKEN_FILE))?;
        Ok(ControlClient {
            base: format!("http://{}", addr.trim()),
            token: token.trim().to_owned(),
            http: reqwest::Client::new(),
        })
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            anyhow::anyhow!("the daemon does not answer ({e}); is `concord daemon` running?")
        })?;
        let status = resp.status();
        let text = resp.text().await?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let message = value["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            anyhow::bail!("{message}");
        }
        Ok(value)
    }
}

fn print(json: bool, value: &Value, human: impl FnOnce(&Value) -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("JSON prints")
        );
    } else {
        let text = human(value);
        if !text.is_empty() {
            println!("{text}");
        }
    }
}

fn message_line(m: &Value) -> String {
    let author = m["author"].as_str().unwrap_or("?");
    let mark = if m["confirmed"].as_bool() == Some(true) {
        ""
    } else {
        " (unconfirmed)"
    };
    format!(
        "{} <{author}> {}{mark}",
        m["created_at"],
        m["content"].as_str().unwrap_or("")
    )
}

fn lines(v: &Value, f: impl Fn(&Value) -> String) -> String {
    v.as_array()
        .map(|a| a.iter().map(f).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

/// Runs a client command against the daemon (everything but init, id and daemon).
pub async fn run_client(dir: &Path, json_out: bool, command: Command) -> anyhow::Result<()> {
    let c = ControlClient::open(dir)?;
    use reqwest::Method;
    match command {
        Command::Join {
            relay_url,
            invite,
            username,
        } => {
            let body = json!({ "relay_url": relay_url, "invite": invite, "username": username });
            let result = match c.call(Method::POST, "/v1/join", Some(body.clone())).await {
                Err(e) if e.to_string().starts_with("username_required") && username.is_none() => {
                    if !std::io::stdin().is_terminal() {
                        anyhow::bail!("{e}");
                    }
                    print!("username for this new account: ");
                    std::io::stdout().flush()?;
                    let mut name = String::new();
                    std::io::stdin().read_line(&mut name)?;
                    let body = json!({ "relay_url": body["relay_url"], "invite": body["invite"], "username": name.trim() });
                    c.call(Method::POST, "/v1/join", Some(body)).await?
                }
                other => other?,
            };
            print(json_out, &result, |g| {
                format!(
                    "joined {} ({})",
                    g["name"].as_str().unwrap_or("?"),
                    g["id"].as_str().unwrap_or("?")
                )
            });
        }
        Command::Guilds => {
            let v = c.call(Method::GET, "/v1/guilds", None).await?;
            print(json_out, &v, |v| {
                lines(v, |g| {
                    format!(
                        "{}  {}",
                        g["id"].as_str().unwrap_or(""),
                        g["name"].as_str().unwrap_or("")
                    )
                })
            });
        }
        Command::Channels { guild } => {
            let v = c
                .call(Method::GET, &format!("/v1/guilds/{guild}/channels"), None)
                .await?;
            print(json_out, &v, |v| {
                lines(v, |ch| {
                    format!(
                        "{}  #{} ({})",
                        ch["id"].as_str().unwrap_or(""),
                        ch["name"].as_str().unwrap_or(""),
                        ch["kind"].as_str().unwrap_or("")
                    )
                })
            });
        }
        Command::Send {
            channel,
            text,
            no_wait,
        } => {
            let v = c
                .call(
                    Method::POST,
                    &format!("/v1/channels/{channel}/messages"),
                    Some(json!({ "content": text, "wait": !no_wait })),
                )
                .await?;
            if !no_wait && v["acknowledged"] != Value::Bool(true) {
                anyhow::bail!(
                    "not acknowledged in time; the message stays in the outbox (nonce {})",
                    v["nonce"]
                );
            }
            print(json_out, &v, |v| match v["message"]["id"].as_str() {
                Some(id) => format!("sent {id} (seq {})", v["message"]["seq"]),
                None => format!("queued (nonce {})", v["nonce"].as_str().unwrap_or("")),
            });
        }
        Command::History { channel, limit } => {
            let v = c
                .call(
                    Method::GET,
                    &format!("/v1/channels/{channel}/messages?limit={limit}"),
                    None,
                )
                .await?;
            print(json_out, &v, |v| lines(v, message_line));
        }
        Command::Search { query, limit } => {
            let q: String = query
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            let v = c
                .call(
                    Method::GET,
                    &format!("/v1/search?q={q}&limit={limit}"),
                    None,
                )
                .await?;
            print(json_out, &v, |v| lines(v, message_line));
        }
        Command::Dm {
            user,
            text,
            no_wait,
        } => {
            let v = c
                .call(
                    Method::POST,
                    "/v1/dms",
                    Some(json!({ "user_id": user, "content": text, "wait": !no_wait })),
                )
                .await?;
            print(json_out, &v, |v| {
                format!(
                    "sent to {} (channel {})",
                    user,
                    v["channel_id"].as_str().unwrap_or("")
                )
            });
        }
        Command::Peers => {
            let v = c.call(Method::GET, "/v1/peers", None).await?;
            print(json_out, &v, |v| {
                lines(v, |p| {
                    format!(
                        "{}  {} {} rtt={}{}",
                        p["peer_id"].as_str().unwrap_or(""),
                        p["kind"].as_str().unwrap_or(""),
                        p["transport"].as_str().unwrap_or(""),
                        p["rtt_ms"]
                            .as_u64()
                            .map_or("?".into(), |r| format!("{r}ms")),
                        if p["is_relay"] == Value::Bool(true) {
                            "  (relay)"
                        } else {
                            ""
                        }
                    )
                })
            });
        }
        Command::Members => {
            let v = c.call(Method::GET, "/v1/members", None).await?;
            print(json_out, &v, |v| {
                lines(v, |m| {
                    let addrs = m["addrs"].as_array().map_or(String::new(), |a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(" ")
                    });
                    format!(
                        "{}  user {}  {}",
                        m["peer_id"].as_str().unwrap_or(""),
                        m["user_id"].as_str().unwrap_or(""),
                        if addrs.is_empty() {
                            "(no fresh addresses)"
                        } else {
                            &addrs
                        }
                    )
                })
            });
        }
        Command::Voice(voice) => {
            let v = match voice {
                VoiceCommand::Join { channel, muted } => {
                    let channel: concord_proto::Id = channel
                        .parse()
                        .map_err(|_| anyhow::anyhow!("{channel:?} is not a channel id"))?;
                    c.call(
                        Method::POST,
                        "/v1/voice/join",
                        Some(json!({ "channel_id": channel, "self_mute": muted })),
                    )
                    .await?
                }
                VoiceCommand::Leave => {
                    c.call(Method::POST, "/v1/voice/leave", None).await?;
                    json!({ "voice": null })
                }
                VoiceCommand::Mute | VoiceCommand::Unmute => {
                    let mute = matches!(voice, VoiceCommand::Mute);
                    c.call(
                        Method::POST,
                        "/v1/voice/mute",
                        Some(json!({ "mute": mute })),
                    )
                    .await?
                }
                VoiceCommand::Deafen | VoiceCommand::Undeafen => {
                    let deafen = matches!(voice, VoiceCommand::Deafen);
                    c.call(
                        Method::POST,
                        "/v1/voice/deafen",
                        Some(json!({ "deafen": deafen })),
                    )
                    .await?
                }
                VoiceCommand::Status => {
                    c.call(Method::GET, "/v1/voice", None).await?["voice"].clone()
                }
            };
            print(json_out, &v, voice_summary);
        }
        Command::Ui { no_open } => {
            let v = c.call(Method::POST, "/v1/ui/ticket", None).await?;
            let url = v["url"].as_str().unwrap_or_default().to_owned();
            // The URL works once, within a couple of minutes; the browser keeps the session.
            let opened = !no_open && open_browser(&url);
            print(json_out, &v, |_| {
                if opened {
                    format!("opened {url}")
                } else {
                    format!("open this URL in a browser on this machine (it works once):\n{url}")
                }
            });
        }
        Command::Status => {
            let v = c.call(Method::GET, "/v1/status", None).await?;
            print(json_out, &v, |v| {
                format!(
                    "peer id   {}\nuser      {}\nrelay     {} ({})\noutbox    {}\npeers     {}",
                    v["peer_id"].as_str().unwrap_or(""),
                    v["user"]["username"].as_str().unwrap_or("(not joined)"),
                    v["relay"]["url"].as_str().unwrap_or("none"),
                    if v["relay"]["connected"] == Value::Bool(true) {
                        "connected"
                    } else {
                        "disconnected"
                    },
                    v["outbox"],
                    v["connections"]
                )
            });
        }
        Command::Tail { channel } => {
            let mut resp = c
                .http
                .get(format!("{}/v1/channels/{channel}/tail", c.base))
                .bearer_auth(&c.token)
                .send()
                .await?;
            if !resp.status().is_success() {
                anyhow::bail!("tail refused: {}", resp.text().await?);
            }
            let mut buffer = Vec::new();
            while let Some(chunk) = resp.chunk().await? {
                buffer.extend_from_slice(&chunk);
                while let Some(pos) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=pos).collect();
                    let event: Value = serde_json::from_slice(&line)?;
                    if json_out {
                        println!("{}", serde_json::to_string(&event)?);
                    } else if event["type"] == "message" {
                        println!("{}", message_line(&event["message"]));
                    } else if event["type"] == "message_deleted" {
                        println!("(message {} deleted)", event["id"]);
                    }
                    std::io::stdout().flush()?;
                }
            }
        }
        Command::Device(DeviceCommand::Link { code, label }) => {
            let v = c
                .call(
                    Method::POST,
                    "/v1/devices",
                    Some(json!({ "device_key": code, "label": label })),
                )
                .await?;
            print(json_out, &v, |v| {
                format!(
                    "linked {} ({})",
                    v["device_key"].as_str().unwrap_or(""),
                    v["label"].as_str().unwrap_or("")
                )
            });
        }
        Command::Device(DeviceCommand::List) => {
            let v = c.call(Method::GET, "/v1/devices", None).await?;
            print(json_out, &v, |v| {
                lines(v, |d| {
                    format!(
                        "{}  {}{}",
                        d["device_key"].as_str().unwrap_or(""),
                        d["label"].as_str().unwrap_or(""),
                        if d["revoked_at"].is_null() {
                            ""
                        } else {
                            " (revoked)"
                        }
                    )
                })
            });
        }
        Command::Device(DeviceCommand::Revoke { device_key }) => {
            c.call(Method::DELETE, &format!("/v1/devices/{device_key}"), None)
                .await?;
            print(json_out, &json!({ "revoked": device_key }), |_| {
                format!("revoked {device_key}")
            });
        }
        Command::Init { .. } | Command::Id | Command::Daemon { .. } => {
            unreachable!("handled by main")
        }
    }
    Ok(())
}

/// `concord voice …` for people: the channel, the mode and one line per participant.
fn voice_summary(v: &Value) -> String {
    if v.is_null() {
        return "not in a voice channel".into();
    }
    let mut out = format!(
        "channel   {}\nmode      {}\nspeak     {}\nmuted     {}\nsent      {} packets",
        v["channel_id"].as_str().unwrap_or(""),
        v["mode"].as_str().unwrap_or(""),
        if v["speak"] == Value::Bool(true) {
            "yes"
        } else {
            "no"
        },
        if v["self_mute"] == Value::Bool(true) {
            "yes"
        } else {
            "no"
        },
        v["packets_sent"].as_u64().unwrap_or(0),
    );
    for p in v["participants"].as_array().into_iter().flatten() {
        let flags: Vec<&str> = [
            ("self_mute", "muted"),
            ("self_deaf", "deafened"),
            ("server_mute", "server-muted"),
        ]
        .iter()
        .filter(|(k, _)| p[*k] == Value::Bool(true))
        .map(|(_, label)| *label)
        .collect();
        out.push_str(&format!(
            "\n  user {} ({}) {}",
            p["user_id"].as_str().unwrap_or(""),
            p["client"].as_str().unwrap_or(""),
            flags.join(", ")
        ));
    }
    for p in v["peers"].as_array().into_iter().flatten() {
        let num = |v: &Value, digits: usize| {
            v.as_f64()
                .map(|x| format!("{x:.digits$}"))
                .unwrap_or_else(|| "-".into())
        };
        let audio = &p["audio"];
        out.push_str(&format!(
            "\n  peer user {}{} {} via {} rtt {} ms loss {} % jitter {} ms gap {} ms",
            p["user_id"].as_str().unwrap_or(""),
            if audio["speaking"] == Value::Bool(true) {
                " (speaking)"
            } else {
                ""
            },
            p["state"].as_str().unwrap_or(""),
            p["path"].as_str().unwrap_or("-"),
            num(&p["rtt_ms"], 1),
            num(&audio["loss"].as_f64().map(|l| l * 100.0).into(), 1),
            num(&audio["jitter_ms"], 1),
            num(&audio["longest_concealed_ms"], 0),
        ));
    }
    for slot in v["slots"].as_array().into_iter().flatten() {
        let audio = &slot["audio"];
        out.push_str(&format!(
            "
  sfu slot {} last heard user {}{} loss {} % jitter {} ms",
            slot["ssrc"].as_u64().unwrap_or(0),
            slot["user_id"].as_str().unwrap_or("-"),
            if audio["speaking"] == Value::Bool(true) {
                " (speaking)"
            } else {
                ""
            },
            audio["loss"]
                .as_f64()
                .map_or("-".into(), |l| format!("{:.1}", l * 100.0)),
            audio["jitter_ms"]
                .as_f64()
                .map_or("-".into(), |j| format!("{j:.1}")),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn codes_and_messages_may_start_with_a_dash() {
        // Invite codes and device keys are base64url: about one in 64 starts with `-`.
        let cli =
            Cli::try_parse_from(["concord", "join", "http://127.0.0.1:8080", "-KpCPLYq"]).unwrap();
        assert!(matches!(cli.command, Command::Join { ref invite, .. } if invite == "-KpCPLYq"));
        let cli = Cli::try_parse_from(["concord", "device", "link", "-abc"]).unwrap();
        assert!(
            matches!(cli.command, Command::Device(DeviceCommand::Link { ref code, .. }) if code == "-abc")
        );
        let key = "-_YyOQr8FH1U1Y7Unm_Ya-kdIDnt6H1M6L3VzmWo14M";
        let cli = Cli::try_parse_from([
            "concord",
            "--data-dir",
            "/tmp/x",
            "device",
            "link",
            key,
            "--label",
            "phone",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Command::Device(DeviceCommand::Link { ref code, .. }) if code == key)
        );
        let cli = Cli::try_parse_from(["concord", "join", "http://x", "-_ab", "--username", "bo"])
            .unwrap();
        assert!(matches!(cli.command, Command::Join { ref invite, .. } if invite == "-_ab"));
        let cli = Cli::try_parse_from(["concord", "send", "123", "- a list item"]).unwrap();
        assert!(matches!(cli.command, Command::Send { ref text, .. } if text == "- a list item"));
        let cli = Cli::try_parse_from(["concord", "voice", "join", "123", "--muted"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Voice(VoiceCommand::Join { ref channel, muted: true }) if channel == "123"
        ));
        assert!(Cli::try_parse_from(["concord", "voice", "shout"]).is_err());
        assert!(voice_summary(&Value::Null).contains("not in a voice channel"));
        let cli = Cli::try_parse_from(["concord", "dm", "123", "-1"]).unwrap();
        assert!(matches!(cli.command, Command::Dm { ref text, .. } if text == "-1"));
    }
}
