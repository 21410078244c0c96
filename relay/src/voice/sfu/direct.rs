//! Forwarded audio's short path: once a participant's connection has sent one forwarded
//! packet, and that packet showed which SRTP context protects like the connection does
//! (`concord_media::direct_srtp`), the rest of their forwarded audio is protected here and
//! sent from the room's socket, skipping the connection's per-packet pipeline (a queue hop
//! per handler and interceptor). Everything else (STUN, DTLS, RTCP, video) still goes
//! through the connection.
//!
//! The key is one the connection derived through `concord_media::direct_srtp::KeyTap` that
//! protects the first packet to the same bytes; AES-GCM profiles then use
//! `concord_media::srtp_gcm` (RFC 7714), other profiles `rtc`'s context. Packets go into
//! per-listener buffers (`batch::Datagrams`) and out to the address the connection sends
//! media to. A mismatch leaves that connection on the full pipeline. Counted as
//! `concord_sfu_direct_srtp_total{direction,result}`.

use std::net::SocketAddr;

use concord_media::direct_srtp::{self, KeyTap, Srtp};
use rtc::rtp;
use rtc::shared::TaggedBytesMut;
use rtc::shared::marshal::{Marshal, MarshalSize};

/// Largest RTP packet protected here (forwarded Opus stays far below).
const MAX_RTP: usize = 1400;

// Ready is kept inline, not boxed: the forwarding loop reads it for every packet it sends,
// and a box was one more cache miss each time.
#[allow(clippy::large_enum_variant)]
pub(super) enum Direct {
    /// Nothing sent yet: the next forwarded packet goes through the connection and is the test.
    Untested,
    Ready(Ready),
    /// The connection's output differed from every candidate: it keeps the whole path.
    Off,
}

/// In declaration order (`repr(C)`): the addresses and then the context, whose AES-GCM part
/// comes first (`Srtp`), so that a forwarded packet reads adjacent lines.
#[repr(C)]
pub(super) struct Ready {
    /// The socket address the connection sends media from, and the participant's address.
    pub from: SocketAddr,
    pub to: SocketAddr,
    context: Srtp,
}

/// One short path's key test (`direction`: "down" for forwarded audio, "up" for a
/// participant's microphone), as `concord_sfu_direct_srtp_total`.
pub(super) fn count_key_test(direction: &'static str, matched: bool) {
    let result = if matched { "matched" } else { "mismatch" };
    metrics::counter!("concord_sfu_direct_srtp_total", "direction" => direction, "result" => result)
        .increment(1);
}

impl Direct {
    /// After the connection protected and sent the RTP packet `plaintext` as `sent`: the
    /// context that does the same, or off.
    pub fn test(&mut self, tap: &KeyTap, plaintext: &[u8], sent: &TaggedBytesMut) {
        if !direct_srtp::is_rtp(&sent.message) {
            return;
        }
        let found = direct_srtp::local_context(tap, plaintext, &sent.message);
        count_key_test("down", found.is_some());
        *self = match found {
            Some(context) => Direct::Ready(Ready {
                from: sent.transport.local_addr,
                to: sent.transport.peer_addr,
                context,
            }),
            None => {
                tracing::info!(
                    "sfu: a connection's SRTP output matches no tapped key; it keeps the full pipeline"
                );
                Direct::Off
            }
        };
    }

    /// Media the connection sends shows the selected candidate pair: keep sending there.
    pub fn follow(&mut self, sent: &TaggedBytesMut) {
        if let Direct::Ready(ready) = self
            && direct_srtp::is_rtp_or_rtcp(&sent.message)
        {
            ready.from = sent.transport.local_addr;
            ready.to = sent.transport.peer_addr;
        }
    }
}

impl Ready {
    /// The packet, marshalled and protected into `out`; false if it cannot be (dropped, never
    /// sent twice under one sequence number through the connection's context).
    pub fn protect(&mut self, packet: &rtp::Packet, out: &mut Vec<u8>) -> bool {
        // Sized to the packet: zeroing the largest size every time cost more than sealing.
        let size = packet.marshal_size();
        if size > MAX_RTP {
            return false;
        }
        out.resize(size, 0);
        let Ok(n) = packet.marshal_to(out) else {
            return false;
        };
        out.truncate(n);
        self.context.protect_rtp(out).is_ok()
    }
}
