//! SRTP outside the peer connection's pipeline, for the hot paths (the SFU's forwarded audio,
//! the bench's listeners). `rtc` 0.21 keeps the DTLS-exported SRTP keys private, but it
//! derives its SRTP session keys through the crypto provider the connection is given:
//! [`KeyTap`] wraps the default provider and notes the master key and salt of each
//! derivation. A context built from them is only used once it has been checked against the
//! connection's own output ([`local_context`], byte for byte) or input ([`remote_context`],
//! authentication tag): a change in `rtc` can make the check fail, never send bad packets.

use std::sync::{Arc, Mutex};

use rtc::crypto::{
    ActiveKeyExchange, AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, CbcAlgorithm, CbcCipher,
    CryptoAlgorithm, CryptoError, HashAlgorithm, HmacAlgorithm, KeyExchangeAlgorithm, Mac,
    PublicKey, RTCCrypto, RTCCryptoProvider, RTCRandom, SecretVec, SignatureScheme, SigningKey,
    StreamCipher, StreamCipherAlgorithm,
};
use rtc::srtp::context::Context;
use rtc::srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc::srtp::protection_profile::ProtectionProfile;

use crate::srtp_gcm::GcmRtp;

/// Master keys remembered per connection: a local and a remote context, with room to spare.
const MAX_SEEN: usize = 4;

/// Replay windows of the contexts that open the peer's packets (`rtc`'s defaults for its
/// own remote context): a replayed packet is refused, as the connection would refuse it.
const SRTP_REPLAY_WINDOW: usize = 64;
const SRTCP_REPLAY_WINDOW: usize = 64;

/// The profiles tried, most common first (what browsers and `rtc` negotiate).
const PROFILES: [ProtectionProfile; 4] = [
    ProtectionProfile::AeadAes128Gcm,
    ProtectionProfile::Aes128CmHmacSha1_80,
    ProtectionProfile::AeadAes256Gcm,
    ProtectionProfile::Aes128CmHmacSha1_32,
];

/// One master key, and the first block derived from it: RFC 3711's key derivation (label 0,
/// index 0) encrypts the master salt padded with zeros, so the block's start is the salt.
/// Both are wiped from memory when dropped.
#[derive(Clone)]
struct Seen {
    key: SecretVec,
    block: SecretVec,
}

/// A crypto provider (the default one) that remembers the SRTP master keys derived with it.
/// Give each peer connection its own (`SettingEngineBuilder::with_crypto_provider`).
pub struct KeyTap {
    inner: Arc<dyn RTCCryptoProvider>,
    seen: Mutex<Vec<Seen>>,
}

impl KeyTap {
    pub fn new() -> Result<Arc<KeyTap>, String> {
        let inner = rtc::crypto::default_provider().map_err(|e| format!("crypto: {e}"))?;
        Ok(Arc::new(KeyTap {
            inner,
            seen: Mutex::new(Vec::new()),
        }))
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("key tap").clone()
    }

    /// Contexts for every master key seen and every profile it fits, in derivation order;
    /// with `remote`, contexts that refuse replayed packets.
    fn candidates(&self, remote: bool) -> impl Iterator<Item = Srtp> + '_ {
        self.seen().into_iter().flat_map(move |seen| {
            PROFILES.into_iter().filter_map(move |profile| {
                if profile.key_len() != seen.key.len() {
                    return None;
                }
                let salt = seen.block.as_ref().get(..profile.salt_len())?;
                let key = seen.key.as_ref();
                let (rtp, rtcp) = if remote {
                    (
                        Some(srtp_replay_protection(SRTP_REPLAY_WINDOW)),
                        Some(srtcp_replay_protection(SRTCP_REPLAY_WINDOW)),
                    )
                } else {
                    (None, None)
                };
                let crypto = self.inner.crypto();
                let rtc = Context::new(key, salt, profile, rtp, rtcp, crypto).ok()?;
                // AES-GCM profiles: RTP through our own transform; others through `rtc`'s.
                let gcm = GcmRtp::new(crypto, profile, key, salt, remote).ok();
                Some(Srtp { gcm, rtc })
            })
        })
    }
}

/// One direction of a connection's SRTP, outside the connection: RTP through `srtp_gcm` when
/// the profile is AES-GCM (what browsers and `rtc` negotiate), else through `rtc`'s context,
/// which also handles RTCP. In declaration order (`repr(C)`): the AES-GCM part, used for
/// every packet, before `rtc`'s larger context.
#[repr(C)]
pub struct Srtp {
    gcm: Option<GcmRtp>,
    rtc: Context,
}

impl Srtp {
    /// Protects the RTP packet in `packet` (marshalled) where it is.
    pub fn protect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), String> {
        match &mut self.gcm {
            Some(gcm) => gcm.protect(packet).map_err(|e| format!("srtp: {e:?}")),
            None => {
                let protected = self.rtc.encrypt_rtp(packet).map_err(|e| e.to_string())?;
                packet.clear();
                packet.extend_from_slice(&protected);
                Ok(())
            }
        }
    }

    /// The RTP packet inside the SRTP packet `datagram` (refused: replayed, altered, foreign).
    pub fn unprotect_rtp(&mut self, datagram: &[u8]) -> Result<Vec<u8>, String> {
        match &mut self.gcm {
            Some(gcm) => gcm.unprotect(datagram).map_err(|e| format!("srtp: {e:?}")),
            None => self
                .rtc
                .decrypt_rtp(datagram)
                .map(|plain| plain.to_vec())
                .map_err(|e| e.to_string()),
        }
    }

    /// The RTCP compound packet inside the SRTCP packet `datagram`.
    pub fn unprotect_rtcp(&mut self, datagram: &[u8]) -> Result<bytes::BytesMut, String> {
        self.rtc.decrypt_rtcp(datagram).map_err(|e| e.to_string())
    }
}

/// The context that protects exactly as the connection did: `sent` is the datagram the
/// connection produced for the RTP packet `plaintext` (marshalled), the first it sent on its
/// SSRC. The context returned has protected that packet too, so it continues the stream.
pub fn local_context(tap: &KeyTap, plaintext: &[u8], sent: &[u8]) -> Option<Srtp> {
    tap.candidates(false).find_map(|mut context| {
        let mut ours = plaintext.to_vec();
        context.protect_rtp(&mut ours).ok()?;
        (ours[..] == *sent).then_some(context)
    })
}

/// The context that opens the peer's SRTP: the one whose authentication tag checks on
/// `received` (an SRTP packet from the peer). Also returns the packet, decrypted.
pub fn remote_context(tap: &KeyTap, received: &[u8]) -> Option<(Srtp, Vec<u8>)> {
    tap.candidates(true).find_map(|mut context| {
        let plain = context.unprotect_rtp(received).ok()?;
        Some((context, plain))
    })
}

/// RTP or RTCP (RFC 7983: first byte 128–191), not STUN or DTLS.
pub fn is_rtp_or_rtcp(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| (128..=191).contains(b))
}

/// RTP rather than RTCP on a muxed port (RFC 5761: RTCP packet types 192–223).
pub fn is_rtp(datagram: &[u8]) -> bool {
    is_rtp_or_rtcp(datagram) && datagram.get(1).is_some_and(|b| !(192..=223).contains(b))
}

impl RTCCryptoProvider for KeyTap {
    fn name(&self) -> &'static str {
        "concord key tap"
    }

    fn crypto(&self) -> &dyn RTCCrypto {
        self
    }

    fn random(&self) -> &dyn RTCRandom {
        self.inner.random()
    }
}

impl RTCCrypto for KeyTap {
    fn supports(&self, algorithm: CryptoAlgorithm) -> bool {
        self.inner.crypto().supports(algorithm)
    }

    fn hash(&self, algorithm: HashAlgorithm, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.inner.crypto().hash(algorithm, data)
    }

    fn block_encrypt(
        &self,
        algorithm: BlockCipherAlgorithm,
        key: &[u8],
        block: &mut [u8],
    ) -> Result<(), CryptoError> {
        // Only SRTP's key derivation encrypts single blocks; the first block per key is the
        // label-0, index-0 one (the salt).
        if block.len() == 16 {
            let mut seen = self.seen.lock().expect("key tap");
            if seen.len() < MAX_SEEN && !seen.iter().any(|s| s.key.as_ref() == key) {
                seen.push(Seen {
                    key: SecretVec::new(key.to_vec()),
                    block: SecretVec::new(block.to_vec()),
                });
            }
        }
        self.inner.crypto().block_encrypt(algorithm, key, block)
    }

    fn new_hmac(&self, algorithm: HmacAlgorithm, key: &[u8]) -> Result<Box<dyn Mac>, CryptoError> {
        self.inner.crypto().new_hmac(algorithm, key)
    }

    fn new_stream_cipher(
        &self,
        algorithm: StreamCipherAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn StreamCipher>, CryptoError> {
        self.inner.crypto().new_stream_cipher(algorithm, key)
    }

    fn new_aead(
        &self,
        algorithm: AeadAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn AeadCipher>, CryptoError> {
        self.inner.crypto().new_aead(algorithm, key)
    }

    fn new_cbc(
        &self,
        algorithm: CbcAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn CbcCipher>, CryptoError> {
        self.inner.crypto().new_cbc(algorithm, key)
    }

    fn start_key_exchange(
        &self,
        algorithm: KeyExchangeAlgorithm,
    ) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        self.inner.crypto().start_key_exchange(algorithm)
    }

    fn generate_signing_key(
        &self,
        scheme: SignatureScheme,
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().generate_signing_key(scheme)
    }

    fn import_signing_key(
        &self,
        scheme: SignatureScheme,
        pkcs8_der: &[u8],
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().import_signing_key(scheme, pkcs8_der)
    }

    fn verify_signature(
        &self,
        scheme: SignatureScheme,
        public_key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.inner
            .crypto()
            .verify_signature(scheme, public_key, message, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp;
    use rtc::shared::marshal::Marshal;

    fn packet(ssrc: u32, seq: u16) -> Vec<u8> {
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: 111,
                sequence_number: seq,
                timestamp: u32::from(seq) * 960,
                ssrc,
                ..Default::default()
            },
            payload: bytes::Bytes::from(vec![0xf8; 40]),
        };
        packet.marshal().expect("marshal").to_vec()
    }

    /// Two contexts made through the tap, as the DTLS handler makes its local and remote ones.
    fn keyed(tap: &KeyTap, profile: ProtectionProfile, seed: u8) -> (Context, Context) {
        let make = |fill: u8| {
            let key = vec![fill; profile.key_len()];
            let salt = vec![fill ^ 0x5a; profile.salt_len()];
            Context::new(&key, &salt, profile, None, None, tap.crypto()).expect("context")
        };
        (make(seed), make(seed + 1))
    }

    #[test]
    fn the_local_context_is_found_from_one_packet_and_continues_the_stream() {
        for profile in [
            ProtectionProfile::AeadAes128Gcm,
            ProtectionProfile::Aes128CmHmacSha1_80,
        ] {
            let tap = KeyTap::new().unwrap();
            let (mut local, _remote) = keyed(&tap, profile, 1);
            let first = local.encrypt_rtp(&packet(7, 65_535)).unwrap();
            let mut ours = local_context(&tap, &packet(7, 65_535), &first).expect("found");
            // Past a sequence wrap, and on a second SSRC.
            for (ssrc, seq) in [(7, 0), (7, 1), (9, 500)] {
                let theirs = local.encrypt_rtp(&packet(ssrc, seq)).unwrap();
                let mut mine = packet(ssrc, seq);
                ours.protect_rtp(&mut mine).unwrap();
                assert_eq!(mine[..], theirs[..], "{profile:?}");
            }
        }
    }

    #[test]
    fn the_remote_context_is_the_one_whose_tag_checks() {
        for profile in [
            ProtectionProfile::AeadAes128Gcm,
            ProtectionProfile::Aes128CmHmacSha1_80,
        ] {
            let tap = KeyTap::new().unwrap();
            // The peer protects with what we know as the remote key.
            let (_local, mut remote_sender) = keyed(&tap, profile, 1);
            let sent = remote_sender.encrypt_rtp(&packet(3, 10)).unwrap();
            let (mut context, plain) = remote_context(&tap, &sent).expect("found");
            assert_eq!(plain[..], packet(3, 10)[..]);
            let next = remote_sender.encrypt_rtp(&packet(3, 11)).unwrap();
            assert_eq!(context.unprotect_rtp(&next).unwrap()[..], packet(3, 11)[..]);
            // A replayed packet is refused, as the connection would refuse it.
            assert!(context.unprotect_rtp(&next).is_err(), "{profile:?}");
            assert!(context.unprotect_rtp(&sent).is_err(), "{profile:?}");
        }
    }

    #[test]
    fn nothing_matches_a_packet_from_other_keys_or_a_changed_packet() {
        let tap = KeyTap::new().unwrap();
        let (mut local, _) = keyed(&tap, ProtectionProfile::AeadAes128Gcm, 1);
        let other = KeyTap::new().unwrap();
        let (mut stranger, _) = keyed(&other, ProtectionProfile::AeadAes128Gcm, 7);
        let theirs = stranger.encrypt_rtp(&packet(1, 1)).unwrap();
        assert!(local_context(&tap, &packet(1, 1), &theirs).is_none());
        assert!(remote_context(&tap, &theirs).is_none());
        // The connection sent something else than we would (an extension added, say).
        let sent = local.encrypt_rtp(&packet(1, 2)).unwrap();
        assert!(local_context(&tap, &packet(1, 3), &sent).is_none());
    }

    #[test]
    fn rtp_and_rtcp_are_told_apart() {
        assert!(is_rtp(&packet(1, 1)));
        assert!(!is_rtp(&[0x80, 200, 0, 6]));
        assert!(is_rtp_or_rtcp(&[0x80, 200, 0, 6]));
        assert!(!is_rtp_or_rtcp(&[0x00, 0x01])); // STUN
        assert!(!is_rtp_or_rtcp(&[22, 0xfe])); // DTLS
    }
}
