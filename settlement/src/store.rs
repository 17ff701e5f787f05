//! Durable ledger storage behind the [`LedgerStore`] trait, with a sled
//! implementation. A block, its accepted UETRs, the state snapshot after it
//! and the applied height are written in one batch and flushed before the
//! call returns: nothing is reported applied before it is durable.
//!
//! Key layout (one sled tree; see `docs/database.md`):
//! `meta/network`, `block/<height u64 BE>`, `cert/<height>`, `uetr/<height>`,
//! `state/snapshot`, `state/height`.

use std::collections::HashMap;
use std::path::Path;

use crate::block::{Block, TransferOutcome};
use crate::block::{Entry, EntryResult};
use crate::certify::Certificate;
use crate::codec::DecodeError;
use crate::ids::{Height, Uetr};
use crate::ledger::LedgerState;

const KEY_NETWORK: &[u8] = b"meta/network";
const KEY_SNAPSHOT: &[u8] = b"state/snapshot";
const KEY_HEIGHT: &[u8] = b"state/height";
const PREFIX_BLOCK: &[u8] = b"block/";
const PREFIX_CERT: &[u8] = b"cert/";
const PREFIX_UETR: &[u8] = b"uetr/";

/// A storage fault. The ledger stops on these rather than carry on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// Stored bytes do not decode.
    #[error("store: {0}")]
    Decode(#[from] DecodeError),
    /// Stored data contradicts itself.
    #[error("store corrupt: {0}")]
    Corrupt(String),
}

/// Durable storage of blocks, certificates, the applied-UETR index and state.
pub trait LedgerStore: Send + Sync {
    /// The `network.json` text the store was created for.
    fn network_json(&self) -> Result<Option<String>, StoreError>;
    /// Records the network definition (once, at creation), durably.
    fn init_network(&self, json: &str) -> Result<(), StoreError>;
    /// Durably stores an applied block with the state after it, and its
    /// certificate when already known. `block` must be at the next height.
    fn append_block(
        &self,
        block: &Block,
        state: &LedgerState,
        certificate: Option<&Certificate>,
    ) -> Result<(), StoreError>;
    /// Durably stores the certificate of a stored block.
    fn put_certificate(&self, height: Height, certificate: &Certificate) -> Result<(), StoreError>;
    /// The highest applied height.
    fn applied_height(&self) -> Result<Option<Height>, StoreError>;
    /// A block's canonical encoding.
    fn block_bytes(&self, height: Height) -> Result<Option<Vec<u8>>, StoreError>;
    /// A block's certificate.
    fn certificate(&self, height: Height) -> Result<Option<Certificate>, StoreError>;
    /// The state after the applied height, with the applied-UETR index.
    fn load_state(&self) -> Result<Option<LedgerState>, StoreError>;

    /// A decoded block.
    fn block(&self, height: Height) -> Result<Option<Block>, StoreError> {
        match self.block_bytes(height)? {
            Some(bytes) => Ok(Some(Block::decode(&bytes)?)),
            None => Ok(None),
        }
    }
}

/// The [`LedgerStore`] on sled.
#[derive(Debug, Clone)]
pub struct SledLedgerStore {
    db: sled::Db,
}

fn height_key(prefix: &[u8], height: Height) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&height.0.to_be_bytes());
    key
}

fn accepted_uetrs(block: &Block) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(block.header.accepted_count as usize * 16);
    for (entry, result) in block.entries.iter().zip(&block.results) {
        if let (Entry::TransferBatch { batch }, EntryResult::Batch { outcomes }) = (entry, result) {
            for (transfer, outcome) in batch.transfers.iter().zip(outcomes) {
                if *outcome == TransferOutcome::Accepted {
                    bytes.extend_from_slice(transfer.uetr.as_bytes());
                }
            }
        }
    }
    bytes
}

impl SledLedgerStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).open()?;
        Ok(Self { db })
    }

    fn height_value(bytes: &[u8]) -> Result<Height, StoreError> {
        let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt("height is not 8 bytes".into()))?;
        Ok(Height(u64::from_be_bytes(array)))
    }

    fn applied_uetrs(&self) -> Result<HashMap<Uetr, Height>, StoreError> {
        let mut applied = HashMap::new();
        for item in self.db.scan_prefix(PREFIX_UETR) {
            let (key, value) = item?;
            let height = Self::height_value(&key[PREFIX_UETR.len()..])?;
            if value.len() % 16 != 0 {
                return Err(StoreError::Corrupt(format!(
                    "uetr index at height {height} is not a multiple of 16 bytes"
                )));
            }
            for chunk in value.chunks_exact(16) {
                let bytes: [u8; 16] = chunk.try_into().expect("chunks_exact yields 16 bytes");
                let uetr = Uetr::from_bytes(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                if applied.insert(uetr, height).is_some() {
                    return Err(StoreError::Corrupt(format!("uetr {uetr} indexed twice")));
                }
            }
        }
        Ok(applied)
    }
}

impl LedgerStore for SledLedgerStore {
    fn network_json(&self) -> Result<Option<String>, StoreError> {
        match self.db.get(KEY_NETWORK)? {
            Some(bytes) => String::from_utf8(bytes.to_vec())
                .map(Some)
                .map_err(|_| StoreError::Corrupt("network definition is not UTF-8".into())),
            None => Ok(None),
        }
    }

    fn init_network(&self, json: &str) -> Result<(), StoreError> {
        self.db.insert(KEY_NETWORK, json.as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    fn append_block(
        &self,
        block: &Block,
        state: &LedgerState,
        certificate: Option<&Certificate>,
    ) -> Result<(), StoreError> {
        let height = block.height();
        let expected = self.applied_height()?.map_or(Height::GENESIS, Height::next);
        if height != expected {
            return Err(StoreError::Corrupt(format!("append of height {height}, expected {expected}")));
        }
        assert_eq!(state.tip().map(|(h, _)| h), Some(height), "the state passed must be the one after the block");
        let mut batch = sled::Batch::default();
        batch.insert(height_key(PREFIX_BLOCK, height), block.encode());
        batch.insert(height_key(PREFIX_UETR, height), accepted_uetrs(block));
        if let Some(certificate) = certificate {
            batch.insert(height_key(PREFIX_CERT, height), certificate.to_bytes().to_vec());
        }
        batch.insert(KEY_SNAPSHOT, state.encode_snapshot());
        batch.insert(KEY_HEIGHT, &height.0.to_be_bytes());
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    fn put_certificate(&self, height: Height, certificate: &Certificate) -> Result<(), StoreError> {
        if self.db.get(height_key(PREFIX_BLOCK, height))?.is_none() {
            return Err(StoreError::Corrupt(format!("certificate for missing block {height}")));
        }
        self.db.insert(height_key(PREFIX_CERT, height), certificate.to_bytes().to_vec())?;
        self.db.flush()?;
        Ok(())
    }

    fn applied_height(&self) -> Result<Option<Height>, StoreError> {
        self.db.get(KEY_HEIGHT)?.map(|bytes| Self::height_value(&bytes)).transpose()
    }

    fn block_bytes(&self, height: Height) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(height_key(PREFIX_BLOCK, height))?.map(|bytes| bytes.to_vec()))
    }

    fn certificate(&self, height: Height) -> Result<Option<Certificate>, StoreError> {
        match self.db.get(height_key(PREFIX_CERT, height))? {
            Some(bytes) => Certificate::from_bytes(&bytes)
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt(format!("certificate at height {height} is not a BLS signature"))),
            None => Ok(None),
        }
    }

    fn load_state(&self) -> Result<Option<LedgerState>, StoreError> {
        let Some(snapshot) = self.db.get(KEY_SNAPSHOT)? else {
            return Ok(None);
        };
        let state = LedgerState::decode_snapshot(&snapshot, self.applied_uetrs()?)?;
        Ok(Some(state))
    }
}
