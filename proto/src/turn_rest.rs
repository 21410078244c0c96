//! TURN REST credentials (the scheme coturn calls `use-auth-secret`): the relay and the TURN
//! server share a secret; the relay hands a logged-in user a username `expiry:user` and a
//! password `base64(HMAC-SHA1(secret, username))`, which any standard TURN client presents as
//! long-term credentials until the expiry.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The password for a REST username.
pub fn password(secret: &str, username: &str) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Username and password valid until `now_unix + ttl_secs`.
pub fn credentials(secret: &str, user: &str, ttl_secs: u64, now_unix: u64) -> (String, String) {
    let username = format!("{}:{user}", now_unix + ttl_secs);
    let password = password(secret, &username);
    (username, password)
}

/// The expiry (unix seconds) a REST username carries, if it has one.
pub fn expiry(username: &str) -> Option<u64> {
    username
        .split_once(':')
        .map_or(username, |(ts, _)| ts)
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cross-checked with `printf '1700003600:ana' | openssl dgst -sha1 -hmac s3cret -binary | base64`.
    #[test]
    fn coturn_compatible_vector() {
        let (user, pass) = credentials("s3cret", "ana", 3_600, 1_700_000_000);
        assert_eq!(user, "1700003600:ana");
        assert_eq!(pass, "TXoPd9RegPY1ZMjIPfhuFy+EPxM=");
        assert_eq!(expiry(&user), Some(1_700_003_600));
        assert_eq!(expiry("1700003600"), Some(1_700_003_600));
        assert_eq!(expiry("ana"), None);
    }
}
