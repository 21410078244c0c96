//! Access tokens are HS256 JWTs carrying the session id (`sid`) and signed with a key whose id
//! (`kid`) is in the header; the keys live in the database so every relay instance verifies
//! every token. Refresh tokens are opaque random strings stored hashed; a token's successor
//! is derived with an HMAC so that a retry within the grace window gets the same successor
//! without the relay ever storing a usable token.

use std::sync::RwLock;

use concord_proto::{Id, b64};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AuthFailure, Caller};
use crate::store::{SigningKeyRecord, Store, StoreResult};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    sid: String,
    dev: String,
    iat: i64,
    exp: i64,
}

struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

pub struct TokenService {
    keys: RwLock<Vec<Key>>,
    refresh_secret: Vec<u8>,
    access_ttl_secs: i64,
}

pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source works");
    b64::encode(buf)
}

/// Compares two secrets without an early exit on the first differing byte (the digests are
/// equal-length, so the time does not depend on where they differ).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// What the database stores instead of a refresh token.
pub fn hash_refresh(token: &str) -> String {
    b64::encode(Sha256::digest(token.as_bytes()))
}

fn key(record: &SigningKeyRecord) -> Option<Key> {
    let secret = b64::decode(&record.secret).ok()?;
    Some(Key {
        kid: record.kid.clone(),
        encoding: EncodingKey::from_secret(&secret),
        decoding: DecodingKey::from_secret(&secret),
    })
}

impl TokenService {
    /// Loads the signing keys (creating the first one) and the refresh secret.
    pub async fn load(
        store: &dyn Store,
        access_ttl_secs: u64,
        now_ms: i64,
    ) -> StoreResult<TokenService> {
        let mut records = store.signing_keys().await?;
        if records.is_empty() {
            let record = SigningKeyRecord {
                kid: random_token(9),
                secret: random_token(32),
                created_at: now_ms,
            };
            store.insert_signing_key(&record).await?;
            // Another instance may have raced us; whatever is stored now is the truth.
            records = store.signing_keys().await?;
        }
        let refresh_secret = store
            .secret_or_insert("refresh_hmac", &random_token(32))
            .await?;
        Ok(TokenService {
            keys: RwLock::new(records.iter().filter_map(key).collect()),
            refresh_secret: b64::decode(&refresh_secret)
                .unwrap_or_else(|_| refresh_secret.into_bytes()),
            access_ttl_secs: access_ttl_secs as i64,
        })
    }

    pub fn access_ttl_secs(&self) -> i64 {
        self.access_ttl_secs
    }

    /// Issues an access token valid for the configured TTL from `now_ms`.
    pub fn issue_access(&self, caller: &Caller, now_ms: i64) -> String {
        self.issue_access_with_expiry(caller, now_ms / 1000, now_ms / 1000 + self.access_ttl_secs)
    }

    /// Tests use this to mint expired tokens.
    pub fn issue_access_with_expiry(&self, caller: &Caller, iat: i64, exp: i64) -> String {
        let keys = self.keys.read().expect("key lock");
        let current = keys.first().expect("at least one signing key is loaded");
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(current.kid.clone());
        let claims = Claims {
            sub: caller.user_id.to_string(),
            sid: caller.session_id.to_string(),
            dev: caller.device_key.clone(),
            iat,
            exp,
        };
        jsonwebtoken::encode(&header, &claims, &current.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// Checks signature, expiry and shape. Keys are loaded at start; rotating keys across
    /// instances reloads them (scale-out).
    pub fn verify_access(&self, token: &str) -> Result<Caller, AuthFailure> {
        if token.len() > 2048 {
            return Err(AuthFailure::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthFailure::Malformed)?;
        if header.alg != Algorithm::HS256 {
            return Err(AuthFailure::Malformed);
        }
        let kid = header.kid.ok_or(AuthFailure::Malformed)?;
        self.verify_with(&kid, token)
            .unwrap_or(Err(AuthFailure::BadSignature))
    }

    fn verify_with(&self, kid: &str, token: &str) -> Option<Result<Caller, AuthFailure>> {
        let keys = self.keys.read().expect("key lock");
        let key = keys.iter().find(|k| k.kid == kid)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Some(
            match jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation) {
                Ok(data) => {
                    let parse = |s: &str| s.parse::<Id>().map_err(|_| AuthFailure::Malformed);
                    (|| {
                        Ok(Caller {
                            user_id: parse(&data.claims.sub)?,
                            session_id: parse(&data.claims.sid)?,
                            device_key: data.claims.dev,
                        })
                    })()
                }
                Err(e) => Err(match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthFailure::Expired,
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => AuthFailure::BadSignature,
                    _ => AuthFailure::Malformed,
                }),
            },
        )
    }

    pub fn new_refresh_token(&self) -> String {
        random_token(32)
    }

    /// The token that replaces `token` on rotation: the same for every retry.
    pub fn successor(&self, token: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.refresh_secret)
            .expect("HMAC takes any key length");
        mac.update(b"concord-refresh-successor\n");
        mac.update(token.as_bytes());
        b64::encode(mac.finalize().into_bytes())
    }
}
