//! The DHCPv4 server: leases from the pool or reservations, renewals, and the options a guest
//! needs (mask, router, DNS, MTU, lease times). Pure: a client's message in (parsed and
//! emitted with `dhcproto`), the reply out, time passed in.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};

use crate::config::NatConfig;

/// One lease: the address and when it ends (milliseconds of the caller's clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lease {
    ip: Ipv4Addr,
    until_ms: u64,
    /// Offered, not yet requested.
    offered: bool,
}

/// What the server answers, and to whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The encoded DHCP message (UDP payload, port 67 -> 68).
    pub payload: Vec<u8>,
    /// Send to the broadcast address (the client has no address yet, or asked for it).
    pub broadcast: bool,
    /// The address the reply is for (unicast destination when not broadcast).
    pub to_ip: Ipv4Addr,
    pub to_mac: [u8; 6],
}

/// The lease table.
#[derive(Debug, Default)]
pub struct DhcpServer {
    leases: HashMap<[u8; 6], Lease>,
    /// Counters: messages answered, NAKs, pool exhausted, malformed.
    pub acks: u64,
    pub naks: u64,
    pub exhausted: u64,
    pub malformed: u64,
}

/// How long an offer holds an address.
const OFFER_HOLD: Duration = Duration::from_secs(30);

impl DhcpServer {
    pub fn new() -> DhcpServer {
        DhcpServer::default()
    }

    /// The address leased to `mac`, if any (for tests and `ctl`).
    pub fn lease_of(&self, mac: &[u8; 6]) -> Option<Ipv4Addr> {
        self.leases.get(mac).filter(|l| !l.offered).map(|l| l.ip)
    }

    /// Answers one client message (the UDP payload to port 67). `None`: nothing to send
    /// (malformed, not for us, a release).
    pub fn handle(&mut self, cfg: &NatConfig, now_ms: u64, payload: &[u8]) -> Option<Reply> {
        if !well_formed(payload) {
            self.malformed += 1;
            return None;
        }
        let Ok(msg) = Message::from_bytes(payload) else {
            self.malformed += 1;
            return None;
        };
        if msg.opcode() != Opcode::BootRequest || msg.chaddr().len() < 6 {
            self.malformed += 1;
            return None;
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&msg.chaddr()[..6]);
        let requested = match msg.opts().get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
            _ => None,
        };
        let server_id = match msg.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        };
        match msg.opts().msg_type()? {
            MessageType::Discover => {
                let ip = self.pick(cfg, now_ms, mac, requested)?;
                self.leases.insert(
                    mac,
                    Lease {
                        ip,
                        until_ms: now_ms + OFFER_HOLD.as_millis() as u64,
                        offered: true,
                    },
                );
                Some(self.reply(cfg, &msg, MessageType::Offer, ip, mac))
            }
            MessageType::Request => {
                // For another server: forget our offer.
                if server_id.is_some_and(|s| s != cfg.gateway) {
                    if self.leases.get(&mac).is_some_and(|l| l.offered) {
                        self.leases.remove(&mac);
                    }
                    return None;
                }
                // SELECTING / INIT-REBOOT name the address in option 50; RENEWING and
                // REBINDING in ciaddr.
                let want = requested.or_else(|| {
                    let c = msg.ciaddr();
                    (!c.is_unspecified()).then_some(c)
                });
                let ours = self.allowed(cfg, now_ms, mac);
                match (want, ours) {
                    (Some(w), Some(ip)) if w == ip => {
                        self.leases.insert(
                            mac,
                            Lease {
                                ip,
                                until_ms: now_ms + cfg.lease.as_millis() as u64,
                                offered: false,
                            },
                        );
                        self.acks += 1;
                        Some(self.reply(cfg, &msg, MessageType::Ack, ip, mac))
                    }
                    (Some(w), _) if self.free_for(cfg, now_ms, mac, w) => {
                        self.leases.insert(
                            mac,
                            Lease {
                                ip: w,
                                until_ms: now_ms + cfg.lease.as_millis() as u64,
                                offered: false,
                            },
                        );
                        self.acks += 1;
                        Some(self.reply(cfg, &msg, MessageType::Ack, w, mac))
                    }
                    _ => {
                        self.naks += 1;
                        Some(self.reply(cfg, &msg, MessageType::Nak, Ipv4Addr::UNSPECIFIED, mac))
                    }
                }
            }
            MessageType::Release => {
                if self.leases.get(&mac).is_some_and(|l| l.ip == msg.ciaddr()) {
                    self.leases.remove(&mac);
                }
                None
            }
            MessageType::Decline => {
                self.leases.remove(&mac);
                None
            }
            MessageType::Inform => {
                let ip = msg.ciaddr();
                Some(self.reply(cfg, &msg, MessageType::Ack, ip, mac))
            }
            _ => None,
        }
    }

    /// The address `mac` may have right now: its reservation, or its current lease (or
    /// offer) if still valid.
    fn allowed(&self, cfg: &NatConfig, now_ms: u64, mac: [u8; 6]) -> Option<Ipv4Addr> {
        if let Some((_, ip)) = cfg.reservations.iter().find(|(m, _)| *m == mac) {
            return Some(*ip);
        }
        self.leases
            .get(&mac)
            .filter(|l| l.until_ms > now_ms)
            .map(|l| l.ip)
    }

    /// Whether `ip` is in the pool and nobody else holds or reserved it.
    fn free_for(&self, cfg: &NatConfig, now_ms: u64, mac: [u8; 6], ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        n >= u32::from(cfg.dhcp_first)
            && n <= u32::from(cfg.dhcp_last)
            && !cfg.reservations.iter().any(|(m, r)| *r == ip && *m != mac)
            && !self
                .leases
                .iter()
                .any(|(m, l)| *m != mac && l.ip == ip && l.until_ms > now_ms)
    }

    /// The address to offer `mac`: its reservation or lease, the one it asks for if free,
    /// else the lowest free one of the pool. Counts an exhausted pool.
    fn pick(
        &mut self,
        cfg: &NatConfig,
        now_ms: u64,
        mac: [u8; 6],
        requested: Option<Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        if let Some(ip) = self.allowed(cfg, now_ms, mac) {
            return Some(ip);
        }
        if let Some(r) = requested.filter(|&r| self.free_for(cfg, now_ms, mac, r)) {
            return Some(r);
        }
        let found = (u32::from(cfg.dhcp_first)..=u32::from(cfg.dhcp_last))
            .map(Ipv4Addr::from)
            .find(|&ip| self.free_for(cfg, now_ms, mac, ip));
        if found.is_none() {
            self.exhausted += 1;
        }
        found
    }

    fn reply(
        &self,
        cfg: &NatConfig,
        req: &Message,
        kind: MessageType,
        ip: Ipv4Addr,
        mac: [u8; 6],
    ) -> Reply {
        let mut m = Message::new_with_id(
            req.xid(),
            Ipv4Addr::UNSPECIFIED,
            ip,
            cfg.gateway,
            req.giaddr(),
            &mac,
        );
        m.set_opcode(Opcode::BootReply);
        m.set_flags(req.flags());
        if kind == MessageType::Ack && req.opts().msg_type() == Some(MessageType::Inform) {
            m.set_yiaddr(Ipv4Addr::UNSPECIFIED);
        }
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(cfg.gateway));
        if kind != MessageType::Nak {
            let lease = cfg.lease.as_secs().min(u64::from(u32::MAX)) as u32;
            if req.opts().msg_type() != Some(MessageType::Inform) {
                o.insert(DhcpOption::AddressLeaseTime(lease));
                o.insert(DhcpOption::Renewal(lease / 2));
                o.insert(DhcpOption::Rebinding(lease / 8 * 7));
            }
            o.insert(DhcpOption::SubnetMask(cfg.mask()));
            o.insert(DhcpOption::Router(vec![cfg.gateway]));
            o.insert(DhcpOption::DomainNameServer(vec![cfg.dns]));
            o.insert(DhcpOption::BroadcastAddr(cfg.broadcast()));
            o.insert(DhcpOption::InterfaceMtu(cfg.mtu));
        }
        // A client without an address (or asking for it) is answered by broadcast, as are
        // NAKs (RFC 2131 4.1).
        let ciaddr = req.ciaddr();
        let broadcast =
            ciaddr.is_unspecified() || req.flags().broadcast() || kind == MessageType::Nak;
        Reply {
            payload: m.to_vec().unwrap_or_default(),
            broadcast,
            to_ip: if ciaddr.is_unspecified() { ip } else { ciaddr },
            to_mac: mac,
        }
    }
}

/// Whether a DHCP message is safe to hand to `dhcproto`: found by property tests, its decoder
/// panics on a hardware address length over 16 (`chaddr()` slices by it) and, in debug
/// builds, on a few options of the wrong length. A guest's bytes are checked here first:
/// the fixed header, the magic cookie, every option inside the message, and those options'
/// lengths.
fn well_formed(b: &[u8]) -> bool {
    if b.len() < 240 || !matches!(b[0], 1 | 2) || b[2] > 16 || b[236..240] != [99, 130, 83, 99] {
        return false;
    }
    let mut i = 240;
    while i < b.len() {
        match b[i] {
            0 => i += 1,
            255 => return true,
            code => {
                let Some(&len) = b.get(i + 1) else {
                    return false;
                };
                let len = usize::from(len);
                let ok_len = match code {
                    80 => len == 0,
                    94 => len == 3,
                    152..=155 => len == 4,
                    81 => len >= 3,
                    _ => true,
                };
                if !ok_len || i + 2 + len > b.len() {
                    return false;
                }
                i += 2 + len;
            }
        }
    }
    true
}

/// A client message, for tests (and the benchmark's fake clients).
pub fn client_message(
    kind: MessageType,
    xid: u32,
    mac: [u8; 6],
    ciaddr: Ipv4Addr,
    requested: Option<Ipv4Addr>,
    server: Option<Ipv4Addr>,
) -> Vec<u8> {
    let mut m = Message::new_with_id(
        xid,
        ciaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    m.set_flags(Flags::default());
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    if let Some(r) = requested {
        o.insert(DhcpOption::RequestedIpAddress(r));
    }
    if let Some(s) = server {
        o.insert(DhcpOption::ServerIdentifier(s));
    }
    m.to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NatConfig {
        let mut c = NatConfig::for_subnet(
            Ipv4Addr::new(10, 0, 2, 0),
            24,
            "127.0.0.1:53".parse().unwrap(),
        );
        c.reservations
            .push(([0x52, 0x54, 0, 0, 0, 0x10], Ipv4Addr::new(10, 0, 2, 10)));
        c
    }

    fn parse(r: &Reply) -> Message {
        Message::from_bytes(&r.payload).unwrap()
    }

    const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
    const B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
    const R: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x10];

    fn lease(s: &mut DhcpServer, c: &NatConfig, now: u64, mac: [u8; 6]) -> Ipv4Addr {
        let offer = s
            .handle(
                c,
                now,
                &client_message(
                    MessageType::Discover,
                    1,
                    mac,
                    Ipv4Addr::UNSPECIFIED,
                    None,
                    None,
                ),
            )
            .unwrap();
        let o = parse(&offer);
        assert_eq!(o.opts().msg_type(), Some(MessageType::Offer));
        let ip = o.yiaddr();
        let ack = s
            .handle(
                c,
                now,
                &client_message(
                    MessageType::Request,
                    2,
                    mac,
                    Ipv4Addr::UNSPECIFIED,
                    Some(ip),
                    Some(c.gateway),
                ),
            )
            .unwrap();
        let a = parse(&ack);
        assert_eq!(a.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(a.yiaddr(), ip);
        ip
    }

    #[test]
    fn discover_offer_request_ack_with_the_options_a_guest_needs() {
        let c = cfg();
        let mut s = DhcpServer::new();
        let ip = lease(&mut s, &c, 0, A);
        assert_eq!(ip, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(s.lease_of(&A), Some(ip));
        let ack = s
            .handle(
                &c,
                0,
                &client_message(
                    MessageType::Request,
                    3,
                    A,
                    Ipv4Addr::UNSPECIFIED,
                    Some(ip),
                    Some(c.gateway),
                ),
            )
            .unwrap();
        let a = parse(&ack);
        let o = a.opts();
        assert_eq!(
            o.get(OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
        );
        assert_eq!(
            o.get(OptionCode::Router),
            Some(&DhcpOption::Router(vec![c.gateway]))
        );
        assert_eq!(
            o.get(OptionCode::DomainNameServer),
            Some(&DhcpOption::DomainNameServer(vec![c.dns]))
        );
        assert_eq!(
            o.get(OptionCode::InterfaceMtu),
            Some(&DhcpOption::InterfaceMtu(1500))
        );
        assert_eq!(
            o.get(OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(86400))
        );
        assert!(ack.broadcast);
        // A second client gets the next address.
        assert_eq!(lease(&mut s, &c, 0, B), Ipv4Addr::new(10, 0, 2, 16));
        // The reservation, whatever else is free.
        assert_eq!(lease(&mut s, &c, 0, R), Ipv4Addr::new(10, 0, 2, 10));
    }

    #[test]
    fn renewal_keeps_the_address_and_extends_it() {
        let c = cfg();
        let mut s = DhcpServer::new();
        let ip = lease(&mut s, &c, 0, A);
        // RENEWING: ciaddr set, no option 50, unicast reply.
        let later = 43_200_000;
        let r = s
            .handle(
                &c,
                later,
                &client_message(MessageType::Request, 9, A, ip, None, None),
            )
            .unwrap();
        assert_eq!(parse(&r).opts().msg_type(), Some(MessageType::Ack));
        assert!(!r.broadcast);
        assert_eq!(r.to_ip, ip);
        // Still ours after the original lease would have ended.
        assert_eq!(lease(&mut s, &c, 86_400_000 + 1000, A), ip);
    }

    #[test]
    fn a_taken_address_is_naked_and_the_pool_can_run_out() {
        let mut c = cfg();
        c.dhcp_last = Ipv4Addr::new(10, 0, 2, 15);
        let mut s = DhcpServer::new();
        let ip = lease(&mut s, &c, 0, A);
        let r = s
            .handle(
                &c,
                0,
                &client_message(
                    MessageType::Request,
                    4,
                    B,
                    Ipv4Addr::UNSPECIFIED,
                    Some(ip),
                    Some(c.gateway),
                ),
            )
            .unwrap();
        assert_eq!(parse(&r).opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(s.naks, 1);
        assert!(
            s.handle(
                &c,
                0,
                &client_message(
                    MessageType::Discover,
                    5,
                    B,
                    Ipv4Addr::UNSPECIFIED,
                    None,
                    None
                )
            )
            .is_none()
        );
        assert_eq!(s.exhausted, 1);
        // Released: free for B.
        s.handle(
            &c,
            0,
            &client_message(MessageType::Release, 6, A, ip, None, Some(c.gateway)),
        );
        assert_eq!(lease(&mut s, &c, 0, B), ip);
    }

    #[test]
    fn garbage_and_other_servers_get_nothing() {
        let c = cfg();
        let mut s = DhcpServer::new();
        assert!(s.handle(&c, 0, &[1, 2, 3]).is_none());
        assert_eq!(s.malformed, 1);
        let other = Ipv4Addr::new(10, 0, 2, 99);
        assert!(
            s.handle(
                &c,
                0,
                &client_message(
                    MessageType::Request,
                    7,
                    A,
                    Ipv4Addr::UNSPECIFIED,
                    Some(Ipv4Addr::new(10, 0, 2, 20)),
                    Some(other)
                )
            )
            .is_none()
        );
    }
}
