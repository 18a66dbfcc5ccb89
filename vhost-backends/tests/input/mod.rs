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
