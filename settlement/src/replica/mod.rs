//! Replication of the ledger with openraft. Raft log entries are block
//! proposals (a timestamp and entries); the height and previous hash are
//! assigned when a proposal is applied, so a leader can pipeline proposals
//! without waiting for the previous block. Every replica applies committed
//! proposals with the same pure state machine and so computes the same
//! blocks. Threshold certification (by the node, see `gateway`) runs on top:
//! a block is final only when a quorum of validators signed the state it produces.
//!
//! Both the Raft log and the applied state live in the node's sled database.

pub mod log_store;
pub mod state_machine;

use std::io::Cursor;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::block::{Entry, EntryResult};
use crate::codec::{DecodeError, Reader, Writer};
use crate::constants::BLOCK_ENTRIES_MAX;
use crate::hash::Digest32;
use crate::ids::Height;

pub use log_store::SledRaftLog;
pub use state_machine::{AppliedBlock, FailStop, LedgerStateMachine, SharedChain};

openraft::declare_raft_types!(
    /// openraft type configuration of the ledger.
    pub TypeConfig:
        D = Proposal,
        R = ProposalResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft instance of a ledger node.
pub type Raft = openraft::Raft<TypeConfig>;

/// Domain tag of an encoded proposal in the Raft log.
pub const PROPOSAL_TAG: &[u8] = b"REMIT_PROPOSAL_V1";
/// Domain tag of an encoded proposal response.
pub const PROPOSAL_RESPONSE_TAG: &[u8] = b"REMIT_PROPOSAL_RESPONSE_V1";

/// A block proposal as replicated: the proposer's timestamp and the entries.
///
/// Its canonical encoding is computed once and shared by clones: a leader
/// stores a proposal in its log and sends it to every follower, and each
/// of those would otherwise encode it again.
#[derive(Clone, Debug)]
pub struct Proposal {
    /// Proposer's clock; clamped at apply so block time never goes back.
    pub timestamp_ms: u64,
    /// The entries, in order.
    pub entries: Vec<Entry>,
    encoded: std::sync::OnceLock<std::sync::Arc<[u8]>>,
}

impl PartialEq for Proposal {
    fn eq(&self, other: &Self) -> bool {
        self.timestamp_ms == other.timestamp_ms && self.entries == other.entries
    }
}

impl Eq for Proposal {}

impl Proposal {
    /// A proposal of `entries` at `timestamp_ms`.
    pub fn new(timestamp_ms: u64, entries: Vec<Entry>) -> Self {
        Self { timestamp_ms, entries, encoded: std::sync::OnceLock::new() }
    }

    /// Canonical encoding (computed once).
    pub fn encode(&self) -> std::sync::Arc<[u8]> {
        self.encoded
            .get_or_init(|| {
                let transfers: usize = self.entries.iter().map(Entry::transfer_count).sum();
                let mut w = Writer::with_capacity(64 + transfers * 100);
                w.raw(PROPOSAL_TAG);
                w.u64(self.timestamp_ms);
                w.len(self.entries.len());
                for entry in &self.entries {
                    entry.encode(&mut w);
                }
                w.into_bytes().into()
            })
            .clone()
    }

    /// Decodes a proposal (keeping its bytes as its encoding).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "proposal");
        r.tag(PROPOSAL_TAG)?;
        let timestamp_ms = r.u64()?;
        let count = r.len(BLOCK_ENTRIES_MAX)?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            entries.push(Entry::decode(&mut r)?);
        }
        r.finish()?;
        let proposal = Self::new(timestamp_ms, entries);
        let _ = proposal.encoded.set(bytes.into());
        Ok(proposal)
    }
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "proposal({} entries @{})", self.entries.len(), self.timestamp_ms)
    }
}

impl Serialize for Proposal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Proposal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes_compat::ByteBuf = Deserialize::deserialize(deserializer)?;
        Self::decode(&bytes.0).map_err(serde::de::Error::custom)
    }
}

/// What applying a proposal produced, returned to the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ProposalResponse {
    /// The block's height and hash, or none when the log entry was not a
    /// proposal (or the proposal was refused as a whole).
    pub block: Option<(Height, Digest32)>,
    /// One result per entry of the proposal.
    pub results: Vec<EntryResult>,
    /// Why the proposal was refused as a whole, if it was.
    pub refused: Option<String>,
}

impl ProposalResponse {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64 + self.results.len() * 16);
        w.raw(PROPOSAL_RESPONSE_TAG);
        w.option(self.block.as_ref(), |w, (height, hash)| {
            w.u64(height.0);
            w.digest(hash);
        });
        w.len(self.results.len());
        for result in &self.results {
            result.encode(&mut w);
        }
        w.option(self.refused.as_ref(), |w, reason| w.str(reason));
        w.into_bytes()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "proposal response");
        r.tag(PROPOSAL_RESPONSE_TAG)?;
        let block = r.option(|r| Ok((Height(r.u64()?), r.digest()?)))?;
        let count = r.len(BLOCK_ENTRIES_MAX)?;
        let mut results = Vec::with_capacity(count);
        for _ in 0..count {
            results.push(EntryResult::decode(&mut r)?);
        }
        let refused = r.option(|r| Ok(r.str(4096)?.to_owned()))?;
        r.finish()?;
        Ok(Self { block, results, refused })
    }
}

impl Serialize for ProposalResponse {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.encode())
    }
}

impl<'de> Deserialize<'de> for ProposalResponse {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes_compat::ByteBuf = Deserialize::deserialize(deserializer)?;
        Self::decode(&bytes.0).map_err(serde::de::Error::custom)
    }
}

/// Minimal owned byte buffer that deserializes from serde bytes or a
/// sequence, so canonical encodings ride inside any serde format.
mod serde_bytes_compat {
    use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};

    pub struct ByteBuf(pub Vec<u8>);

    impl<'de> Deserialize<'de> for ByteBuf {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct BytesVisitor;
            impl<'de> Visitor<'de> for BytesVisitor {
                type Value = ByteBuf;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v.to_vec()))
                }
                fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                    while let Some(byte) = seq.next_element()? {
                        out.push(byte);
                    }
                    Ok(ByteBuf(out))
                }
            }
            deserializer.deserialize_byte_buf(BytesVisitor)
        }
    }
}

/// Encodes a Raft message (vote, append, snapshot) for the wire.
pub fn encode_message<T: Serialize>(message: &T) -> Vec<u8> {
    bincode::serialize(message).expect("raft messages always serialize")
}

/// Decodes a Raft message from the wire.
pub fn decode_message<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, DecodeError> {
    bincode::deserialize(bytes).map_err(|e| DecodeError::new("raft message", e))
}
