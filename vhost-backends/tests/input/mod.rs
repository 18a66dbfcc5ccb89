//! What the hostile-ring and message-sequence harnesses share: their input read as a stream
//! of numbers, and the fuzz corpora kept in the repository. Included with `#[path]` by
//! `ring/mod.rs` and `msgs/mod.rs` (and so by their fuzz targets).
#![allow(dead_code)] // each includer uses a part

/// Reads the input as a stream of numbers; zeros once it is used up.
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    pub fn done(&self) -> bool {
        self.0.is_empty()
    }
    /// Bytes not read yet.
    pub fn left(&self) -> usize {
        self.0.len()
    }
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
}

/// Every input of the libFuzzer corpus `fuzz/corpus/NAME` (made by `scripts/fuzz.sh`);
/// panics if there is none, so that a missing corpus is not a passing replay.
pub fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(name);
    let inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!inputs.is_empty(), "an empty corpus in {}", dir.display());
    inputs
}

/// The guest memory both ring harnesses build rings in: region A from 0 (the ring, its
/// tables and buffers), a hole, region B; and what they read back from it.
pub mod guest {
    use super::Input;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    /// (start, length) of region A and of region B, past a hole.
    pub const A: (u64, usize) = (0, 0x8000);
    pub const B: (u64, usize) = (0x1_0000, 0x4000);

    /// The two regions, zeroed.
    pub fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(A.0), A.1), (GuestAddress(B.0), B.1)])
            .unwrap()
    }

    /// A descriptor address: mostly buffers from `data` on, often at the regions' edges,
    /// sometimes on the ring and its tables, sometimes anywhere.
    pub fn addr(r: &mut Input<'_>, data: u64) -> u64 {
        match r.u8() % 8 {
            0 | 1 => data + u64::from(r.u16()) % (A.1 as u64 - data),
            2 => B.0 + u64::from(r.u16()),
            3 => A.0 + A.1 as u64 - u64::from(r.u8()), // runs into the hole
            4 => B.0 + B.1 as u64 - u64::from(r.u8()), // runs past the end
            5 => A.1 as u64 + u64::from(r.u16()),      // in the hole
            6 => u64::from(r.u16()) % data,            // on the ring itself
            _ => r.u64(),
        }
    }

    /// A descriptor length: zero, small, below `medium`, or anything.
    pub fn len(r: &mut Input<'_>, medium: u32) -> u32 {
        match r.u8() % 6 {
            0 => 0,
            1 | 2 => u32::from(r.u8()),
            3 | 4 => u32::from(r.u16()) % medium,
            _ => r.u32(),
        }
    }

    /// Both regions' bytes, for comparing before and after.
    pub fn snapshot(mem: &GuestMemoryMmap) -> Vec<u8> {
        let mut out = vec![0u8; A.1 + B.1];
        mem.read_slice(&mut out[..A.1], GuestAddress(A.0)).unwrap();
        mem.read_slice(&mut out[A.1..], GuestAddress(B.0)).unwrap();
        out
    }

    /// The guest address of snapshot byte `i`.
    pub fn address_of(i: usize) -> u64 {
        if i < A.1 {
            A.0 + i as u64
        } else {
            B.0 + (i - A.1) as u64
        }
    }
}
