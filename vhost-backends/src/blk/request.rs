//! virtio-blk requests: from a descriptor chain's buffers to a checked request. Pure: guest
//! memory is reached only through the `read` function passed in, so every rule (framing,
//! bounds, read-only, feature checks) is tested without a ring.
//!
//! A request is a 16-byte header (type, reserved, sector) in the device-readable bytes, the
//! data (device-readable for writes, discard and write-zeroes ranges; device-writable for reads
//! and GET_ID), and a 1-byte status, the last device-writable byte. The device must not
//! assume any framing (virtio 1.1, 2.6.4), so headers, data and status may share or straddle
//! descriptors.

use vm_memory::{Address, GuestAddress};

/// Bytes in a sector, the unit of `sector` and of the capacity.
pub const SECTOR: u64 = 512;
/// Length of the serial returned by GET_ID.
pub const ID_BYTES: usize = 20;
/// Size of one discard / write-zeroes range.
const RANGE_BYTES: u64 = 16;

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const T_DISCARD: u32 = 11;
pub const T_WRITE_ZEROES: u32 = 13;

pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

/// Write-zeroes flag: the device may deallocate the range.
pub const WZ_F_UNMAP: u32 = 1;

/// One contiguous piece of guest memory.
pub type Seg = (GuestAddress, u32);

/// What the device offers and the driver accepted, as the parser needs it.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Capacity in sectors.
    pub capacity: u64,
    pub readonly: bool,
    /// DISCARD negotiated.
    pub discard: bool,
    /// WRITE_ZEROES negotiated.
    pub write_zeroes: bool,
    /// Ranges per discard / write-zeroes request.
    pub max_ranges: u32,
    /// Sectors per range.
    pub max_range_sectors: u32,
}

/// One discard / write-zeroes range, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub offset: u64,
    pub len: u64,
    /// Write-zeroes only: the range may be deallocated.
    pub unmap: bool,
}

/// What the request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read `data` (device-writable) from byte `offset`.
    Read {
        offset: u64,
    },
    /// Write `data` (device-readable) at byte `offset`.
    Write {
        offset: u64,
    },
    Flush,
    /// Write the serial into `data`.
    GetId,
    Discard(Vec<Range>),
    WriteZeroes(Vec<Range>),
}

/// A checked request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub op: Op,
    pub data: Vec<Seg>,
    pub data_len: u64,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

/// What the parser makes of a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A request to execute.
    Ok(Request),
    /// A request refused up front: write `code` at `status` and complete it.
    Fail { status: GuestAddress, code: u8 },
    /// No status byte to answer in: return the chain with length 0.
    Bad,
}

/// The first `n` bytes of `segs`.
fn front(segs: &[Seg], mut n: u64) -> Vec<Seg> {
    let mut head = Vec::with_capacity(segs.len());
    for &(a, l) in segs {
        if n == 0 {
            break;
        }
        let k = u64::from(l).min(n);
        if k > 0 {
            head.push((a, k as u32));
        }
        n -= k;
    }
    head
}

/// The bytes of `segs` after the first `n`.
fn after(segs: &[Seg], mut n: u64) -> Vec<Seg> {
    let mut rest = Vec::with_capacity(segs.len());
    for &(a, l) in segs {
        if n >= u64::from(l) {
            n -= u64::from(l);
        } else {
            rest.push((a.unchecked_add(n), l - n as u32));
            n = 0;
        }
    }
    rest
}

fn total(segs: &[Seg]) -> u64 {
    segs.iter().map(|s| u64::from(s.1)).sum()
}

/// Reads `out.len()` bytes from the start of `segs`.
fn gather(
    segs: &[Seg],
    out: &mut [u8],
    read: &mut impl FnMut(GuestAddress, &mut [u8]) -> bool,
) -> bool {
    let mut at = 0;
    for &(a, l) in segs {
        if at == out.len() {
            break;
        }
        let n = (l as usize).min(out.len() - at);
        if !read(a, &mut out[at..at + n]) {
            return false;
        }
        at += n;
    }
    at == out.len()
}

/// Parses a chain given as its device-readable and device-writable buffers, in chain order.
/// `read` copies guest memory (false: the address is not guest memory).
pub fn parse(
    readable: &[Seg],
    writable: &[Seg],
    lim: &Limits,
    mut read: impl FnMut(GuestAddress, &mut [u8]) -> bool,
) -> Parsed {
    // The status byte: the last device-writable byte.
    let wlen = total(writable);
    if wlen == 0 {
        return Parsed::Bad;
    }
    let Some(status) = writable
        .iter()
        .rev()
        .find(|s| s.1 > 0)
        .map(|&(a, l)| a.unchecked_add(u64::from(l) - 1))
    else {
        return Parsed::Bad;
    };
    let wdata = || front(writable, wlen - 1);
    let fail = |code| Parsed::Fail { status, code };
    let mut hdr = [0u8; 16];
    if total(readable) < 16 {
        return fail(S_IOERR);
    }
    let rdata = || after(readable, 16);
    if !gather(readable, &mut hdr, &mut read) {
        return fail(S_IOERR);
    }
    let kind = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let sector = u64::from_le_bytes(hdr[8..16].try_into().unwrap_or_default());
    let cap_bytes = lim.capacity.saturating_mul(SECTOR);
    let in_bounds =
        |offset: u64, len: u64| offset.checked_add(len).is_some_and(|end| end <= cap_bytes);
    let req = |op, data: Vec<Seg>| {
        let data_len = total(&data);
        Parsed::Ok(Request {
            op,
            data,
            data_len,
            status,
        })
    };
    match kind {
        T_IN | T_OUT => {
            let data = if kind == T_IN { wdata() } else { rdata() };
            let len = total(&data);
            let Some(offset) = sector.checked_mul(SECTOR) else {
                return fail(S_IOERR);
            };
            if !len.is_multiple_of(SECTOR) || !in_bounds(offset, len) {
                return fail(S_IOERR);
            }
            if kind == T_OUT && lim.readonly {
                return fail(S_IOERR);
            }
            if kind == T_IN {
                req(Op::Read { offset }, data)
            } else {
                req(Op::Write { offset }, data)
            }
        }
        T_FLUSH => req(Op::Flush, Vec::new()),
        T_GET_ID => {
            let wdata = wdata();
            if total(&wdata) == 0 {
                return fail(S_IOERR);
            }
            req(Op::GetId, wdata)
        }
        T_DISCARD | T_WRITE_ZEROES => {
            let wz = kind == T_WRITE_ZEROES;
            if (wz && !lim.write_zeroes) || (!wz && !lim.discard) {
                return fail(S_UNSUPP);
            }
            if lim.readonly {
                return fail(S_IOERR);
            }
            let rdata = rdata();
            let len = total(&rdata);
            if len == 0 || !len.is_multiple_of(RANGE_BYTES) {
                return fail(S_IOERR);
            }
            let n = len / RANGE_BYTES;
            if n > u64::from(lim.max_ranges) {
                return fail(S_UNSUPP);
            }
            let mut raw = vec![0u8; len as usize];
            if !gather(&rdata, &mut raw, &mut read) {
                return fail(S_IOERR);
            }
            let mut ranges = Vec::with_capacity(n as usize);
            for r in raw.chunks_exact(RANGE_BYTES as usize) {
                let sector = u64::from_le_bytes(r[0..8].try_into().unwrap_or_default());
                let sectors = u32::from_le_bytes(r[8..12].try_into().unwrap_or_default());
                let flags = u32::from_le_bytes(r[12..16].try_into().unwrap_or_default());
                let allowed = if wz { WZ_F_UNMAP } else { 0 };
                if flags & !allowed != 0 {
                    return fail(S_UNSUPP);
                }
                if sectors > lim.max_range_sectors {
                    return fail(S_IOERR);
                }
                let Some(offset) = sector.checked_mul(SECTOR) else {
                    return fail(S_IOERR);
                };
                let len = u64::from(sectors) * SECTOR;
                if !in_bounds(offset, len) {
                    return fail(S_IOERR);
                }
                ranges.push(Range {
                    offset,
                    len,
                    unmap: flags & WZ_F_UNMAP != 0,
                });
            }
            if wz {
                req(Op::WriteZeroes(ranges), Vec::new())
            } else {
                req(Op::Discard(ranges), Vec::new())
            }
        }
        _ => fail(S_UNSUPP),
    }
}

/// The GET_ID answer: the serial, cut to 20 bytes, NUL-padded when shorter.
pub fn id_bytes(serial: &str) -> [u8; ID_BYTES] {
    let mut id = [0u8; ID_BYTES];
    let b = serial.as_bytes();
    let n = b.len().min(ID_BYTES);
    id[..n].copy_from_slice(&b[..n]);
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const LIM: Limits = Limits {
        capacity: 2048,
        readonly: false,
        discard: true,
        write_zeroes: true,
        max_ranges: 4,
        max_range_sectors: 1024,
    };

    /// A fake guest memory: address -> byte.
    struct Mem(HashMap<u64, u8>);

    impl Mem {
        fn new() -> Mem {
            Mem(HashMap::new())
        }
        fn put(&mut self, at: u64, bytes: &[u8]) {
            for (i, b) in bytes.iter().enumerate() {
                self.0.insert(at + i as u64, *b);
            }
        }
        fn reader(&self) -> impl FnMut(GuestAddress, &mut [u8]) -> bool + '_ {
            |a, out| {
                for (i, o) in out.iter_mut().enumerate() {
                    match self.0.get(&(a.0 + i as u64)) {
                        Some(b) => *o = *b,
                        None => return false,
                    }
                }
                true
            }
        }
    }

    fn header(kind: u32, sector: u64) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        h
    }

    fn g(a: u64) -> GuestAddress {
        GuestAddress(a)
    }

    #[test]
    fn read_with_the_usual_framing() {
        let mut m = Mem::new();
        m.put(0x1000, &header(T_IN, 8));
        let p = parse(
            &[(g(0x1000), 16)],
            &[(g(0x2000), 4096), (g(0x3000), 1)],
            &LIM,
            m.reader(),
        );
        assert_eq!(
            p,
            Parsed::Ok(Request {
                op: Op::Read { offset: 4096 },
                data: vec![(g(0x2000), 4096)],
                data_len: 4096,
                status: g(0x3000),
            })
        );
    }

    #[test]
    fn any_framing_is_accepted() {
        // Header split over two descriptors, data and header sharing one, status sharing the
        // last data descriptor.
        let mut m = Mem::new();
        let h = header(T_OUT, 1);
        m.put(0x1000, &h[..5]);
        m.put(0x5000, &h[5..]);
        let p = parse(
            &[(g(0x1000), 5), (g(0x5000), 11 + 512)],
            &[(g(0x9000), 1)],
            &LIM,
            m.reader(),
        );
        assert_eq!(
            p,
            Parsed::Ok(Request {
                op: Op::Write { offset: 512 },
                data: vec![(g(0x5000 + 11), 512)],
                data_len: 512,
                status: g(0x9000),
            })
        );
        let mut m = Mem::new();
        m.put(0x1000, &header(T_IN, 0));
        let p = parse(&[(g(0x1000), 16)], &[(g(0x2000), 513)], &LIM, m.reader());
        assert_eq!(
            p,
            Parsed::Ok(Request {
                op: Op::Read { offset: 0 },
                data: vec![(g(0x2000), 512)],
                data_len: 512,
                status: g(0x2200),
            })
        );
    }

    #[test]
    fn no_status_byte_is_a_bad_chain() {
        let mut m = Mem::new();
        m.put(0x1000, &header(T_IN, 0));
        assert_eq!(
            parse(&[(g(0x1000), 16)], &[], &LIM, m.reader()),
            Parsed::Bad
        );
        assert_eq!(
            parse(&[(g(0x1000), 16)], &[(g(0x2000), 0)], &LIM, m.reader()),
            Parsed::Bad
        );
    }

    #[test]
    fn refusals() {
        let st = g(0x3000);
        let fail = |code| Parsed::Fail { status: st, code };
        let run = |h: [u8; 16], data: &[Seg], wdata: &[Seg], lim: &Limits| {
            let mut m = Mem::new();
            m.put(0x1000, &h);
            let mut r = vec![(g(0x1000), 16)];
            r.extend_from_slice(data);
            let mut w = wdata.to_vec();
            w.push((st, 1));
            parse(&r, &w, lim, m.reader())
        };
        // Past the end, straddling the end, not a sector multiple, sector overflow.
        assert_eq!(
            run(header(T_IN, 2048), &[], &[(g(0x2000), 512)], &LIM),
            fail(S_IOERR)
        );
        assert_eq!(
            run(header(T_IN, 2047), &[], &[(g(0x2000), 1024)], &LIM),
            fail(S_IOERR)
        );
        assert_eq!(
            run(header(T_IN, 0), &[], &[(g(0x2000), 100)], &LIM),
            fail(S_IOERR)
        );
        assert_eq!(
            run(header(T_IN, u64::MAX), &[], &[(g(0x2000), 512)], &LIM),
            fail(S_IOERR)
        );
        // The last sector is fine.
        assert!(matches!(
            run(header(T_IN, 2047), &[], &[(g(0x2000), 512)], &LIM),
            Parsed::Ok(_)
        ));
        // Read-only.
        let ro = Limits {
            readonly: true,
            ..LIM
        };
        assert_eq!(
            run(header(T_OUT, 0), &[(g(0x2000), 512)], &[], &ro),
            fail(S_IOERR)
        );
        assert!(matches!(
            run(header(T_IN, 0), &[], &[(g(0x2000), 512)], &ro),
            Parsed::Ok(_)
        ));
        // Unknown type, header too short.
        assert_eq!(run(header(99, 0), &[], &[], &LIM), fail(S_UNSUPP));
        let mut m = Mem::new();
        m.put(0x1000, &[0; 8]);
        assert_eq!(
            parse(&[(g(0x1000), 8)], &[(st, 1)], &LIM, m.reader()),
            fail(S_IOERR)
        );
        // Header outside guest memory.
        assert_eq!(
            parse(&[(g(0x7000), 16)], &[(st, 1)], &LIM, Mem::new().reader()),
            fail(S_IOERR)
        );
    }

    fn range(sector: u64, sectors: u32, flags: u32) -> Vec<u8> {
        [
            &sector.to_le_bytes()[..],
            &sectors.to_le_bytes(),
            &flags.to_le_bytes(),
        ]
        .concat()
    }

    #[test]
    fn discard_and_write_zeroes_ranges() {
        let st = g(0x3000);
        let run = |kind, ranges: Vec<u8>, lim: &Limits| {
            let mut m = Mem::new();
            m.put(0x1000, &header(kind, 0));
            m.put(0x2000, &ranges);
            parse(
                &[(g(0x1000), 16), (g(0x2000), ranges.len() as u32)],
                &[(st, 1)],
                lim,
                m.reader(),
            )
        };
        let p = run(
            T_DISCARD,
            [range(8, 16, 0), range(100, 1, 0)].concat(),
            &LIM,
        );
        let Parsed::Ok(r) = p else { panic!("{p:?}") };
        assert_eq!(
            r.op,
            Op::Discard(vec![
                Range {
                    offset: 4096,
                    len: 8192,
                    unmap: false
                },
                Range {
                    offset: 51200,
                    len: 512,
                    unmap: false
                }
            ])
        );
        let p = run(T_WRITE_ZEROES, range(0, 1, WZ_F_UNMAP), &LIM);
        let Parsed::Ok(r) = p else { panic!("{p:?}") };
        assert_eq!(
            r.op,
            Op::WriteZeroes(vec![Range {
                offset: 0,
                len: 512,
                unmap: true
            }])
        );
        let fail = |code| Parsed::Fail { status: st, code };
        // UNMAP on a discard, unknown flag, past the end, too many ranges, too long a range.
        assert_eq!(
            run(T_DISCARD, range(0, 1, WZ_F_UNMAP), &LIM),
            fail(S_UNSUPP)
        );
        assert_eq!(run(T_WRITE_ZEROES, range(0, 1, 2), &LIM), fail(S_UNSUPP));
        assert_eq!(run(T_DISCARD, range(2047, 2, 0), &LIM), fail(S_IOERR));
        assert_eq!(
            run(T_DISCARD, range(0, 1, 0).repeat(5), &LIM),
            fail(S_UNSUPP)
        );
        assert_eq!(run(T_DISCARD, range(0, 1025, 0), &LIM), fail(S_IOERR));
        // Not negotiated, read-only, ragged length.
        let off = Limits {
            discard: false,
            ..LIM
        };
        assert_eq!(run(T_DISCARD, range(0, 1, 0), &off), fail(S_UNSUPP));
        let ro = Limits {
            readonly: true,
            ..LIM
        };
        assert_eq!(run(T_WRITE_ZEROES, range(0, 1, 0), &ro), fail(S_IOERR));
        assert_eq!(
            run(T_DISCARD, range(0, 1, 0)[..10].to_vec(), &LIM),
            fail(S_IOERR)
        );
    }

    #[test]
    fn get_id_and_flush() {
        let mut m = Mem::new();
        m.put(0x1000, &header(T_GET_ID, 0));
        let p = parse(
            &[(g(0x1000), 16)],
            &[(g(0x2000), 20), (g(0x3000), 1)],
            &LIM,
            m.reader(),
        );
        assert!(matches!(
            p,
            Parsed::Ok(Request {
                op: Op::GetId,
                data_len: 20,
                ..
            })
        ));
        m.put(0x1000, &header(T_FLUSH, 0));
        let p = parse(&[(g(0x1000), 16)], &[(g(0x3000), 1)], &LIM, m.reader());
        assert!(matches!(p, Parsed::Ok(Request { op: Op::Flush, .. })));
        assert_eq!(&id_bytes("vm1-root")[..9], b"vm1-root\0");
        assert_eq!(id_bytes(&"x".repeat(30)), [b'x'; 20]);
    }
}
