//! A Raft snapshot claims exactly the log position its state reflects.
//!
//! `LedgerStateMachine` is driven through the openraft traits on a
//! multi-thread runtime: one task applies a log of 800 proposals (transfers,
//! duplicate UETRs, completions and returns, a proposer clock that sometimes
//! goes back) plus a membership entry and blank entries, in chunks of one to
//! four entries, while two tasks build snapshots after every chunk they see
//! applied, so most builds run while the next chunk is being applied (a few
//! hundred snapshots). Every few chunks the applier waits for a snapshot of its
//! position, so snapshots are spread over the whole log whatever the
//! scheduling. Every distinct snapshot is then installed, in turn, on a node
//! started empty, which must report the snapshot's claimed `last_log_id` and
//! membership and hold exactly the state of a separate in-memory replay of the
//! first k log entries (state root, tip hash, index, both snapshot encodings).
//! Finally one snapshot from the middle is installed on another empty node,
//! the rest of the log is applied there, and it ends on the source's tip with
//! the same responses.
//!
//! Before the fix, the builder read the applied position and the membership
//! under their own lock acquisitions before reading the state, so an apply
//! could slip in between: the snapshot claimed position L and held the state
//! after a later entry, and a follower installing it applied entries twice.
//! Against that version (put back in a scratch copy) this test failed in each
//! of 30 runs, with 5 to 23 torn snapshots out of about 200 per run.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use iso_currency::Currency;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, SnapshotMeta};
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, LogId, Membership, StoredMembership};
use remit_settlement::chain::Chain;
use remit_settlement::hash::hash_with_domain;
use remit_settlement::replica::state_machine::lock;
use remit_settlement::replica::{FailStop, LedgerStateMachine, Proposal, ProposalResponse, SharedChain, TypeConfig};
use remit_settlement::store::SledLedgerStore;
use remit_settlement::{BlockProposal, LedgerState, SignatureCheck, Transfer};
use tokio::sync::watch;

type RaftEntry = openraft::Entry<TypeConfig>;
type Meta = SnapshotMeta<u64, BasicNode>;

/// Proposals in the log.
const PROPOSALS: u64 = 800;
/// Entries per `apply` call, in turn (openraft hands over batches).
const CHUNKS: [usize; 7] = [1, 2, 1, 3, 1, 1, 4];
/// The applier waits for a snapshot of its position after every this many chunks.
const CHECKPOINT_CHUNKS: usize = 8;
/// A blank entry (a new leader's first) at every log index divisible by this.
const BLANK_EVERY: u64 = 40;
/// Snapshot builder tasks. openraft runs one build at a time; two tasks
/// building from the same state machine double the chances that a build's
/// reads straddle an apply, which is what the test is after.
const BUILDERS: usize = 2;

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 0), index)
}

fn membership() -> Membership<u64, BasicNode> {
    Membership::new(vec![BTreeSet::from([0])], ())
}

/// Transfer pairs proposals take in turn: (origin, destination, currency,
/// base amount in minor units). Each pair is followed by its reverse, so
/// positions stay far inside the caps.
const PAIRS: [(&str, &str, Currency, u64); 4] = [
    ("gw-us", "gw-jp", Currency::USD, 125),
    ("gw-jp", "gw-us", Currency::USD, 125),
    ("gw-kw", "gw-hub", Currency::KWD, 1_250),
    ("gw-hub", "gw-kw", Currency::KWD, 1_250),
];

fn pair(p: u64) -> (&'static str, &'static str, Currency, u64) {
    PAIRS[(p % PAIRS.len() as u64) as usize]
}

/// The three transfers of proposal `p`.
fn transfers_of(p: u64) -> Vec<Transfer> {
    let (origin, destination, currency, base) = pair(p);
    (0..3).map(|j| transfer(uetr(p * 1_000 + j), origin, destination, money(base + (p + j) % 7, currency))).collect()
}

/// Proposal `p` (from 1): three transfers; the destination of proposal
/// `p - 2` reports its transfers (every third proposal returns one, every
/// tenth leaves them open); every eleventh proposal repeats a transfer of
/// `p - 1` (a duplicate); every thirteenth proposer's clock is behind the
/// previous block (clamped when applied).
fn proposal_number(p: u64) -> Proposal {
    let (origin, ..) = pair(p);
    let mut transfers = transfers_of(p);
    if p.is_multiple_of(11) {
        // The UETR of proposal p - 1's first transfer, again.
        let (_, destination, currency, base) = pair(p);
        transfers.push(transfer(uetr((p - 1) * 1_000), origin, destination, money(base, currency)));
    }
    let mut entries = vec![batch(origin, transfers)];
    if p > 2 && !p.is_multiple_of(10) {
        let (_, reporter, ..) = pair(p - 2);
        let reported = (0..3)
            .map(|j| {
                let uetr = uetr((p - 2) * 1_000 + j);
                if j == 1 && p.is_multiple_of(3) {
                    returned(uetr, "AC04")
                } else {
                    completed(uetr)
                }
            })
            .collect();
        entries.push(reports(reporter, reported));
    }
    let timestamp_ms =
        if p.is_multiple_of(13) { GENESIS_TIME_MS + p * 1_000 - 1_500 } else { GENESIS_TIME_MS + p * 1_000 };
    Proposal::new(timestamp_ms, entries)
}

/// The log: a membership entry at index 1, then the proposals, with a blank
/// entry at every multiple of [`BLANK_EVERY`].
fn raft_log() -> Vec<RaftEntry> {
    let mut log = vec![RaftEntry { log_id: log_id(1), payload: EntryPayload::Membership(membership()) }];
    let mut p = 1;
    while p <= PROPOSALS {
        let index = log.len() as u64 + 1;
        let payload = if index.is_multiple_of(BLANK_EVERY) {
            EntryPayload::Blank
        } else {
            p += 1;
            EntryPayload::Normal(proposal_number(p - 1))
        };
        log.push(RaftEntry { log_id: log_id(index), payload });
    }
    log
}

/// What a node must hold after the first k log entries.
#[derive(Debug, Clone)]
struct Expected {
    state: LedgerState,
    membership: StoredMembership<u64, BasicNode>,
}

/// The log replayed on a bare state, one expectation per prefix (index 0:
/// only the genesis block, applied before the log), and the response to
/// every entry.
fn replay(log: &[RaftEntry]) -> (Vec<Expected>, Vec<ProposalResponse>) {
    let (mut state, _) = genesis_state();
    let mut membership = StoredMembership::default();
    let mut expected = vec![Expected { state: state.clone(), membership: membership.clone() }];
    let mut responses = Vec::with_capacity(log.len());
    for entry in log {
        let response = match &entry.payload {
            EntryPayload::Blank => ProposalResponse::default(),
            EntryPayload::Membership(m) => {
                membership = StoredMembership::new(Some(entry.log_id), m.clone());
                ProposalResponse::default()
            }
            EntryPayload::Normal(p) => {
                let proposal = BlockProposal {
                    height: state.next_height(),
                    prev_hash: state.tip_hash(),
                    timestamp_ms: p.timestamp_ms.max(state.last_timestamp_ms()),
                    entries: p.entries.clone(),
                };
                let block = state.apply(proposal, SignatureCheck::Verify).expect("every proposal applies");
                ProposalResponse { block: Some((block.height(), block.hash())), results: block.results, refused: None }
            }
        };
        responses.push(response);
        expected.push(Expected { state: state.clone(), membership: membership.clone() });
    }
    (expected, responses)
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

/// A node on an empty store in `dir`, with its state machine. With
/// `genesis`, the genesis block is appended first (as a new node does).
fn node(dir: &Path, genesis: bool) -> (SharedChain, LedgerStateMachine) {
    let validators = validators(4, 42);
    let network = network_config(&validators);
    let mut chain = Chain::open(open_store(dir), Some(&network)).expect("empty store opens");
    if genesis {
        chain.append(network.genesis_proposal(), SignatureCheck::Verify, |_| None).expect("genesis appends");
    }
    let chain: SharedChain = Arc::new(Mutex::new(chain));
    // Nobody certifies here; the state machine ignores a closed channel.
    let (applied_tx, _) = tokio::sync::mpsc::unbounded_channel();
    let machine = LedgerStateMachine::new(chain.clone(), applied_tx, FailStop::new());
    (chain, machine)
}

fn claimed(meta: &Meta) -> usize {
    meta.last_log_id.map_or(0, |id| id.index as usize)
}

/// Where a node's state stands, to name a mismatch.
fn describe(state: &LedgerState) -> String {
    format!(
        "height {:?}, {} transfers accepted, {} reports",
        state.tip().map(|(h, _)| h.0),
        state.transfers_accepted_total(),
        state.payout_reports_total()
    )
}

/// The number of log entries applied after each chunk, in order.
fn chunk_ends(entries: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut applied = 0;
    for chunk in 0.. {
        if applied == entries {
            break;
        }
        applied += CHUNKS[chunk % CHUNKS.len()].min(entries - applied);
        ends.push(applied);
    }
    ends
}

/// Applies the log on `machine` while [`BUILDERS`] tasks build snapshots;
/// returns every snapshot, in the order of the positions they claim, and
/// every response.
fn run_concurrently(
    runtime: &tokio::runtime::Runtime,
    mut machine: LedgerStateMachine,
    log: Vec<RaftEntry>,
) -> (Vec<(Meta, Vec<u8>)>, Vec<ProposalResponse>) {
    // (index of the last applied entry, whether the log is done)
    let (progress_tx, progress_rx) = watch::channel((0u64, false));
    // The furthest position a snapshot has claimed so far.
    let (built_tx, mut built_rx) = watch::channel(None::<u64>);
    let built_tx = Arc::new(built_tx);
    let builders: Vec<_> = (0..BUILDERS)
        .map(|_| {
            let mut builder = runtime.block_on(machine.get_snapshot_builder());
            let mut progress_rx = progress_rx.clone();
            let built_tx = built_tx.clone();
            runtime.spawn(async move {
                let mut snapshots = Vec::new();
                loop {
                    let (_, done) = *progress_rx.borrow_and_update();
                    let snapshot = builder.build_snapshot().await.expect("snapshot builds");
                    let claimed = snapshot.meta.last_log_id.map(|id| id.index);
                    built_tx.send_modify(|furthest| *furthest = (*furthest).max(claimed));
                    snapshots.push((snapshot.meta, snapshot.snapshot.into_inner()));
                    if done || progress_rx.changed().await.is_err() {
                        break;
                    }
                }
                snapshots
            })
        })
        .collect();
    let ends = chunk_ends(log.len());
    let applier = runtime.spawn(async move {
        let mut responses = Vec::with_capacity(log.len());
        let mut start = 0;
        for (chunk, end) in ends.into_iter().enumerate() {
            let last = log[end - 1].log_id.index;
            responses.extend(machine.apply(log[start..end].to_vec()).await.expect("entries apply"));
            start = end;
            progress_tx.send_replace((last, end == log.len()));
            if chunk % CHECKPOINT_CHUNKS == CHECKPOINT_CHUNKS - 1 {
                built_rx.wait_for(|furthest| *furthest >= Some(last)).await.expect("the builders run");
            }
        }
        responses
    });
    let responses = runtime.block_on(applier).expect("the applier finishes");
    let mut snapshots = Vec::new();
    for builder in builders {
        snapshots.extend(runtime.block_on(builder).expect("a builder finishes"));
    }
    snapshots.sort_by_key(|(meta, _)| claimed(meta));
    (snapshots, responses)
}

#[test]
fn snapshots_built_during_applies_claim_the_position_their_state_reflects() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let log = raft_log();
    let (expected, expected_responses) = replay(&log);
    assert_eq!(expected.len(), log.len() + 1);
    // The log exercises what it should: transfers, duplicates, reports, returns.
    let last = &expected.last().expect("non-empty").state;
    assert_eq!(last.tip().map(|(h, _)| h.0), Some(PROPOSALS));
    assert_eq!(last.transfers_accepted_total(), 3 * PROPOSALS, "every transfer but the duplicates");
    assert!(last.payout_reports_total() > 2 * PROPOSALS, "{}", describe(last));

    let source_dir = tempfile::tempdir().expect("tempdir");
    let (source, machine) = node(source_dir.path(), true);
    assert_eq!(lock(&source).state(), &expected[0].state, "the node's genesis is the replay's");
    let (snapshots, responses) = run_concurrently(&runtime, machine, log.clone());
    assert_eq!(responses, expected_responses, "every entry's response");
    assert_eq!(lock(&source).state(), &expected[log.len()].state);

    let positions: BTreeSet<usize> = snapshots.iter().map(|(meta, _)| claimed(meta)).collect();
    eprintln!("{} snapshots at {} distinct log positions over {} entries", snapshots.len(), positions.len(), log.len());
    let checkpoints: Vec<usize> =
        chunk_ends(log.len()).into_iter().skip(CHECKPOINT_CHUNKS - 1).step_by(CHECKPOINT_CHUNKS).collect();
    let missing: Vec<&usize> = checkpoints.iter().filter(|k| !positions.contains(k)).collect();
    assert!(missing.is_empty(), "no snapshot at checkpoints {missing:?}");

    // Every snapshot, installed on a node, is exactly the replay of the log
    // prefix it claims.
    let target_dir = tempfile::tempdir().expect("tempdir");
    let (target, mut target_machine) = node(target_dir.path(), false);
    let mut mismatches = Vec::new();
    let mut installed_before = HashSet::new();
    for (meta, bytes) in &snapshots {
        let k = claimed(meta);
        // Two builds between the same two applies are byte-identical; one
        // install checks both.
        if !installed_before.insert(hash_with_domain(b"TEST_SNAPSHOT", bytes)) {
            continue;
        }
        runtime
            .block_on(target_machine.install_snapshot(meta, Box::new(Cursor::new(bytes.clone()))))
            .expect("snapshot installs");
        let (applied, membership) = runtime.block_on(target_machine.applied_state()).expect("readable");
        assert_eq!((applied, &membership), (meta.last_log_id, &meta.last_membership), "{}", meta.snapshot_id);
        assert_eq!(membership, expected[k].membership, "{}: membership after {k} entries", meta.snapshot_id);
        let installed = lock(&target).state().clone();
        let want = &expected[k].state;
        let same = installed == *want
            && installed.tip() == want.tip()
            && installed.state_root() == want.state_root()
            && installed.encode_snapshot() == want.encode_snapshot()
            && installed.index().encode_snapshot() == want.index().encode_snapshot();
        if !same {
            mismatches.push(format!(
                "{} claims {k} log entries (replayed: {}) but holds {}",
                meta.snapshot_id,
                describe(want),
                describe(&installed)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} distinct snapshots hold another state than the position they claim:\n{}",
        mismatches.len(),
        installed_before.len(),
        mismatches.join("\n")
    );

    // A follower installs a snapshot from the middle, applies the rest of the
    // log and ends on the source's tip.
    let (meta, bytes) =
        snapshots.iter().find(|(meta, _)| claimed(meta) >= log.len() / 2).expect("a snapshot past the middle");
    let k = claimed(meta);
    assert!(k < log.len(), "entries remain to apply");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let (follower, mut follower_machine) = node(follower_dir.path(), false);
    runtime
        .block_on(follower_machine.install_snapshot(meta, Box::new(Cursor::new(bytes.clone()))))
        .expect("snapshot installs");
    let rest = runtime.block_on(follower_machine.apply(log[k..].to_vec())).expect("the rest applies");
    assert_eq!(rest, responses[k..], "the follower makes the same blocks");
    let follower_state = lock(&follower).state().clone();
    let source_state = lock(&source).state().clone();
    assert_eq!(follower_state.tip(), source_state.tip(), "same tip hash");
    assert_eq!(follower_state, source_state);
    assert_eq!(runtime.block_on(follower_machine.applied_state()).expect("readable").0, Some(log_id(log.len() as u64)));
}
