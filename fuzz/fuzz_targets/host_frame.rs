//! A virtio-net header and a frame: checked, offloads completed or segmented.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vhost_backends::frame::{SegStore, TxFrame, parse_host_frame};
use vhost_backends::offload::{self, Gso, Offloads};

fuzz_target!(|input: ([u8; 12], Vec<u8>)| {
    let (hdr, mut frame) = input;
    let mut store = SegStore::new();
    if let Ok(info) = parse_host_frame(hdr, &mut frame, Offloads::ALL, &mut store) {
        let f = TxFrame::new(&info, &store);
        let meta = *f.meta();
        let mut whole = f.to_vec();
        let mut seg = Vec::new();
        if meta.gso != Gso::None {
            let _ = offload::segment_tcp(&whole, &meta, &mut seg, |_| {});
        } else if let Some((start, off)) = meta.csum {
            let _ = offload::complete_checksum(&mut whole, start, off);
        }
    }
});
