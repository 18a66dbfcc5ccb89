//! smoltcp's view of the segment: frames queued in by the gateway, frames smoltcp sends queued
//! out. Checksums are not checked again on receive (frames reach the gateway complete).

use std::collections::VecDeque;

use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant as SInstant;

/// smoltcp's view of the segment: frames queued in, frames queued out.
#[derive(Default)]
pub(super) struct Dev {
    pub(super) rx: VecDeque<Vec<u8>>,
    pub(super) tx: Vec<Vec<u8>>,
    pub(super) mtu: usize,
}

pub(super) struct RxT(Vec<u8>);
pub(super) struct TxT<'a>(&'a mut Vec<Vec<u8>>);

impl smoltcp::phy::RxToken for RxT {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl smoltcp::phy::TxToken for TxT<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut v = vec![0u8; len];
        let r = f(&mut v);
        self.0.push(v);
        r
    }
}

impl Device for Dev {
    type RxToken<'a> = RxT;
    type TxToken<'a> = TxT<'a>;

    fn receive(&mut self, _ts: SInstant) -> Option<(RxT, TxT<'_>)> {
        let f = self.rx.pop_front()?;
        Some((RxT(f), TxT(&mut self.tx)))
    }

    fn transmit(&mut self, _ts: SInstant) -> Option<TxT<'_>> {
        Some(TxT(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = self.mtu;
        // Frames reach the gateway with complete checksums (offloads are completed before
        // delivery); checking them again costs time for nothing.
        let mut cs = ChecksumCapabilities::default();
        cs.ipv4 = Checksum::Tx;
        cs.tcp = Checksum::Tx;
        cs.udp = Checksum::Tx;
        c.checksum = cs;
        c
    }
}
