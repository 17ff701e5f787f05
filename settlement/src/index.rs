//! The duplicate index: every accepted transfer the ledger still remembers
//! (to refuse a second transfer with its UETR, check a payout report and
//! reverse a return), bounded in time and committed to by the state root.
//!
//! **Segments.** The transfers one block accepted form that block's segment,
//! in block order. A segment is forgotten as a whole once its block is older
//! than the replay retention (`horizon + future skew`, see [`crate::ledger`]):
//! a transfer is accepted only while `created_at >= block time - horizon`
//! and `created_at <= block time + skew`, so by then no transfer carrying one
//! of its UETRs with the same `created_at` can be accepted any more. A
//! segment that still has open payouts lingers until its last one is
//! reported, so a late payout report or return still finds its transfer.
//!
//! **Hashes, maintained incrementally.** A segment's hash covers its height,
//! block time and records (with payout states); a *chapter* hashes the
//! segments of [`INDEX_CHAPTER_HEIGHTS`] consecutive heights; the index root
//! hashes the chapters. A block rehashes only the segments it added or whose
//! payout states it changed, the chapters holding them or a forgotten
//! segment, and the root: a few hundred microseconds, whatever the size of
//! the index. Anyone holding the records (a snapshot, a store) recomputes the
//! same root from scratch ([`TransferIndex::restore`]).
//!
//! Everything here is deterministic: segments and chapters are ordered maps,
//! records are kept in block order, and the hash map of records is only ever
//! looked up, never iterated into a hash or a result.

use std::collections::{BTreeMap, BTreeSet};

use crate::applied::AppliedTransfer;
use crate::codec::{DecodeError, Reader, Writer};
use crate::constants::{BLOCK_TRANSFERS_MAX, INDEX_CHAPTER_HEIGHTS};
use crate::hash::{hash_with_domain, Digest32};
use crate::ids::{Height, Uetr};
use crate::payout::PayoutState;
use crate::uetr_map::UetrMap;

/// Domain tag of a segment hash.
pub const SEGMENT_HASH_TAG: &[u8] = b"REMIT_INDEX_SEGMENT_V1";
/// Domain tag of a chapter hash.
pub const CHAPTER_HASH_TAG: &[u8] = b"REMIT_INDEX_CHAPTER_V1";
/// Domain tag of the index root.
pub const INDEX_ROOT_TAG: &[u8] = b"REMIT_INDEX_ROOT_V1";
/// Domain tag of the whole index as carried by a Raft snapshot.
pub const INDEX_SNAPSHOT_TAG: &[u8] = b"REMIT_INDEX_V2";
/// Domain tag of a segment's records as stored (store key `seg/<height>`).
pub const SEGMENT_VALUE_TAG: &[u8] = b"REMIT_INDEX_SEGMENT_VALUE_V1";
/// Domain tag of a segment's payout states as stored (`segpay/<height>`).
pub const SEGMENT_PAYOUTS_TAG: &[u8] = b"REMIT_INDEX_SEGMENT_PAYOUTS_V1";

/// Encoded size of a record without its payout state: UETR, two slots,
/// currency, amount.
const RECORD_BYTES: usize = 16 + 4 + 4 + 3 + 8;

/// One block's accepted transfers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Segment {
    /// The block's timestamp: the segment is forgotten by it.
    timestamp_ms: u64,
    /// The records, in block order. Hashing and encoding a segment walks
    /// this vector; no lookup by UETR.
    records: Vec<(Uetr, AppliedTransfer)>,
    /// Records whose payout is still open.
    open: u32,
    /// Hash of the segment (valid at block boundaries).
    hash: Digest32,
}

/// Where a remembered record lives: its segment and position there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Location {
    height: Height,
    position: u32,
}

/// What one block changed in the index, for the store to persist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexChanges {
    /// The segment the block created, if it accepted any transfer.
    pub added: Option<Height>,
    /// Older segments, still remembered, whose payout states the block changed.
    pub payouts: BTreeSet<Height>,
    /// Segments the block forgot.
    pub dropped: Vec<Height>,
}

/// A segment as read back from a snapshot or a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredSegment {
    /// The block height.
    pub height: Height,
    /// The block timestamp.
    pub timestamp_ms: u64,
    /// The records, in block order (their `height` is the segment's).
    pub records: Vec<(Uetr, AppliedTransfer)>,
}

/// The bounded, hashed duplicate index. See the module documentation.
#[derive(Clone, Debug)]
pub struct TransferIndex {
    locations: UetrMap<Location>,
    segments: BTreeMap<Height, Segment>,
    /// Segments past their retention, kept for their open payouts.
    lingering: BTreeSet<Height>,
    /// Segments below this height are past their retention (forgotten or lingering).
    retained_from: Height,
    /// Hash of every chapter that holds a segment.
    chapters: BTreeMap<u64, Digest32>,
    root: Digest32,
    /// Segments whose hash the current block must recompute.
    dirty: BTreeSet<Height>,
    changes: IndexChanges,
}

impl Default for TransferIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for TransferIndex {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root && self.locations == other.locations && self.segments == other.segments
    }
}

fn chapter_of(height: Height) -> u64 {
    height.0 / INDEX_CHAPTER_HEIGHTS
}

impl TransferIndex {
    /// An empty index.
    pub fn new() -> Self {
        let mut index = Self {
            locations: UetrMap::new(),
            segments: BTreeMap::new(),
            lingering: BTreeSet::new(),
            retained_from: Height::GENESIS,
            chapters: BTreeMap::new(),
            root: Digest32::ZERO,
            dirty: BTreeSet::new(),
            changes: IndexChanges::default(),
        };
        index.root = index.compute_root();
        index
    }

    /// Number of transfers remembered.
    pub fn len(&self) -> usize {
        self.locations.len()
    }

    /// Whether no transfer is remembered.
    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }

    /// Number of segments (blocks) remembered, lingering ones included.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Number of segments kept past their retention for open payouts.
    pub fn lingering_count(&self) -> usize {
        self.lingering.len()
    }

    /// The record of `uetr`, if remembered.
    pub fn get(&self, uetr: &Uetr) -> Option<&AppliedTransfer> {
        let location = self.locations.get(uetr)?;
        let segment = self.segments.get(&location.height).expect("every location names a remembered segment");
        Some(&segment.records[location.position as usize].1)
    }

    /// Whether `uetr` is remembered.
    pub fn contains(&self, uetr: &Uetr) -> bool {
        self.locations.contains_key(uetr)
    }

    /// Every remembered record, by height then block order.
    pub fn iter(&self) -> impl Iterator<Item = (&Uetr, &AppliedTransfer)> {
        self.segments.values().flat_map(|segment| segment.records.iter().map(|(uetr, record)| (uetr, record)))
    }

    /// The index root, as of the last block boundary.
    pub fn root(&self) -> Digest32 {
        self.root
    }

    /// What the last applied block changed.
    pub fn changes(&self) -> &IndexChanges {
        &self.changes
    }

    /// Starts a block: forgets the previous block's change list.
    pub(crate) fn begin_block(&mut self) {
        self.dirty.clear();
        self.changes = IndexChanges::default();
    }

    /// Adds an accepted transfer to the segment of its block (`record.height`,
    /// with the block's `timestamp_ms`). The caller has checked that `uetr`
    /// is not remembered.
    pub(crate) fn insert(&mut self, uetr: Uetr, record: AppliedTransfer, timestamp_ms: u64) {
        let height = record.height;
        let segment = self.segments.entry(height).or_insert_with(|| Segment {
            timestamp_ms,
            records: Vec::new(),
            open: 0,
            hash: Digest32::ZERO,
        });
        let position = u32::try_from(segment.records.len()).expect("a block holds at most BLOCK_TRANSFERS_MAX");
        segment.records.push((uetr, record));
        if record.payout == PayoutState::Open {
            segment.open += 1;
        }
        let previous = self.locations.insert(uetr, Location { height, position });
        debug_assert!(previous.is_none(), "the caller checks for duplicates");
        self.dirty.insert(height);
        self.changes.added = Some(height);
    }

    /// Records the payout state of an open transfer and returns its record.
    /// The caller has checked that the payout is open.
    pub(crate) fn close_payout(&mut self, uetr: &Uetr, state: PayoutState) -> Option<AppliedTransfer> {
        let location = *self.locations.get(uetr)?;
        let segment = self.segments.get_mut(&location.height).expect("every location names a remembered segment");
        let record = &mut segment.records[location.position as usize].1;
        debug_assert_eq!(record.payout, PayoutState::Open, "the caller checks the payout is open");
        record.payout = state;
        let record = *record;
        segment.open -= 1;
        self.dirty.insert(record.height);
        if self.changes.added != Some(record.height) {
            self.changes.payouts.insert(record.height);
        }
        Some(record)
    }

    /// Ends a block at `timestamp_ms`: forgets segments older than
    /// `retention_ms` with no open payout (others linger), forgets lingering
    /// segments whose last payout the block closed, and rehashes what
    /// changed. Returns the number of transfers forgotten.
    pub(crate) fn end_block(&mut self, timestamp_ms: u64, retention_ms: u64) -> u64 {
        let cutoff = timestamp_ms.saturating_sub(retention_ms);
        let expired: Vec<Height> = self
            .segments
            .range(self.retained_from..)
            .take_while(|(_, segment)| segment.timestamp_ms < cutoff)
            .map(|(height, _)| *height)
            .collect();
        let mut forgotten = 0;
        for height in expired {
            self.retained_from = height.next();
            if self.segments[&height].open == 0 {
                forgotten += self.forget(height);
            } else {
                self.lingering.insert(height);
            }
        }
        let closed: Vec<Height> = self
            .changes
            .payouts
            .iter()
            .copied()
            .filter(|height| self.lingering.contains(height) && self.segments[height].open == 0)
            .collect();
        for height in closed {
            self.lingering.remove(&height);
            forgotten += self.forget(height);
        }
        self.rehash();
        forgotten
    }

    fn forget(&mut self, height: Height) -> u64 {
        let segment = self.segments.remove(&height).expect("only remembered segments are forgotten");
        for (uetr, _) in &segment.records {
            self.locations.remove(uetr);
        }
        self.dirty.remove(&height);
        self.changes.payouts.remove(&height);
        self.changes.dropped.push(height);
        segment.records.len() as u64
    }

    /// Recomputes the hashes of dirty segments, of the chapters holding
    /// them or a forgotten segment, and the root.
    fn rehash(&mut self) {
        let mut chapters: BTreeSet<u64> = self.changes.dropped.iter().map(|h| chapter_of(*h)).collect();
        let mut w = Writer::default();
        for height in std::mem::take(&mut self.dirty) {
            let segment = self.segments.get_mut(&height).expect("dirty segments are remembered");
            segment.hash = segment_hash(&mut w, height, segment);
            chapters.insert(chapter_of(height));
        }
        if chapters.is_empty() {
            return;
        }
        for chapter in chapters {
            match self.chapter_hash(&mut w, chapter) {
                Some(hash) => self.chapters.insert(chapter, hash),
                None => self.chapters.remove(&chapter),
            };
        }
        self.root = self.compute_root();
    }

    fn chapter_hash(&self, w: &mut Writer, chapter: u64) -> Option<Digest32> {
        let first = Height(chapter * INDEX_CHAPTER_HEIGHTS);
        let last = Height(first.0 + (INDEX_CHAPTER_HEIGHTS - 1));
        let mut segments = self.segments.range(first..=last).peekable();
        segments.peek()?;
        w.clear();
        w.u64(chapter);
        for (height, segment) in segments {
            w.u64(height.0);
            w.digest(&segment.hash);
        }
        Some(hash_with_domain(CHAPTER_HASH_TAG, w.as_bytes()))
    }

    fn compute_root(&self) -> Digest32 {
        let mut w = Writer::with_capacity(16 + self.chapters.len() * 40);
        w.u64(self.locations.len() as u64);
        w.u64(self.chapters.len() as u64);
        for (chapter, hash) in &self.chapters {
            w.u64(*chapter);
            w.digest(hash);
        }
        hash_with_domain(INDEX_ROOT_TAG, w.as_bytes())
    }

    /// Rebuilds an index from its segments (from a snapshot or a store) as
    /// of a block at `timestamp_ms`, recomputing every hash. Refuses
    /// segments out of order or above `tip`, a UETR twice, a record whose
    /// height is not its segment's, and a segment that should have been
    /// forgotten (past its retention with no open payout).
    pub fn restore(
        segments: Vec<RestoredSegment>,
        tip: Option<Height>,
        timestamp_ms: u64,
        retention_ms: u64,
    ) -> Result<Self, DecodeError> {
        let bad = |reason: String| Err(DecodeError::new("duplicate index", reason));
        let cutoff = timestamp_ms.saturating_sub(retention_ms);
        let mut index = Self::new();
        let mut previous: Option<(Height, u64)> = None;
        for restored in segments {
            let height = restored.height;
            if tip.is_none_or(|tip| height > tip) {
                return bad(format!("segment {height} is above the tip"));
            }
            if let Some((before, before_timestamp)) = previous {
                if height <= before || restored.timestamp_ms < before_timestamp {
                    return bad(format!("segment {height} is out of order"));
                }
            }
            previous = Some((height, restored.timestamp_ms));
            if restored.records.is_empty() {
                return bad(format!("segment {height} is empty"));
            }
            let mut segment = Segment {
                timestamp_ms: restored.timestamp_ms,
                records: Vec::with_capacity(restored.records.len()),
                open: 0,
                hash: Digest32::ZERO,
            };
            for (position, (uetr, record)) in restored.records.into_iter().enumerate() {
                if record.height != height {
                    return bad(format!("uetr {uetr} is recorded at height {} in segment {height}", record.height));
                }
                let position = u32::try_from(position).expect("bounded by BLOCK_TRANSFERS_MAX when decoded");
                if index.locations.insert(uetr, Location { height, position }).is_some() {
                    return bad(format!("uetr {uetr} is listed twice"));
                }
                segment.records.push((uetr, record));
                if record.payout == PayoutState::Open {
                    segment.open += 1;
                }
            }
            if segment.timestamp_ms < cutoff {
                if segment.open == 0 {
                    return bad(format!("segment {height} is past its retention with no open payout"));
                }
                index.lingering.insert(height);
                index.retained_from = height.next();
            }
            index.segments.insert(height, segment);
            index.dirty.insert(height);
        }
        index.rehash();
        index.changes = IndexChanges::default();
        Ok(index)
    }

    /// Every segment with its records (and payout states), in height order.
    pub fn segments(&self) -> Vec<RestoredSegment> {
        self.segments.keys().map(|height| self.segment(*height).expect("listed")).collect()
    }

    /// One segment with its records, if remembered.
    pub fn segment(&self, height: Height) -> Option<RestoredSegment> {
        let segment = self.segments.get(&height)?;
        Some(RestoredSegment { height, timestamp_ms: segment.timestamp_ms, records: segment.records.clone() })
    }

    /// The whole index for a Raft snapshot: every segment in height order,
    /// each record with its payout state.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(INDEX_SNAPSHOT_TAG.len() + 8 + self.locations.len() * (RECORD_BYTES + 5));
        w.raw(INDEX_SNAPSHOT_TAG);
        w.u64(self.segments.len() as u64);
        for (height, segment) in &self.segments {
            w.u64(height.0);
            w.u64(segment.timestamp_ms);
            w.len(segment.records.len());
            for (uetr, record) in &segment.records {
                encode_record(&mut w, uetr, record);
                record.payout.encode(&mut w);
            }
        }
        w.into_bytes()
    }

    /// Encoded records of the segment at `height` for the store (without
    /// payout states, which change and are stored apart).
    pub fn encode_segment_value(&self, height: Height) -> Option<Vec<u8>> {
        let segment = self.segments.get(&height)?;
        let mut w = Writer::with_capacity(SEGMENT_VALUE_TAG.len() + 12 + segment.records.len() * RECORD_BYTES);
        w.raw(SEGMENT_VALUE_TAG);
        w.u64(segment.timestamp_ms);
        w.len(segment.records.len());
        for (uetr, record) in &segment.records {
            encode_record(&mut w, uetr, record);
        }
        Some(w.into_bytes())
    }

    /// Encoded payout states of the segment at `height`, in record order;
    /// `None` when it is not remembered or every payout is still open.
    pub fn encode_segment_payouts(&self, height: Height) -> Option<Vec<u8>> {
        let segment = self.segments.get(&height)?;
        if segment.open as usize == segment.records.len() {
            return None;
        }
        let mut w = Writer::with_capacity(SEGMENT_PAYOUTS_TAG.len() + 4 + segment.records.len());
        w.raw(SEGMENT_PAYOUTS_TAG);
        w.len(segment.records.len());
        for (_, record) in &segment.records {
            record.payout.encode(&mut w);
        }
        Some(w.into_bytes())
    }
}

fn encode_record(w: &mut Writer, uetr: &Uetr, record: &AppliedTransfer) {
    w.raw(uetr.as_bytes());
    w.u32(record.origin_slot);
    w.u32(record.destination_slot);
    w.currency(record.currency);
    w.u64(record.amount_minor_units);
}

fn decode_record(r: &mut Reader<'_>, height: Height) -> Result<(Uetr, AppliedTransfer), DecodeError> {
    let uetr = Uetr::from_bytes(r.array()?).map_err(|e| r.error(e))?;
    let record = AppliedTransfer {
        height,
        origin_slot: r.u32()?,
        destination_slot: r.u32()?,
        currency: r.currency()?,
        amount_minor_units: r.u64()?,
        payout: PayoutState::Open,
    };
    Ok((uetr, record))
}

fn segment_hash(w: &mut Writer, height: Height, segment: &Segment) -> Digest32 {
    w.clear();
    w.u64(height.0);
    w.u64(segment.timestamp_ms);
    w.len(segment.records.len());
    for (uetr, record) in &segment.records {
        encode_record(w, uetr, record);
        record.payout.encode(w);
    }
    hash_with_domain(SEGMENT_HASH_TAG, w.as_bytes())
}

/// Decodes what [`TransferIndex::encode_snapshot`] wrote.
pub fn decode_index_snapshot(bytes: &[u8]) -> Result<Vec<RestoredSegment>, DecodeError> {
    let mut r = Reader::new(bytes, "duplicate index");
    r.tag(INDEX_SNAPSHOT_TAG)?;
    let count = r.u64()?;
    // Every segment takes at least 20 bytes: guards the allocation.
    if count > (bytes.len() / 20) as u64 {
        return Err(r.error(format!("segment count {count} does not fit in {} bytes", bytes.len())));
    }
    let mut segments = Vec::with_capacity(usize::try_from(count).expect("bounded by the input length"));
    for _ in 0..count {
        let height = Height(r.u64()?);
        let timestamp_ms = r.u64()?;
        let records = r.len(BLOCK_TRANSFERS_MAX)?;
        let mut segment = RestoredSegment { height, timestamp_ms, records: Vec::with_capacity(records) };
        for _ in 0..records {
            let (uetr, mut record) = decode_record(&mut r, height)?;
            record.payout = PayoutState::decode(&mut r)?;
            segment.records.push((uetr, record));
        }
        segments.push(segment);
    }
    r.finish()?;
    Ok(segments)
}

/// Decodes a stored segment value (written by
/// [`TransferIndex::encode_segment_value`]) of the block at `height`.
pub fn decode_segment_value(bytes: &[u8], height: Height) -> Result<RestoredSegment, DecodeError> {
    let mut r = Reader::new(bytes, "index segment");
    r.tag(SEGMENT_VALUE_TAG)?;
    let timestamp_ms = r.u64()?;
    let count = r.len(BLOCK_TRANSFERS_MAX)?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        records.push(decode_record(&mut r, height)?);
    }
    r.finish()?;
    Ok(RestoredSegment { height, timestamp_ms, records })
}

/// Applies stored payout states (written by
/// [`TransferIndex::encode_segment_payouts`]) to a decoded segment.
pub fn decode_segment_payouts(bytes: &[u8], segment: &mut RestoredSegment) -> Result<(), DecodeError> {
    let mut r = Reader::new(bytes, "index segment payouts");
    r.tag(SEGMENT_PAYOUTS_TAG)?;
    let count = r.len(BLOCK_TRANSFERS_MAX)?;
    if count != segment.records.len() {
        return Err(r.error(format!(
            "{count} payout states for the {} records of segment {}",
            segment.records.len(),
            segment.height
        )));
    }
    for (_, record) in &mut segment.records {
        record.payout = PayoutState::decode(&mut r)?;
    }
    r.finish()
}

#[cfg(test)]
mod tests {
    use iso_currency::Currency;

    use super::*;
    use crate::payout::ReturnReason;

    fn uetr(n: u32) -> Uetr {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        bytes[6] = 0x40;
        bytes[8] = 0x80;
        Uetr::from_bytes(bytes).expect("v4")
    }

    fn record(height: u64) -> AppliedTransfer {
        AppliedTransfer {
            height: Height(height),
            origin_slot: 1,
            destination_slot: 2,
            currency: Currency::USD,
            amount_minor_units: 1_000,
            payout: PayoutState::Open,
        }
    }

    /// Applies one block: `inserts` new UETRs, closes `closes`, at `timestamp`.
    fn block(index: &mut TransferIndex, height: u64, timestamp: u64, inserts: &[u32], closes: &[u32]) -> u64 {
        index.begin_block();
        for n in inserts {
            index.insert(uetr(*n), record(height), timestamp);
        }
        for n in closes {
            index.close_payout(&uetr(*n), PayoutState::Completed).expect("known");
        }
        index.end_block(timestamp, 100)
    }

    fn restored(index: &TransferIndex, timestamp: u64) -> TransferIndex {
        let segments = decode_index_snapshot(&index.encode_snapshot()).expect("decodes");
        TransferIndex::restore(segments, Some(Height(u64::MAX - 1)), timestamp, 100).expect("restores")
    }

    #[test]
    fn segments_are_forgotten_after_retention_unless_payouts_are_open() {
        let mut index = TransferIndex::new();
        let empty_root = index.root();
        assert_eq!(block(&mut index, 1, 1_000, &[1, 2], &[]), 0);
        assert_eq!(block(&mut index, 2, 1_050, &[3], &[1]), 0);
        assert_eq!(index.changes().payouts.iter().copied().collect::<Vec<_>>(), vec![Height(1)]);
        assert_eq!(index.len(), 3);
        // 1_101: segment 1 (t = 1_000) is past retention but uetr 2 is open.
        assert_eq!(block(&mut index, 3, 1_101, &[], &[3]), 0);
        assert_eq!((index.len(), index.lingering_count()), (3, 1));
        assert_eq!(restored(&index, 1_101).root(), index.root());
        // 1_151: segment 2 is past retention and closed: forgotten.
        assert_eq!(block(&mut index, 4, 1_151, &[], &[]), 1);
        assert!(!index.contains(&uetr(3)));
        assert_eq!(index.changes().dropped, vec![Height(2)]);
        // Closing the last open payout of lingering segment 1 forgets it.
        assert_eq!(block(&mut index, 5, 1_160, &[], &[2]), 2);
        assert!(index.is_empty());
        assert_eq!(index.root(), empty_root);
    }

    #[test]
    fn the_root_depends_on_every_record_and_payout_and_restores_identically() {
        let mut a = TransferIndex::new();
        block(&mut a, 1, 10, &[1, 2], &[]);
        block(&mut a, 2, 20, &[3], &[2]);
        let mut b = TransferIndex::new();
        block(&mut b, 1, 10, &[1, 2], &[]);
        block(&mut b, 2, 20, &[3], &[1]);
        assert_ne!(a.root(), b.root(), "which payout closed matters");
        let restored_a = restored(&a, 20);
        assert_eq!(restored_a.root(), a.root());
        assert_eq!(restored_a, a);
        // Another return reason, another root.
        let mut c = a.clone();
        c.begin_block();
        c.close_payout(&uetr(1), PayoutState::Returned(ReturnReason::new("AC04").expect("valid")));
        c.end_block(30, 100);
        let mut d = a.clone();
        d.begin_block();
        d.close_payout(&uetr(1), PayoutState::Returned(ReturnReason::new("AC01").expect("valid")));
        d.end_block(30, 100);
        assert_ne!(c.root(), d.root());
    }

    #[test]
    fn restore_refuses_inconsistent_segments() {
        let mut index = TransferIndex::new();
        block(&mut index, 1, 10, &[1, 2], &[]);
        block(&mut index, 2, 20, &[3], &[]);
        let segments = index.segments();
        let check = |segments: Vec<RestoredSegment>, tip: u64, timestamp: u64, reason: &str| {
            let error = TransferIndex::restore(segments, Some(Height(tip)), timestamp, 100).expect_err(reason);
            assert!(error.reason.contains(reason), "{error}");
        };
        check(segments.clone(), 1, 20, "above the tip");
        check(segments.iter().rev().cloned().collect(), 5, 20, "out of order");
        let mut twice = segments.clone();
        let (uetr, mut record) = twice[0].records[0];
        record.height = Height(2);
        twice[1].records.push((uetr, record));
        check(twice, 5, 20, "listed twice");
        let mut moved = segments.clone();
        moved[1].records[0].1.height = Height(7);
        check(moved, 5, 20, "recorded at height");
        let mut closed = segments.clone();
        for (_, record) in &mut closed[0].records {
            record.payout = PayoutState::Completed;
        }
        check(closed, 5, 200, "past its retention");
    }

    #[test]
    fn store_values_round_trip() {
        let mut index = TransferIndex::new();
        block(&mut index, 4, 10, &[1, 2, 3], &[]);
        block(&mut index, 5, 11, &[], &[2]);
        let value = index.encode_segment_value(Height(4)).expect("remembered");
        let mut segment = decode_segment_value(&value, Height(4)).expect("decodes");
        let payouts = index.encode_segment_payouts(Height(4)).expect("one closed");
        decode_segment_payouts(&payouts, &mut segment).expect("decodes");
        assert_eq!(Some(segment), index.segment(Height(4)));
        assert!(decode_segment_value(&value[..value.len() - 1], Height(4)).is_err());
        assert!(decode_index_snapshot(&index.encode_snapshot()[1..]).is_err());
    }
}
