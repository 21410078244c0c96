//! Long-term credentials (RFC 8489 §9.2): static users from the configuration, and the TURN
//! REST scheme with a shared secret (coturn's `use-auth-secret`): the username is
//! `expiry-unix-ts:user-id`, the password `base64(HMAC-SHA1(secret, username))`, computed by
//! `concord_proto::turn_rest`, which the relay that issues them shares.
//!
//! Also the server's nonces: stateless, `issued-secs` plus a MAC over it and the client's
//! address, so that the server keeps no per-client state before authentication.

use std::collections::HashMap;
use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

/// The long-term key, `MD5(username ":" realm ":" password)`.
pub type Key = [u8; 16];

/// The password a TURN REST username carries: `base64(HMAC-SHA1(secret, username))`. The
/// scheme lives in `concord_proto::turn_rest`, shared with the relay that issues credentials.
pub fn rest_password(secret: &str, username: &str) -> String {
    concord_proto::turn_rest::password(secret, username)
}

/// Ephemeral TURN credentials for `user_id`, valid until `now_unix + ttl_secs`: what the relay
/// hands a logged-in client (`GET /api/v1/voice/ice-servers`). Compatible with coturn's
/// `use-auth-secret` and with every standard TURN client.
pub fn rest_credentials(
    secret: &str,
    user_id: &str,
    ttl_secs: u64,
    now_unix: u64,
) -> (String, String) {
    concord_proto::turn_rest::credentials(secret, user_id, ttl_secs, now_unix)
}

/// A REST username split into its expiry and the user it names (the whole username when it
/// has no `:user` part). `None` when it does not start with a decimal timestamp.
pub fn parse_rest_username(username: &str) -> Option<(u64, &str)> {
    let (ts, user) = match username.split_once(':') {
        Some((ts, user)) => (ts, user),
        None => (username, username),
    };
    if ts.is_empty() || ts.len() > 20 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((ts.parse().ok()?, user))
}

/// `MD5(username:realm:password)`.
pub fn long_term_key(username: &str, realm: &str, password: &str) -> Key {
    let mut md5 = Md5::new();
    md5.update(username.as_bytes());
    md5.update(b":");
    md5.update(realm.as_bytes());
    md5.update(b":");
    md5.update(password.as_bytes());
    md5.finalize().into()
}

/// HMAC-SHA1 over several slices (MESSAGE-INTEGRITY).
pub(crate) fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let mut mac = HmacSha1::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time check of an HMAC-SHA1 tag over several slices.
pub(crate) fn verify_hmac_sha1(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    let mut mac = HmacSha1::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(tag).is_ok()
}

/// Why a username and MESSAGE-INTEGRITY were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// A request without MESSAGE-INTEGRITY (the normal first step: answered with a 401
    /// challenge; counted separately from real failures).
    NoCredentials,
    /// MESSAGE-INTEGRITY without USERNAME, REALM or NONCE (400).
    MissingAttributes,
    /// A username that is neither a static user nor a REST username (401).
    UnknownUser,
    /// A REST username whose expiry has passed (401).
    Expired,
    /// MESSAGE-INTEGRITY does not match (wrong password) (401).
    BadIntegrity,
    /// REALM differs from the server's (401).
    WrongRealm,
    /// A nonce that is expired or was not issued by this server (438).
    StaleNonce,
    /// A request on an allocation with another user's credentials (441).
    WrongCredentials,
}

impl AuthFailure {
    pub const ALL: [AuthFailure; 8] = [
        AuthFailure::NoCredentials,
        AuthFailure::MissingAttributes,
        AuthFailure::UnknownUser,
        AuthFailure::Expired,
        AuthFailure::BadIntegrity,
        AuthFailure::WrongRealm,
        AuthFailure::StaleNonce,
        AuthFailure::WrongCredentials,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::NoCredentials => "no_credentials",
            AuthFailure::MissingAttributes => "missing_attributes",
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::Expired => "expired",
            AuthFailure::BadIntegrity => "bad_integrity",
            AuthFailure::WrongRealm => "wrong_realm",
            AuthFailure::StaleNonce => "stale_nonce",
            AuthFailure::WrongCredentials => "wrong_credentials",
        }
    }
}

/// Whom a username belongs to, and the key to check its MESSAGE-INTEGRITY with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// What quotas count by: the static user's name, or a REST username's user id.
    pub user: String,
    pub key: Key,
}

/// The credential sources: static users, the REST shared secret, or both.
#[derive(Clone)]
pub struct Credentials {
    realm: String,
    users: HashMap<String, Key>,
    secret: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field("users", &self.users.len())
            .field("secret", &self.secret.is_some())
            .finish()
    }
}

impl Credentials {
    /// `users` are (name, password) pairs.
    pub fn new<'a>(
        realm: &str,
        users: impl IntoIterator<Item = (&'a str, &'a str)>,
        secret: Option<&str>,
    ) -> Credentials {
        Credentials {
            realm: realm.to_owned(),
            users: users
                .into_iter()
                .map(|(name, pass)| (name.to_owned(), long_term_key(name, realm, pass)))
                .collect(),
            secret: secret.filter(|s| !s.is_empty()).map(str::to_owned),
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The identity behind `username` at unix time `now_unix`. Static users win over the REST
    /// scheme when a name could be both.
    pub fn lookup(&self, username: &str, now_unix: u64) -> Result<Identity, AuthFailure> {
        if let Some(key) = self.users.get(username) {
            return Ok(Identity {
                user: username.to_owned(),
                key: *key,
            });
        }
        let Some(secret) = &self.secret else {
            return Err(AuthFailure::UnknownUser);
        };
        let (expiry, user) = parse_rest_username(username).ok_or(AuthFailure::UnknownUser)?;
        if expiry <= now_unix {
            return Err(AuthFailure::Expired);
        }
        let password = rest_password(secret, username);
        Ok(Identity {
            user: user.to_owned(),
            key: long_term_key(username, &self.realm, &password),
        })
    }
}

/// Issues and checks nonces: `{issued:x}.{mac}` where mac = HMAC-SHA1(secret, issued ‖ client
/// address) truncated to 10 bytes, hex. Nothing is stored; a nonce from before a restart (other
/// secret) or for another client is stale, and the client retries with a fresh one.
#[derive(Clone)]
pub struct NonceKey {
    secret: [u8; 32],
    ttl_secs: u64,
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceKey")
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

const NONCE_MAC_BYTES: usize = 10;

impl NonceKey {
    pub fn new(secret: [u8; 32], ttl_secs: u64) -> NonceKey {
        NonceKey {
            secret,
            ttl_secs: ttl_secs.max(1),
        }
    }

    fn mac(&self, issued: u64, client: SocketAddr) -> [u8; 20] {
        let ip = match client.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(v6) => v6.octets(),
        };
        hmac_sha1(
            &self.secret,
            &[&issued.to_be_bytes(), &ip, &client.port().to_be_bytes()],
        )
    }

    /// A nonce for `client`, issued at `now_secs` (seconds on the core's clock).
    pub fn issue(&self, now_secs: u64, client: SocketAddr) -> String {
        let mac = self.mac(now_secs, client);
        let mut out = format!("{now_secs:x}.");
        for b in &mac[..NONCE_MAC_BYTES] {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// Whether `nonce` was issued by this key for `client` and is younger than the TTL.
    pub fn check(&self, nonce: &str, now_secs: u64, client: SocketAddr) -> bool {
        let Some((issued, mac_hex)) = nonce.split_once('.') else {
            return false;
        };
        if issued.is_empty() || issued.len() > 16 || mac_hex.len() != NONCE_MAC_BYTES * 2 {
            return false;
        }
        let Ok(issued) = u64::from_str_radix(issued, 16) else {
            return false;
        };
        if issued > now_secs || now_secs - issued >= self.ttl_secs {
            return false;
        }
        let mut given = [0u8; NONCE_MAC_BYTES];
        for (i, out) in given.iter_mut().enumerate() {
            match mac_hex
                .get(i * 2..i * 2 + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => *out = b,
                None => return false,
            }
        }
        let expected = self.mac(issued, client);
        // Constant time over the truncated MAC.
        expected[..NONCE_MAC_BYTES]
            .iter()
            .zip(given)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cross-checked with coturn's computation:
    /// `printf '1700003600:ana' | openssl dgst -sha1 -hmac s3cret -binary | base64`
    /// and Python `base64.b64encode(hmac.new(b"s3cret", b"1700003600:ana", "sha1").digest())`.
    #[test]
    fn rest_credentials_match_coturn() {
        let (user, pass) = rest_credentials("s3cret", "ana", 3_600, 1_700_000_000);
        assert_eq!(user, "1700003600:ana");
        assert_eq!(pass, "TXoPd9RegPY1ZMjIPfhuFy+EPxM=");
        // A second vector: `printf '1234567890:42' | openssl dgst -sha1 -hmac north -binary | base64`
        assert_eq!(
            rest_password("north", "1234567890:42"),
            "NBHgwTyXg8QhN15kMdWlP7ShzKc="
        );
    }

    /// MD5("user:realm:pass"), cross-checked with `printf 'ana:concord:pw' | md5sum`.
    #[test]
    fn long_term_key_is_md5_of_the_triple() {
        let key = long_term_key("ana", "concord", "pw");
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "b2b81ea98e4be87d3a8af58eb541f41a");
    }

    #[test]
    fn rest_usernames_parse() {
        assert_eq!(parse_rest_username("1700:ana"), Some((1700, "ana")));
        assert_eq!(parse_rest_username("1700:a:b"), Some((1700, "a:b")));
        assert_eq!(parse_rest_username("1700"), Some((1700, "1700")));
        assert_eq!(parse_rest_username("ana"), None);
        assert_eq!(parse_rest_username(":ana"), None);
        assert_eq!(parse_rest_username("-5:ana"), None);
        assert_eq!(parse_rest_username("99999999999999999999999:x"), None);
    }

    #[test]
    fn lookup_prefers_static_users_and_checks_expiry() {
        let creds = Credentials::new("concord", [("ana", "pw")], Some("s3cret"));
        assert_eq!(creds.lookup("ana", 0).unwrap().user, "ana");
        let (user, pass) = rest_credentials("s3cret", "bob", 60, 1_000);
        let id = creds.lookup(&user, 1_000).unwrap();
        assert_eq!(id.user, "bob");
        assert_eq!(id.key, long_term_key(&user, "concord", &pass));
        assert_eq!(creds.lookup(&user, 1_060), Err(AuthFailure::Expired));
        assert_eq!(creds.lookup("carol", 0), Err(AuthFailure::UnknownUser));
        let no_secret = Credentials::new("concord", [], None);
        assert_eq!(no_secret.lookup(&user, 0), Err(AuthFailure::UnknownUser));
    }

    #[test]
    fn nonces_expire_and_are_bound_to_the_client() {
        let key = NonceKey::new([7; 32], 600);
        let a: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:5001".parse().unwrap();
        let nonce = key.issue(100, a);
        assert!(key.check(&nonce, 100, a));
        assert!(key.check(&nonce, 699, a));
        assert!(!key.check(&nonce, 700, a));
        assert!(!key.check(&nonce, 99, a));
        assert!(!key.check(&nonce, 100, b));
        assert!(!NonceKey::new([8; 32], 600).check(&nonce, 100, a));
        for junk in ["", ".", "x.y", "64.", "64.zz", "ffffffffffffffffff.00"] {
            assert!(!key.check(junk, 100, a), "{junk:?}");
        }
    }
}
