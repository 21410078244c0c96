//! Signed byte formats. Each kind of signature starts with its own prefix line, so a signature
//! made for one purpose can never be replayed as another. Keys and signatures travel as
//! base64url without padding. Test vectors for each format are at the bottom of this file and
//! in docs/protocols/signed-formats.md.
//!
//! Formats: the device certificate (the account key vouches for a device key), the login
//! signature (audience and challenge), the message envelope, the relay-signed event and the
//! relay-signed `VoiceGrant`. The Ed25519 vectors are cross-checked with OpenSSL.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::Id;
use crate::b64;
use crate::limits;

pub const DEVICE_CERT_PREFIX: &str = "concord-device-v1\n";
pub const AUTH_PREFIX: &str = "concord-auth-v1\n";
pub const ENVELOPE_PREFIX: &str = "concord-envelope-v1\n";
pub const EVENT_PREFIX: &str = "concord-event-v1\n";
pub const VOICE_GRANT_PREFIX: &str = "concord-voice-grant-v1\n";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("{0} is not a base64url (no padding) ed25519 public key")]
    BadKey(&'static str),
    #[error("signature is not 64 bytes of base64url without padding")]
    BadSignatureEncoding,
    #[error("signature does not verify")]
    Invalid,
    #[error("{0}")]
    BadField(&'static str),
}

/// Parses a base64url ed25519 public key (32 bytes, a valid curve point).
pub fn parse_public_key(text: &str, what: &'static str) -> Result<VerifyingKey, SignatureError> {
    let bytes = b64::decode_array::<32>(text).ok_or(SignatureError::BadKey(what))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| SignatureError::BadKey(what))
}

pub fn parse_signature(text: &str) -> Result<Signature, SignatureError> {
    let bytes = b64::decode_array::<64>(text).ok_or(SignatureError::BadSignatureEncoding)?;
    Ok(Signature::from_bytes(&bytes))
}

pub fn public_key_string(key: &VerifyingKey) -> String {
    b64::encode(key.as_bytes())
}

fn verify(key: &VerifyingKey, message: &[u8], signature: &str) -> Result<(), SignatureError> {
    let signature = parse_signature(signature)?;
    // verify_strict refuses small-order keys and non-canonical signatures.
    key.verify_strict(message, &signature)
        .map_err(|_| SignatureError::Invalid)
}

/// The account key's statement that a device key belongs to the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeviceCertificate {
    /// Account public key, base64url without padding.
    pub account_key: String,
    /// Device public key, base64url without padding.
    pub device_key: String,
    /// Human label ("laptop", "Firefox on desk"), at most 100 characters, no newline.
    pub label: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Account key's ed25519 signature over [`DeviceCertificate::signing_bytes`].
    pub signature: String,
}

impl DeviceCertificate {
    /// `concord-device-v1\n` + account_key + `\n` + device_key + `\n` + label + `\n` + created_at
    pub fn signing_bytes(
        account_key: &str,
        device_key: &str,
        label: &str,
        created_at: i64,
    ) -> Vec<u8> {
        format!("{DEVICE_CERT_PREFIX}{account_key}\n{device_key}\n{label}\n{created_at}")
            .into_bytes()
    }

    pub fn sign(
        account: &SigningKey,
        device_key: &VerifyingKey,
        label: &str,
        created_at: i64,
    ) -> Self {
        let account_key = public_key_string(&account.verifying_key());
        let device_key = public_key_string(device_key);
        let bytes = Self::signing_bytes(&account_key, &device_key, label, created_at);
        let signature = b64::encode(account.sign(&bytes).to_bytes());
        DeviceCertificate {
            account_key,
            device_key,
            label: label.to_owned(),
            created_at,
            signature,
        }
    }

    /// Checks the shape of every field and the account key's signature.
    pub fn verify(&self) -> Result<(), SignatureError> {
        let account = parse_public_key(&self.account_key, "account_key")?;
        parse_public_key(&self.device_key, "device_key")?;
        if self.account_key == self.device_key {
            return Err(SignatureError::BadField(
                "device_key must differ from account_key",
            ));
        }
        if self.label.contains('\n') || self.label.chars().count() > limits::MAX_NAME_CHARS {
            return Err(SignatureError::BadField(
                "label is at most 100 characters without newlines",
            ));
        }
        if !(0..=limits::MAX_UNIX_SECONDS).contains(&self.created_at) {
            return Err(SignatureError::BadField("created_at is unix seconds"));
        }
        let bytes = Self::signing_bytes(
            &self.account_key,
            &self.device_key,
            &self.label,
            self.created_at,
        );
        verify(&account, &bytes, &self.signature)
    }
}

/// `concord-auth-v1\n` + audience + `\n` + challenge: what a device key signs to log in.
/// The audience is the relay's public origin, so the signature cannot be replayed elsewhere.
pub fn auth_signing_bytes(audience: &str, challenge: &str) -> Vec<u8> {
    format!("{AUTH_PREFIX}{audience}\n{challenge}").into_bytes()
}

pub fn sign_auth(device: &SigningKey, audience: &str, challenge: &str) -> String {
    b64::encode(
        device
            .sign(&auth_signing_bytes(audience, challenge))
            .to_bytes(),
    )
}

pub fn verify_auth(
    device_key: &str,
    audience: &str,
    challenge: &str,
    signature: &str,
) -> Result<(), SignatureError> {
    let key = parse_public_key(device_key, "device_key")?;
    verify(&key, &auth_signing_bytes(audience, challenge), signature)
}

/// A message as its author's device signed it. Nodes send envelopes to their relay and, for
/// public channels, to each other; the relay stores what the envelope says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub channel_id: Id,
    /// The author's device key (a node's libp2p ed25519 key), base64url.
    pub device_key: String,
    pub nonce: String,
    pub content: String,
    pub reply_to: Option<Id>,
    /// Unix milliseconds, the author's clock (informational: the relay assigns order).
    pub created_at: i64,
    pub signature: String,
}

impl Envelope {
    /// `concord-envelope-v1\n` + channel_id + `\n` + device_key + `\n` + nonce + `\n` +
    /// created_at + `\n` + reply_to (empty when none) + `\n` + content
    pub fn signing_bytes(
        channel_id: Id,
        device_key: &str,
        nonce: &str,
        created_at: i64,
        reply_to: Option<Id>,
        content: &str,
    ) -> Vec<u8> {
        let reply = reply_to.map(|r| r.to_string()).unwrap_or_default();
        format!(
            "{ENVELOPE_PREFIX}{channel_id}\n{device_key}\n{nonce}\n{created_at}\n{reply}\n{content}"
        )
        .into_bytes()
    }

    pub fn sign(
        device: &SigningKey,
        channel_id: Id,
        nonce: &str,
        content: &str,
        reply_to: Option<Id>,
        created_at: i64,
    ) -> Envelope {
        let device_key = public_key_string(&device.verifying_key());
        let bytes = Self::signing_bytes(
            channel_id,
            &device_key,
            nonce,
            created_at,
            reply_to,
            content,
        );
        Envelope {
            channel_id,
            device_key,
            nonce: nonce.to_owned(),
            content: content.to_owned(),
            reply_to,
            created_at,
            signature: b64::encode(device.sign(&bytes).to_bytes()),
        }
    }

    /// Checks sizes and shapes (the same limits as the HTTP API) and the device signature.
    pub fn verify(&self) -> Result<(), SignatureError> {
        limits::content(&self.content).map_err(|_| {
            SignatureError::BadField("content is empty, too long or has control characters")
        })?;
        limits::nonce(&self.nonce)
            .map_err(|_| SignatureError::BadField("nonce is 1 to 64 printable ASCII characters"))?;
        if !(0..=limits::MAX_UNIX_SECONDS * 1000).contains(&self.created_at) {
            return Err(SignatureError::BadField("created_at is unix milliseconds"));
        }
        let key = parse_public_key(&self.device_key, "device_key")?;
        let bytes = Self::signing_bytes(
            self.channel_id,
            &self.device_key,
            &self.nonce,
            self.created_at,
            self.reply_to,
            &self.content,
        );
        verify(&key, &bytes, &self.signature)
    }
}

/// An event the relay confirmed, signed by the relay's key: `t` is the gateway event type and
/// `d` its JSON payload, kept as the exact text that was signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedEvent {
    pub t: String,
    pub d: String,
    pub signature: String,
}

impl SignedEvent {
    /// `concord-event-v1\n` + t + `\n` + d
    pub fn signing_bytes(t: &str, d: &str) -> Vec<u8> {
        format!("{EVENT_PREFIX}{t}\n{d}").into_bytes()
    }

    pub fn sign(relay: &SigningKey, t: &str, d: &str) -> SignedEvent {
        let signature = b64::encode(relay.sign(&Self::signing_bytes(t, d)).to_bytes());
        SignedEvent {
            t: t.to_owned(),
            d: d.to_owned(),
            signature,
        }
    }

    pub fn verify(&self, relay_key: &VerifyingKey) -> Result<(), SignatureError> {
        if self.t.contains('\n') {
            return Err(SignatureError::BadField("t is one line"));
        }
        verify(
            relay_key,
            &Self::signing_bytes(&self.t, &self.d),
            &self.signature,
        )
    }
}

/// The relay's permission for one device of one account to be in one voice channel until
/// `expires_at` (unix ms), and whether it may speak. Mesh peers verify it (with the relay key
/// from `/.well-known/concord`) before they accept an offer, and drop the media of a
/// participant whose grant does not allow speaking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VoiceGrant {
    pub channel_id: Id,
    pub user_id: Id,
    pub device_key: String,
    pub speak: bool,
    pub expires_at: i64,
    pub signature: String,
}

impl VoiceGrant {
    /// `concord-voice-grant-v1\n` + channel_id + `\n` + user_id + `\n` + device_key + `\n` +
    /// (`1` | `0`) + `\n` + expires_at, numbers in decimal.
    pub fn signing_bytes(
        channel_id: Id,
        user_id: Id,
        device_key: &str,
        speak: bool,
        expires_at: i64,
    ) -> Vec<u8> {
        format!(
            "{VOICE_GRANT_PREFIX}{}\n{}\n{device_key}\n{}\n{expires_at}",
            channel_id.0,
            user_id.0,
            u8::from(speak)
        )
        .into_bytes()
    }

    pub fn sign(
        relay: &SigningKey,
        channel_id: Id,
        user_id: Id,
        device_key: &str,
        speak: bool,
        expires_at: i64,
    ) -> VoiceGrant {
        let bytes = Self::signing_bytes(channel_id, user_id, device_key, speak, expires_at);
        VoiceGrant {
            channel_id,
            user_id,
            device_key: device_key.to_owned(),
            speak,
            expires_at,
            signature: b64::encode(relay.sign(&bytes).to_bytes()),
        }
    }

    /// The signature, the device key's shape, and that it has not expired at `now_ms`.
    pub fn verify(&self, relay_key: &VerifyingKey, now_ms: i64) -> Result<(), SignatureError> {
        parse_public_key(&self.device_key, "device_key")?;
        verify(
            relay_key,
            &Self::signing_bytes(
                self.channel_id,
                self.user_id,
                &self.device_key,
                self.speak,
                self.expires_at,
            ),
            &self.signature,
        )?;
        if self.expires_at <= now_ms {
            return Err(SignatureError::BadField("the voice grant has expired"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> SigningKey {
        SigningKey::from_bytes(&[1u8; 32])
    }
    fn device() -> SigningKey {
        SigningKey::from_bytes(&[2u8; 32])
    }

    /// Fixed keys give fixed bytes and signatures (ed25519 is deterministic; cross-checked with
    /// `openssl pkeyutl -sign -rawin`). Other
    /// implementations (the web client, third-party clients) check themselves against these.
    #[test]
    fn device_certificate_vector() {
        let cert = DeviceCertificate::sign(
            &account(),
            &device().verifying_key(),
            "laptop",
            1_700_000_000,
        );
        assert_eq!(
            cert.account_key,
            "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w"
        );
        assert_eq!(
            cert.device_key,
            "gTl3Dqh9F19Wo1Rmw0x-zMuNipG07jeiXfYPW4_Js5Q"
        );
        let bytes = DeviceCertificate::signing_bytes(
            &cert.account_key,
            &cert.device_key,
            &cert.label,
            cert.created_at,
        );
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "concord-device-v1\niojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w\ngTl3Dqh9F19Wo1Rmw0x-zMuNipG07jeiXfYPW4_Js5Q\nlaptop\n1700000000"
        );
        assert_eq!(cert.signature, DEVICE_CERT_SIGNATURE);
        cert.verify().unwrap();
    }

    const DEVICE_CERT_SIGNATURE: &str =
        "05UFPzFUNs8qNUacz_6UJhF0mn4K4mSuzEWVAp0O0B785WnlAcuwflJpdbdle9Ol0Swhbgs86gO2qRpDQShKBA";
    const AUTH_SIGNATURE: &str =
        "i8W4G2qbSLecFiEpPmDFsqqiIMAVlMSQmY9PdA5rzH1O4RcFq1r4mz89MzC9lvX6RTW_5GF3sPW-sROVgVvNAA";

    #[test]
    fn auth_vector() {
        let sig = sign_auth(
            &device(),
            "https://chat.example.org",
            "q2x8JfQm5mN0bGl3kPz7Ew",
        );
        assert_eq!(
            auth_signing_bytes("https://chat.example.org", "q2x8JfQm5mN0bGl3kPz7Ew"),
            b"concord-auth-v1\nhttps://chat.example.org\nq2x8JfQm5mN0bGl3kPz7Ew".to_vec()
        );
        assert_eq!(sig, AUTH_SIGNATURE);
        let device_key = public_key_string(&device().verifying_key());
        verify_auth(
            &device_key,
            "https://chat.example.org",
            "q2x8JfQm5mN0bGl3kPz7Ew",
            &sig,
        )
        .unwrap();
        // another audience, another challenge, another key: all refused
        assert_eq!(
            verify_auth(
                &device_key,
                "https://evil.example",
                "q2x8JfQm5mN0bGl3kPz7Ew",
                &sig
            ),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verify_auth(&device_key, "https://chat.example.org", "other", &sig),
            Err(SignatureError::Invalid)
        );
        let account_key = public_key_string(&account().verifying_key());
        assert_eq!(
            verify_auth(
                &account_key,
                "https://chat.example.org",
                "q2x8JfQm5mN0bGl3kPz7Ew",
                &sig
            ),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn envelope_vector() {
        let env = Envelope::sign(
            &device(),
            Id(271982361839001600),
            "n-1",
            "hello ferris",
            Some(Id(5)),
            1_700_000_000_123,
        );
        assert_eq!(
            Envelope::signing_bytes(env.channel_id, &env.device_key, &env.nonce, env.created_at, env.reply_to, &env.content),
            b"concord-envelope-v1\n271982361839001600\ngTl3Dqh9F19Wo1Rmw0x-zMuNipG07jeiXfYPW4_Js5Q\nn-1\n1700000000123\n5\nhello ferris".to_vec()
        );
        assert_eq!(env.signature, ENVELOPE_SIGNATURE);
        env.verify().unwrap();
        let mut forged = env.clone();
        forged.content = "hello world".into();
        assert_eq!(forged.verify(), Err(SignatureError::Invalid));
        let mut other_key = env.clone();
        other_key.device_key = public_key_string(&account().verifying_key());
        assert_eq!(other_key.verify(), Err(SignatureError::Invalid));
        let mut empty = env;
        empty.content = " ".into();
        assert!(matches!(empty.verify(), Err(SignatureError::BadField(_))));
    }

    #[test]
    fn event_vector() {
        let relay = SigningKey::from_bytes(&[3u8; 32]);
        let ev = SignedEvent::sign(
            &relay,
            "message_delete",
            r#"{"id":"7","channel_id":"9","guild_id":null,"seq":4}"#,
        );
        assert_eq!(
            SignedEvent::signing_bytes(&ev.t, &ev.d),
            b"concord-event-v1\nmessage_delete\n{\"id\":\"7\",\"channel_id\":\"9\",\"guild_id\":null,\"seq\":4}".to_vec()
        );
        assert_eq!(ev.signature, EVENT_SIGNATURE);
        ev.verify(&relay.verifying_key()).unwrap();
        assert_eq!(
            ev.verify(&device().verifying_key()),
            Err(SignatureError::Invalid)
        );
        let mut tampered = ev;
        tampered.d = tampered.d.replace('4', "5");
        assert_eq!(
            tampered.verify(&relay.verifying_key()),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn voice_grant_vector() {
        let relay = SigningKey::from_bytes(&[3u8; 32]);
        let device_key = public_key_string(&device().verifying_key());
        let grant = VoiceGrant::sign(&relay, Id(9), Id(5), &device_key, true, 1_700_000_060_000);
        assert_eq!(
            VoiceGrant::signing_bytes(Id(9), Id(5), &device_key, true, 1_700_000_060_000),
            format!("concord-voice-grant-v1\n9\n5\n{device_key}\n1\n1700000060000").into_bytes()
        );
        grant
            .verify(&relay.verifying_key(), 1_700_000_000_000)
            .unwrap();
        // Expired, tampered, or signed by someone else: refused.
        assert!(matches!(
            grant.verify(&relay.verifying_key(), 1_700_000_060_000),
            Err(SignatureError::BadField(_))
        ));
        let mut louder = grant.clone();
        louder.speak = false;
        assert_eq!(
            louder.verify(&relay.verifying_key(), 1_700_000_000_000),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            grant.verify(&device().verifying_key(), 1_700_000_000_000),
            Err(SignatureError::Invalid)
        );
        let json = serde_json::to_value(&grant).unwrap();
        assert_eq!(json["channel_id"], "9");
        assert_eq!(json["speak"], true);
    }

    const ENVELOPE_SIGNATURE: &str =
        "DA7ipV6CiSGeQk2ciJQgE_seh17igB0ZuwDiZcRQOSnUAg9tqLoEAKOl7K-j2YH7xhR553GBN2JSE0_BAcfMDQ";
    const EVENT_SIGNATURE: &str =
        "x6k9YARee5X2BM0CxqkopIHcC0etzVh8Kv5dQXABS7-ozuKBU5sP4IiQYOilV8Liu6nx4BuNubqY_dpaKR_EBg";

    #[test]
    fn prefixes_separate_kinds() {
        // A device certificate signature never verifies as a login and vice versa.
        let cert = DeviceCertificate::sign(&account(), &device().verifying_key(), "x", 1);
        let account_key = public_key_string(&account().verifying_key());
        assert!(verify_auth(&account_key, "x", "1", &cert.signature).is_err());
    }

    #[test]
    fn tampered_certificates_fail() {
        let cert = DeviceCertificate::sign(
            &account(),
            &device().verifying_key(),
            "laptop",
            1_700_000_000,
        );
        let mut c = cert.clone();
        c.label = "phone".into();
        assert_eq!(c.verify(), Err(SignatureError::Invalid));
        let mut c = cert.clone();
        c.created_at += 1;
        assert_eq!(c.verify(), Err(SignatureError::Invalid));
        let mut c = cert.clone();
        c.device_key = public_key_string(&SigningKey::from_bytes(&[3u8; 32]).verifying_key());
        assert_eq!(c.verify(), Err(SignatureError::Invalid));
        let mut c = cert.clone();
        c.signature.pop();
        assert_eq!(c.verify(), Err(SignatureError::BadSignatureEncoding));
        let mut c = cert;
        c.account_key = "not-a-key".into();
        assert_eq!(c.verify(), Err(SignatureError::BadKey("account_key")));
    }
}
