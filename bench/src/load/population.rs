//! The bench's users: accounts registered over the real login (device key challenge and
//! response), guilds with text channels, members joined by invite. Group sizes follow a Zipf
//! distribution drawn from a fixed seed.

use std::time::Duration;

use anyhow::Context;
use concord_proto::api::{ChallengeResponse, LoginResponse};
use concord_proto::signed::{self, DeviceCertificate};
use ed25519_dalek::SigningKey;
use futures_util::{StreamExt, stream};
use indicatif::ProgressBar;
use serde_json::{Value, json};

use crate::text::Rng;

/// Requests in flight while setting up.
const SETUP_CONCURRENCY: usize = 64;

pub struct Account {
    pub token: String,
}

pub struct Guild {
    pub id: String,
    /// Text channels.
    pub channels: Vec<String>,
    /// Account indexes; the first one owns the guild.
    pub members: Vec<usize>,
}

/// An HTTP client for the bench: many pooled connections to one host.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_idle_timeout(Duration::from_secs(120))
        .tcp_nodelay(true)
        .build()
        .expect("an HTTP client builds")
}

/// Checks the status and decodes the body.
pub async fn json_answer(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let text = resp.text().await?;
    anyhow::ensure!(status.is_success(), "{status}: {text}");
    Ok(if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)?
    })
}

async fn login(http: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<Account> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)?;
    let account = SigningKey::from_bytes(&seed);
    getrandom::fill(&mut seed)?;
    let device = SigningKey::from_bytes(&seed);
    let certificate = DeviceCertificate::sign(&account, &device.verifying_key(), "bench", 0);
    let device_key = signed::public_key_string(&device.verifying_key());
    let challenge: ChallengeResponse = serde_json::from_value(
        json_answer(
            http.post(format!("{url}/api/v1/auth/challenge"))
                .json(&json!({ "device_key": device_key }))
                .send()
                .await?,
        )
        .await?,
    )?;
    let signature = signed::sign_auth(&device, &challenge.audience, &challenge.challenge);
    let login: LoginResponse = serde_json::from_value(
        json_answer(
            http.post(format!("{url}/api/v1/auth/login"))
                .json(&json!({
                    "device_key": device_key,
                    "challenge": challenge.challenge,
                    "signature": signature,
                    "certificate": certificate,
                    "username": name,
                }))
                .send()
                .await?,
        )
        .await?,
    )?;
    Ok(Account {
        token: login.access_token,
    })
}

/// Registers `n` accounts named `{prefix}{i}`.
pub async fn accounts(
    http: &reqwest::Client,
    url: &str,
    prefix: &str,
    n: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<Account>> {
    bar.set_length(n as u64);
    bar.set_position(0);
    bar.set_message("accounts");
    let results: Vec<anyhow::Result<Account>> = stream::iter(0..n)
        .map(|i| async move {
            let a = login(http, url, &format!("{prefix}{i}")).await;
            bar.inc(1);
            a
        })
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

pub async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    json_answer(
        http.post(format!("{url}{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?,
    )
    .await
    .with_context(|| format!("POST {path}"))
}

/// Creates one guild per member list (its first member owns it) with `channels` text
/// channels, and joins the other members by invite.
pub async fn guilds(
    http: &reqwest::Client,
    url: &str,
    accounts: &[Account],
    member_lists: Vec<Vec<usize>>,
    channels: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<Guild>> {
    let joins: usize = member_lists.iter().map(|m| m.len().saturating_sub(1)).sum();
    bar.set_length((member_lists.len() + joins) as u64);
    bar.set_position(0);
    bar.set_message("guilds and joins");
    let created: Vec<anyhow::Result<(Guild, String)>> =
        stream::iter(member_lists.into_iter().enumerate())
            .map(|(g, members)| async move {
                let owner = &accounts[members[0]].token;
                let guild = post(
                    http,
                    url,
                    owner,
                    "/api/v1/guilds",
                    json!({ "name": format!("bench {g}") }),
                )
                .await?;
                let id = guild["id"].as_str().context("guild id")?.to_owned();
                let mut text: Vec<String> = guild["channels"]
                    .as_array()
                    .context("guild channels")?
                    .iter()
                    .filter(|c| c["kind"] == "text")
                    .filter_map(|c| c["id"].as_str().map(str::to_owned))
                    .collect();
                while text.len() < channels {
                    let c = post(
                        http,
                        url,
                        owner,
                        &format!("/api/v1/guilds/{id}/channels"),
                        json!({ "name": format!("c{}", text.len()), "kind": "text" }),
                    )
                    .await?;
                    text.push(c["id"].as_str().context("channel id")?.to_owned());
                }
                text.truncate(channels.max(1));
                let invite = post(
                    http,
                    url,
                    owner,
                    &format!("/api/v1/guilds/{id}/invites"),
                    json!({}),
                )
                .await?;
                let code = invite["code"].as_str().context("invite code")?.to_owned();
                bar.inc(1);
                Ok((
                    Guild {
                        id,
                        channels: text,
                        members,
                    },
                    code,
                ))
            })
            .buffered(SETUP_CONCURRENCY / 4)
            .collect()
            .await;
    let created: Vec<(Guild, String)> = created.into_iter().collect::<anyhow::Result<_>>()?;
    let todo: Vec<(usize, &str)> = created
        .iter()
        .flat_map(|(g, code)| g.members[1..].iter().map(move |m| (*m, code.as_str())))
        .collect();
    let joined: Vec<anyhow::Result<Value>> = stream::iter(todo)
        .map(|(member, code)| async move {
            let r = post(
                http,
                url,
                &accounts[member].token,
                &format!("/api/v1/invites/{code}/accept"),
                json!({}),
            )
            .await;
            bar.inc(1);
            r
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    for j in joined {
        j?;
    }
    Ok(created.into_iter().map(|(g, _)| g).collect())
}

/// Sizes of `groups` groups holding `n` members: each group gets one member first (when
/// there are enough), the rest are drawn from Zipf(s) over the group ranks with a fixed
/// seed, so the largest group is rank 0.
pub fn zipf_sizes(n: usize, groups: usize, s: f64, seed: u64) -> Vec<usize> {
    let groups = groups.max(1);
    let mut sizes = vec![0usize; groups];
    let base = n.min(groups);
    for size in sizes.iter_mut().take(base) {
        *size = 1;
    }
    let mut total = 0.0;
    let cumulative: Vec<f64> = (1..=groups)
        .map(|k| {
            total += (k as f64).powf(-s);
            total
        })
        .collect();
    let mut rng = Rng::new(seed);
    for _ in base..n {
        let x = rng.unit() * total;
        let k = cumulative.partition_point(|&c| c < x).min(groups - 1);
        sizes[k] += 1;
    }
    sizes
}

/// Consecutive account indexes from `first`, cut into groups of the given sizes (empty
/// groups dropped).
pub fn member_lists(first: usize, sizes: &[usize]) -> Vec<Vec<usize>> {
    let mut next = first;
    sizes
        .iter()
        .filter(|s| **s > 0)
        .map(|&s| {
            let list = (next..next + s).collect();
            next += s;
            list
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_sizes_are_deterministic_and_skewed() {
        let a = zipf_sizes(5_000, 500, 1.1, 42);
        assert_eq!(a, zipf_sizes(5_000, 500, 1.1, 42));
        assert_eq!(a.iter().sum::<usize>(), 5_000);
        assert!(a.iter().all(|s| *s >= 1));
        // Rank 0 holds about 1/H(500, 1.1) ≈ 18% of the draws.
        assert!(a[0] > 500 && a[0] < 1_300, "{}", a[0]);
        assert!(a[0] > a[10] && a[10] > a[400]);
        assert_eq!(zipf_sizes(3, 10, 1.1, 1).iter().sum::<usize>(), 3);
        let lists = member_lists(5, &[2, 0, 1]);
        assert_eq!(lists, vec![vec![5, 6], vec![7]]);
    }
}
