//! SHA-256 digests with domain separation, and Merkle roots.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A 32-byte SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest32(pub [u8; 32]);

impl Digest32 {
    /// All zeroes: the previous hash of the genesis block.
    pub const ZERO: Digest32 = Digest32([0; 32]);

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(text: &str) -> Result<Self, hex::FromHexError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest32({})", self.to_hex())
    }
}

impl Serialize for Digest32 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest32 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_hex(&text).map_err(|e| serde::de::Error::custom(format!("expected 64 hex characters: {e}")))
    }
}

/// SHA-256 of `domain || data`. Every hashed structure has its own domain tag.
pub fn hash_with_domain(domain: &[u8], data: &[u8]) -> Digest32 {
    let mut hasher = Sha256::new();
    hasher.update(domain);
    hasher.update(data);
    Digest32(hasher.finalize().into())
}

const MERKLE_LEAF: u8 = 0x00;
const MERKLE_NODE: u8 = 0x01;
const MERKLE_EMPTY: &[u8] = b"REMIT_MERKLE_EMPTY_V1";

/// Hash of a Merkle leaf.
pub fn merkle_leaf(data: &[u8]) -> Digest32 {
    let mut hasher = Sha256::new();
    hasher.update([MERKLE_LEAF]);
    hasher.update(data);
    Digest32(hasher.finalize().into())
}

/// Merkle root over leaf hashes (from [`merkle_leaf`]). Leaves and inner nodes
/// are domain-separated, and an odd node is promoted rather than duplicated, so
/// no two different leaf lists share a root.
pub fn merkle_root(mut level: Vec<Digest32>) -> Digest32 {
    if level.is_empty() {
        return hash_with_domain(MERKLE_EMPTY, &[]);
    }
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            match pair {
                [left, right] => {
                    let mut hasher = Sha256::new();
                    hasher.update([MERKLE_NODE]);
                    hasher.update(left.0);
                    hasher.update(right.0);
                    next.push(Digest32(hasher.finalize().into()));
                }
                [single] => next.push(*single),
                _ => unreachable!("chunks(2) yields one or two items"),
            }
        }
        level = next;
    }
    level[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merkle_roots_distinguish_lists() {
        let a = merkle_leaf(b"a");
        let b = merkle_leaf(b"b");
        let c = merkle_leaf(b"c");
        assert_ne!(merkle_root(vec![a, b]), merkle_root(vec![b, a]));
        assert_ne!(merkle_root(vec![a, b, c]), merkle_root(vec![a, b, c, c]));
        assert_ne!(merkle_root(vec![a]), merkle_root(vec![]));
        assert_eq!(merkle_root(vec![a]), a);
    }

    #[test]
    fn hex_round_trip() {
        let digest = hash_with_domain(b"X", b"y");
        assert_eq!(Digest32::from_hex(&digest.to_hex()).expect("hex"), digest);
        assert!(Digest32::from_hex("00").is_err());
    }
}
