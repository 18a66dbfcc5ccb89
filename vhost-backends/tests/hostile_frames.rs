//! Hostile frames and virtio-net headers: checking, completing and segmenting never panic,
//! and what is accepted is consistent with the bytes.

use proptest::prelude::*;
use vhost_backends::frame::{FrameInfo, SegStore, TxFrame, VNET_HDR_LEN, parse_host_frame};
use vhost_backends::offload::{self, OffloadMeta, Offloads};

/// `n` cases, or `PROPTEST_CASES` when set (long runs outside CI).
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(n),
    )
}

proptest! {
    #![proptest_config(cases(4000))]

    #[test]
    fn any_header_and_frame(
        hdr in any::<[u8; VNET_HDR_LEN]>(),
        mut frame in proptest::collection::vec(any::<u8>(), 0..400),
        all in any::<bool>(),
    ) {
        let offloads = if all { Offloads::ALL } else { Offloads::default() };
        let len = frame.len();
        let mut store = SegStore::new();
        let info: Result<FrameInfo, _> = parse_host_frame(hdr, &mut frame, offloads, &mut store);
        if let Ok(info) = info {
            let f = TxFrame::new(&info, &store);
            prop_assert_eq!(f.len(), len);
            prop_assert!(len >= 14);
            prop_assert_eq!(f.to_vec().len(), len);
            let meta = *f.meta();
            if !all {
                prop_assert!(meta.is_plain());
            }
            // Completing the offloads in software never panics, and segments are no larger
            // than the headers plus one MSS.
            let mut whole = f.to_vec();
            let mut seg = Vec::new();
            if meta.gso != offload::Gso::None {
                let mut max = 0;
                let _ = offload::segment_tcp(&whole, &meta, &mut seg, |s| max = max.max(s.len()));
                prop_assert!(max <= usize::from(meta.hdr_len) + usize::from(meta.gso_size));
            } else if let Some((start, off)) = meta.csum {
                let _ = offload::complete_checksum(&mut whole, start, off);
            }
        }
    }

    #[test]
    fn any_tx_header_meta(hdr in any::<[u8; 12]>(), head in proptest::collection::vec(any::<u8>(), 0..200), len in 0usize..70000) {
        if let Ok(m) = OffloadMeta::from_tx_header(&hdr, &head, len, Offloads::ALL) {
            if let Some((s, o)) = m.csum {
                prop_assert!(usize::from(s) + usize::from(o) + 2 <= len);
            }
            let _ = m.shifted(4).rx_header();
            let _ = m.shifted(-4).rx_header();
        }
    }

    /// TCP super-frames with random segment sizes and lengths: cut into the right number of
    /// segments, each a valid IPv4/TCP packet no longer than headers + MSS, payload intact.
    #[test]
    fn tcp_super_frames_segment_exactly(
        payload in proptest::collection::vec(any::<u8>(), 1..6000),
        mss in 0u16..3000,
        ecn in any::<bool>(),
    ) {
        let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1000, 80, 7, 65535)
            .ack(1);
        let mut frame = Vec::new();
        b.write(&mut frame, &payload).unwrap();
        let (l4, hlen) = (34u16, 54u16);
        let mut hdr = [0u8; 12];
        hdr[0] = offload::HDR_F_NEEDS_CSUM;
        hdr[1] = offload::GSO_TCPV4 | if ecn { offload::GSO_ECN } else { 0 };
        hdr[2..4].copy_from_slice(&hlen.to_le_bytes());
        hdr[4..6].copy_from_slice(&mss.to_le_bytes());
        hdr[6..8].copy_from_slice(&l4.to_le_bytes());
        hdr[8..10].copy_from_slice(&16u16.to_le_bytes());
        let len = frame.len();
        let mut store = SegStore::new();
        let Ok(info) = parse_host_frame(hdr, &mut frame, Offloads::ALL, &mut store) else {
            // Refused only for a segment size below the minimum.
            prop_assert!(mss < offload::MIN_GSO_SIZE);
            return Ok(());
        };
        let f = TxFrame::new(&info, &store);
        let meta = *f.meta();
        prop_assert_eq!(f.len(), len);
        let whole = f.to_vec();
        let mut seg = Vec::new();
        let mut got = Vec::new();
        let mut count = 0;
        let n = offload::segment_tcp(&whole, &meta, &mut seg, |s| {
            count += 1;
            let p = etherparse::SlicedPacket::from_ethernet(s).unwrap();
            if let Some(etherparse::TransportSlice::Tcp(t)) = &p.transport {
                got.extend_from_slice(t.payload());
            }
            assert!(s.len() <= usize::from(hlen) + usize::from(mss));
        })
        .unwrap();
        prop_assert_eq!(n, count);
        prop_assert_eq!(count, payload.len().div_ceil(usize::from(mss)));
        prop_assert_eq!(got, payload);
    }
}
