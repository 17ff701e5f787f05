//! `Chain` when the disk or a peer fails it. (a) A `LedgerStore` wrapper around
//! `SledLedgerStore` fails `append_block_with_meta` or `put_certificate` on
//! demand: the write returns the store error, the in-memory state is exactly
//! the state before the write (tip, state root, positions, index, byte for
//! byte), the chain is stopped and refuses every later write with
//! `ChainError::Stopped` without reaching the store, and reopening the
//! directory gives the last durable block, from which the chain carries on
//! and makes the block it failed to store. (b) `Chain::backfill` after a
//! snapshot install refuses a lying peer's blocks (entries or results altered
//! under the original header, a dropped entry, an altered header, another
//! chain's block, a fork that does not link, a block below the gap's top, a
//! certificate over another block or by another key set) with the specific
//! error, storing nothing (`history_gap()` unchanged), then accepts the
//! honest blocks. (c) `Chain::append_certified` on a follower appends honest
//! certified blocks (same tip and state root as the source) and refuses
//! tampered entries or results under the original certificate, a certificate
//! by another key set or over another block, a tampered header and a block
//! from ahead, changing nothing.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use iso_currency::Currency;
use remit_settlement::block::{entries_root, results_root, TransferOutcome};
use remit_settlement::certify::Certificate;
use remit_settlement::chain::{Chain, ChainError};
use remit_settlement::index::decode_index_snapshot;
use remit_settlement::network::NetworkConfig;
use remit_settlement::store::{LedgerStore, SledLedgerStore, StoreError};
use remit_settlement::{
    Block, ChainId, Digest32, Entry, EntryResult, Height, LedgerParams, LedgerState, PayoutState, RejectReason,
    SignatureCheck,
};

const BLS_SEED: u64 = 42;

fn usd(minor: u64) -> remit_settlement::Money {
    money(minor, Currency::USD)
}

/// sled releases its directory lock a moment after the last handle is
/// dropped; retries for up to 10 s, then panics.
fn open_store(dir: &Path) -> SledLedgerStore {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match SledLedgerStore::open(dir) {
            Ok(store) => return store,
            Err(error) if error.to_string().contains("lock") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("store does not open: {error}"),
        }
    }
}

fn open(dir: &Path, network: Option<&NetworkConfig>) -> Chain<SledLedgerStore> {
    Chain::open(open_store(dir), network).expect("chain opens")
}

/// Timestamp of source block `h`.
fn block_time(h: u64) -> u64 {
    GENESIS_TIME_MS + h * 1_000
}

/// The entries of the source chain's blocks 1 to 5:
/// 1. gw-us pays gw-jp 100.00 USD (UETR 1), gw-kw pays gw-hub 1.500 KWD (UETR 2);
/// 2. gw-jp returns UETR 1 (AC04), gw-hub completes UETR 2, gw-de pays gw-us 1.00 USD (UETR 3);
/// 3. gw-jp pays gw-us 2.50 USD (UETR 4), gw-us completes UETR 3;
/// 4. gw-us returns UETR 4 (MS03), gw-us pays gw-jp 0.50 USD (UETR 5);
/// 5. gw-jp completes UETR 5, gw-kw pays gw-hub 0.250 KWD (UETR 6).
fn source_entries(h: u64) -> Vec<Entry> {
    match h {
        1 => vec![
            batch("gw-us", vec![transfer(uetr(1), "gw-us", "gw-jp", usd(10_000))]),
            batch("gw-kw", vec![transfer(uetr(2), "gw-kw", "gw-hub", money(1_500, Currency::KWD))]),
        ],
        2 => vec![
            reports("gw-jp", vec![returned(uetr(1), "AC04")]),
            reports("gw-hub", vec![completed(uetr(2))]),
            batch("gw-de", vec![transfer(uetr(3), "gw-de", "gw-us", usd(100))]),
        ],
        3 => vec![
            batch("gw-jp", vec![transfer(uetr(4), "gw-jp", "gw-us", usd(250))]),
            reports("gw-us", vec![completed(uetr(3))]),
        ],
        4 => vec![
            reports("gw-us", vec![returned(uetr(4), "MS03")]),
            batch("gw-us", vec![transfer(uetr(5), "gw-us", "gw-jp", usd(50))]),
        ],
        5 => vec![
            reports("gw-jp", vec![completed(uetr(5))]),
            batch("gw-kw", vec![transfer(uetr(6), "gw-kw", "gw-hub", money(250, Currency::KWD))]),
        ],
        _ => panic!("the source chain has blocks 1 to 5"),
    }
}

/// Appends source block `h` and certifies it in process.
fn append_source_block<S: LedgerStore>(chain: &mut Chain<S>, validators: &Validators, h: u64) -> Block {
    let proposal = chain.next_proposal(block_time(h), source_entries(h));
    let (block, certificate) = chain
        .append(proposal, SignatureCheck::Verify, |block| Some(validators.certify(&block.header)))
        .expect("block appends");
    assert!(certificate.is_some());
    block
}

/// A source chain in `dir`: certified genesis and blocks 1 to `tip`, every
/// block's transfers and reports accepted. Returns the blocks and certificates.
fn build_source(
    dir: &Path,
    validators: &Validators,
    network: &NetworkConfig,
    tip: u64,
) -> (Chain<SledLedgerStore>, Vec<Block>, Vec<Certificate>) {
    let mut chain = open(dir, Some(network));
    let mut blocks = vec![
        chain
            .append(network.genesis_proposal(), SignatureCheck::Verify, |b| Some(validators.certify(&b.header)))
            .expect("genesis appends")
            .0,
    ];
    for h in 1..=tip {
        let block = append_source_block(&mut chain, validators, h);
        for result in &block.results {
            assert!(
                matches!(result, EntryResult::Batch { outcomes } if outcomes.iter().all(|o| *o == TransferOutcome::Accepted)),
                "block {h}: {result:?}"
            );
        }
        blocks.push(block);
    }
    let certificates =
        blocks.iter().map(|b| chain.store().certificate(b.height()).expect("readable").expect("certified")).collect();
    (chain, blocks, certificates)
}

/// Everything a refused or failed write must leave untouched.
#[derive(Debug, PartialEq)]
struct Observed {
    state: LedgerState,
    state_root: Digest32,
    tip: Option<(Height, Digest32)>,
    snapshot: Vec<u8>,
    index: Vec<u8>,
    positions: std::collections::BTreeMap<(String, String), i128>,
    certified_height: Option<Height>,
    applied_height: Option<Height>,
    history_gap: Option<(Height, Height)>,
}

fn observe<S: LedgerStore>(chain: &Chain<S>) -> Observed {
    let state = chain.state().clone();
    Observed {
        state_root: state.state_root(),
        tip: chain.tip(),
        snapshot: state.encode_snapshot(),
        index: state.index().encode_snapshot(),
        positions: all_positions(&state),
        certified_height: chain.certified_height(),
        applied_height: chain.store().applied_height().expect("readable"),
        history_gap: chain.store().history_gap().expect("readable"),
        state,
    }
}

// ---------------------------------------------------------------------------
// (a) Durable writes that fail.

/// Which store writes fail, and what the chain asked to store.
#[derive(Debug, Default)]
struct Faults {
    fail_append: AtomicBool,
    fail_certificate: AtomicBool,
    /// Height and hash of every block the chain tried to append.
    appends: Mutex<Vec<(Height, Digest32)>>,
    /// Heights of every certificate the chain tried to store on its own.
    certificates: Mutex<Vec<Height>>,
}

/// A `SledLedgerStore` whose block appends and certificate writes fail on
/// demand, before anything reaches the disk (as a full disk would).
#[derive(Debug)]
struct FaultyStore {
    inner: SledLedgerStore,
    faults: Arc<Faults>,
}

fn injected(what: &str) -> StoreError {
    StoreError::Sled(sled::Error::Io(std::io::Error::other(format!("injected fault: {what}"))))
}

impl LedgerStore for FaultyStore {
    fn network_json(&self) -> Result<Option<String>, StoreError> {
        self.inner.network_json()
    }
    fn init_network(&self, json: &str) -> Result<(), StoreError> {
        self.inner.init_network(json)
    }
    fn append_block_with_meta(
        &self,
        block: &Block,
        state: &LedgerState,
        certificate: Option<&Certificate>,
        meta: &[(&str, Vec<u8>)],
    ) -> Result<(), StoreError> {
        self.faults.appends.lock().expect("not poisoned").push((block.height(), block.hash()));
        if self.faults.fail_append.load(Ordering::SeqCst) {
            return Err(injected("append"));
        }
        self.inner.append_block_with_meta(block, state, certificate, meta)
    }
    fn put_meta(&self, meta: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
        self.inner.put_meta(meta)
    }
    fn put_meta_lazily(&self, meta: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
        self.inner.put_meta_lazily(meta)
    }
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.meta(key)
    }
    fn install_snapshot(
        &self,
        tip: &Block,
        state: &LedgerState,
        certificate: Option<&Certificate>,
        meta: &[(&str, Vec<u8>)],
    ) -> Result<(), StoreError> {
        self.inner.install_snapshot(tip, state, certificate, meta)
    }
    fn history_gap(&self) -> Result<Option<(Height, Height)>, StoreError> {
        self.inner.history_gap()
    }
    fn backfill_block(&self, block: &Block, certificate: Option<&Certificate>) -> Result<(), StoreError> {
        self.inner.backfill_block(block, certificate)
    }
    fn put_certificate(&self, height: Height, certificate: &Certificate) -> Result<(), StoreError> {
        self.faults.certificates.lock().expect("not poisoned").push(height);
        if self.faults.fail_certificate.load(Ordering::SeqCst) {
            return Err(injected("certificate"));
        }
        self.inner.put_certificate(height, certificate)
    }
    fn applied_height(&self) -> Result<Option<Height>, StoreError> {
        self.inner.applied_height()
    }
    fn block_bytes(&self, height: Height) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.block_bytes(height)
    }
    fn certificate(&self, height: Height) -> Result<Option<Certificate>, StoreError> {
        self.inner.certificate(height)
    }
    fn load_state(&self) -> Result<Option<LedgerState>, StoreError> {
        self.inner.load_state()
    }
}

fn open_faulty(dir: &Path, network: Option<&NetworkConfig>) -> (Chain<FaultyStore>, Arc<Faults>) {
    let faults = Arc::new(Faults::default());
    let store = FaultyStore { inner: open_store(dir), faults: faults.clone() };
    (Chain::open(store, network).expect("chain opens"), faults)
}

fn is_injected(error: &ChainError, what: &str) -> bool {
    matches!(error, ChainError::Store(StoreError::Sled(sled::Error::Io(e))) if e.to_string() == format!("injected fault: {what}"))
}

/// How the failing block is written: as a validator appends a proposal, or
/// as a follower appends a certified block.
#[derive(Debug, Clone, Copy)]
enum Write {
    Append,
    AppendCertified,
}

/// Every write a stopped chain must refuse, without reaching the store.
fn check_refuses_every_write(chain: &mut Chain<FaultyStore>, faults: &Faults, validators: &Validators, reason: &str) {
    let appends = faults.appends.lock().expect("not poisoned").len();
    let certificates = faults.certificates.lock().expect("not poisoned").len();
    let before = observe(chain);
    let stopped = |result: Result<(), ChainError>, what: &str| {
        assert!(matches!(&result, Err(ChainError::Stopped(r)) if r == reason), "{what}: {result:?}");
    };
    let proposal = chain.next_proposal(block_time(9), vec![]);
    stopped(chain.append(proposal.clone(), SignatureCheck::Verify, |_| None).map(|_| ()), "append");
    let mut model = chain.state().clone();
    let block = model.apply(proposal, SignatureCheck::Verify).expect("applies");
    let certificate = validators.certify(&block.header);
    stopped(chain.append_certified(&block, &certificate), "append_certified");
    let (tip, _) = chain.tip().expect("a tip");
    let tip_block = chain.store().block(tip).expect("readable").expect("stored");
    stopped(chain.put_certificate(tip, &validators.certify(&tip_block.header)), "put_certificate");
    stopped(chain.backfill(&block, Some(&certificate)), "backfill");
    stopped(chain.install_snapshot(model, block, Some(certificate), &[]), "install_snapshot");
    assert_eq!(observe(chain), before, "a refused write changes nothing");
    assert_eq!(faults.appends.lock().expect("not poisoned").len(), appends, "no append reached the store");
    assert_eq!(faults.certificates.lock().expect("not poisoned").len(), certificates, "no certificate reached it");
}

/// Block 3 fails to be stored: the chain rewinds to block 2 and stops; the
/// reopened directory is at block 2 and makes the same block 3.
fn check_failed_append(write: Write) {
    let name = format!("{write:?}");
    let validators = validators(4, BLS_SEED);
    let network = network_config(&validators);
    let dir = tempfile::tempdir().expect("tempdir");
    // The honest chain to follow, for append_certified.
    let source_dir = tempfile::tempdir().expect("tempdir");
    let (_, source_blocks, source_certificates) = build_source(source_dir.path(), &validators, &network, 3);

    let (mut chain, faults) = open_faulty(dir.path(), Some(&network));
    match write {
        Write::Append => {
            chain
                .append(network.genesis_proposal(), SignatureCheck::Verify, |b| Some(validators.certify(&b.header)))
                .expect("genesis appends");
            for h in 1..=2 {
                append_source_block(&mut chain, &validators, h);
            }
        }
        Write::AppendCertified => {
            for h in 0..=2 {
                chain.append_certified(&source_blocks[h], &source_certificates[h]).expect("follower appends");
            }
        }
    }
    let before = observe(&chain);
    assert_eq!(before.tip, Some((Height(2), source_blocks[2].hash())), "{name}");
    assert_eq!(before.certified_height, Some(Height(2)), "{name}");

    faults.fail_append.store(true, Ordering::SeqCst);
    let result = match write {
        Write::Append => {
            let proposal = chain.next_proposal(block_time(3), source_entries(3));
            chain.append(proposal, SignatureCheck::Verify, |b| Some(validators.certify(&b.header))).map(|_| ())
        }
        Write::AppendCertified => chain.append_certified(&source_blocks[3], &source_certificates[3]),
    };
    let error = result.expect_err("the store fails");
    assert!(is_injected(&error, "append"), "{name}: {error:?}");
    // The chain had made block 3 in memory and asked the store to keep it.
    let attempted = *faults.appends.lock().expect("not poisoned").last().expect("an append was attempted");
    assert_eq!(attempted, (Height(3), source_blocks[3].hash()), "{name}");
    // Memory is rewound to the disk: exactly the state before the write.
    assert_eq!(observe(&chain), before, "{name}");
    assert_eq!(chain.state().applied_transfer(&uetr(4)), None, "{name}");
    assert_eq!(chain.state().payout_state(&uetr(3)), Some(PayoutState::Open), "{name}");
    let reason = error.to_string();
    assert_eq!(chain.stopped(), Some(reason.as_str()), "{name}");

    faults.fail_append.store(false, Ordering::SeqCst);
    check_refuses_every_write(&mut chain, &faults, &validators, &reason);
    drop(chain);

    // Reopened: the last durable block, and the chain carries on.
    let mut chain = open(dir.path(), None);
    let reopened = observe(&chain);
    assert_eq!(reopened, before, "{name}: the disk holds block 2 and the state after it");
    assert_eq!(chain.stopped(), None);
    assert_eq!(chain.store().block(Height(3)).expect("readable"), None, "{name}");
    let block3 = append_source_block(&mut chain, &validators, 3);
    assert_eq!(block3, source_blocks[3], "{name}: the block it failed to store");
    assert_eq!(chain.state().applied_transfer(&uetr(4)).map(|t| t.amount), Some(usd(250)));
    append_source_block(&mut chain, &validators, 4);
    assert_eq!(chain.certified_height(), Some(Height(4)));
}

#[test]
fn a_failed_block_write_rewinds_to_the_disk_and_stops_the_chain() {
    check_failed_append(Write::Append);
    check_failed_append(Write::AppendCertified);
}

#[test]
fn a_failed_certificate_write_stops_the_chain() {
    let validators = validators(4, BLS_SEED);
    let network = network_config(&validators);
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut chain, faults) = open_faulty(dir.path(), Some(&network));
    chain
        .append(network.genesis_proposal(), SignatureCheck::Verify, |b| Some(validators.certify(&b.header)))
        .expect("genesis appends");
    let proposal = chain.next_proposal(block_time(1), source_entries(1));
    let (block1, _) = chain.append(proposal, SignatureCheck::Verify, |_| None).expect("block 1 appends uncertified");
    let before = observe(&chain);
    assert_eq!((before.tip, before.certified_height), (Some((Height(1), block1.hash())), Some(Height(0))));

    faults.fail_certificate.store(true, Ordering::SeqCst);
    let certificate = validators.certify(&block1.header);
    let error = chain.put_certificate(Height(1), &certificate).expect_err("the store fails");
    assert!(is_injected(&error, "certificate"), "{error:?}");
    assert_eq!(*faults.certificates.lock().expect("not poisoned"), vec![Height(1)]);
    assert_eq!(observe(&chain), before, "block 1 is durable; the certificate is not");
    assert_eq!(chain.store().certificate(Height(1)).expect("readable"), None);
    let reason = error.to_string();
    assert_eq!(chain.stopped(), Some(reason.as_str()));

    faults.fail_certificate.store(false, Ordering::SeqCst);
    check_refuses_every_write(&mut chain, &faults, &validators, &reason);
    drop(chain);

    let mut chain = open(dir.path(), None);
    assert_eq!(observe(&chain), before);
    chain.put_certificate(Height(1), &certificate).expect("certificate stored after the restart");
    assert_eq!(chain.certified_height(), Some(Height(1)));
    append_source_block(&mut chain, &validators, 2);
    assert_eq!(chain.certified_height(), Some(Height(2)));
}

// ---------------------------------------------------------------------------
// (b) Backfill from a lying peer.

/// Replaces the first transfer amount of the first batch in `entries`.
fn with_other_amount(entries: &mut [Entry]) {
    let batch = entries
        .iter_mut()
        .find_map(|entry| match entry {
            Entry::TransferBatch { batch } => Some(batch),
            _ => None,
        })
        .expect("the block has a transfer batch");
    batch.transfers[0].amount = usd(batch.transfers[0].amount.minor_units() + 1);
}

/// Turns the first accepted outcome in `results` into a duplicate.
fn with_other_outcome(results: &mut [EntryResult]) {
    let outcome = results
        .iter_mut()
        .find_map(|result| match result {
            EntryResult::Batch { outcomes } => outcomes.first_mut(),
            _ => None,
        })
        .expect("the block has a batch");
    *outcome = TransferOutcome::Rejected(RejectReason::AlreadyReported);
}

/// `blocks` replayed on a bare state with `params`, then one more block at
/// the height after them with `last` as entries.
fn replayed(params: LedgerParams, blocks: &[Block], last: Vec<Entry>) -> Block {
    let mut state = LedgerState::new(params);
    state.apply(genesis_proposal(), SignatureCheck::Verify).expect("genesis applies");
    for block in &blocks[1..] {
        let proposal = proposal(&state, block.header.timestamp_ms, block.entries.clone());
        state.apply(proposal, SignatureCheck::Verify).expect("applies");
    }
    let timestamp_ms = state.last_timestamp_ms() + 1_000;
    state.apply(proposal(&state, timestamp_ms, last), SignatureCheck::Verify).expect("applies")
}

/// A refused backfill: the exact error, and nothing stored.
fn check_refused<S: LedgerStore>(
    chain: &mut Chain<S>,
    name: &str,
    block: &Block,
    certificate: Option<&Certificate>,
    expected: impl Fn(&ChainError) -> bool,
) {
    let before = observe(chain);
    let stored = chain.store().block(block.height()).expect("readable");
    let result = chain.backfill(block, certificate);
    assert!(result.as_ref().is_err_and(&expected), "{name}: {result:?}");
    assert_eq!(observe(chain), before, "{name}: history gap and state unchanged");
    assert_eq!(chain.store().block(block.height()).expect("readable"), stored, "{name}: nothing stored");
    assert_eq!(chain.stopped(), None, "{name}: a lying peer does not stop the node");
}

fn bad_block(height: u64, reason: String) -> impl Fn(&ChainError) -> bool {
    move |error| matches!(error, ChainError::BadBlock { height: h, reason: r } if *h == Height(height) && *r == reason)
}

fn bad_certificate(height: u64) -> impl Fn(&ChainError) -> bool {
    move |error| matches!(error, ChainError::BadCertificate(h) if *h == Height(height))
}

#[test]
fn backfill_refuses_a_lying_peer_and_stores_nothing() {
    let validators = validators(4, BLS_SEED);
    let network = network_config(&validators);
    let source_dir = tempfile::tempdir().expect("tempdir");
    let target_dir = tempfile::tempdir().expect("tempdir");
    let (source, blocks, certificates) = build_source(source_dir.path(), &validators, &network, 4);

    // A snapshot of the source at block 4, installed on a fresh node as the
    // Raft state machine does: the state decoded from its snapshot encodings.
    let state = source.state();
    let segments = decode_index_snapshot(&state.index().encode_snapshot()).expect("decodes");
    let installed = LedgerState::decode_snapshot(&state.encode_snapshot(), segments).expect("decodes");
    let mut target = open(target_dir.path(), Some(&network));
    target.install_snapshot(installed, blocks[4].clone(), Some(certificates[4].clone()), &[]).expect("installs");
    assert_eq!(target.state(), source.state());
    assert_eq!(target.store().history_gap().expect("readable"), Some((Height(0), Height(3))));

    let honest = &blocks[3];
    let certificate = Some(&certificates[3]);
    let mut entries_altered = honest.clone();
    with_other_amount(&mut entries_altered.entries);
    check_refused(
        &mut target,
        "entries altered under the original header",
        &entries_altered,
        certificate,
        bad_block(
            3,
            format!(
                "entries root {} does not match the header's {}",
                entries_root(&entries_altered.entries),
                honest.header.entries_root
            ),
        ),
    );
    let mut entry_dropped = honest.clone();
    entry_dropped.entries.pop();
    check_refused(
        &mut target,
        "an entry dropped",
        &entry_dropped,
        certificate,
        bad_block(3, "entry or result count differs from the header".into()),
    );
    let mut results_altered = honest.clone();
    with_other_outcome(&mut results_altered.results);
    check_refused(
        &mut target,
        "results altered under the original header",
        &results_altered,
        certificate,
        bad_block(
            3,
            format!(
                "results root {} does not match the header's {}",
                results_root(&results_altered.results),
                honest.header.results_root
            ),
        ),
    );
    let not_linked = "its hash is not the previous hash of the stored block above".to_owned();
    let mut header_altered = honest.clone();
    header_altered.header.timestamp_ms += 1;
    check_refused(&mut target, "header altered", &header_altered, None, bad_block(3, not_linked.clone()));
    // Self-consistent blocks at height 3 that are not this chain's block 3.
    let other_chain = LedgerParams { chain_id: ChainId::new("remit-other-1").expect("valid"), ..params() };
    let foreign = replayed(other_chain, &blocks[..3], vec![]);
    assert_eq!(foreign.height(), Height(3));
    check_refused(
        &mut target,
        "another chain's block",
        &foreign,
        None,
        bad_block(3, "chain id remit-other-1 is not this network's".into()),
    );
    let fork = replayed(params(), &blocks[..3], vec![]);
    assert_eq!((fork.height(), fork.header.prev_hash), (Height(3), blocks[2].hash()), "a fork after block 2");
    check_refused(&mut target, "a fork that does not link", &fork, None, bad_block(3, not_linked.clone()));
    check_refused(
        &mut target,
        "a block below the gap's top",
        &blocks[2],
        Some(&certificates[2]),
        bad_block(2, "the gap's highest missing height is 3".into()),
    );
    check_refused(&mut target, "another block's certificate", honest, Some(&certificates[2]), bad_certificate(3));
    let forged = common::validators(4, BLS_SEED + 1).certify(&honest.header);
    check_refused(&mut target, "another key set's certificate", honest, Some(&forged), bad_certificate(3));

    // The honest block is accepted with its certificate; the gap shrinks.
    target.backfill(honest, certificate).expect("the honest block backfills");
    assert_eq!(target.store().history_gap().expect("readable"), Some((Height(0), Height(2))));
    assert_eq!(target.store().block(Height(3)).expect("readable").as_ref(), Some(honest));
    assert_eq!(target.store().certificate(Height(3)).expect("readable"), certificate.cloned());

    // A liar for the next height, then the rest of the honest history.
    let mut results_altered = blocks[2].clone();
    with_other_outcome(&mut results_altered.results);
    let reason = format!(
        "results root {} does not match the header's {}",
        results_root(&results_altered.results),
        blocks[2].header.results_root
    );
    check_refused(&mut target, "block 2, results altered", &results_altered, None, bad_block(2, reason));
    for h in (0..=2).rev() {
        target.backfill(&blocks[h], Some(&certificates[h])).expect("honest block backfills");
    }
    assert_eq!(target.store().history_gap().expect("readable"), None);
    check_refused(
        &mut target,
        "a block with no gap left",
        &blocks[0],
        None,
        bad_block(0, "no history gap to fill".into()),
    );
    drop(target);

    let target = open(target_dir.path(), None);
    assert_eq!(target.state(), source.state());
    for (h, block) in blocks.iter().enumerate() {
        let h = Height(h as u64);
        assert_eq!(target.store().block(h).expect("readable").as_ref(), Some(block));
        assert_eq!(target.store().certificate(h).expect("readable"), Some(certificates[h.0 as usize].clone()));
    }
}

// ---------------------------------------------------------------------------
// (c) A follower appending certified blocks.

/// A refused certified block: the exact error, and the follower unchanged.
fn check_refused_certified(
    chain: &mut Chain<SledLedgerStore>,
    name: &str,
    block: &Block,
    certificate: &Certificate,
    expected: impl Fn(&ChainError) -> bool,
) {
    let before = observe(chain);
    let result = chain.append_certified(block, certificate);
    assert!(result.as_ref().is_err_and(&expected), "{name}: {result:?}");
    assert_eq!(observe(chain), before, "{name}: state, index and store unchanged");
    assert_eq!(chain.store().block(block.height()).expect("readable"), None, "{name}: nothing stored");
    assert_eq!(chain.stopped(), None, "{name}: a bad block does not stop the node");
}

#[test]
fn a_follower_appends_certified_blocks_and_refuses_tampered_ones() {
    let validators = validators(4, BLS_SEED);
    let other_validators = common::validators(4, BLS_SEED + 1);
    let network = network_config(&validators);
    let source_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let (source, blocks, certificates) = build_source(source_dir.path(), &validators, &network, 5);
    let mut follower = open(follower_dir.path(), Some(&network));
    let replay_differs = "replaying the certified block gives a different block".to_owned();

    for h in 0..blocks.len() {
        let (block, certificate) = (&blocks[h], &certificates[h]);
        if h >= 2 {
            let mut entries_altered = block.clone();
            with_other_amount(&mut entries_altered.entries);
            check_refused_certified(
                &mut follower,
                &format!("block {h}, entries altered under the original certificate"),
                &entries_altered,
                certificate,
                bad_block(h as u64, replay_differs.clone()),
            );
            let mut results_altered = block.clone();
            with_other_outcome(&mut results_altered.results);
            check_refused_certified(
                &mut follower,
                &format!("block {h}, results altered under the original certificate"),
                &results_altered,
                certificate,
                bad_block(h as u64, replay_differs.clone()),
            );
            let mut header_altered = block.clone();
            header_altered.header.state_root = blocks[h - 1].header.state_root;
            check_refused_certified(
                &mut follower,
                &format!("block {h}, state root altered"),
                &header_altered,
                certificate,
                bad_certificate(h as u64),
            );
            check_refused_certified(
                &mut follower,
                &format!("block {h}, another key set's certificate"),
                block,
                &other_validators.certify(&block.header),
                bad_certificate(h as u64),
            );
            check_refused_certified(
                &mut follower,
                &format!("block {h}, the previous block's certificate"),
                block,
                &certificates[h - 1],
                bad_certificate(h as u64),
            );
        }
        if let Some(ahead) = blocks.get(h + 1) {
            check_refused_certified(
                &mut follower,
                &format!("block {} before block {h}", h + 1),
                ahead,
                &certificates[h + 1],
                bad_block(h as u64 + 1, format!("expected height {h}")),
            );
        }
        follower.append_certified(block, certificate).expect("the honest certified block appends");
        assert_eq!(follower.tip(), Some((block.height(), block.hash())), "block {h}");
        assert_eq!(follower.state().state_root(), block.header.state_root, "block {h}");
        assert_eq!(follower.certified_height(), Some(block.height()));
        assert_eq!(follower.store().certificate(block.height()).expect("readable").as_ref(), Some(certificate));
    }
    assert_eq!(follower.state(), source.state());
    assert_eq!(all_positions(follower.state()), all_positions(source.state()));
    drop(follower);
    let follower = open(follower_dir.path(), None);
    assert_eq!(follower.state(), source.state());
    assert_eq!(follower.certified_height(), Some(Height(5)));
}
