//! Durable ledger storage behind the [`LedgerStore`] trait, with a sled
//! implementation. A block, its accepted transfers, the payout states it
//! changed, the state snapshot after it and the applied height are written in
//! one batch and flushed before the call returns: nothing is reported applied
//! before it is durable.
//!
//! Key layout (one sled tree; see `docs/database.md`):
//! `meta/network`, `block/<height u64 BE>`, `cert/<height>`, `uetr/<height>`,
//! `payout/<height>`, `state/snapshot`, `state/height`.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::HashMap;
use std::path::Path;

use crate::applied::{
    decode_block_payouts, decode_block_transfers, decode_index, encode_block_payouts, encode_block_transfers,
    encode_index, AppliedTransfer,
};
use crate::block::{Block, TransferOutcome};
use crate::block::{Entry, EntryResult};
use crate::certify::Certificate;
use crate::codec::DecodeError;
use crate::ids::{Height, Uetr};
use crate::ledger::LedgerState;
use crate::payout::PayoutState;

const KEY_NETWORK: &[u8] = b"meta/network";
const KEY_SNAPSHOT: &[u8] = b"state/snapshot";
const KEY_HEIGHT: &[u8] = b"state/height";
const PREFIX_BLOCK: &[u8] = b"block/";
const PREFIX_CERT: &[u8] = b"cert/";
const PREFIX_UETR: &[u8] = b"uetr/";
const PREFIX_PAYOUT: &[u8] = b"payout/";
const PREFIX_META: &[u8] = b"meta/x/";
const KEY_UETR_SNAPSHOT: &[u8] = b"state/uetr_snapshot";
const KEY_GAP: &[u8] = b"state/history_gap";

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
    ) -> Result<(), StoreError> {
        self.append_block_with_meta(block, state, certificate, &[])
    }
    /// [`LedgerStore::append_block`], writing `meta` key-values (such as the
    /// replication log position the block was applied from) in the same
    /// atomic batch.
    fn append_block_with_meta(
        &self,
        block: &Block,
        state: &LedgerState,
        certificate: Option<&Certificate>,
        meta: &[(&str, Vec<u8>)],
    ) -> Result<(), StoreError>;
    /// Durably writes metadata key-values in one batch.
    fn put_meta(&self, meta: &[(&str, Vec<u8>)]) -> Result<(), StoreError>;
    /// Reads a metadata value.
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces the state with a snapshot at `tip`'s height (Raft snapshot
    /// install), durably. Blocks between the old applied height and the tip
    /// are recorded as a history gap to backfill from peers.
    fn install_snapshot(
        &self,
        tip: &Block,
        state: &LedgerState,
        certificate: Option<&Certificate>,
        meta: &[(&str, Vec<u8>)],
    ) -> Result<(), StoreError>;
    /// The heights (inclusive range) missing below the applied height after
    /// a snapshot install, if any.
    fn history_gap(&self) -> Result<Option<(Height, Height)>, StoreError>;
    /// Durably stores a block inside the history gap; it must be the gap's
    /// highest height and link to the stored block above it. `state` is the
    /// current state, whose index (from the snapshot) holds the records of the
    /// block's accepted transfers.
    fn backfill_block(
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

fn meta_key(key: &str) -> Vec<u8> {
    let mut full = PREFIX_META.to_vec();
    full.extend_from_slice(key.as_bytes());
    full
}

fn height_key(prefix: &[u8], height: Height) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&height.0.to_be_bytes());
    key
}

/// Adds a block and its certificate (when known) to `batch`.
fn insert_block(batch: &mut sled::Batch, block: &Block, certificate: Option<&Certificate>) {
    let height = block.height();
    batch.insert(height_key(PREFIX_BLOCK, height), block.encode());
    if let Some(certificate) = certificate {
        batch.insert(height_key(PREFIX_CERT, height), certificate.to_bytes().to_vec());
    }
}

/// Adds the state snapshot and applied height after `height` to `batch`.
fn insert_state(batch: &mut sled::Batch, state: &LedgerState, height: Height) {
    batch.insert(KEY_SNAPSHOT, state.encode_snapshot());
    batch.insert(KEY_HEIGHT, &height.0.to_be_bytes());
}

/// Adds metadata key-values to `batch`.
fn insert_meta(batch: &mut sled::Batch, meta: &[(&str, Vec<u8>)]) {
    for (key, value) in meta {
        batch.insert(meta_key(key), value.as_slice());
    }
}

/// The stored form of a history gap: first and last missing height.
fn gap_value(start: u64, end: u64) -> Vec<u8> {
    let mut gap = start.to_be_bytes().to_vec();
    gap.extend_from_slice(&end.to_be_bytes());
    gap
}

/// Adds the block's index values to `batch`: `uetr/<height>` with the record
/// of every transfer it accepted (taken from `state`, and checked against the
/// block), and `payout/<height>` with the payout states its accepted reports
/// set, when there are any.
fn insert_block_index(batch: &mut sled::Batch, block: &Block, state: &LedgerState) -> Result<(), StoreError> {
    let height = block.height();
    let mut records: Vec<(&Uetr, &AppliedTransfer)> = Vec::with_capacity(block.header.accepted_count as usize);
    let mut payouts: Vec<(Uetr, PayoutState)> = Vec::new();
    for (entry, result) in block.entries.iter().zip(&block.results) {
        let EntryResult::Batch { outcomes } = result else { continue };
        match entry {
            Entry::TransferBatch { batch } => {
                for (transfer, _) in
                    batch.transfers.iter().zip(outcomes).filter(|(_, o)| **o == TransferOutcome::Accepted)
                {
                    let record = state.applied_record_of(transfer, height).ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "uetr {} accepted at height {height} is not indexed as the block says",
                            transfer.uetr
                        ))
                    })?;
                    records.push((&transfer.uetr, record));
                }
            }
            Entry::PayoutReports { batch } => {
                for (report, _) in batch.reports.iter().zip(outcomes).filter(|(_, o)| **o == TransferOutcome::Accepted)
                {
                    payouts.push((report.uetr, report.outcome.state()));
                }
            }
            _ => {}
        }
    }
    if records.len() != block.header.accepted_count as usize {
        return Err(StoreError::Corrupt(format!(
            "block {height} accepts {} transfers but its header says {}",
            records.len(),
            block.header.accepted_count
        )));
    }
    batch.insert(height_key(PREFIX_UETR, height), encode_block_transfers(records.into_iter()));
    if !payouts.is_empty() {
        batch.insert(height_key(PREFIX_PAYOUT, height), encode_block_payouts(&payouts));
    }
    Ok(())
}

impl SledLedgerStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).open()?;
        Ok(Self { db })
    }

    /// The underlying database, for other trees of the same node (the
    /// replication log) so they share one lock and one flush.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Applies `batch` atomically and flushes it: durable when this returns.
    fn commit(&self, batch: sled::Batch) -> Result<(), StoreError> {
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    fn height_value(bytes: &[u8]) -> Result<Height, StoreError> {
        let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt("height is not 8 bytes".into()))?;
        Ok(Height(u64::from_be_bytes(array)))
    }

    /// Rebuilds the applied-transfer index: the snapshot index left by a
    /// Raft snapshot install (if any), then every block's accepted transfers
    /// (`uetr/`), then every block's payout changes (`payout/`), each in
    /// height order.
    fn applied_index(&self) -> Result<HashMap<Uetr, AppliedTransfer>, StoreError> {
        // After a snapshot install the index below the snapshot comes from
        // the snapshot; backfilled blocks then repeat some of it, at the same
        // heights and with the same payout states, which is consistent.
        let (mut applied, from_snapshot) = match self.db.get(KEY_UETR_SNAPSHOT)? {
            Some(bytes) => (decode_index(&bytes)?, true),
            None => (HashMap::new(), false),
        };
        for item in self.db.scan_prefix(PREFIX_UETR) {
            let (key, value) = item?;
            let height = Self::height_value(&key[PREFIX_UETR.len()..])?;
            for (uetr, record) in decode_block_transfers(&value, height)? {
                match applied.entry(uetr) {
                    MapEntry::Vacant(vacant) => {
                        vacant.insert(record);
                    }
                    MapEntry::Occupied(known) if from_snapshot && known.get().same_transfer(&record) => {}
                    MapEntry::Occupied(_) => return Err(StoreError::Corrupt(format!("uetr {uetr} indexed twice"))),
                }
            }
        }
        for item in self.db.scan_prefix(PREFIX_PAYOUT) {
            let (key, value) = item?;
            let height = Self::height_value(&key[PREFIX_PAYOUT.len()..])?;
            for (uetr, state) in decode_block_payouts(&value)? {
                let corrupt =
                    |reason: &str| StoreError::Corrupt(format!("payout of uetr {uetr} at height {height}: {reason}"));
                let record = applied.get_mut(&uetr).ok_or_else(|| corrupt("the transfer is not indexed"))?;
                if record.height > height {
                    return Err(corrupt("reported below the transfer's height"));
                }
                match record.payout {
                    PayoutState::Open => record.payout = state,
                    known if from_snapshot && known == state => {}
                    _ => return Err(corrupt("reported twice")),
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

    fn append_block_with_meta(
        &self,
        block: &Block,
        state: &LedgerState,
        certificate: Option<&Certificate>,
        meta: &[(&str, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let height = block.height();
        let expected = self.applied_height()?.map_or(Height::GENESIS, Height::next);
        if height != expected {
            return Err(StoreError::Corrupt(format!("append of height {height}, expected {expected}")));
        }
        assert_eq!(state.tip().map(|(h, _)| h), Some(height), "the state passed must be the one after the block");
        let mut batch = sled::Batch::default();
        insert_block(&mut batch, block, certificate);
        insert_block_index(&mut batch, block, state)?;
        insert_state(&mut batch, state, height);
        insert_meta(&mut batch, meta);
        self.commit(batch)
    }

    fn put_meta(&self, meta: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        insert_meta(&mut batch, meta);
        self.commit(batch)
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(meta_key(key))?.map(|bytes| bytes.to_vec()))
    }

    fn install_snapshot(
        &self,
        tip: &Block,
        state: &LedgerState,
        certificate: Option<&Certificate>,
        meta: &[(&str, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let height = tip.height();
        let previous = self.applied_height()?;
        let mut batch = sled::Batch::default();
        insert_block(&mut batch, tip, certificate);
        batch.insert(KEY_UETR_SNAPSHOT, encode_index(state.applied_transfers()));
        insert_state(&mut batch, state, height);
        // A gap left by an earlier install and not yet backfilled extends the
        // new one: backfill rewrites any block it already holds identically.
        let gap_start = match self.history_gap()? {
            Some((start, _)) => start.0,
            None => previous.map_or(0, |h| h.0 + 1),
        };
        if gap_start < height.0 {
            batch.insert(KEY_GAP, gap_value(gap_start, height.0 - 1));
        }
        insert_meta(&mut batch, meta);
        self.commit(batch)
    }

    fn history_gap(&self) -> Result<Option<(Height, Height)>, StoreError> {
        match self.db.get(KEY_GAP)? {
            Some(bytes) if bytes.len() == 16 => {
                Ok(Some((Self::height_value(&bytes[..8])?, Self::height_value(&bytes[8..])?)))
            }
            Some(_) => Err(StoreError::Corrupt("history gap is not 16 bytes".into())),
            None => Ok(None),
        }
    }

    fn backfill_block(
        &self,
        block: &Block,
        state: &LedgerState,
        certificate: Option<&Certificate>,
    ) -> Result<(), StoreError> {
        let Some((start, end)) = self.history_gap()? else {
            return Err(StoreError::Corrupt("backfill without a history gap".into()));
        };
        let height = block.height();
        if height != end {
            return Err(StoreError::Corrupt(format!("backfill of height {height}, expected {end}")));
        }
        let above =
            self.block(height.next())?.ok_or_else(|| StoreError::Corrupt("block above the gap missing".into()))?;
        if above.header.prev_hash != block.hash() {
            return Err(StoreError::Corrupt(format!("backfilled block {height} does not link to the block above")));
        }
        let mut batch = sled::Batch::default();
        insert_block(&mut batch, block, certificate);
        insert_block_index(&mut batch, block, state)?;
        if height == start {
            batch.remove(KEY_GAP);
        } else {
            batch.insert(KEY_GAP, gap_value(start.0, height.0 - 1));
        }
        self.commit(batch)
    }

    fn put_certificate(&self, height: Height, certificate: &Certificate) -> Result<(), StoreError> {
        if self.db.get(height_key(PREFIX_BLOCK, height))?.is_none() {
            return Err(StoreError::Corrupt(format!("certificate for missing block {height}")));
        }
        let mut batch = sled::Batch::default();
        batch.insert(height_key(PREFIX_CERT, height), certificate.to_bytes().to_vec());
        self.commit(batch)
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
        let state = LedgerState::decode_snapshot(&snapshot, self.applied_index()?)?;
        Ok(Some(state))
    }
}
