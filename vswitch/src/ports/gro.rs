//! Receive coalescing for tunnel ports (software GRO): consecutive TCP/IPv4 segments of one
//! flow that arrive in one batch of datagrams are merged into one TCP super-frame with a
//! virtio-net header asking for segmentation (TSO4, partial checksum), as the Linux kernel's
//! GRO does for its vxlan device. A guest that takes TSO then gets one frame per batch
//! instead of one per 1450-byte segment; any other receiver gets the segments back from the
//! switch's software segmentation, as it does for a TAP's super-frames.
//!
//! Invariants: only segments that Linux's TCP GRO would merge are merged (same headers but
//! the sequence number, IP length, ID and checksums; in-order sequence numbers; every segment
//! but the last exactly one MSS long; only ACK, with PSH on the last); every merged segment's
//! IPv4 and TCP checksums are checked first (the outer UDP checksum is zero over IPv4, so the
//! inner checksums are all there is); a merged frame never exceeds a 64 KiB IP packet or its
//! buffer.

use etherparse::{Ipv4HeaderSlice, TcpHeaderSlice};

use super::host_io::Received;
use vhost_backends::offload::{Gso, OffloadMeta};

/// The TCP flags byte's bits.
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// A TCP/IPv4 segment that may be merged.
#[derive(Clone, Copy, Debug)]
struct Seg {
    /// Offsets of the IP header, the TCP header and the payload.
    l3: usize,
    l4: usize,
    payload: usize,
    len: usize,
    seq: u32,
    flags: u8,
}

impl Seg {
    fn payload_len(&self) -> usize {
        self.len - self.payload
    }
}

/// `frame` as a mergeable segment: Ethernet (at most one 802.1Q tag), IPv4 without options
/// or fragmentation, TCP with payload and only ACK (and PSH) set, both checksums right.
fn segment(frame: &[u8]) -> Option<Seg> {
    let l3 = match frame.get(12..14)? {
        [0x08, 0x00] => 14,
        [0x81, 0x00] if frame.get(16..18)? == [0x08, 0x00] => 18,
        _ => return None,
    };
    let ip = Ipv4HeaderSlice::from_slice(frame.get(l3..)?).ok()?;
    let ip_len = usize::from(ip.total_len());
    if ip.ihl() != 5
        || ip.protocol().0 != 6
        || ip.more_fragments()
        || ip.fragments_offset().value() != 0
        || l3 + ip_len > frame.len()
    {
        return None;
    }
    if ip.to_header().calc_header_checksum() != ip.header_checksum() {
        return None;
    }
    let l4 = l3 + 20;
    let end = l3 + ip_len;
    let tcp = TcpHeaderSlice::from_slice(frame.get(l4..end)?).ok()?;
    let payload = l4 + usize::from(tcp.data_offset()) * 4;
    let flags = frame[l4 + 13];
    if payload >= end || flags & !(ACK | PSH) != 0 || flags & ACK == 0 {
        return None;
    }
    let sum = tcp.calc_checksum_ipv4(&ip, &frame[payload..end]).ok()?;
    if sum != tcp.checksum() {
        return None;
    }
    Some(Seg {
        l3,
        l4,
        payload,
        len: end,
        seq: tcp.sequence_number(),
        flags,
    })
}

/// Whether `next` continues the run that starts with `head` (in `a`) and has `run_payload`
/// bytes so far, ending with `last`: same link, IP and TCP headers but for the fields a
/// merge rewrites, the next sequence number, and `last` a full MSS without PSH.
fn continues(a: &[u8], head: &Seg, last: &Seg, run_payload: usize, b: &[u8], next: &Seg) -> bool {
    let mss = head.payload_len();
    let same = |r: std::ops::Range<usize>| a.get(r.clone()) == b.get(r);
    next.l3 == head.l3
        && next.payload == head.payload
        && last.payload_len() == mss
        && last.flags & PSH == 0
        && next.payload_len() <= mss
        && next.seq == head.seq.wrapping_add(run_payload as u32)
        && head.payload + run_payload + next.payload_len() - head.l3 <= 65535
        // Ethernet and tags; IP version..TOS; TTL, protocol, addresses.
        && same(0..head.l3 + 2)
        && same(head.l3 + 6..head.l3 + 7)
        && same(head.l3 + 8..head.l3 + 10)
        && same(head.l3 + 12..head.l3 + 20)
        // Ports; acknowledgment, data offset, flags but PSH, window; options.
        && same(head.l4..head.l4 + 4)
        && same(head.l4 + 8..head.l4 + 13)
        && a[head.l4 + 13] & !PSH == b[next.l4 + 13] & !PSH
        && same(head.l4 + 14..head.l4 + 16)
        && same(head.l4 + 20..head.payload)
}

/// Merges runs of consecutive segments among `items` (datagrams of one port, in arrival
/// order, each a frame in `bufs[i]`): the payloads of a run are appended to its first
/// frame, whose headers and virtio-net header are rewritten; the others are removed from
/// `items`. Returns the number of segments merged away.
pub fn coalesce(
    bufs: &mut [Vec<u8>],
    items: &mut arrayvec::ArrayVec<(usize, Received), 32>,
) -> usize {
    let mut merged = 0;
    let mut k = 0;
    // Item k's parse when the run before it already did it (checksums are not checked twice).
    let mut parsed: Option<Option<Seg>> = None;
    while k < items.len() {
        let (hi, hr) = (items[k].0, items[k].1.start);
        let head = match parsed.take() {
            Some(p) => p,
            None => bufs[hi].get(hr..hr + items[k].1.len).and_then(segment),
        };
        let Some(head) = head else {
            k += 1;
            continue;
        };
        let (mut last, mut run_payload, mut count) = (head, head.payload_len(), 1);
        while let Some((ni, ns, nl)) = items.get(k + 1).map(|(i, r)| (*i, r.start, r.len)) {
            let b = &bufs[ni][ns..ns + nl];
            let a = &bufs[hi][hr..hr + head.len];
            let Some(next) = segment(b) else {
                parsed = Some(None);
                break;
            };
            let fits = head.payload + run_payload + next.payload_len() <= bufs[hi].len() - hr;
            if !fits || !continues(a, &head, &last, run_payload, b, &next) {
                parsed = Some(Some(next));
                break;
            }
            // Append the payload to the run's frame (two buffers of `bufs`).
            let at = hr + head.payload + run_payload;
            let piece = next.payload_len();
            let (src, dst) = if ni > hi {
                let (l, r) = bufs.split_at_mut(ni);
                (&r[0], &mut l[hi])
            } else {
                let (l, r) = bufs.split_at_mut(hi);
                (&l[ni], &mut r[0])
            };
            let from = ns + next.payload;
            dst[at..at + piece].copy_from_slice(&src[from..from + piece]);
            run_payload += piece;
            last = next;
            count += 1;
            items.remove(k + 1);
        }
        if count > 1 {
            let len = head.payload + run_payload;
            finish(&mut bufs[hi][hr..hr + len], &head, last.flags & PSH);
            let r = &mut items[k].1;
            r.len = len;
            r.vnet = OffloadMeta {
                csum: Some((head.l4 as u16, 16)),
                gso: Gso::Tcp4,
                ecn: false,
                gso_size: head.payload_len() as u16,
                hdr_len: head.payload as u16,
                l3: head.l3 as u16,
                l4: head.l4 as u16,
            }
            .rx_header();
            merged += count - 1;
        }
        k += 1;
    }
    merged
}

/// Rewrites a merged frame's headers: IP length and checksum, PSH from the last segment,
/// and in the TCP checksum field the pseudo-header sum (the partial checksum the virtio-net
/// header asks the receiver to complete).
fn finish(frame: &mut [u8], head: &Seg, psh: u8) {
    let (l3, l4) = (head.l3, head.l4);
    let ip_len = (frame.len() - l3) as u16;
    frame[l3 + 2..l3 + 4].copy_from_slice(&ip_len.to_be_bytes());
    frame[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
    let ip_sum = !fold(sum_words(&frame[l3..l4], 0));
    frame[l3 + 10..l3 + 12].copy_from_slice(&ip_sum.to_be_bytes());
    frame[l4 + 13] |= psh;
    let tcp_len = (frame.len() - l4) as u32;
    let pseudo = sum_words(&frame[l3 + 12..l3 + 20], 6 + tcp_len);
    frame[l4 + 16..l4 + 18].copy_from_slice(&fold(pseudo).to_be_bytes());
}

/// The 16-bit big-endian words of `b` (even length) summed onto `acc`.
fn sum_words(b: &[u8], acc: u32) -> u32 {
    b.chunks_exact(2)
        .fold(acc, |s, w| s + u32::from(u16::from_be_bytes([w[0], w[1]])))
}

/// Folds a sum into 16 bits, ones' complement.
fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

#[cfg(test)]
mod tests {
    use arrayvec::ArrayVec;
    use etherparse::PacketBuilder;
    use vhost_backends::frame::VNET_HDR_LEN;
    use vhost_backends::offload::{Offloads, segment_tcp};

    use super::*;
    use crate::ports::host_io::RECV_BUF;

    /// Segment `k` of a flow (as a peer's software segmentation makes them): 1398 payload
    /// bytes (the last `last_len`), IP ID 100 + k, PSH on the last.
    fn seg(k: u32, n: u32, last_len: usize, dport: u16) -> Vec<u8> {
        seg_mss(k, n, last_len, dport, 1398)
    }

    /// `seg` with segments of `mss` bytes.
    fn seg_mss(k: u32, n: u32, last_len: usize, dport: u16, mss: u32) -> Vec<u8> {
        let len = if k + 1 == n { last_len } else { mss as usize };
        let payload: Vec<u8> = (0..len).map(|i| (i as u32 * 7 + k) as u8).collect();
        let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, dport, 1000 + k * mss, 500)
            .ack(77);
        if k + 1 == n {
            b = b.psh();
        }
        let mut out = Vec::new();
        b.write(&mut out, &payload).unwrap();
        // The IP ID the segmentation gives segment k.
        out[14 + 4..14 + 6].copy_from_slice(&(100 + k as u16).to_be_bytes());
        out[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
        let sum = !fold(sum_words(&out[14..34], 0));
        out[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
        out
    }

    /// The frames in buffers as the endpoint holds them (behind an 8-byte header).
    fn batch(frames: &[Vec<u8>]) -> (Vec<Vec<u8>>, ArrayVec<(usize, Received), 32>) {
        let mut bufs = Vec::new();
        let mut items = ArrayVec::new();
        for (i, f) in frames.iter().enumerate() {
            let mut b = vec![0u8; RECV_BUF];
            b[8..8 + f.len()].copy_from_slice(f);
            bufs.push(b);
            let r = Received {
                vnet: [0; VNET_HDR_LEN],
                start: 8,
                len: f.len(),
            };
            items.push((i, r));
        }
        (bufs, items)
    }

    fn frame_of(bufs: &[Vec<u8>], item: &(usize, Received)) -> Vec<u8> {
        bufs[item.0][item.1.start..item.1.start + item.1.len].to_vec()
    }

    /// Cut back into segments by the switch's own segmentation: the original frames.
    fn resegmented(frame: &[u8], vnet: &[u8; VNET_HDR_LEN]) -> Vec<Vec<u8>> {
        let meta = OffloadMeta::from_tx_header(vnet, frame, frame.len(), Offloads::ALL).unwrap();
        let mut out = Vec::new();
        segment_tcp(frame, &meta, &mut Vec::new(), |s| out.push(s.to_vec())).unwrap();
        out
    }

    #[test]
    fn a_run_of_segments_becomes_one_super_frame_that_cuts_back_into_them() {
        let frames: Vec<Vec<u8>> = (0..5).map(|k| seg(k, 5, 300, 80)).collect();
        let (mut bufs, mut items) = batch(&frames);
        assert_eq!(coalesce(&mut bufs, &mut items), 4);
        assert_eq!(items.len(), 1);
        let merged = frame_of(&bufs, &items[0]);
        assert_eq!(merged.len(), 54 + 4 * 1398 + 300);
        let vnet = items[0].1.vnet;
        assert_eq!(vnet[0], 1, "a partial checksum");
        assert_eq!(vnet[1], 1, "TCP/IPv4 segmentation");
        assert_eq!(u16::from_le_bytes([vnet[4], vnet[5]]), 1398);
        assert_eq!(resegmented(&merged, &vnet), frames);
    }

    #[test]
    fn only_what_tcp_gro_would_merge_is_merged() {
        // Out of order: 0, 2, 1 -> nothing merges past the gap.
        let f: Vec<_> = [0, 2, 1].iter().map(|&k| seg(k, 3, 1398, 80)).collect();
        let (mut bufs, mut items) = batch(&f);
        assert_eq!(coalesce(&mut bufs, &mut items), 0);
        // Another flow in between ends the run; a bad checksum is never merged.
        let mut bad = seg(2, 4, 1398, 80);
        let at = bad.len() - 1;
        bad[at] ^= 0xff;
        let f = vec![
            seg(0, 4, 1398, 80),
            seg(1, 4, 1398, 80),
            seg(0, 4, 1398, 81),
            bad,
        ];
        let (mut bufs, mut items) = batch(&f);
        assert_eq!(coalesce(&mut bufs, &mut items), 1);
        assert_eq!(items.len(), 3);
        assert_eq!(
            frame_of(&bufs, &items[2]),
            f[3],
            "the bad segment as it came"
        );
        // PSH ends a run: the segment after it starts a new one.
        let f = vec![
            seg(0, 2, 1398, 80),
            seg(1, 2, 1398, 80),
            seg(2, 4, 1398, 80),
        ];
        let (mut bufs, mut items) = batch(&f);
        assert_eq!(coalesce(&mut bufs, &mut items), 1);
        assert_eq!(items.len(), 2);
        // A short segment that is not the last ends the run too; non-TCP stays as it is.
        let f = vec![seg(0, 1, 100, 80), seg(1, 3, 1398, 80), vec![0xffu8; 60]];
        let (mut bufs, mut items) = batch(&f);
        assert_eq!(coalesce(&mut bufs, &mut items), 0);
        assert_eq!(frame_of(&bufs, &items[2]), f[2]);
    }

    #[test]
    fn a_run_stops_short_of_a_64k_ip_packet() {
        // A jumbo underlay's segments (8948 bytes): 32 of them make 286 KiB, in 5 frames.
        let frames: Vec<Vec<u8>> = (0..32).map(|k| seg_mss(k, 32, 8948, 80, 8948)).collect();
        let (mut bufs, mut items) = batch(&frames);
        assert_eq!(coalesce(&mut bufs, &mut items), 32 - 5);
        assert_eq!(items.len(), 5);
        for it in &items {
            let f = frame_of(&bufs, it);
            assert!(f.len() - 14 <= 65535);
        }
        let all: Vec<Vec<u8>> = items
            .iter()
            .flat_map(|it| {
                let f = frame_of(&bufs, it);
                if it.1.vnet[1] == 0 {
                    vec![f]
                } else {
                    resegmented(&f, &it.1.vnet)
                }
            })
            .collect();
        assert_eq!(all, frames);
    }
}
