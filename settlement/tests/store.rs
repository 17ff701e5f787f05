//! The sled store behind a `Chain`, in a temporary directory: certified blocks
//! survive a restart with the same tip, state root and applied-transfer index
//! (with payout states), as does a Raft snapshot install with backfill, and a
//! tampered snapshot, block, index or certificate is detected on open.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use iso_currency::Currency;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use remit_settlement::audit::{export_chain, read_export, stored_blocks, verify_chain};
use remit_settlement::block::TransferOutcome;
use remit_settlement::certify::Certificate;
use remit_settlement::chain::{Chain, ChainError};
use remit_settlement::network::NetworkConfig;
use remit_settlement::replica::state_machine::lock;
use remit_settlement::replica::{FailStop, LedgerStateMachine, SharedChain};
use remit_settlement::store::{LedgerStore, SledLedgerStore, StoreError};
use remit_settlement::{Block, Entry, EntryResult, Height, LedgerState, PayoutState, RejectReason, SignatureCheck};

/// The seed of the test network's BLS keys.
const BLS_SEED: u64 = 42;

/// Store keys, as laid out in `settlement/src/store.rs` and `docs/database.md`.
const KEY_SNAPSHOT: &[u8] = b"state/snapshot";
const KEY_HEIGHT: &[u8] = b"state/height";

fn height_key(prefix: &str, height: u64) -> Vec<u8> {
    let mut key = prefix.as_bytes().to_vec();
    key.extend_from_slice(&height.to_be_bytes());
    key
}

fn usd(minor: u64) -> remit_settlement::Money {
    money(minor, Currency::USD)
}

fn open(dir: &Path, network: Option<&NetworkConfig>) -> Result<Chain<SledLedgerStore>, ChainError> {
    Chain::open(retry_lock(|| SledLedgerStore::open(dir).map_err(|e| e.to_string())), network)
}

/// sled lets go of its directory lock a moment after the last handle is
/// dropped (its flusher thread holds the database briefly); reopening at
/// once can find the lock still held. Retries for up to 10 s, then panics.
fn retry_lock<T>(mut open: impl FnMut() -> Result<T, String>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Ok(value) => return value,
            Err(error) if error.contains("lock") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => panic!("store does not open: {error}"),
        }
    }
}

/// Appends a block and certifies it in process, as `Keyring::certify` does.
fn append_certified(chain: &mut Chain<SledLedgerStore>, validators: &Validators, entries: Vec<Entry>) -> Block {
    let timestamp_ms = chain.state().last_timestamp_ms() + 1_000;
    let proposal = chain.next_proposal(timestamp_ms, entries);
    let (block, certificate) = chain
        .append(proposal, SignatureCheck::Verify, |block| Some(validators.certify(&block.header)))
        .expect("block appends");
    assert!(certificate.is_some());
    block
}

/// Genesis and three certified blocks:
/// 1. gw-us pays gw-jp 100.00 USD (UETR 1);
/// 2. gw-kw pays gw-hub 1.500 KWD (UETR 2); gw-ph's transfer (UETR 3) is over its cap;
/// 3. gw-jp pays gw-de 12.34 USD (UETR 4).
fn build(dir: &Path, validators: &Validators, network: &NetworkConfig) -> Vec<Block> {
    let mut chain = open(dir, Some(network)).expect("empty store opens");
    assert_eq!(chain.tip(), None);
    let genesis = chain
        .append(network.genesis_proposal(), SignatureCheck::Verify, |b| Some(validators.certify(&b.header)))
        .expect("genesis appends")
        .0;
    let block1 = append_certified(
        &mut chain,
        validators,
        vec![batch("gw-us", vec![transfer(uetr(1), "gw-us", "gw-jp", usd(10_000))])],
    );
    let block2 = append_certified(
        &mut chain,
        validators,
        vec![
            batch("gw-kw", vec![transfer(uetr(2), "gw-kw", "gw-hub", money(1_500, Currency::KWD))]),
            batch("gw-ph", vec![transfer(uetr(3), "gw-ph", "gw-us", usd(1))]),
        ],
    );
    assert_eq!(
        block2.results[1],
        EntryResult::Batch { outcomes: vec![TransferOutcome::Rejected(RejectReason::NetDebitCapExceeded)] }
    );
    let block3 = append_certified(
        &mut chain,
        validators,
        vec![batch("gw-jp", vec![transfer(uetr(4), "gw-jp", "gw-de", usd(1_234))])],
    );
    assert_eq!(chain.certified_height(), Some(Height(3)));
    vec![genesis, block1, block2, block3]
}

#[test]
fn reopen_restores_tip_state_and_uetr_index() {
    let validators = validators(4, BLS_SEED);
    let network = network_config(&validators);
    let dir = tempfile::tempdir().expect("tempdir");
    let blocks = build(dir.path(), &validators, &network);
    let tip = (Height(3), blocks[3].hash());

    let (state_root, positions, snapshot) = {
        let chain = open(dir.path(), None).expect("reopens from the stored network");
        assert_eq!(chain.network(), &network);
        (chain.state().state_root(), all_positions(chain.state()), chain.state().encode_snapshot())
    };
    assert_eq!(state_root, blocks[3].header.state_root);
    assert_eq!(positions[&("gw-us".to_owned(), "USD".to_owned())], -10_000);
    assert_eq!(positions[&("gw-jp".to_owned(), "USD".to_owned())], 10_000 - 1_234);
    assert_eq!(positions[&("gw-kw".to_owned(), "KWD".to_owned())], -1_500);

    // Reopen (with the network given this time) and compare with what was written.
    let mut chain = open(dir.path(), Some(&network)).expect("reopens");
    let state = chain.state();
    assert_eq!(chain.tip(), Some(tip));
    assert_eq!(chain.certified_height(), Some(Height(3)));
    assert_eq!(state.state_root(), state_root);
    assert_eq!(state.encode_snapshot(), snapshot);
    assert_eq!(all_positions(state), positions);
    assert_eq!(state.last_timestamp_ms(), blocks[3].header.timestamp_ms);
    assert_eq!(state.applied_transfer_count(), 3);
    assert_eq!(state.transfers_accepted_total(), 3);
    assert_eq!(state.transfer_height(&uetr(1)), Some(Height(1)));
    assert_eq!(state.transfer_height(&uetr(2)), Some(Height(2)));
    assert_eq!(state.transfer_height(&uetr(3)), None, "a rejected transfer is not indexed");
    assert_eq!(state.transfer_height(&uetr(4)), Some(Height(3)));
    for block in &blocks {
        assert_eq!(chain.store().block(block.height()).expect("readable").as_ref(), Some(block));
    }

    // The restored index still rejects duplicates, and the chain carries on.
    let entries = vec![batch(
        "gw-us",
        vec![transfer(uetr(1), "gw-us", "gw-de", usd(1)), transfer(uetr(5), "gw-us", "gw-de", usd(2))],
    )];
    let block4 = append_certified(&mut chain, &validators, entries);
    assert_eq!(
        block4.results,
        vec![EntryResult::Batch {
            outcomes: vec![TransferOutcome::Rejected(RejectReason::DuplicateUetr), TransferOutcome::Accepted]
        }]
    );
    assert_eq!(block4.header.prev_hash, tip.1);
    assert_eq!(position(chain.state(), "gw-us", Currency::USD), -10_002);
    drop(chain);

    let chain = open(dir.path(), None).expect("reopens");
    assert_eq!(chain.tip(), Some((Height(4), block4.hash())));
    assert_eq!(chain.state().transfer_height(&uetr(5)), Some(Height(4)));
    assert_eq!(chain.state().transfer_height(&uetr(1)), Some(Height(1)));

    // The stored chain passes the offline audit, directly and through an export.
    let report = verify_chain(&network, stored_blocks(chain.store()).expect("readable")).expect("chain verifies");
    assert_eq!((report.blocks, report.transfers, report.tip, report.uncertified_tail), (5, 4, chain.tip(), 0));
    let mut export = Vec::new();
    assert_eq!(export_chain(chain.store(), &mut export).expect("exports"), 5);
    assert_eq!(verify_chain(&network, read_export(export.as_slice())).expect("export verifies"), report);
}

#[test]
fn certificates_can_follow_their_block() {
    let validators = validators(4, BLS_SEED);
    let network = network_config(&validators);
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path(), &validators, &network);
    let mut chain = open(dir.path(), None).expect("reopens");
    let proposal = chain.next_proposal(0, vec![batch("gw-de", vec![transfer(uetr(9), "gw-de", "gw-us", usd(7))])]);
    assert_eq!(proposal.timestamp_ms, chain.state().last_timestamp_ms(), "timestamps never go back");
    let (block, certificate) = chain.append(proposal, SignatureCheck::Verify, |_| None).expect("appends");
    assert_eq!(certificate, None);
    assert_eq!(chain.certified_height(), Some(Height(3)));

    // A certificate for another block is refused; the right one is stored.
    let wrong = chain.store().certificate(Height(3)).expect("readable").expect("certified");
    assert!(matches!(chain.put_certificate(Height(4), &wrong), Err(ChainError::BadCertificate(Height(4)))));
    assert_eq!(chain.store().certificate(Height(4)).expect("readable"), None);
    let certificate = validators.certify(&block.header);
    chain.put_certificate(Height(4), &certificate).expect("stored");
    assert!(matches!(
        chain.put_certificate(Height(5), &certificate),
        Err(ChainError::Inconsistent { height: Height(5), .. })
    ));
    drop(chain);
    let chain = open(dir.path(), None).expect("reopens");
    assert_eq!(chain.certified_height(), Some(Height(4)));
    assert_eq!(chain.store().certificate(Height(4)).expect("readable"), Some(certificate));
}

#[test]
fn a_store_belongs_to_one_network() {
    let validators = validators(4, BLS_SEED);
    let network = network_config(&validators);
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path(), &validators, &network);
    let other = network_config(&common::validators(4, BLS_SEED + 1));
    let err = open(dir.path(), Some(&other)).expect_err("other validator set");
    assert!(matches!(err, ChainError::Network(_)), "{err}");

    let empty = tempfile::tempdir().expect("tempdir");
    let err = open(empty.path(), None).expect_err("nothing to open");
    assert!(matches!(err, ChainError::Network(_)), "{err}");
}

// ---------------------------------------------------------------------------
// Tampering, written through a second sled handle after the chain is closed.

/// Builds the chain in a fresh directory, closes it, applies `edit` to the raw
/// database and reopens.
fn reopen_tampered(edit: impl FnOnce(&sled::Db, &[Block])) -> Result<Chain<SledLedgerStore>, ChainError> {
    let validators = validators(4, BLS_SEED);
    let network = network_config(&validators);
    let dir = tempfile::tempdir().expect("tempdir");
    let blocks = build(dir.path(), &validators, &network);
    {
        let db = retry_lock(|| sled::open(dir.path()).map_err(|e| e.to_string()));
        edit(&db, &blocks);
        db.flush().expect("flushed");
    }
    open(dir.path(), Some(&network))
}

fn get(db: &sled::Db, key: &[u8]) -> Vec<u8> {
    db.get(key).expect("readable").expect("present").to_vec()
}

fn put(db: &sled::Db, key: &[u8], value: Vec<u8>) {
    db.insert(key, value).expect("writable");
}

/// Replaces the only occurrence of `from` in `bytes` with `to`.
fn replace_once(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    let found: Vec<usize> = bytes.windows(from.len()).enumerate().filter(|(_, w)| *w == from).map(|(i, _)| i).collect();
    assert_eq!(found.len(), 1, "pattern must occur once");
    bytes[found[0]..found[0] + to.len()].copy_from_slice(to);
}

fn expect_inconsistent(result: Result<Chain<SledLedgerStore>, ChainError>, height: u64, reason: &str) {
    match result {
        Err(ChainError::Inconsistent { height: h, reason: r }) => assert_eq!((h, r.as_str()), (Height(height), reason)),
        other => panic!("expected Inconsistent at {height} ({reason}), got {other:?}"),
    }
}

#[test]
fn untampered_store_opens() {
    let chain = reopen_tampered(|_, _| {}).expect("opens");
    assert_eq!(chain.tip().map(|(h, _)| h), Some(Height(3)));
}

#[test]
fn tampered_snapshot_positions_are_detected() {
    // Move 0.01 USD from gw-jp to gw-us in the snapshot: still conserving, still decodable.
    let result = reopen_tampered(|db, _| {
        let mut snapshot = get(db, KEY_SNAPSHOT);
        replace_once(&mut snapshot, &(-10_000i128).to_be_bytes(), &(-9_999i128).to_be_bytes());
        replace_once(&mut snapshot, &(10_000i128 - 1_234).to_be_bytes(), &(10_000i128 - 1_235).to_be_bytes());
        put(db, KEY_SNAPSHOT, snapshot);
    });
    expect_inconsistent(result, 3, ROOT_MISMATCH);
}

/// What `Chain::open` says when the stored state does not hash to the tip's state root.
const ROOT_MISMATCH: &str = "stored state (snapshot and duplicate index) does not match the tip's state root";

#[test]
fn tampered_snapshot_tip_hash_is_detected() {
    let result = reopen_tampered(|db, _| {
        let mut snapshot = get(db, KEY_SNAPSHOT);
        let at = snapshot.len() - 32;
        snapshot[at] ^= 0x01;
        put(db, KEY_SNAPSHOT, snapshot);
    });
    expect_inconsistent(result, 3, "tip block hash differs from the state snapshot");
}

#[test]
fn tampered_snapshot_timestamp_is_detected() {
    // The last timestamp decides future results (the next block may not go
    // back in time; the duplicate index forgets by it), so the state root covers it.
    for timestamp_ms in [GENESIS_TIME_MS, GENESIS_TIME_MS + 3_001] {
        let result = reopen_tampered(|db, blocks| {
            let mut snapshot = get(db, KEY_SNAPSHOT);
            let tip_time = blocks[3].header.timestamp_ms;
            replace_once(&mut snapshot, &tip_time.to_be_bytes(), &timestamp_ms.to_be_bytes());
            put(db, KEY_SNAPSHOT, snapshot);
        });
        expect_inconsistent(result, 3, ROOT_MISMATCH);
    }
}

#[test]
fn truncated_snapshot_is_detected() {
    let result = reopen_tampered(|db, _| {
        let mut snapshot = get(db, KEY_SNAPSHOT);
        snapshot.pop();
        put(db, KEY_SNAPSHOT, snapshot);
    });
    assert!(matches!(result, Err(ChainError::Store(StoreError::Decode(_)))), "{result:?}");
}

#[test]
fn snapshot_from_another_height_is_detected() {
    let validators = validators(4, BLS_SEED);
    let network = network_config(&validators);
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path(), &validators, &network);
    let old_snapshot = get(&retry_lock(|| sled::open(dir.path()).map_err(|e| e.to_string())), KEY_SNAPSHOT);
    {
        let mut chain = open(dir.path(), None).expect("reopens");
        append_certified(&mut chain, &validators, vec![]);
    }
    {
        let db = retry_lock(|| sled::open(dir.path()).map_err(|e| e.to_string()));
        put(&db, KEY_SNAPSHOT, old_snapshot);
        db.flush().expect("flushed");
    }
    expect_inconsistent(open(dir.path(), None), 4, "applied height and state snapshot disagree");
}

#[test]
fn tampered_tip_block_is_detected() {
    let result = reopen_tampered(|db, blocks| {
        let mut block = blocks[3].clone();
        block.header.accepted_count += 1;
        put(db, &height_key("block/", 3), block.encode());
    });
    expect_inconsistent(result, 3, "tip block hash differs from the state snapshot");
}

#[test]
fn tampered_index_segments_are_detected() {
    // A lost segment (block 1's transfer): the index no longer matches the counters.
    let result = reopen_tampered(|db, _| {
        db.remove(height_key("seg/", 1)).expect("writable");
    });
    assert!(
        matches!(&result, Err(ChainError::Store(StoreError::Decode(e))) if e.reason.contains("the index holds 2 transfers")),
        "{result:?}"
    );
    // The same transfer indexed again at another height.
    let result = reopen_tampered(|db, _| {
        put(db, &height_key("seg/", 2), get(db, &height_key("seg/", 1)));
    });
    assert!(
        matches!(&result, Err(ChainError::Store(StoreError::Decode(e))) if e.reason.ends_with("is listed twice")),
        "{result:?}"
    );
    // A record whose amount changed: still well-formed, but it no longer
    // hashes to the certified state root.
    let result = reopen_tampered(|db, _| {
        let mut value = get(db, &height_key("seg/", 3));
        replace_once(&mut value, &1_234u64.to_be_bytes(), &1_235u64.to_be_bytes());
        put(db, &height_key("seg/", 3), value);
    });
    expect_inconsistent(result, 3, ROOT_MISMATCH);
    // Bytes that are not a segment at all.
    let result = reopen_tampered(|db, _| {
        put(db, &height_key("seg/", 2), vec![0xab; 15]);
    });
    assert!(
        matches!(&result, Err(ChainError::Store(StoreError::Decode(e))) if e.what == "index segment"),
        "{result:?}"
    );
}

#[test]
fn tampered_certificate_is_detected() {
    // A valid BLS signature, but over block 2's message.
    let result = reopen_tampered(|db, _| {
        let other = get(db, &height_key("cert/", 2));
        put(db, &height_key("cert/", 3), other);
    });
    assert!(matches!(result, Err(ChainError::BadCertificate(Height(3)))), "{result:?}");

    // Bytes that are not a signature at all.
    let result = reopen_tampered(|db, _| {
        put(db, &height_key("cert/", 3), vec![0xff; 96]);
    });
    assert!(
        matches!(&result, Err(ChainError::Store(StoreError::Corrupt(reason))) if reason == "certificate at height 3 is not a BLS signature"),
        "{result:?}"
    );

    // A certificate of another network's validators over the right message.
    let result = reopen_tampered(|db, blocks| {
        let forged: Certificate = validators(4, BLS_SEED + 1).certify(&blocks[3].header);
        put(db, &height_key("cert/", 3), forged.to_bytes().to_vec());
    });
    assert!(matches!(result, Err(ChainError::BadCertificate(Height(3)))), "{result:?}");
}

#[test]
fn applied_height_ahead_of_the_snapshot_is_detected() {
    let result = reopen_tampered(|db, _| {
        put(db, KEY_HEIGHT, 4u64.to_be_bytes().to_vec());
    });
    expect_inconsistent(result, 4, "applied height and state snapshot disagree");
    let result = reopen_tampered(|db, _| {
        put(db, KEY_HEIGHT, vec![0; 3]);
    });
    assert!(
        matches!(&result, Err(ChainError::Store(StoreError::Corrupt(reason))) if reason == "height is not 8 bytes"),
        "{result:?}"
    );
}

// ---------------------------------------------------------------------------
// Payout reports: the index with payout states survives a reopen, a Raft
// snapshot install with backfill, and tampering is detected.

/// Genesis and three certified blocks with payout reports:
/// 1. gw-us pays gw-jp 123.45 USD (UETR 1), gw-kw pays gw-hub 1.500 KWD (UETR 2),
///    gw-jp pays gw-de 12.34 USD (UETR 4);
/// 2. gw-jp returns UETR 1 (AC04), gw-hub completes UETR 2; gw-de pays gw-us 1.00 USD (UETR 5);
/// 3. gw-us completes UETR 5 in the block of a new transfer it then returns
///    (UETR 6, gw-jp to gw-us 2.50 USD, MS03); gw-jp's completion of UETR 1 is refused.
fn build_with_reports(dir: &Path, validators: &Validators, network: &NetworkConfig) -> Vec<Block> {
    let mut chain = open(dir, Some(network)).expect("empty store opens");
    let genesis = chain
        .append(network.genesis_proposal(), SignatureCheck::Verify, |b| Some(validators.certify(&b.header)))
        .expect("genesis appends")
        .0;
    let block1 = append_certified(
        &mut chain,
        validators,
        vec![
            batch("gw-us", vec![transfer(uetr(1), "gw-us", "gw-jp", usd(12_345))]),
            batch("gw-kw", vec![transfer(uetr(2), "gw-kw", "gw-hub", money(1_500, Currency::KWD))]),
            batch("gw-jp", vec![transfer(uetr(4), "gw-jp", "gw-de", usd(1_234))]),
        ],
    );
    let block2 = append_certified(
        &mut chain,
        validators,
        vec![
            reports("gw-jp", vec![returned(uetr(1), "AC04")]),
            reports("gw-hub", vec![completed(uetr(2))]),
            batch("gw-de", vec![transfer(uetr(5), "gw-de", "gw-us", usd(100))]),
        ],
    );
    let block3 = append_certified(
        &mut chain,
        validators,
        vec![
            batch("gw-jp", vec![transfer(uetr(6), "gw-jp", "gw-us", usd(250))]),
            reports("gw-us", vec![completed(uetr(5)), returned(uetr(6), "MS03")]),
            reports("gw-jp", vec![completed(uetr(1))]),
        ],
    );
    assert_eq!(block2.results[0], EntryResult::Batch { outcomes: vec![TransferOutcome::Accepted] });
    assert_eq!(block3.results[1], EntryResult::Batch { outcomes: vec![TransferOutcome::Accepted; 2] });
    assert_eq!(
        block3.results[2],
        EntryResult::Batch { outcomes: vec![TransferOutcome::Rejected(RejectReason::AlreadyReported)] }
    );
    vec![genesis, block1, block2, block3]
}

/// The payout states the blocks of [`build_with_reports`] leave.
fn expected_payouts() -> Vec<(u64, Option<PayoutState>)> {
    vec![
        (1, Some(PayoutState::Returned(reason("AC04")))),
        (2, Some(PayoutState::Completed)),
        (3, None),
        (4, Some(PayoutState::Open)),
        (5, Some(PayoutState::Completed)),
        (6, Some(PayoutState::Returned(reason("MS03")))),
    ]
}

fn check_payouts(state: &LedgerState) {
    for (n, expected) in expected_payouts() {
        assert_eq!(state.payout_state(&uetr(n)), expected, "uetr {n}");
    }
    assert_eq!(state.payout_reports_total(), 4);
    // Positions to the minor unit: only UETRs 2, 4 and 5 still stand.
    assert_eq!(position(state, "gw-us", Currency::USD), 100);
    assert_eq!(position(state, "gw-jp", Currency::USD), -1_234);
    assert_eq!(position(state, "gw-de", Currency::USD), 1_234 - 100);
    assert_eq!(position(state, "gw-kw", Currency::KWD), -1_500);
    assert_conserved(state);
}

#[test]
fn reopen_restores_payout_states_and_positions() {
    let validators = validators(4, BLS_SEED);
    let network = network_config(&validators);
    let dir = tempfile::tempdir().expect("tempdir");
    let blocks = build_with_reports(dir.path(), &validators, &network);
    let written = {
        let chain = open(dir.path(), None).expect("reopens");
        chain.state().clone()
    };
    check_payouts(&written);

    let mut chain = open(dir.path(), None).expect("reopens");
    assert_eq!(chain.state(), &written, "same root, tip, index and payout states");
    assert_eq!(chain.state().state_root(), blocks[3].header.state_root);
    assert_eq!(
        chain.state().applied_transfer(&uetr(6)).map(|t| (t.origin, t.destination, t.amount, t.height)),
        Some((pid("gw-jp"), pid("gw-us"), usd(250), Height(3)))
    );

    // The restored index still refuses a second report and accepts a first.
    let block4 = append_certified(
        &mut chain,
        &validators,
        vec![reports("gw-de", vec![returned(uetr(4), "AC04"), completed(uetr(5))])],
    );
    assert_eq!(
        block4.results,
        vec![EntryResult::Batch {
            outcomes: vec![TransferOutcome::Accepted, TransferOutcome::Rejected(RejectReason::NotDestination)]
        }]
    );
    assert_eq!(position(chain.state(), "gw-jp", Currency::USD), 0);
    let after = chain.state().clone();
    drop(chain);
    let chain = open(dir.path(), None).expect("reopens");
    assert_eq!(chain.state(), &after);
    assert_eq!(chain.state().payout_state(&uetr(4)), Some(PayoutState::Returned(reason("AC04"))));

    // The audit replays the reports, directly and through a JSON export.
    let report = verify_chain(&network, stored_blocks(chain.store()).expect("readable")).expect("chain verifies");
    assert_eq!((report.blocks, report.transfers, report.uncertified_tail), (5, 5, 0));
    let mut export = Vec::new();
    export_chain(chain.store(), &mut export).expect("exports");
    assert_eq!(verify_chain(&network, read_export(export.as_slice())).expect("export verifies"), report);
}

#[test]
fn raft_snapshot_install_keeps_payout_states() {
    let validators = validators(4, BLS_SEED);
    let network = network_config(&validators);
    let source_dir = tempfile::tempdir().expect("tempdir");
    let target_dir = tempfile::tempdir().expect("tempdir");
    let blocks = build_with_reports(source_dir.path(), &validators, &network);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (applied_tx, _applied_rx) = tokio::sync::mpsc::unbounded_channel();

    // The source builds a snapshot payload; a fresh node installs it.
    let source: SharedChain = Arc::new(Mutex::new(open(source_dir.path(), None).expect("reopens")));
    let mut source_machine = LedgerStateMachine::new(source.clone(), applied_tx.clone(), FailStop::new());
    let snapshot = runtime.block_on(source_machine.build_snapshot()).expect("snapshot builds");
    let target: SharedChain = Arc::new(Mutex::new(open(target_dir.path(), Some(&network)).expect("empty store opens")));
    let mut target_machine = LedgerStateMachine::new(target.clone(), applied_tx, FailStop::new());
    runtime.block_on(target_machine.install_snapshot(&snapshot.meta, snapshot.snapshot)).expect("installs");
    let source_state = lock(&source).state().clone();
    check_payouts(&source_state);
    assert_eq!(lock(&target).state(), &source_state, "the payload carries the index with payout states");

    // Backfill the history below the snapshot, as a node does from its peers.
    {
        let mut chain = lock(&target);
        assert_eq!(chain.store().history_gap().expect("readable"), Some((Height(0), Height(2))));
        for block in blocks[..3].iter().rev() {
            let certificate = lock(&source).store().certificate(block.height()).expect("readable");
            chain.backfill(block, certificate.as_ref()).expect("backfills");
        }
        assert_eq!(chain.store().history_gap().expect("readable"), None);
    }
    drop(target_machine);
    drop(target);

    // Reopened, the installed node has the same state: the snapshot index,
    // then the backfilled blocks' records and payout changes, agree.
    let mut reopened = open(target_dir.path(), None).expect("reopens after install and backfill");
    assert_eq!(reopened.state(), &source_state);
    check_payouts(reopened.state());
    let report = verify_chain(&network, stored_blocks(reopened.store()).expect("readable")).expect("verifies");
    assert_eq!(report.tip, Some((Height(3), blocks[3].hash())));

    // Both nodes apply the next block identically.
    let entries =
        vec![reports("gw-de", vec![returned(uetr(4), "AC04")]), reports("gw-hub", vec![returned(uetr(2), "AC04")])];
    let on_target = append_certified(&mut reopened, &validators, entries.clone());
    let on_source = append_certified(&mut lock(&source), &validators, entries);
    assert_eq!(on_target, on_source);
    assert_eq!(reopened.state(), lock(&source).state());
}

/// Builds the chain with reports, closes it, edits the raw database and reopens.
fn reopen_reports_tampered(edit: impl FnOnce(&sled::Db)) -> Result<Chain<SledLedgerStore>, ChainError> {
    let validators = validators(4, BLS_SEED);
    let network = network_config(&validators);
    let dir = tempfile::tempdir().expect("tempdir");
    build_with_reports(dir.path(), &validators, &network);
    {
        let db = retry_lock(|| sled::open(dir.path()).map_err(|e| e.to_string()));
        edit(&db);
        db.flush().expect("flushed");
    }
    open(dir.path(), Some(&network))
}

#[test]
fn tampered_payout_states_are_detected() {
    assert!(reopen_reports_tampered(|_| {}).is_ok(), "untampered store opens");
    // Lost payout states (block 1's segment: UETR 1 returned, UETR 2 completed).
    let result = reopen_reports_tampered(|db| {
        db.remove(height_key("segpay/", 1)).expect("writable");
    });
    expect_inconsistent(result, 3, ROOT_MISMATCH);
    // A return turned into a completion.
    let result = reopen_reports_tampered(|db| {
        let value = get(db, &height_key("segpay/", 3));
        let mut changed = value.clone();
        let at = changed.len() - 5;
        assert_eq!(changed[at], 2, "uetr 6 was returned");
        changed.truncate(at);
        changed.push(1);
        put(db, &height_key("segpay/", 3), changed);
    });
    expect_inconsistent(result, 3, ROOT_MISMATCH);
    // Payout states for a segment that is not stored.
    let result = reopen_reports_tampered(|db| {
        let value = get(db, &height_key("segpay/", 3));
        put(db, &height_key("segpay/", 4), value);
    });
    assert!(
        matches!(&result, Err(ChainError::Store(StoreError::Corrupt(reason))) if reason.ends_with("which is not stored")),
        "{result:?}"
    );
    // Payout states for another number of records.
    let result = reopen_reports_tampered(|db| {
        let value = get(db, &height_key("segpay/", 3));
        put(db, &height_key("segpay/", 1), value);
    });
    assert!(
        matches!(&result, Err(ChainError::Store(StoreError::Decode(e))) if e.reason.contains("payout states for the 3 records")),
        "{result:?}"
    );
}
