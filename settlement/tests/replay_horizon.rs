//! The replay horizon bounds the duplicate index. (a) Boundaries, on the pure
//! state machine and on a `Chain` over `SledLedgerStore`: a duplicate UETR is
//! `DuplicateUetr` for exactly as long as its block is inside the retention
//! (`horizon + future skew`), and once the index has forgotten it the same
//! transfer is `CreatedTooLongAgo`, for the oldest, the current and the newest
//! `created_at` a block accepts; a segment with an open payout lingers past the
//! retention, its transfer can still be reported (a return reverses the exact
//! amount) and it is forgotten at that block; the store reopens with the same
//! index and state root after segments were forgotten, and their `seg/` and
//! `segpay/` keys are gone. (b) The long run: 3,000,000 transfers over six
//! simulated days (one block every 8.64 s, 50 transfers each, every transfer
//! reported completed three blocks later) keep the index, its segment count and
//! the snapshot size flat after the first day, at exactly one retention's worth
//! of blocks; the figures are printed as a table.

mod common;

use std::collections::VecDeque;
use std::path::Path;
use std::time::Instant;

use common::*;
use iso_currency::Currency;
use remit_settlement::block::TransferOutcome;
use remit_settlement::chain::{Chain, ChainError};
use remit_settlement::constants::{CREATED_AT_HORIZON_MS_DEFAULT, CREATED_AT_SKEW_MS_DEFAULT};
use remit_settlement::index::decode_index_snapshot;
use remit_settlement::network::NetworkConfig;
use remit_settlement::store::SledLedgerStore;
use remit_settlement::{
    BatchSignature, Block, BlockProposal, Digest32, Entry, EntryResult, Height, LedgerState, ParticipantId,
    PayoutReportBatch, PayoutState, RejectReason, SignatureCheck, Transfer, TransferBatch, Uetr,
};

const HORIZON_MS: u64 = CREATED_AT_HORIZON_MS_DEFAULT;
const SKEW_MS: u64 = CREATED_AT_SKEW_MS_DEFAULT;
/// How long a block's segment stays in the index: `horizon + future skew`.
const RETENTION_MS: u64 = HORIZON_MS + SKEW_MS;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn usd(minor: u64) -> remit_settlement::Money {
    money(minor, Currency::USD)
}

/// A transfer with an explicit `created_at_ms`.
fn created_at(n: u64, origin: &str, destination: &str, minor: u64, created_at_ms: u64) -> Transfer {
    let mut t = transfer(uetr(n), origin, destination, usd(minor));
    t.created_at_ms = created_at_ms;
    t
}

/// Applies `entries` as the next block at exactly `timestamp_ms`.
fn apply_at(state: &mut LedgerState, timestamp_ms: u64, entries: Vec<Entry>) -> Block {
    state.apply(proposal(state, timestamp_ms, entries), SignatureCheck::Verify).expect("well-formed proposal applies")
}

fn outcomes(outcomes: Vec<TransferOutcome>) -> Vec<EntryResult> {
    vec![EntryResult::Batch { outcomes }]
}

fn rejected(reason: RejectReason) -> TransferOutcome {
    TransferOutcome::Rejected(reason)
}

/// The state's snapshot encoding (everything but the index) and the index's.
fn encodings(state: &LedgerState) -> (Vec<u8>, Vec<u8>) {
    (state.encode_snapshot(), state.index().encode_snapshot())
}

/// Restores `state` from its own snapshot encodings, as an installing node does.
fn restored(state: &LedgerState) -> LedgerState {
    let (snapshot, index) = encodings(state);
    let segments = decode_index_snapshot(&index).expect("index snapshot decodes");
    LedgerState::decode_snapshot(&snapshot, segments).expect("snapshot decodes")
}

// ---------------------------------------------------------------------------
// (a) Boundaries.

/// One transfer accepted at `t1` with `created_at = t1 + offset` and
/// completed a second later, then sent again (same UETR, same `created_at`):
/// a duplicate until the index forgets its block, which happens at the end
/// of the first block later than `t1 + retention`; from then on it is too
/// old. Positions never move again.
fn check_forgotten_exactly_at_retention(name: &str, created_at_offset: i64) {
    let (mut state, _) = genesis_state();
    let t1 = GENESIS_TIME_MS + 1_000;
    let created = t1.checked_add_signed(created_at_offset).expect("in range");
    let again = || batch("gw-us", vec![created_at(1, "gw-us", "gw-jp", 10_000, created)]);
    let block1 = apply_at(&mut state, t1, vec![again()]);
    assert_eq!(block1.results, outcomes(vec![TransferOutcome::Accepted]), "{name}");
    let positions = all_positions(&state);
    let h1 = block1.height();

    // Inside the retention, and at its last millisecond: a duplicate. The
    // destination completes the payout at once, so nothing keeps the
    // segment past its retention.
    let block = apply_at(&mut state, t1 + 1_000, vec![again(), reports("gw-jp", vec![completed(uetr(1))])]);
    assert_eq!(
        block.results,
        vec![
            EntryResult::Batch { outcomes: vec![rejected(RejectReason::DuplicateUetr)] },
            EntryResult::Batch { outcomes: vec![TransferOutcome::Accepted] },
        ],
        "{name}"
    );
    for t in [t1 + HORIZON_MS, t1 + RETENTION_MS] {
        let block = apply_at(&mut state, t, vec![again()]);
        assert_eq!(block.results, outcomes(vec![rejected(RejectReason::DuplicateUetr)]), "{name} at t1 + {}", t - t1);
        assert_eq!(state.transfer_height(&uetr(1)), Some(h1), "{name}: remembered at t1 + {}", t - t1);
        assert_eq!((state.index().len(), state.index().segment_count()), (1, 1), "{name}");
    }
    // One millisecond past the retention: the transfer is checked against the
    // index before the block forgets the segment, so it is still a duplicate;
    // the segment is forgotten at the end of this block.
    let past = t1 + RETENTION_MS + 1;
    let block = apply_at(&mut state, past, vec![again()]);
    assert_eq!(block.results, outcomes(vec![rejected(RejectReason::DuplicateUetr)]), "{name} one ms past");
    assert_eq!(state.index().changes().dropped, vec![h1], "{name}: forgotten by this block");
    assert_eq!(state.transfer_height(&uetr(1)), None, "{name}");
    assert_eq!((state.index().len(), state.index().segment_count(), state.index().lingering_count()), (0, 0, 0));
    assert_eq!((state.transfers_accepted_total(), state.transfers_forgotten_total()), (1, 1), "{name}");
    assert_eq!(state.payout_state(&uetr(1)), None, "{name}");

    // Forgotten: the same transfer is now too old, even at the same block time
    // (for the newest created_at a block accepts, with one millisecond to spare).
    for t in [past, past + 1, t1 + 3 * DAY_MS] {
        let block = apply_at(&mut state, t, vec![again()]);
        assert_eq!(
            block.results,
            outcomes(vec![rejected(RejectReason::CreatedTooLongAgo)]),
            "{name} at t1 + {}",
            t - t1
        );
        assert!(state.index().is_empty(), "{name}");
    }
    assert_eq!(all_positions(&state), positions, "{name}: no duplicate moved a position");
    assert_eq!(state.transfers_accepted_total(), 1, "{name}");
}

#[test]
fn a_duplicate_is_refused_until_its_block_passes_the_retention_then_it_is_too_old() {
    check_forgotten_exactly_at_retention("oldest created_at accepted", -(HORIZON_MS as i64));
    check_forgotten_exactly_at_retention("created_at at the block time", 0);
    check_forgotten_exactly_at_retention("newest created_at accepted", SKEW_MS as i64);
}

/// Block 1 accepts two transfers; one is completed at once, the other stays
/// open. The segment lingers past the retention (both records, the completed
/// one included), restores identically from a snapshot, and its open transfer
/// is returned two days later, reversing the exact amount; that block forgets it.
#[test]
fn a_segment_with_an_open_payout_lingers_until_its_last_report() {
    let (mut state, _) = genesis_state();
    let t1 = GENESIS_TIME_MS + 1_000;
    let block1 = apply_at(
        &mut state,
        t1,
        vec![batch(
            "gw-us",
            vec![created_at(2, "gw-us", "gw-jp", 10_000, t1), created_at(3, "gw-us", "gw-jp", 12_345, t1)],
        )],
    );
    assert_eq!(block1.header.accepted_count, 2);
    let h1 = block1.height();
    let completed_block = apply_at(&mut state, t1 + 1_000, vec![reports("gw-jp", vec![completed(uetr(2))])]);
    assert_eq!(completed_block.results, outcomes(vec![TransferOutcome::Accepted]));
    assert_eq!(state.index().changes().payouts.iter().copied().collect::<Vec<_>>(), vec![h1]);
    let after_transfers = all_positions(&state);
    assert_eq!(position(&state, "gw-us", Currency::USD), -22_345);

    // Past the retention: the segment lingers, whole.
    let block =
        apply_at(&mut state, t1 + RETENTION_MS + 1, vec![batch("gw-us", vec![created_at(2, "gw-us", "gw-jp", 1, t1)])]);
    assert_eq!(block.results, outcomes(vec![rejected(RejectReason::DuplicateUetr)]), "still remembered");
    let index = state.index();
    assert_eq!((index.len(), index.segment_count(), index.lingering_count()), (2, 1, 1));
    assert!(index.changes().dropped.is_empty());
    assert_eq!(state.payout_state(&uetr(2)), Some(PayoutState::Completed));
    assert_eq!(state.payout_state(&uetr(3)), Some(PayoutState::Open));
    assert_eq!(state.transfers_forgotten_total(), 0);
    let lingering = restored(&state);
    assert_eq!(lingering, state, "a lingering segment restores with the same root");
    assert_eq!(lingering.index().lingering_count(), 1);
    assert_eq!(encodings(&lingering), encodings(&state));
    // The restored copy forgets it at the same block as the original.
    let mut twin = lingering;

    // Two days later the destination returns the open transfer.
    let late = t1 + 2 * DAY_MS;
    let entries = vec![reports("gw-jp", vec![returned(uetr(3), "AC04")])];
    let block = apply_at(&mut state, late, entries.clone());
    assert_eq!(block.results, outcomes(vec![TransferOutcome::Accepted]));
    assert_eq!(apply_at(&mut twin, late, entries), block, "the restored state applies it identically");
    assert_eq!(position(&state, "gw-us", Currency::USD), -10_000, "the return reversed exactly 123.45 USD");
    assert_eq!(position(&state, "gw-jp", Currency::USD), 10_000);
    let mut expected = after_transfers.clone();
    *expected.get_mut(&("gw-us".to_owned(), "USD".to_owned())).expect("listed") += 12_345;
    *expected.get_mut(&("gw-jp".to_owned(), "USD".to_owned())).expect("listed") -= 12_345;
    assert_eq!(all_positions(&state), expected, "nothing else moved");
    let index = state.index();
    assert_eq!(index.changes().dropped, vec![h1], "forgotten at the block of its last report");
    assert_eq!((index.len(), index.segment_count(), index.lingering_count()), (0, 0, 0));
    assert_eq!((state.transfers_forgotten_total(), state.payout_reports_total()), (2, 2));
    assert_eq!(state.payout_state(&uetr(3)), None);

    // Forgotten: another report finds nothing, the transfer is too old.
    let block = apply_at(
        &mut state,
        late + 1_000,
        vec![
            reports("gw-jp", vec![completed(uetr(3))]),
            batch("gw-us", vec![created_at(3, "gw-us", "gw-jp", 12_345, t1)]),
        ],
    );
    assert_eq!(
        block.results,
        vec![
            EntryResult::Batch { outcomes: vec![rejected(RejectReason::UnknownTransfer)] },
            EntryResult::Batch { outcomes: vec![rejected(RejectReason::CreatedTooLongAgo)] },
        ]
    );
    assert_eq!(all_positions(&state), expected);
}

/// sled releases its directory lock a moment after the last handle is
/// dropped; retries for up to 10 s, then panics.
fn open_store(dir: &Path) -> SledLedgerStore {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match SledLedgerStore::open(dir) {
            Ok(store) => return store,
            Err(error) if error.to_string().contains("lock") && Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => panic!("store does not open: {error}"),
        }
    }
}

fn open(dir: &Path, network: Option<&NetworkConfig>) -> Result<Chain<SledLedgerStore>, ChainError> {
    Chain::open(open_store(dir), network)
}

fn append_at(chain: &mut Chain<SledLedgerStore>, timestamp_ms: u64, entries: Vec<Entry>) -> Block {
    let proposal = chain.next_proposal(timestamp_ms, entries);
    chain.append(proposal, SignatureCheck::Verify, |_| None).expect("block appends").0
}

fn height_key(prefix: &str, height: u64) -> Vec<u8> {
    let mut key = prefix.as_bytes().to_vec();
    key.extend_from_slice(&height.to_be_bytes());
    key
}

/// Which of `seg/<h>` and `segpay/<h>` the store holds, for each height.
fn stored_segment_keys(store: &SledLedgerStore, heights: &[u64]) -> Vec<(u64, bool, bool)> {
    let has = |prefix: &str, h: u64| store.db().contains_key(height_key(prefix, h)).expect("readable");
    heights.iter().map(|h| (*h, has("seg/", *h), has("segpay/", *h))).collect()
}

/// Reopens the chain and checks it restores exactly `state`.
fn reopen_same(dir: &Path, state: &LedgerState) -> Chain<SledLedgerStore> {
    let chain = open(dir, None).expect("reopens");
    assert_eq!(chain.state(), state, "same tip, state root and index");
    assert_eq!(encodings(chain.state()), encodings(state), "byte for byte");
    assert_eq!(chain.state().index().lingering_count(), state.index().lingering_count());
    chain
}

/// The chain forgets segments in the store in the same batch as the block
/// that forgets them, and reopens with exactly the index it had: a lingering
/// segment stays (with its payout states), a forgotten one leaves no key.
#[test]
fn the_store_forgets_segments_with_the_index_and_reopens_identically() {
    let validators = validators(4, 42);
    let network = network_config(&validators);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut chain = open(dir.path(), Some(&network)).expect("empty store opens");
    chain.append(network.genesis_proposal(), SignatureCheck::Verify, |_| None).expect("genesis appends");
    // The same blocks on a bare state, to compare with after every reopen.
    let (mut model, _) = genesis_state();
    let mut both = |chain: &mut Chain<SledLedgerStore>, timestamp_ms: u64, entries: Vec<Entry>| {
        let block = append_at(chain, timestamp_ms, entries.clone());
        assert_eq!(apply_at(&mut model, timestamp_ms, entries), block);
        (block, model.clone())
    };
    let t1 = GENESIS_TIME_MS + 1_000;
    // 1: UETR 1 (gw-us to gw-jp) and UETR 2 (gw-kw to gw-hub, KWD).
    both(
        &mut chain,
        t1,
        vec![
            batch("gw-us", vec![created_at(1, "gw-us", "gw-jp", 10_000, t1)]),
            batch("gw-kw", vec![transfer(uetr(2), "gw-kw", "gw-hub", money(1_500, Currency::KWD))]),
        ],
    );
    // 2: UETR 3 (gw-jp to gw-de); gw-jp completes UETR 1 (segment 1 gets payout states).
    both(
        &mut chain,
        t1 + 1_000,
        vec![
            batch("gw-jp", vec![created_at(3, "gw-jp", "gw-de", 1_234, t1 + 1_000)]),
            reports("gw-jp", vec![completed(uetr(1))]),
        ],
    );
    // 3: gw-de completes UETR 3: segment 2 has no open payout any more.
    both(&mut chain, t1 + 2_000, vec![reports("gw-de", vec![completed(uetr(3))])]);
    assert_eq!(
        stored_segment_keys(chain.store(), &[1, 2, 3]),
        vec![(1, true, true), (2, true, true), (3, false, false)]
    );

    // 4: past both segments' retention. Segment 2 is forgotten; segment 1
    // lingers for UETR 2, still open.
    let (block4, state4) = both(&mut chain, t1 + 1_000 + RETENTION_MS + 1, vec![]);
    assert_eq!(state4.index().changes().dropped, vec![Height(2)]);
    assert_eq!((state4.index().len(), state4.index().segment_count(), state4.index().lingering_count()), (2, 1, 1));
    assert_eq!(stored_segment_keys(chain.store(), &[1, 2]), vec![(1, true, true), (2, false, false)]);
    drop(chain);
    let mut chain = reopen_same(dir.path(), &state4);
    assert_eq!(chain.state().state_root(), block4.header.state_root);

    // 5: gw-hub returns UETR 2: segment 1 is forgotten, the KWD amount reversed.
    let (_, state5) = both(&mut chain, t1 + 2 * DAY_MS, vec![reports("gw-hub", vec![returned(uetr(2), "AC04")])]);
    assert_eq!(state5.index().changes().dropped, vec![Height(1)]);
    assert!(state5.index().is_empty());
    assert_eq!(position(&state5, "gw-kw", Currency::KWD), 0);
    assert_eq!(
        stored_segment_keys(chain.store(), &[1, 2, 3, 4, 5]),
        vec![(1, false, false), (2, false, false), (3, false, false), (4, false, false), (5, false, false)]
    );
    drop(chain);
    let mut chain = reopen_same(dir.path(), &state5);

    // The reopened chain carries on as the bare state does: a new transfer is
    // indexed (seg/6), a forgotten one is too old.
    let late = t1 + 2 * DAY_MS + 1_000;
    let (block6, state6) = both(
        &mut chain,
        late,
        vec![batch(
            "gw-us",
            vec![created_at(7, "gw-us", "gw-jp", 500, late), created_at(1, "gw-us", "gw-jp", 10_000, t1)],
        )],
    );
    assert_eq!(block6.results, outcomes(vec![TransferOutcome::Accepted, rejected(RejectReason::CreatedTooLongAgo)]));
    assert_eq!(stored_segment_keys(chain.store(), &[6]), vec![(6, true, false)]);
    drop(chain);
    reopen_same(dir.path(), &state6);
}

// ---------------------------------------------------------------------------
// (b) The long run.

const DAYS: u64 = 6;
/// Simulated time between blocks; a day is exactly 10,000 blocks.
const BLOCK_INTERVAL_MS: u64 = 8_640;
const BLOCKS_PER_DAY: u64 = DAY_MS / BLOCK_INTERVAL_MS;
const TRANSFERS_PER_BLOCK: u64 = 50;
/// Every transfer is reported completed this many blocks after its own.
const REPORT_DELAY_BLOCKS: usize = 3;
const TRANSFERS_TOTAL: u64 = DAYS * BLOCKS_PER_DAY * TRANSFERS_PER_BLOCK;

const _: () = assert!(DAY_MS.is_multiple_of(BLOCK_INTERVAL_MS));
const _: () = assert!(TRANSFERS_TOTAL == 3_000_000);

/// Segments the index holds right after a block, once a full retention of
/// blocks is behind it: the block itself and every earlier block whose
/// timestamp is at least `block time - retention`.
const SEGMENTS_RETAINED: u64 = RETENTION_MS / BLOCK_INTERVAL_MS + 1;

/// The index at the end of one simulated day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DayFigures {
    transfers_accepted: u64,
    index_transfers: usize,
    segments: usize,
    lingering: usize,
    state_snapshot_bytes: usize,
    index_snapshot_bytes: usize,
}

impl DayFigures {
    fn of(state: &LedgerState) -> Self {
        let index = state.index();
        Self {
            transfers_accepted: state.transfers_accepted_total(),
            index_transfers: index.len(),
            segments: index.segment_count(),
            lingering: index.lingering_count(),
            state_snapshot_bytes: state.encode_snapshot().len(),
            index_snapshot_bytes: index.encode_snapshot().len(),
        }
    }

    fn snapshot_bytes(&self) -> usize {
        self.state_snapshot_bytes + self.index_snapshot_bytes
    }
}

/// A version-4 UETR numbered `n`, without going through a UUID builder.
fn long_run_uetr(n: u64) -> Uetr {
    let mut bytes = [0u8; 16];
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    bytes[0] = 0x7e;
    bytes[6] = 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uetr::from_bytes(bytes).expect("version 4, RFC 4122 variant")
}

/// Transfers that pass every check but the signature, which the run
/// declares valid (`SignatureCheck::Prechecked`), so no ed25519 work is done.
struct Traffic {
    ids: [ParticipantId; 2],
    next_uetr: u64,
    /// Transfers waiting for their report: (destination index, UETRs).
    pending: VecDeque<(usize, Vec<Uetr>)>,
}

impl Traffic {
    /// The block's entries: a batch of one-cent transfers, alternately
    /// gw-us to gw-jp and back (positions stay within one block's worth), and
    /// the completion reports of the block `REPORT_DELAY_BLOCKS` before.
    fn entries(&mut self, block: u64, timestamp_ms: u64) -> Vec<Entry> {
        let origin = (block % 2) as usize;
        let destination = 1 - origin;
        let mut uetrs = Vec::with_capacity(TRANSFERS_PER_BLOCK as usize);
        let transfers = (0..TRANSFERS_PER_BLOCK)
            .map(|_| {
                let uetr = long_run_uetr(self.next_uetr);
                self.next_uetr += 1;
                uetrs.push(uetr);
                Transfer {
                    uetr,
                    origin: self.ids[origin].clone(),
                    destination: self.ids[destination].clone(),
                    amount: usd(1),
                    payload_commitment: Digest32::ZERO,
                    created_at_ms: timestamp_ms,
                }
            })
            .collect();
        let mut entries = vec![Entry::TransferBatch {
            batch: TransferBatch { origin: self.ids[origin].clone(), transfers, signature: BatchSignature([0; 64]) },
        }];
        self.pending.push_back((destination, uetrs));
        if self.pending.len() > REPORT_DELAY_BLOCKS {
            let (reporter, uetrs) = self.pending.pop_front().expect("non-empty");
            entries.push(Entry::PayoutReports {
                batch: PayoutReportBatch {
                    reporter: self.ids[reporter].clone(),
                    reports: uetrs.into_iter().map(completed).collect(),
                    signature: BatchSignature([0; 64]),
                },
            });
        }
        entries
    }
}

#[test]
fn millions_of_transfers_over_simulated_days_keep_the_index_flat() {
    let started = Instant::now();
    let (mut state, _) = genesis_state();
    let mut traffic = Traffic { ids: [pid("gw-us"), pid("gw-jp")], next_uetr: 0, pending: VecDeque::with_capacity(8) };
    let mut days = Vec::with_capacity(DAYS as usize);
    let mut reports_expected = 0u64;
    for block in 1..=DAYS * BLOCKS_PER_DAY {
        let timestamp_ms = GENESIS_TIME_MS + block * BLOCK_INTERVAL_MS;
        let entries = traffic.entries(block, timestamp_ms);
        let reported = entries.get(1).map_or(0, Entry::report_count);
        reports_expected += reported as u64;
        let proposal =
            BlockProposal { height: state.next_height(), prev_hash: state.tip_hash(), timestamp_ms, entries };
        let checks = SignatureCheck::Prechecked(vec![true; proposal.entries.len()]);
        let applied = state.apply(proposal, checks).expect("well-formed proposal applies");
        assert_eq!(applied.header.accepted_count as u64, TRANSFERS_PER_BLOCK, "block {block}");
        if let Some(result) = applied.results.get(1) {
            assert_eq!(result.accepted_transfers(), reported, "block {block}: every report accepted");
        }
        if block.is_multiple_of(BLOCKS_PER_DAY) {
            days.push(DayFigures::of(&state));
        }
    }
    let elapsed = started.elapsed();

    eprintln!("day | transfers accepted | index transfers | segments | lingering | state snapshot B | index snapshot B | snapshot B");
    for (day, f) in days.iter().enumerate() {
        eprintln!(
            "{:>3} | {:>18} | {:>15} | {:>8} | {:>9} | {:>16} | {:>16} | {:>10}",
            day + 1,
            f.transfers_accepted,
            f.index_transfers,
            f.segments,
            f.lingering,
            f.state_snapshot_bytes,
            f.index_snapshot_bytes,
            f.snapshot_bytes()
        );
    }
    eprintln!("{TRANSFERS_TOTAL} transfers in {} blocks applied in {elapsed:.1?}", DAYS * BLOCKS_PER_DAY);

    assert_eq!(state.transfers_accepted_total(), TRANSFERS_TOTAL);
    assert_eq!(state.payout_reports_total(), reports_expected);
    assert_eq!(reports_expected, TRANSFERS_TOTAL - REPORT_DELAY_BLOCKS as u64 * TRANSFERS_PER_BLOCK);
    assert_conserved(&state);
    // Day 1: nothing is old enough to forget yet.
    let first = days[0];
    assert_eq!(first.transfers_accepted, BLOCKS_PER_DAY * TRANSFERS_PER_BLOCK);
    assert_eq!((first.index_transfers as u64, first.segments as u64), (first.transfers_accepted, BLOCKS_PER_DAY));
    // From day 2 on: exactly one retention's worth of blocks, every day the
    // same, and never more transfers than one retention's worth.
    let flat = days[1];
    assert_eq!(flat.segments as u64, SEGMENTS_RETAINED);
    assert_eq!(flat.index_transfers as u64, SEGMENTS_RETAINED * TRANSFERS_PER_BLOCK);
    // The rate bound: what arrives in one retention, plus the block itself.
    let retention_worth = (RETENTION_MS * TRANSFERS_PER_BLOCK).div_ceil(BLOCK_INTERVAL_MS) + TRANSFERS_PER_BLOCK;
    assert!(flat.index_transfers as u64 <= retention_worth, "{} > {retention_worth}", flat.index_transfers);
    for (day, figures) in days.iter().enumerate().skip(1) {
        let expected =
            DayFigures { transfers_accepted: (day as u64 + 1) * BLOCKS_PER_DAY * TRANSFERS_PER_BLOCK, ..flat };
        assert_eq!(*figures, expected, "day {} against day 2", day + 1);
        assert_eq!(figures.lingering, 0, "every payout is reported, so nothing lingers");
    }
    assert_eq!(
        state.transfers_forgotten_total(),
        TRANSFERS_TOTAL - state.index().len() as u64,
        "everything not in the index was forgotten"
    );
    // The incrementally maintained root is the root recomputed from scratch.
    assert_eq!(restored(&state), state);
}
