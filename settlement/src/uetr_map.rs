//! A hash map keyed by UETR that never stops the world to grow.
//!
//! A `HashMap` doubles its table when it fills: at half a million entries
//! that is one rehash of every entry into a freshly zeroed table, tens of
//! milliseconds during which the block being applied (or the remittance
//! engine's state lock) waits. Under load every node reached those sizes at
//! about the same moment and the stall showed as a p99 several times the
//! median, with Raft appends timing out behind it.
//!
//! [`UetrMap`] splits the entries over [`SHARDS`] maps, and sizes the
//! shards' shares of the key space in a geometric progression over one
//! doubling (the largest share is about twice the smallest). Shards therefore
//! fill at different rates and cross their growth thresholds at different
//! moments: as the map grows, one shard at a time rehashes, about 1/64 of
//! the entries, evenly spread over each doubling of the whole map.
//!
//! The shard of a UETR is read from its first 12 bits, which are random in
//! a version 4 UUID, through a table built at compile time. Shards hash
//! with foldhash, seeded per map: UETRs are chosen by participants, so the
//! hash must not be predictable, but SipHash's cost is not needed.
//! Iteration order is unspecified (as for `HashMap`): nothing deterministic
//! may depend on it.

use std::collections::hash_map::{self, HashMap};

use crate::ids::Uetr;

/// Number of shards.
pub const SHARDS: usize = 64;

/// Bits of a UETR's prefix that choose its shard.
const PREFIX_BITS: u32 = 12;
const PREFIXES: usize = 1 << PREFIX_BITS;

/// `2^(1/64)` in 32.32 fixed point.
const STEP_Q32: u64 = 4_341_736_423;

/// `BOUNDS[i]..BOUNDS[i + 1]` is the range of prefixes held by shard `i`:
/// `PREFIXES * (2^(i/64) - 1)`, a geometric progression of widths.
const BOUNDS: [u32; SHARDS + 1] = {
    let mut bounds = [0u32; SHARDS + 1];
    let mut power_q32: u64 = 1 << 32; // 2^(i/64)
    let mut i = 0;
    while i <= SHARDS {
        // Round to the nearest prefix; the last bound is pinned below.
        let above_one = power_q32 - (1 << 32);
        bounds[i] = ((above_one * PREFIXES as u64 + (1 << 31)) >> 32) as u32;
        power_q32 = ((power_q32 as u128 * STEP_Q32 as u128) >> 32) as u64;
        i += 1;
    }
    bounds[SHARDS] = PREFIXES as u32;
    bounds
};

/// The shard of every prefix.
const SHARD_OF_PREFIX: [u8; PREFIXES] = {
    let mut table = [0u8; PREFIXES];
    let mut shard = 0;
    let mut prefix = 0;
    while prefix < PREFIXES {
        while prefix as u32 >= BOUNDS[shard + 1] {
            shard += 1;
        }
        table[prefix] = shard as u8;
        prefix += 1;
    }
    table
};

fn shard_of(uetr: &Uetr) -> usize {
    let bytes = uetr.as_bytes();
    let prefix = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]) >> (16 - PREFIX_BITS));
    usize::from(SHARD_OF_PREFIX[prefix])
}

type Shard<V> = HashMap<Uetr, V, foldhash::fast::RandomState>;

/// A map from UETR to `V`, split into shards that grow one at a time.
#[derive(Clone)]
pub struct UetrMap<V> {
    shards: Box<[Shard<V>; SHARDS]>,
    len: usize,
}

impl<V> Default for UetrMap<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for UetrMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V: PartialEq> PartialEq for UetrMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.shards == other.shards
    }
}

impl<V: Eq> Eq for UetrMap<V> {}

impl<V> UetrMap<V> {
    /// An empty map (allocates nothing until the first insert).
    pub fn new() -> Self {
        Self { shards: Box::new(std::array::from_fn(|_| Shard::default())), len: 0 }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of `uetr`.
    pub fn get(&self, uetr: &Uetr) -> Option<&V> {
        self.shards[shard_of(uetr)].get(uetr)
    }

    /// The value of `uetr`, mutably.
    pub fn get_mut(&mut self, uetr: &Uetr) -> Option<&mut V> {
        self.shards[shard_of(uetr)].get_mut(uetr)
    }

    /// Whether `uetr` has a value.
    pub fn contains_key(&self, uetr: &Uetr) -> bool {
        self.shards[shard_of(uetr)].contains_key(uetr)
    }

    /// Sets the value of `uetr`, returning the one it replaces.
    pub fn insert(&mut self, uetr: Uetr, value: V) -> Option<V> {
        let previous = self.shards[shard_of(&uetr)].insert(uetr, value);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    /// Removes the value of `uetr`.
    pub fn remove(&mut self, uetr: &Uetr) -> Option<V> {
        let removed = self.shards[shard_of(uetr)].remove(uetr);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// The value of `uetr`, inserting `make()` first when there is none;
    /// the flag says whether it was inserted.
    pub fn get_or_insert_with(&mut self, uetr: Uetr, make: impl FnOnce() -> V) -> (&mut V, bool) {
        match self.shards[shard_of(&uetr)].entry(uetr) {
            hash_map::Entry::Occupied(slot) => (slot.into_mut(), false),
            hash_map::Entry::Vacant(slot) => {
                self.len += 1;
                (slot.insert(make()), true)
            }
        }
    }

    /// Removes every entry (keeping the shards' tables).
    pub fn clear(&mut self) {
        for shard in self.shards.iter_mut() {
            shard.clear();
        }
        self.len = 0;
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Uetr, &V)> {
        self.shards.iter().flat_map(HashMap::iter)
    }

    /// The entries of shard `shard` (below [`SHARDS`]), in no particular
    /// order: each entry is in exactly one shard, so a scan shard by shard
    /// can let go of a lock between shards.
    pub fn shard_iter(&self, shard: usize) -> impl Iterator<Item = (&Uetr, &V)> {
        self.shards.get(shard).into_iter().flat_map(HashMap::iter)
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(HashMap::values)
    }

    /// Keeps only the entries for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&Uetr, &mut V) -> bool) {
        let mut len = 0;
        for shard in self.shards.iter_mut() {
            shard.retain(|uetr, value| keep(uetr, value));
            len += shard.len();
        }
        self.len = len;
    }
}

impl<V> std::ops::Index<&Uetr> for UetrMap<V> {
    type Output = V;

    /// The value of `uetr`; panics when there is none (as `HashMap` does).
    fn index(&self, uetr: &Uetr) -> &V {
        self.get(uetr).expect("UetrMap indexed by a UETR it does not hold")
    }
}

impl<V> Extend<(Uetr, V)> for UetrMap<V> {
    fn extend<I: IntoIterator<Item = (Uetr, V)>>(&mut self, entries: I) {
        for (uetr, value) in entries {
            self.insert(uetr, value);
        }
    }
}

impl<V> FromIterator<(Uetr, V)> for UetrMap<V> {
    fn from_iter<I: IntoIterator<Item = (Uetr, V)>>(entries: I) -> Self {
        let mut map = Self::new();
        map.extend(entries);
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UETR whose first 12 bits are `prefix`.
    fn uetr_with_prefix(prefix: u32) -> Uetr {
        let mut bytes = *Uetr::new_random().as_bytes();
        let high = u16::try_from(prefix << 4).expect("a 12-bit prefix") | u16::from(bytes[1] & 0x0f);
        bytes[..2].copy_from_slice(&high.to_be_bytes());
        Uetr::from_bytes(bytes).expect("only the random prefix bytes changed")
    }

    #[test]
    fn bounds_partition_every_prefix_into_growing_shards() {
        assert_eq!(BOUNDS[0], 0);
        assert_eq!(BOUNDS[SHARDS], 4_096);
        for (i, bound) in BOUNDS.iter().enumerate() {
            let exact = ((i as f64 / SHARDS as f64).exp2() - 1.0) * 4_096.0;
            assert!((f64::from(*bound) - exact).abs() <= 1.0, "bound {i}: {bound} against {exact:.2}");
        }
        let widths: Vec<u32> = BOUNDS.windows(2).map(|pair| pair[1] - pair[0]).collect();
        // Growing, but for the rounding of bounds to whole prefixes.
        assert!(widths.windows(2).all(|pair| pair[0] <= pair[1] + 1), "widths grow: {widths:?}");
        let (narrowest, widest) = (widths[0], widths[SHARDS - 1]);
        assert!(narrowest > 0);
        // 2^(63/64) = 1.978: the shards' shares span one doubling.
        assert!(widest * 100 >= narrowest * 190 && widest * 100 <= narrowest * 210, "{narrowest}..{widest}");
        assert_eq!(shard_of(&uetr_with_prefix(0)), 0);
        assert_eq!(shard_of(&uetr_with_prefix(4_095)), SHARDS - 1);
        for i in 0..SHARDS {
            assert_eq!(shard_of(&uetr_with_prefix(BOUNDS[i])), i);
            assert_eq!(shard_of(&uetr_with_prefix(BOUNDS[i + 1] - 1)), i);
        }
    }

    #[test]
    fn behaves_like_a_hash_map() {
        let mut map = UetrMap::new();
        let mut reference = HashMap::new();
        let uetrs: Vec<Uetr> = (0..5_000).map(|_| Uetr::new_random()).collect();
        for (i, uetr) in uetrs.iter().enumerate() {
            assert_eq!(map.insert(*uetr, i), reference.insert(*uetr, i));
        }
        assert_eq!(map.insert(uetrs[7], 70), Some(7));
        reference.insert(uetrs[7], 70);
        for uetr in uetrs.iter().step_by(3) {
            assert_eq!(map.remove(uetr), reference.remove(uetr));
        }
        assert_eq!(map.remove(&uetrs[0]), None);
        let (value, inserted) = map.get_or_insert_with(uetrs[1], || 0);
        assert!(!inserted);
        *value += 1;
        *reference.get_mut(&uetrs[1]).expect("present") += 1;
        map.retain(|_, value| *value % 2 == 0);
        reference.retain(|_, value| *value % 2 == 0);
        assert_eq!(map.len(), reference.len());
        for uetr in &uetrs {
            assert_eq!(map.get(uetr), reference.get(uetr));
            assert_eq!(map.contains_key(uetr), reference.contains_key(uetr));
        }
        let mut listed: Vec<(Uetr, usize)> = map.iter().map(|(u, v)| (*u, *v)).collect();
        let mut expected: Vec<(Uetr, usize)> = reference.into_iter().collect();
        listed.sort();
        expected.sort();
        assert_eq!(listed, expected);
        map.clear();
        assert!(map.is_empty() && map.iter().next().is_none());
    }

    #[test]
    fn random_uetrs_spread_over_every_shard_in_proportion() {
        let mut counts = [0usize; SHARDS];
        for _ in 0..200_000 {
            counts[shard_of(&Uetr::new_random())] += 1;
        }
        // Shard i expects 200000 * width_i / 4096 (from about 2,200 to 4,300).
        for (i, count) in counts.iter().enumerate() {
            let expected = 200_000.0 * f64::from(BOUNDS[i + 1] - BOUNDS[i]) / 4_096.0;
            let deviation = (*count as f64 - expected).abs() / expected;
            assert!(deviation < 0.15, "shard {i}: {count} against {expected:.0}");
        }
    }
}
