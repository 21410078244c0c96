//! Batched reads from a UDP socket: one `recvmmsg` (through quinn-udp) returns up to
//! [`RECV_BATCH`] datagrams, and buffers the kernel coalesced (GRO) are split back into them.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsFd;

use quinn_udp::{RecvMeta, UdpSocketState};

/// Datagrams read per call.
pub const RECV_BATCH: usize = quinn_udp::BATCH_SIZE;

/// Room for the largest UDP payload; a GRO-coalesced buffer is capped at 64 KiB as well.
const MAX_DATAGRAM: usize = 65_536;

pub struct BatchReader {
    state: UdpSocketState,
    storage: Vec<u8>,
    meta: [RecvMeta; RECV_BATCH],
    /// Buffers filled by the last read.
    filled: usize,
}

impl BatchReader {
    /// Prepares `socket` (non-blocking, GRO on) for batched reads.
    pub fn new(socket: &impl AsFd) -> io::Result<Self> {
        // quinn-udp forbids fragmentation on the socket (QUIC does its own path MTU
        // discovery); a TURN server sends whatever sizes its clients and peers use, so the
        // listener keeps the system's default.
        let fragmentation = pmtu::save(socket);
        let state = UdpSocketState::new(socket.into())?;
        pmtu::restore(socket, fragmentation);
        Ok(BatchReader {
            state,
            storage: vec![0; RECV_BATCH * MAX_DATAGRAM],
            meta: [RecvMeta::default(); RECV_BATCH],
            filled: 0,
        })
    }

    /// Reads what is queued, up to [`RECV_BATCH`] buffers, into [`Self::datagrams`];
    /// `WouldBlock` when nothing is.
    pub fn recv(&mut self, socket: &impl AsFd) -> io::Result<()> {
        self.filled = 0;
        let mut chunks = self.storage.chunks_mut(MAX_DATAGRAM);
        let mut bufs: [IoSliceMut<'_>; RECV_BATCH] = std::array::from_fn(|_| {
            IoSliceMut::new(chunks.next().expect("storage holds RECV_BATCH buffers"))
        });
        self.filled = self.state.recv(socket.into(), &mut bufs, &mut self.meta)?;
        Ok(())
    }

    /// Each datagram of the last read with its source, in arrival order (an empty datagram
    /// included).
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        let storage = &self.storage;
        self.meta[..self.filled]
            .iter()
            .enumerate()
            .flat_map(move |(i, meta)| {
                let buf = &storage[i * MAX_DATAGRAM..][..meta.len.min(MAX_DATAGRAM)];
                let stride = if meta.stride == 0 {
                    buf.len().max(1)
                } else {
                    meta.stride
                };
                // `chunks` yields nothing for an empty slice; an empty datagram is still one.
                let empty = buf.is_empty().then_some(buf);
                empty
                    .into_iter()
                    .chain(buf.chunks(stride))
                    .map(move |datagram| (meta.addr, datagram))
            })
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod pmtu {
    use rustix::net::sockopt;
    use std::os::fd::AsFd;

    pub struct Saved {
        v4: Option<sockopt::Ipv4PathMtuDiscovery>,
        v6: Option<sockopt::Ipv6PathMtuDiscovery>,
    }

    pub fn save(socket: &impl AsFd) -> Saved {
        Saved {
            v4: sockopt::ip_mtu_discover(socket).ok(),
            v6: sockopt::ipv6_mtu_discover(socket).ok(),
        }
    }

    pub fn restore(socket: &impl AsFd, saved: Saved) {
        if let Some(v) = saved.v4
            && let Err(e) = sockopt::set_ip_mtu_discover(socket, v)
        {
            tracing::debug!("cannot restore IP_MTU_DISCOVER: {e}");
        }
        if let Some(v) = saved.v6
            && let Err(e) = sockopt::set_ipv6_mtu_discover(socket, v)
        {
            tracing::debug!("cannot restore IPV6_MTU_DISCOVER: {e}");
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod pmtu {
    pub struct Saved;
    pub fn save(_: &impl std::os::fd::AsFd) -> Saved {
        Saved
    }
    pub fn restore(_: &impl std::os::fd::AsFd, _: Saved) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, UdpSocket};

    #[test]
    fn a_batch_holds_every_queued_datagram_with_its_source() {
        let listener = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let to = listener.local_addr().unwrap();
        let mut reader = BatchReader::new(&listener).unwrap();
        let a = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let b = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let mut expected = Vec::new();
        for i in 0..40u8 {
            let (from, len) = if i % 2 == 0 {
                (&a, 1 + usize::from(i))
            } else {
                (&b, 1200)
            };
            let data = vec![i; len];
            from.send_to(&data, to).unwrap();
            expected.push((from.local_addr().unwrap(), data));
        }
        a.send_to(&[], to).unwrap();
        expected.push((a.local_addr().unwrap(), Vec::new()));
        b.send_to(&vec![7; 65_000], to).unwrap();
        expected.push((b.local_addr().unwrap(), vec![7; 65_000]));

        let mut got = Vec::new();
        let mut reads = 0;
        while got.len() < expected.len() {
            reads += 1;
            assert!(
                reads < 1_000,
                "datagrams missing: {} of {}",
                got.len(),
                expected.len()
            );
            match reader.recv(&listener) {
                Ok(()) => got.extend(reader.datagrams().map(|(from, d)| (from, d.to_vec()))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        assert_eq!(got, expected);
        // Batched: 42 datagrams did not take 42 reads.
        assert!(reads < expected.len(), "{reads} reads");
        assert_eq!(
            reader.recv(&listener).err().map(|e| e.kind()),
            Some(io::ErrorKind::WouldBlock)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_socket_keeps_its_fragmentation_setting() {
        let listener = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let before = rustix::net::sockopt::ip_mtu_discover(&listener).unwrap();
        let _reader = BatchReader::new(&listener).unwrap();
        assert_eq!(
            rustix::net::sockopt::ip_mtu_discover(&listener).unwrap(),
            before
        );
    }
}
