//! Checksum and segmentation offloads carried in the virtio-net header.
//!
//! A guest that negotiated CSUM/HOST_TSO hands over frames with a partial checksum and TCP
//! super-frames of up to 64 KiB; a receiver that negotiated GUEST_CSUM/GUEST_TSO takes them as
//! they are, so the big frame crosses the switch in one copy and neither guest segments or
//! checksums. For a receiver that cannot take them, the frame is completed here: the checksum
//! filled in, or the super-frame cut into MSS-sized TCP segments. Pure functions over bytes.

use etherparse::checksum::Sum16BitWords;
use etherparse::{IpNumber, Ipv4Header, Ipv6Header, TcpHeader};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
};

/// `flags`: the checksum from `csum_start` to the end is partial and must be completed.
pub const HDR_F_NEEDS_CSUM: u8 = 1;
/// `gso_type` values.
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_ECN: u8 = 0x80;
/// Smallest segment size accepted (bounds the work a hostile `gso_size` can cause).
pub const MIN_GSO_SIZE: u16 = 64;

/// Which offloads one side handles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offloads {
    pub csum: bool,
    pub tso4: bool,
    pub tso6: bool,
    pub ecn: bool,
}

impl Offloads {
    /// Everything.
    pub const ALL: Offloads = Offloads {
        csum: true,
        tso4: true,
        tso6: true,
        ecn: true,
    };

    /// What the device accepts from a guest with `features` acked (CSUM, HOST_TSO*).
    pub fn from_guest_tx(features: u64) -> Offloads {
        let has = |b: u32| features & (1u64 << b) != 0;
        Offloads {
            csum: has(VIRTIO_NET_F_CSUM),
            tso4: has(VIRTIO_NET_F_HOST_TSO4),
            tso6: has(VIRTIO_NET_F_HOST_TSO6),
            ecn: has(VIRTIO_NET_F_HOST_ECN),
        }
    }

    /// What a guest with `features` acked accepts on RX (GUEST_CSUM, GUEST_TSO*).
    pub fn for_guest_rx(features: u64) -> Offloads {
        let has = |b: u32| features & (1u64 << b) != 0;
        Offloads {
            csum: has(VIRTIO_NET_F_GUEST_CSUM),
            tso4: has(VIRTIO_NET_F_GUEST_TSO4),
            tso6: has(VIRTIO_NET_F_GUEST_TSO6),
            ecn: has(VIRTIO_NET_F_GUEST_ECN),
        }
    }
}

/// TCP segmentation requested for a frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Gso {
    #[default]
    None,
    Tcp4,
    Tcp6,
}

/// The validated offload part of a frame's virtio-net header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffloadMeta {
    /// (csum_start, csum_offset) of a partial checksum still to be completed.
    pub csum: Option<(u16, u16)>,
    pub gso: Gso,
    /// ECN (CWR) must be kept on the first segment only.
    pub ecn: bool,
    /// Segment payload size (MSS) for `gso`.
    pub gso_size: u16,
    /// Length of the Ethernet + IP + TCP headers of a `gso` frame.
    pub hdr_len: u16,
    /// Offset of the IP header (after Ethernet and VLAN tags).
    pub l3: u16,
    /// Offset of the TCP header.
    pub l4: u16,
}

/// The header asks for something not negotiated, or does not match the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadOffload;

fn ip_offset(head: &[u8]) -> Option<(usize, u16)> {
    let mut off = 12;
    for _ in 0..3 {
        let et = u16::from_be_bytes([*head.get(off)?, *head.get(off + 1)?]);
        if et == 0x8100 || et == 0x88a8 {
            off += 4;
            continue;
        }
        return Some((off + 2, et));
    }
    None
}

impl OffloadMeta {
    /// Is anything to be done for this frame?
    pub fn is_plain(&self) -> bool {
        self.csum.is_none() && self.gso == Gso::None
    }

    /// Whether a TX header asks for no offload at all (no checksum, no segmentation).
    #[inline]
    pub fn asks_nothing(hdr: &[u8; 12]) -> bool {
        hdr[0] & HDR_F_NEEDS_CSUM == 0 && hdr[1] == GSO_NONE
    }

    /// Validates a guest's TX header (`hdr`) against what it negotiated (`ok`), checking the
    /// headers of a GSO frame in `head` (the copied start of the frame of `len` bytes).
    #[inline]
    pub fn from_tx_header(
        hdr: &[u8; 12],
        head: &[u8],
        len: usize,
        ok: Offloads,
    ) -> Result<OffloadMeta, BadOffload> {
        // Most frames ask for nothing: decided here, inlined into the caller.
        if Self::asks_nothing(hdr) {
            return Ok(OffloadMeta::default());
        }
        Self::from_tx_header_offloaded(hdr, head, len, ok)
    }

    /// `from_tx_header` for a header that asks for a checksum or segmentation.
    #[inline(never)]
    fn from_tx_header_offloaded(
        hdr: &[u8; 12],
        head: &[u8],
        len: usize,
        ok: Offloads,
    ) -> Result<OffloadMeta, BadOffload> {
        let flags = hdr[0];
        let gso_type = hdr[1];
        let gso_size = u16::from_le_bytes([hdr[4], hdr[5]]);
        let csum_start = u16::from_le_bytes([hdr[6], hdr[7]]);
        let csum_offset = u16::from_le_bytes([hdr[8], hdr[9]]);
        let mut meta = OffloadMeta::default();
        if flags & HDR_F_NEEDS_CSUM != 0 {
            if !ok.csum || usize::from(csum_start) + usize::from(csum_offset) + 2 > len {
                return Err(BadOffload);
            }
            meta.csum = Some((csum_start, csum_offset));
        }
        meta.ecn = gso_type & GSO_ECN != 0;
        meta.gso = match gso_type & !GSO_ECN {
            GSO_NONE if !meta.ecn => return Ok(meta),
            GSO_TCPV4 if ok.tso4 => Gso::Tcp4,
            GSO_TCPV6 if ok.tso6 => Gso::Tcp6,
            _ => return Err(BadOffload),
        };
        if (meta.ecn && !ok.ecn) || gso_size < MIN_GSO_SIZE {
            return Err(BadOffload);
        }
        let (l3, et) = ip_offset(head).ok_or(BadOffload)?;
        let l4 = match meta.gso {
            Gso::Tcp4 if et == 0x0800 => {
                let (ip, _) = Ipv4Header::from_slice(head.get(l3..).ok_or(BadOffload)?)
                    .map_err(|_| BadOffload)?;
                if ip.protocol != IpNumber::TCP
                    || ip.more_fragments
                    || ip.fragment_offset.value() != 0
                {
                    return Err(BadOffload);
                }
                l3 + ip.header_len()
            }
            Gso::Tcp6 if et == 0x86dd => {
                let (ip, _) = Ipv6Header::from_slice(head.get(l3..).ok_or(BadOffload)?)
                    .map_err(|_| BadOffload)?;
                if ip.next_header != IpNumber::TCP {
                    return Err(BadOffload);
                }
                l3 + Ipv6Header::LEN
            }
            _ => return Err(BadOffload),
        };
        let (tcp, _) =
            TcpHeader::from_slice(head.get(l4..).ok_or(BadOffload)?).map_err(|_| BadOffload)?;
        let hdr_len = l4 + tcp.header_len();
        // Segmentation needs the partial checksum on the TCP header, and some payload.
        if meta.csum != Some((l4 as u16, 16)) || hdr_len >= len {
            return Err(BadOffload);
        }
        meta.gso_size = gso_size;
        meta.hdr_len = hdr_len as u16;
        meta.l3 = l3 as u16;
        meta.l4 = l4 as u16;
        Ok(meta)
    }

    /// Whether a receiver handling `rx` takes this frame as it is.
    #[inline]
    pub fn fits(&self, rx: Offloads) -> bool {
        (self.csum.is_none() || rx.csum)
            && match self.gso {
                Gso::None => true,
                Gso::Tcp4 => rx.tso4 && (!self.ecn || rx.ecn),
                Gso::Tcp6 => rx.tso6 && (!self.ecn || rx.ecn),
            }
    }

    /// The receive-side virtio-net header carrying this frame's offloads (num_buffers 0).
    /// The same offloads for the frame with its bytes after the VLAN tags moved by `shift`
    /// (a tag pushed: +4, popped: -4).
    #[inline]
    pub fn shifted(&self, shift: i32) -> OffloadMeta {
        let mv = |v: u16| (i32::from(v) + shift).clamp(0, i32::from(u16::MAX)) as u16;
        let mut m = *self;
        if shift == 0 {
            return m;
        }
        m.csum = self.csum.map(|(start, off)| (mv(start), off));
        if self.gso != Gso::None {
            m.hdr_len = mv(self.hdr_len);
        }
        m.l3 = mv(self.l3);
        m.l4 = mv(self.l4);
        m
    }

    #[inline]
    pub fn rx_header(&self) -> [u8; 12] {
        let mut h = [0u8; 12];
        if let Some((start, off)) = self.csum {
            h[0] = HDR_F_NEEDS_CSUM;
            h[6..8].copy_from_slice(&start.to_le_bytes());
            h[8..10].copy_from_slice(&off.to_le_bytes());
        }
        if self.gso != Gso::None {
            h[1] = match self.gso {
                Gso::Tcp4 => GSO_TCPV4,
                _ => GSO_TCPV6,
            } | if self.ecn { GSO_ECN } else { 0 };
            h[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
            h[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        }
        h
    }
}

/// Completes a partial checksum: the ones' complement sum from `start` to the end of `frame`
/// (the field at `start + offset` holds the pseudo-header sum) is stored at `start + offset`.
pub fn complete_checksum(frame: &mut [u8], start: u16, offset: u16) -> Result<(), BadOffload> {
    let (s, at) = (usize::from(start), usize::from(start) + usize::from(offset));
    if at + 2 > frame.len() {
        return Err(BadOffload);
    }
    // etherparse sums in native byte order; `to_be` turns the result into the wire value.
    let sum = Sum16BitWords::new()
        .add_slice(&frame[s..])
        .to_ones_complement_with_no_zero()
        .to_be();
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// Cuts a TCP super-frame into segments of at most `meta.gso_size` payload bytes, each with
/// complete IP and TCP headers and checksums, calling `out` with each finished frame (built in
/// `buf`). Returns the number of segments.
pub fn segment_tcp(
    frame: &[u8],
    meta: &OffloadMeta,
    buf: &mut Vec<u8>,
    mut out: impl FnMut(&[u8]),
) -> Result<usize, BadOffload> {
    let (l3, l4, hl) = (
        usize::from(meta.l3),
        usize::from(meta.l4),
        usize::from(meta.hdr_len),
    );
    if hl > frame.len() || meta.gso_size < MIN_GSO_SIZE || meta.gso == Gso::None {
        return Err(BadOffload);
    }
    let (tcp, _) = TcpHeader::from_slice(&frame[l4..hl]).map_err(|_| BadOffload)?;
    let payload = &frame[hl..];
    let n = payload.len().div_ceil(usize::from(meta.gso_size));
    let ip4 = match meta.gso {
        Gso::Tcp4 => Some(
            Ipv4Header::from_slice(&frame[l3..l4])
                .map_err(|_| BadOffload)?
                .0,
        ),
        _ => None,
    };
    let ip6 = match meta.gso {
        Gso::Tcp6 => Some(
            Ipv6Header::from_slice(&frame[l3..l4])
                .map_err(|_| BadOffload)?
                .0,
        ),
        _ => None,
    };
    for (i, chunk) in payload.chunks(usize::from(meta.gso_size)).enumerate() {
        let last = i + 1 == n;
        let mut t = tcp.clone();
        t.sequence_number = tcp
            .sequence_number
            .wrapping_add((i * usize::from(meta.gso_size)) as u32);
        if !last {
            t.fin = false;
            t.psh = false;
        }
        if i > 0 {
            t.cwr = false;
        }
        buf.clear();
        buf.extend_from_slice(&frame[..l3]);
        let tcp_len = t.header_len() + chunk.len();
        if let Some(ip) = &ip4 {
            let mut h = ip.clone();
            h.total_len = (h.header_len() + tcp_len) as u16;
            h.identification = ip.identification.wrapping_add(i as u16);
            h.header_checksum = h.calc_header_checksum();
            t.checksum = t.calc_checksum_ipv4(&h, chunk).map_err(|_| BadOffload)?;
            h.write(buf).map_err(|_| BadOffload)?;
        } else if let Some(ip) = &ip6 {
            let mut h = ip.clone();
            h.payload_length = tcp_len as u16;
            t.checksum = t.calc_checksum_ipv6(&h, chunk).map_err(|_| BadOffload)?;
            h.write(buf).map_err(|_| BadOffload)?;
        }
        t.write(buf).map_err(|_| BadOffload)?;
        buf.extend_from_slice(chunk);
        out(buf);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    /// An IPv4 TCP frame with `payload`, as a guest hands it for TSO: partial checksum (the
    /// pseudo-header sum) in the TCP checksum field.
    fn tso_frame(payload: &[u8], v6: bool) -> (Vec<u8>, [u8; 12]) {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let b = if v6 {
            b.ipv6([0xfd; 16], [0xfe; 16], 64)
        } else {
            b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        };
        let b = b.tcp(40000, 5201, 1_000_000, 512).ack(77).psh();
        let mut f = Vec::new();
        b.write(&mut f, payload).unwrap();
        let (l4, hdr_len) = if v6 { (54u16, 74u16) } else { (34u16, 54u16) };
        // Replace the full checksum with the partial one a guest would leave.
        let tcp_len = (f.len() - usize::from(l4)) as u16;
        let mut s = Sum16BitWords::new();
        s = if v6 {
            s.add_16bytes([0xfd; 16]).add_16bytes([0xfe; 16])
        } else {
            s.add_4bytes([10, 0, 0, 1]).add_4bytes([10, 0, 0, 2])
        };
        let partial = s
            .add_2bytes([0, 6])
            .add_2bytes(tcp_len.to_be_bytes())
            .ones_complement()
            .to_be();
        let at = usize::from(l4) + 16;
        f[at..at + 2].copy_from_slice(&(!partial).to_be_bytes());
        let mut h = [0u8; 12];
        h[0] = HDR_F_NEEDS_CSUM;
        h[1] = if v6 { GSO_TCPV6 } else { GSO_TCPV4 };
        h[2..4].copy_from_slice(&hdr_len.to_le_bytes());
        h[4..6].copy_from_slice(&1000u16.to_le_bytes());
        h[6..8].copy_from_slice(&l4.to_le_bytes());
        h[8..10].copy_from_slice(&16u16.to_le_bytes());
        (f, h)
    }

    #[test]
    fn tso_frames_are_segmented_with_valid_checksums() {
        for v6 in [false, true] {
            let payload: Vec<u8> = (0..3500u32).map(|i| (i * 7) as u8).collect();
            let (f, h) = tso_frame(&payload, v6);
            let meta =
                OffloadMeta::from_tx_header(&h, &f[..f.len().min(256)], f.len(), Offloads::ALL)
                    .unwrap();
            assert!(!meta.fits(Offloads {
                csum: true,
                ..Offloads::default()
            }));
            assert!(meta.fits(Offloads::ALL));
            let mut buf = Vec::new();
            let mut segs = Vec::new();
            let n = segment_tcp(&f, &meta, &mut buf, |s| segs.push(s.to_vec())).unwrap();
            assert_eq!(n, 4);
            let mut joined = Vec::new();
            for (i, s) in segs.iter().enumerate() {
                let p = SlicedPacket::from_ethernet(s).unwrap();
                let Some(TransportSlice::Tcp(t)) = p.transport else {
                    panic!("tcp")
                };
                assert_eq!(t.sequence_number(), 1_000_000 + 1000 * i as u32);
                assert_eq!(t.psh(), i == 3, "PSH on the last segment only");
                // Verify the checksum by recomputing it from the parsed segment.
                let hdr = t.to_header();
                let want = match p.net.unwrap() {
                    etherparse::NetSlice::Ipv4(ip) => {
                        assert_eq!(ip.header().identification(), ip.header().identification());
                        hdr.calc_checksum_ipv4(&ip.header().to_header(), t.payload())
                            .unwrap()
                    }
                    etherparse::NetSlice::Ipv6(ip) => hdr
                        .calc_checksum_ipv6(&ip.header().to_header(), t.payload())
                        .unwrap(),
                    _ => panic!("ip"),
                };
                assert_eq!(t.checksum(), want, "segment {i} checksum (v6={v6})");
                joined.extend_from_slice(t.payload());
            }
            assert_eq!(joined, payload);
        }
    }

    #[test]
    fn partial_checksum_is_completed() {
        let (mut f, h) = tso_frame(&[5u8; 301], false);
        let meta = OffloadMeta::from_tx_header(
            &[h[0], 0, 0, 0, 0, 0, h[6], h[7], h[8], h[9], 0, 0],
            &f,
            f.len(),
            Offloads::ALL,
        )
        .unwrap();
        let (s, o) = meta.csum.unwrap();
        complete_checksum(&mut f, s, o).unwrap();
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(TransportSlice::Tcp(t)) = p.transport else {
            panic!("tcp")
        };
        let etherparse::NetSlice::Ipv4(ip) = p.net.unwrap() else {
            panic!("ip")
        };
        assert_eq!(
            t.checksum(),
            t.to_header()
                .calc_checksum_ipv4(&ip.header().to_header(), t.payload())
                .unwrap()
        );
    }

    #[test]
    fn headers_that_were_not_negotiated_or_do_not_match_are_refused() {
        let (f, h) = tso_frame(&[1u8; 3000], false);
        let head = &f[..256];
        let none = Offloads::default();
        assert_eq!(
            OffloadMeta::from_tx_header(&h, head, f.len(), none),
            Err(BadOffload)
        );
        let csum_only = Offloads { csum: true, ..none };
        assert_eq!(
            OffloadMeta::from_tx_header(&h, head, f.len(), csum_only),
            Err(BadOffload)
        );
        let mut bad = h;
        bad[1] = GSO_TCPV6; // says IPv6, frame is IPv4
        assert_eq!(
            OffloadMeta::from_tx_header(&bad, head, f.len(), Offloads::ALL),
            Err(BadOffload)
        );
        let mut tiny = h;
        tiny[4..6].copy_from_slice(&1u16.to_le_bytes()); // gso_size 1
        assert_eq!(
            OffloadMeta::from_tx_header(&tiny, head, f.len(), Offloads::ALL),
            Err(BadOffload)
        );
        let mut past = h;
        past[6..8].copy_from_slice(&u16::MAX.to_le_bytes()); // checksum past the end
        assert_eq!(
            OffloadMeta::from_tx_header(&past, head, f.len(), Offloads::ALL),
            Err(BadOffload)
        );
        let mut udp = h;
        udp[1] = 3; // UFO: never offered
        assert_eq!(
            OffloadMeta::from_tx_header(&udp, head, f.len(), Offloads::ALL),
            Err(BadOffload)
        );
        // Hostile bytes never panic.
        for len in 0..80 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37) as u8).collect();
            let _ = OffloadMeta::from_tx_header(&h, &junk, 3000, Offloads::ALL);
        }
    }

    #[test]
    fn rx_header_round_trips_the_offloads() {
        let (f, h) = tso_frame(&[1u8; 3000], false);
        let meta = OffloadMeta::from_tx_header(&h, &f[..256], f.len(), Offloads::ALL).unwrap();
        assert_eq!(meta.rx_header()[..10], h[..10]);
    }
}
