//! Which peer addresses an allocation may relay to. By default a TURN server must not become a
//! way into the network it runs in: loopback, private, link-local, multicast, reserved and the
//! server's own addresses are refused unless an allow list names them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;

use ipnet::IpNet;

/// Why a peer address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// One of the server's own listening sockets (a relay loop).
    OwnListener,
    /// Port 0 or the unspecified address.
    Unspecified,
    Loopback,
    /// RFC 1918, shared address space (RFC 6598), unique local IPv6.
    Private,
    LinkLocal,
    Multicast,
    /// Broadcast and other reserved or special-purpose ranges.
    Reserved,
    /// An address of this server outside its relay port range.
    OwnAddress,
    /// Named by the configured deny list.
    DenyList,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::OwnListener => "own_listener",
            DenyReason::Unspecified => "unspecified",
            DenyReason::Loopback => "loopback",
            DenyReason::Private => "private",
            DenyReason::LinkLocal => "link_local",
            DenyReason::Multicast => "multicast",
            DenyReason::Reserved => "reserved",
            DenyReason::OwnAddress => "own_address",
            DenyReason::DenyList => "deny_list",
        }
    }
}

/// The peer address policy. Order of the checks:
/// 1. the server's own listening sockets, port 0 and unspecified addresses: always refused;
/// 2. the allow list: allowed;
/// 3. the deny list: refused;
/// 4. the server's own addresses in the relay port range: allowed (two clients relayed by
///    the same server reach each other);
/// 5. special-purpose ranges (loopback, private, link-local, multicast, reserved): refused;
/// 6. the server's other own addresses: refused;
/// 7. everything else: allowed.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    /// Addresses of this server: listen, relay and external IPs.
    pub own_ips: Vec<IpAddr>,
    /// The server's TURN (and HTTP) sockets.
    pub listeners: Vec<SocketAddr>,
    pub relay_ports: Option<RangeInclusive<u16>>,
}

/// IPv4-mapped (`::ffff:a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::`)
/// addresses carry an IPv4 address that the checks apply to as well.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        let o = ip.octets();
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if s[0] == 0x2002 {
        let o = ip.octets();
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

fn v4_category(ip: Ipv4Addr) -> Option<DenyReason> {
    let o = ip.octets();
    if ip.is_unspecified() || o[0] == 0 {
        Some(DenyReason::Unspecified)
    } else if ip.is_loopback() {
        Some(DenyReason::Loopback)
    } else if ip.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
        Some(DenyReason::Private)
    } else if ip.is_link_local() {
        Some(DenyReason::LinkLocal)
    } else if ip.is_multicast() {
        Some(DenyReason::Multicast)
    } else if ip.is_broadcast()
        || o[0] >= 240
        // IETF protocol assignments (192.0.0.0/24) and benchmarking (198.18.0.0/15).
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
    {
        Some(DenyReason::Reserved)
    } else {
        None
    }
}

fn v6_category(ip: Ipv6Addr) -> Option<DenyReason> {
    let s = ip.segments();
    if ip.is_unspecified() {
        Some(DenyReason::Unspecified)
    } else if ip.is_loopback() {
        Some(DenyReason::Loopback)
    } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 {
        // Unique local, and the deprecated site-local range.
        Some(DenyReason::Private)
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some(DenyReason::LinkLocal)
    } else if ip.is_multicast() {
        Some(DenyReason::Multicast)
    } else if s[0] == 0x0100 && s[1..4] == [0, 0, 0] {
        // Discard-only (100::/64).
        Some(DenyReason::Reserved)
    } else if s[0..6] == [0, 0, 0, 0, 0, 0] {
        // IPv4-compatible (deprecated) addresses.
        Some(DenyReason::Reserved)
    } else {
        None
    }
}

/// The special-purpose category of an address, if any (checking embedded IPv4 too).
pub fn special_category(ip: IpAddr) -> Option<DenyReason> {
    match ip {
        IpAddr::V4(v4) => v4_category(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => v4_category(v4).or_else(|| v6_category(v6)),
            None => v6_category(v6),
        },
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl PeerPolicy {
    fn in_list(list: &[IpNet], ip: IpAddr) -> bool {
        let canon = canonical(ip);
        list.iter()
            .any(|net| net.contains(&ip) || net.contains(&canon))
    }

    fn is_own(&self, ip: IpAddr) -> bool {
        let canon = canonical(ip);
        self.own_ips.iter().any(|own| canonical(*own) == canon)
    }

    fn is_listener(&self, peer: SocketAddr) -> bool {
        let ip = canonical(peer.ip());
        self.listeners.iter().any(|l| {
            l.port() == peer.port()
                && (canonical(l.ip()) == ip
                    || (l.ip().is_unspecified() && (ip.is_loopback() || self.is_own(ip))))
        })
    }

    /// Whether an allocation may send to `peer`.
    pub fn check(&self, peer: SocketAddr) -> Result<(), DenyReason> {
        let ip = peer.ip();
        if peer.port() == 0 || canonical(ip).is_unspecified() {
            return Err(DenyReason::Unspecified);
        }
        if self.is_listener(peer) {
            return Err(DenyReason::OwnListener);
        }
        if Self::in_list(&self.allow, ip) {
            return Ok(());
        }
        if Self::in_list(&self.deny, ip) {
            return Err(DenyReason::DenyList);
        }
        let own = self.is_own(ip);
        if own
            && self
                .relay_ports
                .as_ref()
                .is_some_and(|r| r.contains(&peer.port()))
        {
            return Ok(());
        }
        if let Some(reason) = special_category(ip) {
            return Err(reason);
        }
        if own {
            return Err(DenyReason::OwnAddress);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_ranges_are_denied_by_default() {
        let p = PeerPolicy::default();
        for (a, reason) in [
            ("127.0.0.1:5000", DenyReason::Loopback),
            ("10.1.2.3:5000", DenyReason::Private),
            ("172.16.0.1:5000", DenyReason::Private),
            ("192.168.1.1:5000", DenyReason::Private),
            ("100.64.0.1:5000", DenyReason::Private),
            ("169.254.1.1:5000", DenyReason::LinkLocal),
            ("224.0.0.1:5000", DenyReason::Multicast),
            ("255.255.255.255:5000", DenyReason::Reserved),
            ("240.0.0.1:5000", DenyReason::Reserved),
            ("0.0.0.0:5000", DenyReason::Unspecified),
            ("0.1.2.3:5000", DenyReason::Unspecified),
            ("8.8.8.8:0", DenyReason::Unspecified),
            ("[::1]:5000", DenyReason::Loopback),
            ("[::]:5000", DenyReason::Unspecified),
            ("[fd00::1]:5000", DenyReason::Private),
            ("[fe80::1]:5000", DenyReason::LinkLocal),
            ("[ff02::1]:5000", DenyReason::Multicast),
            ("[::ffff:127.0.0.1]:5000", DenyReason::Loopback),
            ("[::ffff:10.0.0.1]:5000", DenyReason::Private),
            ("[64:ff9b::10.0.0.1]:5000", DenyReason::Private),
            ("[2002:c0a8:0101::1]:5000", DenyReason::Private),
        ] {
            assert_eq!(p.check(addr(a)), Err(reason), "{a}");
        }
        for a in ["8.8.8.8:5000", "[2001:4860::8888]:5000", "203.0.113.7:9"] {
            assert_eq!(p.check(addr(a)), Ok(()), "{a}");
        }
    }

    #[test]
    fn allow_list_own_addresses_and_listeners() {
        let p = PeerPolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            deny: vec!["203.0.113.0/24".parse().unwrap()],
            own_ips: vec![
                "127.0.0.1".parse().unwrap(),
                "198.51.100.9".parse().unwrap(),
            ],
            listeners: vec![addr("127.0.0.1:3478"), addr("0.0.0.0:9478")],
            relay_ports: Some(49152..=65535),
        };
        assert_eq!(p.check(addr("127.0.0.1:5000")), Ok(()));
        assert_eq!(
            p.check(addr("[::ffff:127.0.0.1]:5000")),
            Ok(()),
            "mapped addresses match the allow list"
        );
        assert_eq!(
            p.check(addr("127.0.0.1:3478")),
            Err(DenyReason::OwnListener)
        );
        assert_eq!(
            p.check(addr("127.0.0.1:9478")),
            Err(DenyReason::OwnListener)
        );
        assert_eq!(
            p.check(addr("198.51.100.9:9478")),
            Err(DenyReason::OwnListener)
        );
        assert_eq!(p.check(addr("203.0.113.5:1")), Err(DenyReason::DenyList));
        assert_eq!(p.check(addr("198.51.100.9:50000")), Ok(()));
        assert_eq!(
            p.check(addr("198.51.100.9:22")),
            Err(DenyReason::OwnAddress)
        );
        // Without the allow list, own loopback relay ports are still reachable.
        let strict = PeerPolicy {
            allow: Vec::new(),
            ..p
        };
        assert_eq!(strict.check(addr("127.0.0.1:50000")), Ok(()));
        assert_eq!(
            strict.check(addr("127.0.0.1:5000")),
            Err(DenyReason::Loopback)
        );
    }
}
