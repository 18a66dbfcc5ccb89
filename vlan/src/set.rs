//! Sets of VLANs, as a trunk's allowed list: `[10, 20, "100-199"]`.

use crate::{BadVlanId, VlanId};

/// A set of VLAN identifiers (a 4096-bit map).
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet([u64; 64]);

impl Default for VlanSet {
    fn default() -> Self {
        VlanSet([0; 64])
    }
}

impl std::fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter().map(|v| v.get())).finish()
    }
}

/// A range that is not `A-B` with 1 <= A <= B <= 4094.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a VLAN range (like \"100-199\", within 1-4094)")]
pub struct BadRange(pub String);

impl VlanSet {
    /// The empty set.
    pub fn new() -> VlanSet {
        VlanSet::default()
    }

    /// Adds one VLAN.
    pub fn insert(&mut self, v: VlanId) {
        let i = usize::from(v.get());
        self.0[i / 64] |= 1 << (i % 64);
    }

    /// Adds `a..=b`.
    pub fn insert_range(&mut self, a: VlanId, b: VlanId) {
        for i in a.get()..=b.get() {
            if let Ok(v) = VlanId::new(u32::from(i)) {
                self.insert(v);
            }
        }
    }

    /// Whether `v` is in the set.
    pub fn contains(&self, v: VlanId) -> bool {
        let i = usize::from(v.get());
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    /// Whether the VLAN numbered `vid` (0-4095) is in the set.
    pub fn contains_vid(&self, vid: u16) -> bool {
        VlanId::new(u32::from(vid)).is_ok_and(|v| self.contains(v))
    }

    /// The VLANs in the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = VlanId> + '_ {
        (1..=4094u32)
            .filter_map(|i| VlanId::new(i).ok())
            .filter(|v| self.contains(*v))
    }

    /// Number of VLANs in the set.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// Parses `"A-B"` (or a single number as a string).
    pub fn parse_range(s: &str) -> Result<(VlanId, VlanId), BadRange> {
        let bad = || BadRange(s.to_string());
        let (a, b) = match s.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (s.trim(), s.trim()),
        };
        let num = |x: &str| -> Result<VlanId, BadRange> {
            let n: u32 = x.parse().map_err(|_| bad())?;
            VlanId::new(n).map_err(|_: BadVlanId| bad())
        };
        let (a, b) = (num(a)?, num(b)?);
        if a > b {
            return Err(bad());
        }
        Ok((a, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u32) -> VlanId {
        VlanId::new(n).unwrap()
    }

    #[test]
    fn sets_and_ranges() {
        let mut s = VlanSet::new();
        assert!(s.is_empty());
        s.insert(v(10));
        let (a, b) = VlanSet::parse_range("100-199").unwrap();
        s.insert_range(a, b);
        assert_eq!(s.len(), 101);
        assert!(s.contains(v(10)) && s.contains(v(100)) && s.contains(v(199)));
        assert!(
            !s.contains(v(99))
                && !s.contains(v(200))
                && !s.contains_vid(0)
                && !s.contains_vid(4095)
        );
        assert_eq!(s.iter().next(), Some(v(10)));
        assert_eq!(VlanSet::parse_range("7"), Ok((v(7), v(7))));
        for bad in ["", "0-5", "5-4095", "9-3", "a-b", "1-2-3", "-1"] {
            assert!(VlanSet::parse_range(bad).is_err(), "{bad}");
        }
    }
}
