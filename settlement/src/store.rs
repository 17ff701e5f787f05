//! Durable ledger storage behind the [`LedgerStore`] trait, with a sled
//! implementation. A block, the duplicate-index segments it added, changed
//! or forgot, the state snapshot after it and the applied height are written
//! in one batch and flushed before the call returns: nothing is reported
//! applied before it is durable.
//!
//! Key layout (one sled tree; see `docs/database.md`):
//! `meta/network`, `block/<height u64 BE>`, `cert/<height>`, `seg/<height>`,
//! `segpay/<height>`, `state/snapshot`, `state/height`, `state/history_gap`,
//! `meta/x/<key>`.

use std::path::Path;

use crate::block::Block;
use crate::certify::Certificate;
use crate::codec::DecodeError;
use crate::ids::Height;
use crate::index::{decode_segment_payouts, decode_segment_value, RestoredSegment};
use crate::ledger::LedgerState;

const KEY_NETWORK: &[u8] = b"meta/network";
const KEY_SNAPSHOT: &[u8] = b"state/snapshot";
const KEY_HEIGHT: &[u8] = b"state/height";
const PREFIX_BLOCK: &[u8] = b"block/";
const PREFIX_CERT: &[u8] = b"cert/";
const PREFIX_SEGMENT: &[u8] = b"seg/";
const PREFIX_SEGMENT_PAYOUTS: &[u8] = b"segpay/";
const PREFIX_META: &[u8] = b"meta/x/";
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
    /// A write failed (injected by fault tests, see [`SledLedgerStore::fail_writes_from`]).
    #[error("store write failed: {0}")]
    WriteFailed(String),
}

/// Durable storage of blocks, certificates, the duplicate index and state.
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
    /// Writes metadata key-values in one batch, durable with the next
    /// durable write (or the store's periodic flush), not before returning.
    fn put_meta_lazily(&self, meta: &[(&str, Vec<u8>)]) -> Result<(), StoreError>;
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
    /// highest height and link to the stored block above it.
    fn backfill_block(&self, block: &Block, certificate: Option<&Certificate>) -> Result<(), StoreError>;
    /// Stores the certificate of a stored block. It is durable with the next
    /// durable write (the next block) or the store's periodic flush: a
    /// certificate lost in a crash is fetched again from the peers (the
    /// certifier looks for missing ones on start), and finality does not
    /// depend on one node's copy.
    fn put_certificate(&self, height: Height, certificate: &Certificate) -> Result<(), StoreError>;
    /// The highest applied height.
    fn applied_height(&self) -> Result<Option<Height>, StoreError>;
    /// A block's canonical encoding.
    fn block_bytes(&self, height: Height) -> Result<Option<Vec<u8>>, StoreError>;
    /// A block's certificate.
    fn certificate(&self, height: Height) -> Result<Option<Certificate>, StoreError>;
    /// The state after the applied height, with the duplicate index.
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
    /// Fault injection: block writes at or above this height fail
    /// (`u64::MAX`: none).
    fail_from: std::sync::Arc<std::sync::atomic::AtomicU64>,
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

/// Adds what the block changed in the duplicate index to `batch`: the
/// segment it created (`seg/<height>`, plus `segpay/<height>` when a report
/// in the same block closed one of its payouts), the payout states it changed
/// in older segments, and the segments it forgot (removed). Checks the new
/// segment against the block's accepted count.
fn insert_index_changes(batch: &mut sled::Batch, block: &Block, state: &LedgerState) -> Result<(), StoreError> {
    let index = state.index();
    let changes = index.changes();
    let added = changes.added.map(|height| index.segment(height).map(|s| s.records.len()).unwrap_or_default());
    if added.unwrap_or_default() != block.header.accepted_count as usize
        || changes.added.is_some_and(|height| height != block.height())
    {
        return Err(StoreError::Corrupt(format!(
            "block {} accepts {} transfers but the index added {added:?} at {:?}",
            block.height(),
            block.header.accepted_count,
            changes.added
        )));
    }
    for height in changes.added.iter().chain(&changes.payouts) {
        if Some(*height) == changes.added {
            let value = index.encode_segment_value(*height).expect("the added segment is remembered");
            batch.insert(height_key(PREFIX_SEGMENT, *height), value);
        }
        match index.encode_segment_payouts(*height) {
            Some(value) => batch.insert(height_key(PREFIX_SEGMENT_PAYOUTS, *height), value),
            None => batch.remove(height_key(PREFIX_SEGMENT_PAYOUTS, *height)),
        }
    }
    for height in &changes.dropped {
        batch.remove(height_key(PREFIX_SEGMENT, *height));
        batch.remove(height_key(PREFIX_SEGMENT_PAYOUTS, *height));
    }
    Ok(())
}

impl SledLedgerStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).open()?;
        Ok(Self { db, fail_from: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)) })
    }

    /// Fault injection for tests of the fail-stop: from now on, storing a
    /// block at `height` or above (and any certificate) fails without writing.
    pub fn fail_writes_from(&self, height: Height) {
        self.fail_from.store(height.0, std::sync::atomic::Ordering::SeqCst);
    }

    fn check_injected_failure(&self, height: Height) -> Result<(), StoreError> {
        if height.0 >= self.fail_from.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::WriteFailed(format!("injected failure writing height {height}")));
        }
        Ok(())
    }

    /// The underlying database (an earlier layout kept the Raft log in it:
    /// see [`crate::replica::log_store::SledRaftLog::open_moving_from`]).
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

    /// Reads the duplicate index's segments (`seg/`), each with its payout
    /// states (`segpay/`), in height order.
    fn index_segments(&self) -> Result<Vec<RestoredSegment>, StoreError> {
        let mut segments = Vec::new();
        for item in self.db.scan_prefix(PREFIX_SEGMENT) {
            let (key, value) = item?;
            let height = Self::height_value(&key[PREFIX_SEGMENT.len()..])?;
            segments.push(decode_segment_value(&value, height)?);
        }
        let mut next = 0;
        for item in self.db.scan_prefix(PREFIX_SEGMENT_PAYOUTS) {
            let (key, value) = item?;
            let height = Self::height_value(&key[PREFIX_SEGMENT_PAYOUTS.len()..])?;
            while segments.get(next).is_some_and(|s| s.height < height) {
                next += 1;
            }
            let segment = segments.get_mut(next).filter(|s| s.height == height).ok_or_else(|| {
                StoreError::Corrupt(format!("payout states for segment {height}, which is not stored"))
            })?;
            decode_segment_payouts(&value, segment)?;
        }
        Ok(segments)
    }

    /// Adds the removal of every stored index segment to `batch`.
    fn remove_index(&self, batch: &mut sled::Batch) -> Result<(), StoreError> {
        for prefix in [PREFIX_SEGMENT, PREFIX_SEGMENT_PAYOUTS] {
            for key in self.db.scan_prefix(prefix).keys() {
                batch.remove(key?);
            }
        }
        Ok(())
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
        self.check_injected_failure(height)?;
        let expected = self.applied_height()?.map_or(Height::GENESIS, Height::next);
        if height != expected {
            return Err(StoreError::Corrupt(format!("append of height {height}, expected {expected}")));
        }
        assert_eq!(state.tip().map(|(h, _)| h), Some(height), "the state passed must be the one after the block");
        let mut batch = sled::Batch::default();
        insert_block(&mut batch, block, certificate);
        insert_index_changes(&mut batch, block, state)?;
        insert_state(&mut batch, state, height);
        insert_meta(&mut batch, meta);
        self.commit(batch)
    }

    fn put_meta(&self, meta: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        insert_meta(&mut batch, meta);
        self.commit(batch)
    }

    fn put_meta_lazily(&self, meta: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        insert_meta(&mut batch, meta);
        self.db.apply_batch(batch)?;
        Ok(())
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
        self.remove_index(&mut batch)?;
        let index = state.index();
        for segment in index.segments() {
            let value = index.encode_segment_value(segment.height).expect("listed segments are remembered");
            batch.insert(height_key(PREFIX_SEGMENT, segment.height), value);
            if let Some(value) = index.encode_segment_payouts(segment.height) {
                batch.insert(height_key(PREFIX_SEGMENT_PAYOUTS, segment.height), value);
            }
        }
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

    fn backfill_block(&self, block: &Block, certificate: Option<&Certificate>) -> Result<(), StoreError> {
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
        if height == start {
            batch.remove(KEY_GAP);
        } else {
            batch.insert(KEY_GAP, gap_value(start.0, height.0 - 1));
        }
        self.commit(batch)
    }

    fn put_certificate(&self, height: Height, certificate: &Certificate) -> Result<(), StoreError> {
        self.check_injected_failure(height)?;
        if self.db.get(height_key(PREFIX_BLOCK, height))?.is_none() {
            return Err(StoreError::Corrupt(format!("certificate for missing block {height}")));
        }
        self.db.insert(height_key(PREFIX_CERT, height), certificate.to_bytes().to_vec())?;
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
        let state = LedgerState::decode_snapshot(&snapshot, self.index_segments()?)?;
        Ok(Some(state))
    }
}
