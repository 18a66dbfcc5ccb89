//! Guest TCP: terminated by smoltcp (one listening socket per new flow) and relayed through
//! a host stream; inbound port forwards accepted on host listeners; both pumped each poll.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;

use smoltcp::socket::tcp;
use smoltcp::wire::{IpEndpoint, IpListenEndpoint};

use super::Gateway;
use super::flows::*;

impl Gateway {
    /// A guest opens a connection: a host connection is started and a smoltcp socket made
    /// to accept the SYN as the destination. Refused ones get no socket (smoltcp resets).
    pub(super) fn tcp_syn(&mut self, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) {
        let key = (src, sport, dst, dport);
        if self.tcp.contains_key(&key) {
            return;
        }
        let Some(target) = self.host_target(dst, dport) else {
            return;
        };
        if !self.allowed(&target) {
            self.counters.nat_restricted.fetch_add(1, Relaxed);
            return;
        }
        if !self.room_for(src) {
            return;
        }
        let host = match connect_nonblocking(target) {
            Ok(h) => h,
            Err(_) => {
                self.counters.nat_connect_errors.fetch_add(1, Relaxed);
                return;
            }
        };
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_RX_BUF]),
            tcp::SocketBuffer::new(vec![0; TCP_TX_BUF]),
        );
        s.set_nagle_enabled(false);
        s.set_ack_delay(None);
        s.set_timeout(Some(smoltcp::time::Duration::from_secs(120)));
        if s.listen(IpListenEndpoint {
            addr: Some(dst.into()),
            port: dport,
        })
        .is_err()
        {
            return;
        }
        let handle = self.sockets.add(s);
        self.counters.nat_tcp_flows.fetch_add(1, Relaxed);
        self.tcp.insert(
            key,
            TcpFlow {
                handle,
                host,
                connected: false,
                to_host: Vec::new(),
                host_eof: false,
                guest_eof_passed: false,
                guest: src,
            },
        );
    }

    pub(super) fn accept_forwards(&mut self) {
        let mut new = Vec::new();
        for (l, guest) in &self.tcp_forwards {
            while let Ok((s, _)) = l.accept() {
                new.push((s, *guest));
            }
        }
        for (host, guest) in new {
            if host.set_nonblocking(true).is_err() || !self.room_for(IpAddr::V4(*guest.ip())) {
                continue;
            }
            let port = self.ephemeral_port();
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; TCP_RX_BUF]),
                tcp::SocketBuffer::new(vec![0; TCP_TX_BUF]),
            );
            s.set_nagle_enabled(false);
            s.set_ack_delay(None);
            s.set_timeout(Some(smoltcp::time::Duration::from_secs(120)));
            let remote = IpEndpoint::new((*guest.ip()).into(), guest.port());
            let local = IpListenEndpoint {
                addr: Some(self.cfg.gateway.into()),
                port,
            };
            if s.connect(self.iface.context(), remote, local).is_err() {
                continue;
            }
            let handle = self.sockets.add(s);
            self.counters.nat_tcp_flows.fetch_add(1, Relaxed);
            self.tcp.insert(
                (
                    IpAddr::V4(*guest.ip()),
                    guest.port(),
                    IpAddr::V4(self.cfg.gateway),
                    port,
                ),
                TcpFlow {
                    handle,
                    host,
                    connected: true,
                    to_host: Vec::new(),
                    host_eof: false,
                    guest_eof_passed: false,
                    guest: IpAddr::V4(*guest.ip()),
                },
            );
        }
        // UDP forwards: datagrams from host peers to the guest, each peer behind a port.
        let mut datagrams = Vec::new();
        let buf = &mut self.scratch;
        for (i, f) in self.udp_forwards.iter().enumerate() {
            while let Ok((n, peer)) = f.sock.recv_from(buf) {
                datagrams.push((i, peer, buf[..n].to_vec()));
            }
        }
        for (i, peer, data) in datagrams {
            let port = match self.udp_forwards[i].by_peer.get(&peer) {
                Some(p) => *p,
                None => {
                    let p = self.ephemeral_port();
                    let f = &mut self.udp_forwards[i];
                    f.by_peer.insert(peer, p);
                    f.by_port.insert(p, peer);
                    p
                }
            };
            let guest = self.udp_forwards[i].guest;
            self.udp_to_guest(
                IpAddr::V4(self.cfg.gateway),
                port,
                IpAddr::V4(*guest.ip()),
                guest.port(),
                &data,
            );
        }
    }

    pub(super) fn ephemeral_port(&mut self) -> u16 {
        let p = self.next_port;
        self.next_port = if p == u16::MAX { 49152 } else { p + 1 };
        p
    }

    pub(super) fn pump_tcp(&mut self) {
        let mut gone = Vec::new();
        for (key, f) in self.tcp.iter_mut() {
            let s = self.sockets.get_mut::<tcp::Socket>(f.handle);
            if !f.connected {
                match f.host.take_error() {
                    Ok(None) if f.host.peer_addr().is_ok() => f.connected = true,
                    Ok(None) => {}
                    _ => {
                        self.counters.nat_connect_errors.fetch_add(1, Relaxed);
                        s.abort();
                        gone.push(*key);
                        continue;
                    }
                }
            }
            // Guest -> host.
            while s.can_recv() && f.to_host.len() < TO_HOST_MAX {
                let to_host = &mut f.to_host;
                let got = s.recv(|b| {
                    let n = b.len().min(TO_HOST_MAX - to_host.len());
                    to_host.extend_from_slice(&b[..n]);
                    (n, n)
                });
                if !matches!(got, Ok(n) if n > 0) {
                    break;
                }
            }
            let mut broken = false;
            if f.connected && !f.to_host.is_empty() {
                match f.host.write(&f.to_host) {
                    Ok(n) => {
                        f.to_host.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => broken = true,
                }
            }
            // The guest's FIN, once everything before it reached the host.
            let guest_done = matches!(
                s.state(),
                tcp::State::CloseWait
                    | tcp::State::LastAck
                    | tcp::State::Closing
                    | tcp::State::TimeWait
            );
            if f.connected && !f.guest_eof_passed && f.to_host.is_empty() && guest_done {
                let _ = f.host.shutdown(std::net::Shutdown::Write);
                f.guest_eof_passed = true;
            }
            // Host -> guest, straight into the socket's send buffer.
            while f.connected && !f.host_eof && !broken && s.can_send() {
                let host = &mut f.host;
                let r = s.send(|b| match host.read(b) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match r {
                    Ok(Ok(0)) => {
                        f.host_eof = true;
                        s.close();
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Ok(Err(_)) => broken = true,
                    Err(_) => break,
                }
            }
            if broken {
                s.abort();
            }
            let state = s.state();
            if broken || state == tcp::State::Closed || state == tcp::State::TimeWait {
                gone.push(*key);
            }
        }
        for k in gone {
            if let Some(f) = self.tcp.remove(&k) {
                // Let smoltcp send what it still has (a reset, a FIN) before it goes.
                let st = self.sockets.get::<tcp::Socket>(f.handle).state();
                if st == tcp::State::Closed || st == tcp::State::TimeWait {
                    self.sockets.remove(f.handle);
                } else {
                    self.closing.push(f.handle);
                }
            }
        }
        self.closing.retain(|h| {
            let st = self.sockets.get::<tcp::Socket>(*h).state();
            if st == tcp::State::Closed || st == tcp::State::TimeWait {
                self.sockets.remove(*h);
                false
            } else {
                true
            }
        });
    }
}
