//! SRTP's AEAD AES-GCM transform for RTP (RFC 7714), for the hot paths. `rtc`'s context looks
//! each packet's SSRC up in a SipHash map twice and reaches its keys through four pointers;
//! here a connection's few SSRCs sit in a short list beside the key, and a packet is sealed
//! in the caller's buffer. Sans-IO: bytes in, bytes out. `direct_srtp` only uses a context
//! built here once it has checked it against the connection's own output or input.

use rtc::crypto::{AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, RTCCrypto};
use rtc::srtp::protection_profile::ProtectionProfile;

/// The GCM authentication tag appended to each packet.
pub const TAG_LEN: usize = 16;
const SALT_LEN: usize = 12;
/// RFC 3711's key derivation labels: SRTP encryption key, SRTP salt.
const LABEL_KEY: u8 = 0x00;
const LABEL_SALT: u8 = 0x02;
/// SSRCs one context follows (a listener's slots and a video stream fit many times over).
pub const MAX_STREAMS: usize = 32;
/// Packets behind the highest index still accepted once (RFC 3711's replay list).
const REPLAY_WINDOW: u64 = 64;
/// The SRTP packet index is 48 bits (ROC and sequence number).
const MAX_INDEX: u64 = (1 << 48) - 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Not an AEAD profile, or the key or salt has the wrong length.
    Profile,
    Crypto,
    /// Shorter than an RTP header (with its CSRCs and extension) and a tag.
    TooShort,
    /// Authentication failed: altered, or protected with another key.
    Auth,
    Replayed,
    /// More SSRCs than `MAX_STREAMS`.
    TooManyStreams,
    /// 2^48 packets under one key (RFC 3711 §9.2: the key must change).
    Exhausted,
}

/// One SSRC's packet index (RFC 3711 §3.3.1) and, when opening, its replay window.
#[derive(Debug, Clone)]
struct Stream {
    ssrc: u32,
    /// Highest index processed: ROC in the upper 32 bits, sequence number in the lower 16.
    index: u64,
    /// Bit i set: the packet `index - i` was accepted.
    seen: u64,
}

impl Stream {
    /// The index of a packet with sequence number `seq` (RFC 3711 Appendix A): the rollover
    /// count that puts it closest to the highest index so far. Like `rtc` (whose context
    /// protected this stream's first packets), never before ROC 0.
    fn estimate(&self, seq: u16) -> u64 {
        let roc = self.index >> 16;
        let last = self.index as u16;
        let guess = if last < 0x8000 {
            if i32::from(seq) - i32::from(last) > 0x8000 && roc > 0 {
                roc - 1
            } else {
                roc
            }
        } else if last - 0x8000 > seq {
            roc + 1
        } else {
            roc
        };
        (guess << 16) | u64::from(seq)
    }

    fn replayed(&self, index: u64) -> bool {
        index <= self.index
            && (self.index - index >= REPLAY_WINDOW || self.seen >> (self.index - index) & 1 == 1)
    }

    fn accept(&mut self, index: u64) {
        if index > self.index {
            let shift = index - self.index;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.index = index;
        } else {
            self.seen |= 1 << (self.index - index);
        }
    }
}

/// One direction of one connection's SRTP for RTP, with AES-GCM.
pub struct GcmRtp {
    aead: Box<dyn AeadCipher>,
    salt: [u8; SALT_LEN],
    streams: Vec<Stream>,
    /// Opening: refuse replayed packets.
    replay: bool,
}

/// `out_len` bytes of RFC 3711's key derivation (§4.3, AES-CM PRF, key derivation rate 0)
/// for `label`; RFC 7714 §11 uses the same with a 96-bit master salt, and AES-256 for
/// 256-bit master keys.
fn derive(
    crypto: &dyn RTCCrypto,
    master_key: &[u8],
    master_salt: &[u8],
    label: u8,
    out_len: usize,
) -> Result<Vec<u8>, Error> {
    let algorithm = match master_key.len() {
        16 => BlockCipherAlgorithm::Aes128,
        32 => BlockCipherAlgorithm::Aes256,
        _ => return Err(Error::Profile),
    };
    let mut x = [0u8; 16];
    x.get_mut(..master_salt.len())
        .ok_or(Error::Profile)?
        .copy_from_slice(master_salt);
    x[7] ^= label;
    let mut out = Vec::with_capacity(out_len.next_multiple_of(16));
    for counter in 0u16.. {
        if out.len() >= out_len {
            break;
        }
        let mut block = x;
        block[14..].copy_from_slice(&counter.to_be_bytes());
        crypto
            .block_encrypt(algorithm, master_key, &mut block)
            .map_err(|_| Error::Crypto)?;
        out.extend_from_slice(&block);
    }
    out.truncate(out_len);
    Ok(out)
}

/// The length of the RTP header at the start of `packet`: fixed part, CSRCs, extension.
fn header_len(packet: &[u8]) -> Option<usize> {
    let first = *packet.first()?;
    let mut len = 12 + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let words = packet.get(len + 2..len + 4)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    (packet.len() >= len).then_some(len)
}

impl GcmRtp {
    /// A context for `profile` (AEAD AES-128-GCM or AES-256-GCM) from the DTLS-exported master
    /// key and salt; `replay`: refuse replayed packets (for opening the peer's).
    pub fn new(
        crypto: &dyn RTCCrypto,
        profile: ProtectionProfile,
        master_key: &[u8],
        master_salt: &[u8],
        replay: bool,
    ) -> Result<GcmRtp, Error> {
        let algorithm = match profile {
            ProtectionProfile::AeadAes128Gcm => AeadAlgorithm::Aes128Gcm,
            ProtectionProfile::AeadAes256Gcm => AeadAlgorithm::Aes256Gcm,
            _ => return Err(Error::Profile),
        };
        if master_key.len() != profile.key_len() || master_salt.len() != SALT_LEN {
            return Err(Error::Profile);
        }
        let key = rtc::crypto::SecretVec::new(derive(
            crypto,
            master_key,
            master_salt,
            LABEL_KEY,
            master_key.len(),
        )?);
        let aead = crypto
            .new_aead(algorithm, key.as_ref())
            .map_err(|_| Error::Crypto)?;
        if aead.tag_len() != TAG_LEN {
            return Err(Error::Crypto);
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&derive(
            crypto,
            master_key,
            master_salt,
            LABEL_SALT,
            SALT_LEN,
        )?);
        Ok(GcmRtp {
            aead,
            salt,
            streams: Vec::new(),
            replay,
        })
    }

    /// The stream of `ssrc`, and whether it has processed a packet yet.
    fn stream(&mut self, ssrc: u32) -> Result<(usize, bool), Error> {
        if let Some(i) = self.streams.iter().position(|s| s.ssrc == ssrc) {
            return Ok((i, true));
        }
        if self.streams.len() >= MAX_STREAMS {
            return Err(Error::TooManyStreams);
        }
        self.streams.push(Stream {
            ssrc,
            index: 0,
            seen: 0,
        });
        Ok((self.streams.len() - 1, false))
    }

    /// RFC 7714 §8.1: (0 ‖ SSRC ‖ ROC ‖ SEQ) XOR the session salt.
    fn nonce(&self, ssrc: u32, index: u64) -> [u8; SALT_LEN] {
        let mut iv = [0u8; SALT_LEN];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
        for (v, s) in iv.iter_mut().zip(self.salt) {
            *v ^= s;
        }
        iv
    }

    /// The index of `seq` on stream `i`: the sequence number itself for a stream's first packet.
    fn index_of(&self, i: usize, started: bool, seq: u16) -> u64 {
        if started {
            self.streams[i].estimate(seq)
        } else {
            u64::from(seq)
        }
    }

    /// Protects the RTP packet in `packet` (header then payload) where it is: the payload is
    /// encrypted in place and the tag appended.
    pub fn protect(&mut self, packet: &mut Vec<u8>) -> Result<(), Error> {
        let header = header_len(packet).ok_or(Error::TooShort)?;
        let ssrc = u32::from_be_bytes(packet[8..12].try_into().map_err(|_| Error::TooShort)?);
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let (i, started) = self.stream(ssrc)?;
        let index = self.index_of(i, started, seq);
        if index > MAX_INDEX {
            return Err(Error::Exhausted);
        }
        let nonce = self.nonce(ssrc, index);
        let mut tag = [0u8; TAG_LEN];
        let (aad, payload) = packet.split_at_mut(header);
        self.aead
            .seal_in_place(&nonce, aad, payload, &mut tag)
            .map_err(|_| Error::Crypto)?;
        packet.extend_from_slice(&tag);
        let stream = &mut self.streams[i];
        if !started || index > stream.index {
            stream.index = index;
        }
        Ok(())
    }

    /// Opens the SRTP packet `datagram`: the RTP packet (header and clear payload), or why not.
    /// Nothing changes when it does not open.
    pub fn unprotect(&mut self, datagram: &[u8]) -> Result<Vec<u8>, Error> {
        let header = header_len(datagram).ok_or(Error::TooShort)?;
        if datagram.len() < header + TAG_LEN {
            return Err(Error::TooShort);
        }
        let ssrc = u32::from_be_bytes(datagram[8..12].try_into().map_err(|_| Error::TooShort)?);
        let seq = u16::from_be_bytes([datagram[2], datagram[3]]);
        let (i, started) = self.stream(ssrc)?;
        let index = self.index_of(i, started, seq);
        if self.replay && started && self.streams[i].replayed(index) {
            return Err(Error::Replayed);
        }
        let nonce = self.nonce(ssrc, index);
        let (body, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        let mut plain = body.to_vec();
        let (aad, payload) = plain.split_at_mut(header);
        let opened = self.aead.open_in_place(&nonce, aad, payload, tag);
        if opened.is_err() {
            if !started {
                // A stream is only remembered once one of its packets opened.
                self.streams.pop();
            }
            return Err(Error::Auth);
        }
        let stream = &mut self.streams[i];
        if started {
            stream.accept(index);
        } else {
            stream.index = index;
            stream.seen = 1;
        }
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::Marshal;
    use rtc::srtp::context::Context;

    fn packet(ssrc: u32, seq: u16, csrc: bool) -> Vec<u8> {
        let mut header = rtc::rtp::header::Header {
            version: 2,
            payload_type: 111,
            sequence_number: seq,
            timestamp: u32::from(seq) * 960,
            ssrc,
            csrc: if csrc { vec![0xabcd] } else { vec![] },
            ..Default::default()
        };
        if csrc {
            header
                .set_extension(1, bytes::Bytes::from_static(&[0x85]))
                .unwrap();
        }
        let packet = rtc::rtp::Packet {
            header,
            payload: bytes::Bytes::from(vec![0xf8; 40]),
        };
        packet.marshal().expect("marshal").to_vec()
    }

    fn pair(profile: ProtectionProfile, replay: bool) -> (Context, GcmRtp) {
        let crypto = rtc::crypto::default_provider().unwrap();
        let key = vec![0x11; profile.key_len()];
        let salt = vec![0x22; profile.salt_len()];
        let theirs = Context::new(&key, &salt, profile, None, None, crypto.crypto()).unwrap();
        let ours = GcmRtp::new(crypto.crypto(), profile, &key, &salt, replay).unwrap();
        (theirs, ours)
    }

    #[test]
    fn protects_as_rtc_does_across_a_sequence_wrap_and_on_several_ssrcs() {
        for profile in [
            ProtectionProfile::AeadAes128Gcm,
            ProtectionProfile::AeadAes256Gcm,
        ] {
            let (mut theirs, mut ours) = pair(profile, false);
            let sends = [
                (7, 65_534, false),
                (7, 65_535, true),
                (7, 0, false),
                (7, 1, true),
            ];
            for (ssrc, seq, csrc) in sends.into_iter().chain([(9, 500, true), (7, 2, false)]) {
                let plain = packet(ssrc, seq, csrc);
                let expected = theirs.encrypt_rtp(&plain).unwrap();
                let mut buf = plain.clone();
                ours.protect(&mut buf).unwrap();
                assert_eq!(buf[..], expected[..], "{profile:?} ssrc {ssrc} seq {seq}");
            }
        }
    }

    #[test]
    fn opens_what_rtc_protects_and_refuses_replays_and_alterations() {
        let (mut sender, mut ours) = pair(ProtectionProfile::AeadAes128Gcm, true);
        let mut sent = Vec::new();
        for seq in [65_530u16, 65_535, 0, 3, 2] {
            let plain = packet(5, seq, seq % 2 == 0);
            let protected = sender.encrypt_rtp(&plain).unwrap();
            assert_eq!(ours.unprotect(&protected).unwrap(), plain, "seq {seq}");
            sent.push(protected);
        }
        for old in &sent {
            assert_eq!(ours.unprotect(old), Err(Error::Replayed));
        }
        let mut altered = sender.encrypt_rtp(&packet(5, 4, false)).unwrap().to_vec();
        altered[14] ^= 1;
        assert_eq!(ours.unprotect(&altered), Err(Error::Auth));
        // The altered packet moved nothing: the genuine one still opens.
        let genuine = sender.encrypt_rtp(&packet(5, 5, false)).unwrap();
        assert!(ours.unprotect(&genuine).is_ok());
        // Far behind the window: refused though never seen.
        assert_eq!(ours.unprotect(&sent[0]), Err(Error::Replayed));
    }

    #[test]
    fn a_stream_that_never_opened_is_not_remembered_and_bad_input_is_an_error() {
        let (_, mut ours) = pair(ProtectionProfile::AeadAes128Gcm, true);
        let (mut stranger, _) = {
            let crypto = rtc::crypto::default_provider().unwrap();
            let profile = ProtectionProfile::AeadAes128Gcm;
            let other = Context::new(&[9; 16], &[8; 12], profile, None, None, crypto.crypto());
            (other.unwrap(), ())
        };
        let foreign = stranger.encrypt_rtp(&packet(1, 1, false)).unwrap();
        assert_eq!(ours.unprotect(&foreign), Err(Error::Auth));
        assert!(ours.streams.is_empty());
        assert_eq!(ours.unprotect(&[0x80; 20]), Err(Error::TooShort));
        assert_eq!(ours.unprotect(&[]), Err(Error::TooShort));
        let mut short = vec![0x90, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde];
        assert_eq!(ours.protect(&mut short), Err(Error::TooShort));
        for ssrc in 0..MAX_STREAMS as u32 {
            ours.protect(&mut packet(ssrc, 1, false)).unwrap();
        }
        assert_eq!(
            ours.protect(&mut packet(999, 1, false)),
            Err(Error::TooManyStreams)
        );
        let crypto = rtc::crypto::default_provider().unwrap();
        let cm = ProtectionProfile::Aes128CmHmacSha1_80;
        assert!(GcmRtp::new(crypto.crypto(), cm, &[1; 16], &[2; 14], false).is_err());
    }
}
