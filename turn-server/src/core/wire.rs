//! The wire format: STUN messages (decoded with rtc-stun's `Message`, after checks of our
//! own: lengths, fingerprint, integrity, comprehension-required attributes), ChannelData,
//! XOR-encoded addresses, MESSAGE-INTEGRITY and stream framing. Every
//! function here takes arbitrary bytes and never panics (see `tests/parsers_never_panic.rs`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rtc_stun::attributes::*;
use rtc_stun::fingerprint::{FINGERPRINT, fingerprint_value};
use rtc_stun::message::{
    ATTRIBUTE_HEADER_SIZE, CLASS_INDICATION, CLASS_REQUEST, MAGIC_COOKIE, MESSAGE_HEADER_SIZE,
    Message, Setter,
};

use crate::auth::{hmac_sha1, verify_hmac_sha1};

/// The largest STUN message (a 16-bit length after a 20-byte header).
pub const MAX_STUN_SIZE: usize = MESSAGE_HEADER_SIZE + u16::MAX as usize;
/// The largest ChannelData message over a stream (header, 16-bit length, padding).
pub const MAX_CHANNEL_DATA_SIZE: usize = 4 + u16::MAX as usize + 1;
/// Channel numbers clients may bind: RFC 8656 narrows RFC 5766's 0x4000–0x7FFF to
/// 0x4000–0x4FFF, but libwebrtc still picks from the old range, so both are accepted.
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x7FFF;

const MESSAGE_INTEGRITY_SIZE: usize = 20;
const FINGERPRINT_SIZE: usize = 4;

/// Why bytes from a client were not a usable message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// Shorter than a header.
    TooShort,
    /// The first two bits are neither STUN (00) nor ChannelData (01), or the magic cookie is
    /// wrong.
    NotStun,
    /// The length field is not a multiple of 4 or disagrees with the packet's size.
    BadLength,
    /// An attribute runs past the end of the message.
    Truncated,
    /// FINGERPRINT is not the last attribute, has the wrong size or does not match.
    BadFingerprint,
    /// MESSAGE-INTEGRITY with a size other than 20 bytes.
    BadIntegritySize,
    /// A ChannelData message with a channel number outside 0x4000–0x7FFF or a length past
    /// the end of the packet.
    BadChannelData,
}

impl ParseError {
    pub fn as_str(self) -> &'static str {
        match self {
            ParseError::TooShort => "too_short",
            ParseError::NotStun => "not_stun",
            ParseError::BadLength => "bad_length",
            ParseError::Truncated => "truncated",
            ParseError::BadFingerprint => "bad_fingerprint",
            ParseError::BadIntegritySize => "bad_integrity_size",
            ParseError::BadChannelData => "bad_channel_data",
        }
    }
}

/// One attribute's place in the raw message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrPos {
    pub typ: AttrType,
    /// Offset of the attribute header in the raw message.
    pub offset: usize,
    pub len: usize,
}

/// A STUN message from a client that passed the structural checks.
#[derive(Debug, Clone)]
pub struct StunMessage {
    pub msg: Message,
    pub attrs: Vec<AttrPos>,
    /// Index into `attrs` of MESSAGE-INTEGRITY, if present. Attributes after it (other than
    /// FINGERPRINT) are ignored, as RFC 8489 §14.5 requires.
    pub integrity: Option<usize>,
    /// Comprehension-required attributes (type < 0x8000) this server does not understand.
    pub unknown: Vec<AttrType>,
    pub has_fingerprint: bool,
}

/// Comprehension-required attributes this server understands.
const KNOWN_REQUIRED: &[AttrType] = &[
    ATTR_MAPPED_ADDRESS,
    ATTR_USERNAME,
    ATTR_MESSAGE_INTEGRITY,
    ATTR_ERROR_CODE,
    ATTR_UNKNOWN_ATTRIBUTES,
    ATTR_CHANNEL_NUMBER,
    ATTR_LIFETIME,
    ATTR_XOR_PEER_ADDRESS,
    ATTR_DATA,
    ATTR_REALM,
    ATTR_NONCE,
    ATTR_XOR_RELAYED_ADDRESS,
    ATTR_REQUESTED_ADDRESS_FAMILY,
    ATTR_EVEN_PORT,
    ATTR_REQUESTED_TRANSPORT,
    ATTR_DONT_FRAGMENT,
    ATTR_XORMAPPED_ADDRESS,
    ATTR_RESERVATION_TOKEN,
    ATTR_PRIORITY,
    ATTR_USE_CANDIDATE,
];

fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// What kind of packet the first byte says this is (RFC 8656 §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Stun,
    ChannelData,
    Invalid,
}

pub fn classify(data: &[u8]) -> PacketKind {
    match data.first().map(|b| b >> 6) {
        Some(0) => PacketKind::Stun,
        Some(1) => PacketKind::ChannelData,
        _ => PacketKind::Invalid,
    }
}

/// Checks and decodes one complete STUN message (a UDP datagram or a framed stream message).
pub fn parse_stun(data: &[u8]) -> Result<StunMessage, ParseError> {
    if data.len() < MESSAGE_HEADER_SIZE {
        return Err(ParseError::TooShort);
    }
    if data[0] >> 6 != 0 || u32::from_be_bytes([data[4], data[5], data[6], data[7]]) != MAGIC_COOKIE
    {
        return Err(ParseError::NotStun);
    }
    let len = u16::from_be_bytes([data[2], data[3]]) as usize;
    if !len.is_multiple_of(4) || MESSAGE_HEADER_SIZE + len != data.len() {
        return Err(ParseError::BadLength);
    }
    // Walk the attributes ourselves first: exact bounds, offsets, FINGERPRINT placement.
    let mut attrs = Vec::new();
    let mut offset = MESSAGE_HEADER_SIZE;
    while offset < data.len() {
        if data.len() - offset < ATTRIBUTE_HEADER_SIZE {
            return Err(ParseError::Truncated);
        }
        let typ = u16::from_be_bytes([data[offset], data[offset + 1]]);
        let alen = u16::from_be_bytes([data[offset + 2], data[offset + 3]]) as usize;
        let end = offset + ATTRIBUTE_HEADER_SIZE + padded(alen);
        if end > data.len() {
            return Err(ParseError::Truncated);
        }
        attrs.push(AttrPos {
            // rtc-stun maps the pre-RFC 5389 XOR-MAPPED-ADDRESS code the same way.
            typ: if typ == 0x8020 {
                ATTR_XORMAPPED_ADDRESS
            } else {
                AttrType(typ)
            },
            offset,
            len: alen,
        });
        offset = end;
    }
    let mut msg = Message::new();
    msg.raw.clear();
    msg.raw.extend_from_slice(data);
    msg.decode().map_err(|_| ParseError::Truncated)?;

    let mut has_fingerprint = false;
    if let Some(pos) = attrs.iter().position(|a| a.typ == ATTR_FINGERPRINT) {
        let a = attrs[pos];
        if pos != attrs.len() - 1 || a.len != FINGERPRINT_SIZE {
            return Err(ParseError::BadFingerprint);
        }
        let v = &data[a.offset + 4..a.offset + 8];
        if u32::from_be_bytes([v[0], v[1], v[2], v[3]]) != fingerprint_value(&data[..a.offset]) {
            return Err(ParseError::BadFingerprint);
        }
        has_fingerprint = true;
    }
    let integrity = attrs.iter().position(|a| a.typ == ATTR_MESSAGE_INTEGRITY);
    if let Some(i) = integrity
        && attrs[i].len != MESSAGE_INTEGRITY_SIZE
    {
        return Err(ParseError::BadIntegritySize);
    }
    let considered = integrity.map_or(attrs.len(), |i| i + 1);
    let mut unknown: Vec<AttrType> = Vec::new();
    for a in &attrs[..considered] {
        if a.typ.required() && !KNOWN_REQUIRED.contains(&a.typ) && !unknown.contains(&a.typ) {
            unknown.push(a.typ);
        }
    }
    unknown.truncate(16);
    Ok(StunMessage {
        msg,
        attrs,
        integrity,
        unknown,
        has_fingerprint,
    })
}

impl StunMessage {
    /// The first value of an attribute that is not ignored (before MESSAGE-INTEGRITY).
    pub fn attr(&self, typ: AttrType) -> Option<&[u8]> {
        self.attrs_of(typ).next()
    }

    /// Every value of an attribute that is not ignored, in order.
    pub fn attrs_of(&self, typ: AttrType) -> impl Iterator<Item = &[u8]> {
        let considered = self.integrity.unwrap_or(self.attrs.len());
        self.attrs[..considered]
            .iter()
            .filter(move |a| a.typ == typ)
            .map(|a| &self.msg.raw[a.offset + 4..a.offset + 4 + a.len])
    }

    /// A text attribute (USERNAME, REALM, NONCE) as UTF-8.
    pub fn text(&self, typ: AttrType) -> Option<&str> {
        self.attr(typ).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn is_request(&self) -> bool {
        self.msg.typ.class == CLASS_REQUEST
    }

    pub fn is_indication(&self) -> bool {
        self.msg.typ.class == CLASS_INDICATION
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1 with `key`, RFC 8489 §14.5): over the message up to
    /// the attribute, with the header's length covering the attribute itself.
    pub fn integrity_ok(&self, key: &[u8]) -> bool {
        let Some(i) = self.integrity else {
            return false;
        };
        let a = self.attrs[i];
        let raw = &self.msg.raw;
        let len = ((a.offset + ATTRIBUTE_HEADER_SIZE + MESSAGE_INTEGRITY_SIZE)
            - MESSAGE_HEADER_SIZE) as u16;
        let tag = &raw[a.offset + 4..a.offset + 4 + MESSAGE_INTEGRITY_SIZE];
        verify_hmac_sha1(
            key,
            &[&raw[..2], &len.to_be_bytes(), &raw[4..a.offset]],
            tag,
        )
    }
}

/// Decodes an XOR-PEER-ADDRESS (or any XOR-…-ADDRESS) value of exactly the right size.
pub fn decode_xor_address(value: &[u8], transaction_id: &[u8; 12]) -> Option<SocketAddr> {
    if value.len() < 4 || value[0] != 0 {
        return None;
    }
    let port = u16::from_be_bytes([value[2], value[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    match (value[1], value.len()) {
        (0x01, 8) => {
            let mut ip = [0u8; 4];
            for (i, b) in ip.iter_mut().enumerate() {
                *b = value[4 + i] ^ cookie[i];
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        (0x02, 20) => {
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&cookie);
            mask[4..].copy_from_slice(transaction_id);
            let mut ip = [0u8; 16];
            for (i, b) in ip.iter_mut().enumerate() {
                *b = value[4 + i] ^ mask[i];
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

/// Parses a ChannelData message: channel number and payload. Bytes after the payload (the
/// padding over streams, or over UDP when a client pads) are ignored.
pub fn parse_channel_data(data: &[u8]) -> Result<(u16, &[u8]), ParseError> {
    if data.len() < 4 {
        return Err(ParseError::TooShort);
    }
    let number = u16::from_be_bytes([data[0], data[1]]);
    let len = u16::from_be_bytes([data[2], data[3]]) as usize;
    if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&number) || 4 + len > data.len() {
        return Err(ParseError::BadChannelData);
    }
    Ok((number, &data[4..4 + len]))
}

/// Encodes a ChannelData message; `pad` to a multiple of 4 bytes (required over streams).
pub fn encode_channel_data(number: u16, payload: &[u8], pad: bool) -> Vec<u8> {
    let body = if pad {
        padded(payload.len())
    } else {
        payload.len()
    };
    let mut out = Vec::with_capacity(4 + body);
    out.extend_from_slice(&number.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out.resize(4 + body, 0);
    out
}

/// Appends MESSAGE-INTEGRITY (HMAC-SHA1 with `key`) to a message being built.
pub fn add_integrity(m: &mut Message, key: &[u8]) {
    let length = m.length;
    m.length += (ATTRIBUTE_HEADER_SIZE + MESSAGE_INTEGRITY_SIZE) as u32;
    m.write_length();
    let tag = hmac_sha1(key, &[&m.raw]);
    m.length = length;
    m.write_length();
    m.add(ATTR_MESSAGE_INTEGRITY, &tag);
}

/// Appends FINGERPRINT to a message being built.
pub fn add_fingerprint(m: &mut Message) {
    // Cannot fail: FINGERPRINT is always 4 bytes.
    let _ = FINGERPRINT.add_to(m);
}

/// Stream framing (RFC 8656 §11.5): the size of the next message in `buf`, once its 4-byte
/// header is there. STUN messages are `20 + length`; ChannelData messages `4 + length`
/// padded to a multiple of 4. Anything else cannot be resynchronised: the connection closes.
pub fn stream_frame_len(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    match classify(buf) {
        PacketKind::Stun if len.is_multiple_of(4) => Ok(Some(MESSAGE_HEADER_SIZE + len)),
        PacketKind::Stun => Err(ParseError::BadLength),
        PacketKind::ChannelData => {
            let number = u16::from_be_bytes([buf[0], buf[1]]);
            if number > CHANNEL_MAX {
                return Err(ParseError::BadChannelData);
            }
            Ok(Some(4 + padded(len)))
        }
        PacketKind::Invalid => Err(ParseError::NotStun),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_stun::message::{BINDING_REQUEST, TransactionId};
    use rtc_stun::textattrs::TextAttribute;

    fn binding_with(attrs: &[(u16, &[u8])], fingerprint: bool) -> Vec<u8> {
        let mut m = Message::new();
        m.build(&[Box::new(TransactionId([1; 12])), Box::new(BINDING_REQUEST)])
            .unwrap();
        for (t, v) in attrs {
            m.add(AttrType(*t), v);
        }
        if fingerprint {
            add_fingerprint(&mut m);
        }
        m.raw
    }

    #[test]
    fn parses_and_checks_fingerprint() {
        let raw = binding_with(&[(0x8022, b"sw")], true);
        let parsed = parse_stun(&raw).unwrap();
        assert!(parsed.has_fingerprint && parsed.unknown.is_empty());
        let mut bad = raw.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert_eq!(parse_stun(&bad).unwrap_err(), ParseError::BadFingerprint);
        assert_eq!(parse_stun(&raw[..19]).unwrap_err(), ParseError::TooShort);
        assert_eq!(
            parse_stun(&raw[..raw.len() - 4]).unwrap_err(),
            ParseError::BadLength
        );
    }

    #[test]
    fn reports_unknown_required_attributes_before_integrity_only() {
        let raw = binding_with(
            &[(0x0003, &[0, 0, 0, 0]), (0x7777, b"x"), (0x8888, b"y")],
            false,
        );
        let parsed = parse_stun(&raw).unwrap();
        assert_eq!(parsed.unknown, vec![AttrType(0x0003), AttrType(0x7777)]);
    }

    #[test]
    fn integrity_round_trip() {
        let key = crate::auth::long_term_key("u", "r", "p");
        let mut m = Message::new();
        m.build(&[
            Box::new(TransactionId([2; 12])),
            Box::new(BINDING_REQUEST),
            Box::new(TextAttribute::new(ATTR_USERNAME, "u".into())),
        ])
        .unwrap();
        add_integrity(&mut m, &key);
        add_fingerprint(&mut m);
        let parsed = parse_stun(&m.raw).unwrap();
        assert!(parsed.integrity_ok(&key));
        assert!(!parsed.integrity_ok(&[0; 16]));
        // rtc-stun's own check agrees.
        let mut check = parsed.msg.clone();
        let provider = rtc_stun::crypto::default_provider().unwrap();
        rtc_stun::integrity::MessageIntegrity::check(&mut check, &key, provider.crypto()).unwrap();
    }

    #[test]
    fn xor_addresses_decode_exactly() {
        let tid = [3u8; 12];
        let mut m = Message::new();
        m.build(&[Box::new(TransactionId(tid)), Box::new(BINDING_REQUEST)])
            .unwrap();
        for addr in ["192.0.2.1:32853", "[2001:db8::1]:1"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut m = m.clone();
            rtc_stun::xoraddr::XorMappedAddress {
                ip: addr.ip(),
                port: addr.port(),
            }
            .add_to_as(&mut m, ATTR_XOR_PEER_ADDRESS)
            .unwrap();
            let parsed = parse_stun(&m.raw).unwrap();
            let v = parsed.attr(ATTR_XOR_PEER_ADDRESS).unwrap();
            assert_eq!(decode_xor_address(v, &tid), Some(addr));
            assert_eq!(decode_xor_address(&v[..v.len() - 1], &tid), None);
        }
    }

    #[test]
    fn channel_data_and_framing() {
        let cd = encode_channel_data(0x4001, b"hello", true);
        assert_eq!(cd.len(), 12);
        assert_eq!(parse_channel_data(&cd).unwrap(), (0x4001, &b"hello"[..]));
        assert_eq!(stream_frame_len(&cd).unwrap(), Some(12));
        assert_eq!(encode_channel_data(0x4001, b"hello", false).len(), 9);
        assert!(parse_channel_data(&encode_channel_data(0x3fff, b"x", false)).is_err());
        let mut short = cd.clone();
        short.truncate(8);
        assert!(parse_channel_data(&short).is_err());
        let stun = binding_with(&[], false);
        assert_eq!(stream_frame_len(&stun).unwrap(), Some(20));
        assert_eq!(stream_frame_len(&stun[..3]).unwrap(), None);
        assert!(stream_frame_len(&[0xc0, 0, 0, 0]).is_err());
        assert!(stream_frame_len(&[0x00, 1, 0, 3]).is_err());
    }
}
