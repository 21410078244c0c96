//! The engine's packets on the wire: RTP (RFC 3550) with Opus payload and the RFC 6464
//! audio-level header extension carrying `Packet::level` and the VAD bit.

use bytes::Bytes;
use rtc::rtp;

use crate::voice_engine::codec::Packet;

pub use concord_media::{AUDIO_LEVEL_URI, audio_level};

/// The RTP packet for one encoded frame (the extension is added by the track, which knows
/// the id negotiated for it).
pub fn to_rtp(packet: &Packet, ssrc: u32, payload_type: u8, marker: bool) -> rtp::Packet {
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            marker,
            payload_type,
            sequence_number: packet.seq,
            timestamp: packet.timestamp,
            ssrc,
            ..Default::default()
        },
        payload: Bytes::copy_from_slice(&packet.payload),
    }
}

/// Reads an RTP packet back into the engine's form; `level_id` is the negotiated extension
/// id (level 127, silence, when it is absent or unreadable).
pub fn from_rtp(packet: &rtp::Packet, level_id: Option<u8>) -> Packet {
    Packet {
        seq: packet.header.sequence_number,
        timestamp: packet.header.timestamp,
        payload: packet.payload.to_vec(),
        level: concord_media::level_of(packet, level_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::{Marshal, MarshalSize, Unmarshal};

    #[test]
    fn a_packet_survives_the_round_trip_with_its_level() {
        let p = Packet {
            seq: 65_535,
            timestamp: 4_000_000_000,
            payload: vec![1, 2, 3],
            level: 23,
        };
        let mut wire = to_rtp(&p, 77, 111, true);
        let ext = audio_level(p.level);
        let mut buf = vec![0u8; ext.marshal_size()];
        ext.marshal_to(&mut buf).unwrap();
        wire.header.set_extension(3, Bytes::from(buf)).unwrap();
        // Through bytes, as the network carries it.
        let bytes = wire.marshal().unwrap();
        let back = rtp::Packet::unmarshal(&mut bytes.as_ref()).unwrap();
        assert_eq!(back.header.ssrc, 77);
        assert_eq!(back.header.payload_type, 111);
        assert_eq!(from_rtp(&back, Some(3)), p);
        // The V bit is set; the level is in the low 7 bits.
        assert_eq!(back.header.get_extension(3).unwrap()[0], 0x80 | 23);
        // Without the negotiated id the level reads as silence.
        assert_eq!(from_rtp(&back, None).level, 127);
        assert_eq!(from_rtp(&back, Some(9)).level, 127);
    }
}
