//! The relay's HTTP API as the node uses it: discovery, login by device key (registering the
//! account on first join), invites, DMs, devices. Tokens are kept in memory and renewed by
//! logging in again (the device key is always at hand). `forward` passes any other API call
//! through on the node's session (for the node-served web client, `daemon/ui.rs`).

use std::time::{Duration, Instant};

use concord_proto::api::{ChallengeResponse, LoginResponse, WellKnown};
use concord_proto::signed;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::identity::Identity;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot reach {0}: {1}")]
    Unreachable(String, String),
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from the relay: {0}")]
    Protocol(String),
}

impl HttpError {
    pub fn code(&self) -> Option<&str> {
        match self {
            HttpError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub struct RelayHttp {
    pub url: String,
    http: reqwest::Client,
    token: Mutex<Option<(String, Instant)>>,
}

impl RelayHttp {
    pub fn new(url: &str) -> RelayHttp {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("an HTTP client builds");
        RelayHttp {
            url: url.trim_end_matches('/').to_owned(),
            http,
            token: Mutex::new(None),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<T, HttpError> {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| HttpError::Unreachable(self.url.clone(), e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| HttpError::Unreachable(self.url.clone(), e.to_string()))?;
        if status >= 400 {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(HttpError::Api {
                status,
                code: v["code"].as_str().unwrap_or("error").to_owned(),
                message: v["message"].as_str().unwrap_or(&text).to_owned(),
            });
        }
        let text = if text.is_empty() {
            "null".to_owned()
        } else {
            text
        };
        serde_json::from_str(&text).map_err(|e| HttpError::Protocol(e.to_string()))
    }

    pub async fn well_known(&self) -> Result<WellKnown, HttpError> {
        self.call(reqwest::Method::GET, "/.well-known/concord", None, None)
            .await
    }

    /// Logs in with the device key. The first login of a new account sends the certificate
    /// and a username; later ones need neither.
    pub async fn login(
        &self,
        identity: &Identity,
        username: Option<&str>,
    ) -> Result<LoginResponse, HttpError> {
        let device_key = identity.device_key();
        let challenge: ChallengeResponse = self
            .call(
                reqwest::Method::POST,
                "/api/v1/auth/challenge",
                None,
                Some(json!({ "device_key": device_key })),
            )
            .await?;
        // The signature names the audience; it must be the origin we are talking to.
        let expected = concord_proto_origin(&self.url);
        if challenge.audience != expected {
            return Err(HttpError::Protocol(format!(
                "the relay says it is {} but we connected to {expected}",
                challenge.audience
            )));
        }
        let signature =
            signed::sign_auth(&identity.device, &challenge.audience, &challenge.challenge);
        let mut body = json!({ "device_key": device_key, "challenge": challenge.challenge, "signature": signature });
        body["certificate"] =
            serde_json::to_value(&identity.certificate).expect("certificates serialise");
        if let Some(name) = username {
            body["username"] = json!(name);
        }
        let login: LoginResponse = self
            .call(
                reqwest::Method::POST,
                "/api/v1/auth/login",
                None,
                Some(body),
            )
            .await?;
        *self.token.lock().await = Some((
            login.access_token.clone(),
            Instant::now() + Duration::from_secs(login.expires_in.max(60) as u64 - 30),
        ));
        Ok(login)
    }

    /// A valid access token for this device (logging in when there is none or it expires).
    pub async fn token(&self, identity: &Identity) -> Result<String, HttpError> {
        if let Some((token, until)) = self.token.lock().await.clone()
            && Instant::now() < until
        {
            return Ok(token);
        }
        Ok(self.login(identity, None).await?.access_token)
    }

    /// An authenticated call, logging in first when needed.
    pub async fn authed<T: DeserializeOwned>(
        &self,
        identity: &Identity,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, HttpError> {
        let token = self.token(identity).await?;
        self.call(method, path, Some(&token), body).await
    }
}

/// A relay answer passed on as it is (node-served web client).
pub struct Forwarded {
    pub status: u16,
    /// The headers the client reads: content type and the `concord-*` ones.
    pub headers: Vec<(String, String)>,
    pub body: bytes::Bytes,
}

impl RelayHttp {
    /// Sends one API request on this device's session and returns the answer unread, for the
    /// node-served client; an access token the relay calls expired is renewed once.
    pub async fn forward(
        &self,
        identity: &Identity,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<(String, bytes::Bytes)>,
    ) -> Result<Forwarded, HttpError> {
        let mut renewed = false;
        loop {
            let token = self.token(identity).await?;
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path_and_query}", self.url))
                .bearer_auth(&token);
            if let Some((content_type, bytes)) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(bytes.clone());
            }
            let resp = req
                .send()
                .await
                .map_err(|e| HttpError::Unreachable(self.url.clone(), e.to_string()))?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .filter(|(name, _)| {
                    name.as_str() == "content-type" || name.as_str().starts_with("concord-")
                })
                .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| HttpError::Unreachable(self.url.clone(), e.to_string()))?;
            if status == 401 && !renewed {
                renewed = true;
                // Expired or revoked between our check and the relay's: log in again.
                *self.token.lock().await = None;
                continue;
            }
            return Ok(Forwarded {
                status,
                headers,
                body: bytes,
            });
        }
    }
}

/// `scheme://host[:port]` of a URL, default ports dropped (how the relay names itself).
pub fn concord_proto_origin(url: &str) -> String {
    let url = url.trim_end_matches('/');
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    let authority = match (scheme, authority.rsplit_once(':')) {
        ("http", Some((host, "80"))) | ("https", Some((host, "443"))) => host.to_owned(),
        _ => authority,
    };
    format!("{scheme}://{authority}")
}
