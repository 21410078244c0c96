//! Batched reads from a UDP socket: one `recvmmsg` returns up to a batch of datagrams (the
//! TURN listener's and the SFU rooms' reads; they differ only in batch and datagram size).
//! The socket's options are left as they are (no control messages asked for, no GRO).

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};

pub struct BatchReader {
    /// `batch` slots of `max_datagram` bytes each.
    storage: Vec<u8>,
    max_datagram: usize,
    /// Source and length of each datagram of the last read (no source: not UDP/IP, dropped).
    received: Vec<(Option<SocketAddr>, usize)>,
}

impl BatchReader {
    /// A reader of up to `batch` datagrams per call, each cut at `max_datagram` bytes (65,536
    /// holds any UDP payload; WebRTC media stays under the path MTU).
    pub fn new(batch: usize, max_datagram: usize) -> Self {
        let (batch, max_datagram) = (batch.max(1), max_datagram.max(1));
        BatchReader {
            storage: vec![0; batch * max_datagram],
            max_datagram,
            received: Vec::with_capacity(batch),
        }
    }

    /// Forgets the last read's datagrams (a caller that may skip [`Self::recv`] clears first).
    pub fn clear(&mut self) {
        self.received.clear();
    }

    /// Datagrams one call reads at most.
    pub fn batch(&self) -> usize {
        self.storage.len() / self.max_datagram
    }

    /// Reads what is queued (without blocking), up to [`Self::batch`] datagrams, into
    /// [`Self::datagrams`]; returns how many it read. `WouldBlock` when nothing is queued;
    /// fewer than a batch means the queue is now empty.
    pub fn recv(&mut self, socket: &impl AsFd) -> io::Result<usize> {
        self.received.clear();
        let batch = self.batch();
        let mut bufs: Vec<[IoSliceMut<'_>; 1]> = self
            .storage
            .chunks_mut(self.max_datagram)
            .map(|chunk| [IoSliceMut::new(chunk)])
            .collect();
        // Made per call (two small allocations per batch): it holds raw pointers, so keeping
        // it would make the reader, and the task owning it, not `Send`.
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(batch, None);
        let results = recvmmsg(
            socket.as_fd().as_raw_fd(),
            &mut headers,
            bufs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        for msg in results {
            let from = msg.address.as_ref().and_then(socket_addr);
            self.received.push((from, msg.bytes));
        }
        Ok(self.received.len())
    }

    /// Each datagram of the last read with its source, in arrival order (an empty datagram
    /// included).
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.received
            .iter()
            .enumerate()
            .filter_map(|(i, &(from, len))| {
                let len = len.min(self.max_datagram);
                Some((from?, &self.storage[i * self.max_datagram..][..len]))
            })
    }
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};

    fn read_all(
        reader: &mut BatchReader,
        socket: &UdpSocket,
        want: usize,
    ) -> (Vec<(SocketAddr, Vec<u8>)>, usize) {
        let mut got = Vec::new();
        let mut reads = 0;
        while got.len() < want {
            reads += 1;
            assert!(reads < 1_000, "datagrams missing: {} of {want}", got.len());
            match reader.recv(socket) {
                Ok(_) => got.extend(reader.datagrams().map(|(from, d)| (from, d.to_vec()))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        (got, reads)
    }

    #[test]
    fn a_batch_holds_every_queued_datagram_with_its_source() {
        let listener = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let to = listener.local_addr().unwrap();
        let mut reader = BatchReader::new(32, 65_536);
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

        let (got, reads) = read_all(&mut reader, &listener, expected.len());
        assert_eq!(got, expected);
        // Batched: 42 datagrams did not take 42 reads.
        assert!(reads < expected.len(), "{reads} reads");
        assert_eq!(
            reader.recv(&listener).err().map(|e| e.kind()),
            Some(io::ErrorKind::WouldBlock)
        );
        assert_eq!(reader.datagrams().count(), 0);
    }

    #[test]
    fn a_short_batch_shows_the_queue_empty_and_long_datagrams_are_cut() {
        let listener = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let to = listener.local_addr().unwrap();
        let peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        for i in 0..5u8 {
            peer.send_to(&[i; 100], to).unwrap();
        }
        let mut reader = BatchReader::new(4, 64);
        assert_eq!(reader.batch(), 4);
        let (mut counts, mut got) = (Vec::new(), Vec::new());
        for _ in 0..1_000 {
            match reader.recv(&listener) {
                Ok(n) => {
                    counts.push(n);
                    got.extend(reader.datagrams().map(|(_, d)| d.to_vec()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && got.len() == 5 => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        let expected: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 64]).collect();
        assert_eq!(got, expected, "in order, each cut at 64 bytes");
        assert_eq!(counts.iter().sum::<usize>(), 5);
        assert!(counts.iter().all(|&n| n <= 4), "{counts:?}");
        assert!(
            *counts.last().unwrap() < 4,
            "the last read was short: {counts:?}"
        );
    }

    #[test]
    fn ipv6_sources_are_kept() {
        let Ok(listener) = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)) else {
            return; // no IPv6 loopback on this machine
        };
        let to = listener.local_addr().unwrap();
        let peer = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
        peer.send_to(b"hello", to).unwrap();
        let mut reader = BatchReader::new(32, 65_536);
        let (got, _) = read_all(&mut reader, &listener, 1);
        assert_eq!(got, vec![(peer.local_addr().unwrap(), b"hello".to_vec())]);
    }

    #[test]
    fn reading_leaves_the_socket_options_alone() {
        let listener = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let before = rustix::net::sockopt::ip_mtu_discover(&listener).unwrap();
        let mut reader = BatchReader::new(32, 65_536);
        let _ = reader.recv(&listener);
        assert_eq!(
            rustix::net::sockopt::ip_mtu_discover(&listener).unwrap(),
            before
        );
    }
}
