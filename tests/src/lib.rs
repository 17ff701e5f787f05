//! Harness for remit's cross-crate tests that run real processes: the line
//! protocol of the crash child, a watcher that collects a child's output while
//! it runs and kills it, a checker that reopens a node's ledger and asserts
//! the invariants that must hold after any crash, and ([`net`]) a network of
//! real `remitd` validators driven over gRPC.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use iso_currency::Currency;
use remit_settlement::audit::{stored_blocks, verify_chain, AuditReport};
use remit_settlement::chain::Chain;
use remit_settlement::network::NetworkConfig;
use remit_settlement::store::SledLedgerStore;
use remit_settlement::{
    Digest32, Entry, EntryResult, Height, Money, ParticipantId, PayoutOutcome, PayoutState, TransferOutcome, Uetr,
};
use rust_decimal::Decimal;

pub mod net;
pub mod wallet;

/// Sub-directory of a node data directory that holds the sled ledger store
/// (the same layout as `remit ledger verify --dir`).
pub const LEDGER_SUBDIR: &str = "ledger";

/// Signal number of SIGKILL on Linux and the BSDs.
pub const SIGKILL: i32 = 9;

/// First word of the line the crash child prints after each durable append.
pub const DONE_WORD: &str = "done";

/// The ledger store inside a node data directory.
pub fn ledger_path(data_dir: &Path) -> PathBuf {
    data_dir.join(LEDGER_SUBDIR)
}

/// A block the crash child reported as durably stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoneBlock {
    /// Its height.
    pub height: Height,
    /// Its hash.
    pub hash: Digest32,
}

impl DoneBlock {
    /// The stdout line: `done <height> <hash-hex>`.
    pub fn to_line(&self) -> String {
        format!("{DONE_WORD} {} {}", self.height.0, self.hash.to_hex())
    }

    /// Parses a line written by [`DoneBlock::to_line`], naming the bad field.
    pub fn parse(line: &str) -> anyhow::Result<Self> {
        let mut words = line.split_whitespace();
        ensure!(words.next() == Some(DONE_WORD), "line {line:?}: expected {DONE_WORD:?} first");
        let height = words.next().context("line has no height")?;
        let height = Height(height.parse().with_context(|| format!("height {height:?} is not a u64"))?);
        let hash = words.next().context("line has no hash")?;
        let hash = Digest32::from_hex(hash).with_context(|| format!("hash {hash:?} is not 64 hex characters"))?;
        ensure!(words.next().is_none(), "line {line:?}: trailing words");
        Ok(Self { height, hash })
    }
}

/// How a watched child ended.
#[derive(Debug)]
pub struct ChildEnd {
    /// Whether SIGKILL ended it (false when it exited by itself first).
    pub killed: bool,
    /// Its exit status.
    pub status: ExitStatus,
    /// Every line it wrote to stdout, in order, including those read before the kill.
    pub stdout_lines: Vec<String>,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// A running child whose stdout arrives line by line on a channel and whose
/// stderr is collected, so neither pipe can fill up and stall it.
#[derive(Debug)]
pub struct WatchedChild {
    child: Child,
    lines: Receiver<String>,
    lines_seen: Vec<String>,
    stdout_reader: JoinHandle<std::io::Result<()>>,
    stderr_reader: JoinHandle<std::io::Result<String>>,
}

impl WatchedChild {
    /// Spawns `command` with piped stdout and stderr.
    pub fn spawn(mut command: Command) -> anyhow::Result<Self> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {command:?}"))?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let mut stderr = child.stderr.take().context("stderr is piped")?;
        let (sender, lines) = mpsc::channel();
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                // The receiver lives as long as the watcher; a send error only
                // means the test already gave up on this child.
                if sender.send(line?).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let stderr_reader = std::thread::spawn(move || {
            let mut text = String::new();
            stderr.read_to_string(&mut text)?;
            Ok(text)
        });
        Ok(Self { child, lines, lines_seen: Vec::new(), stdout_reader, stderr_reader })
    }

    /// The next stdout line, or `None` when stdout closed or `timeout` passed.
    pub fn next_line(&mut self, timeout: Duration) -> Option<&str> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.lines_seen.push(line);
                self.lines_seen.last().map(String::as_str)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Sends SIGKILL unless the child already exited, reaps it, and collects
    /// every line it wrote before it died.
    pub fn kill(mut self) -> anyhow::Result<ChildEnd> {
        if self.child.try_wait()?.is_none() {
            // An exit between `try_wait` and here leaves a zombie that still
            // accepts the signal; the status below tells which happened.
            self.child.kill().context("sending SIGKILL")?;
        }
        let status = self.child.wait().context("reaping the child")?;
        // The child is gone, so both pipes reach end of file.
        self.stdout_reader.join().map_err(|_| anyhow::anyhow!("stdout reader panicked"))??;
        let stderr = self.stderr_reader.join().map_err(|_| anyhow::anyhow!("stderr reader panicked"))??;
        let mut stdout_lines = self.lines_seen;
        stdout_lines.extend(self.lines.try_iter());
        Ok(ChildEnd { killed: status.signal() == Some(SIGKILL), status, stdout_lines, stderr })
    }
}

/// What a stored ledger holds once it passed [`check_stored_ledger`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLedger {
    /// Hash of every stored block, by height from genesis.
    pub hashes: Vec<Digest32>,
    /// The audit report.
    pub report: AuditReport,
    /// Transfers stored but rejected (duplicate UETRs and the like).
    pub transfers_rejected: u64,
    /// Every accepted transfer's UETR with the height of its block.
    pub accepted: HashMap<Uetr, Height>,
    /// The payout state set by every accepted payout report, by UETR.
    pub payouts: HashMap<Uetr, PayoutState>,
}

impl StoredLedger {
    /// The stored hash at `height`, if a block is stored there.
    pub fn hash_at(&self, height: Height) -> Option<Digest32> {
        usize::try_from(height.0).ok().and_then(|h| self.hashes.get(h)).copied()
    }
}

/// Reopens the ledger in `data_dir` and checks what must hold after any crash:
///
/// - `Chain::open` succeeds (it re-checks the stored tip, snapshot, UETR index
///   and newest certificate) and the store belongs to `network`;
/// - `audit::verify_chain` over every stored block passes, with every block
///   certified and the audit tip equal to the chain's tip;
/// - no UETR is accepted twice in the whole chain, and the accepted set equals
///   the state's applied-UETR index (same heights, same count);
/// - every accepted payout report is by the destination of a transfer
///   accepted before it, at most one per transfer; the state's payout states
///   are exactly those the reports set, and every completed or returned state
///   refers to an accepted transfer;
/// - positions per currency sum to zero, and every participant's position
///   equals the one recomputed from the accepted transfers less the returned ones.
///
/// The store is closed again before this returns.
pub fn check_stored_ledger(data_dir: &Path, network: &NetworkConfig) -> anyhow::Result<StoredLedger> {
    let store = SledLedgerStore::open(&ledger_path(data_dir)).context("opening the store")?;
    let chain = Chain::open(store, Some(network)).context("reopening the chain")?;
    let blocks = stored_blocks(chain.store()).context("reading the stored blocks")?;
    if blocks.is_empty() {
        // Killed before genesis became durable: an empty store is the right
        // state, and there is nothing to audit (the audit refuses an empty chain).
        ensure!(chain.tip().is_none(), "no stored blocks but the chain has a tip");
        let report = AuditReport { blocks: 0, transfers: 0, tip: None, uncertified_tail: 0 };
        return Ok(StoredLedger {
            hashes: Vec::new(),
            report,
            transfers_rejected: 0,
            accepted: HashMap::new(),
            payouts: HashMap::new(),
        });
    }
    let report = verify_chain(chain.network(), blocks.iter().cloned()).context("auditing the stored chain")?;
    ensure!(report.uncertified_tail == 0, "{} stored blocks lack a certificate", report.uncertified_tail);
    ensure!(report.tip == chain.tip(), "audit tip {:?} differs from the chain tip {:?}", report.tip, chain.tip());

    let state = chain.state();
    let mut hashes = Vec::with_capacity(blocks.len());
    let mut replay = Replay::default();
    for block in blocks {
        let block = block.context("verify_chain accepted it, so it decodes")?;
        hashes.push(block.hash);
        for (entry, result) in block.entries.iter().zip(&block.results) {
            let EntryResult::Batch { outcomes } = result else { continue };
            match entry {
                Entry::TransferBatch { batch } => {
                    for (transfer, outcome) in batch.transfers.iter().zip(outcomes) {
                        if *outcome != TransferOutcome::Accepted {
                            replay.transfers_rejected += 1;
                            continue;
                        }
                        if let Some(first) = replay.accepted.insert(transfer.uetr, block.height) {
                            bail!("uetr {} accepted at height {first} and again at {}", transfer.uetr, block.height);
                        }
                        let parties = (transfer.origin.clone(), transfer.destination.clone(), transfer.amount);
                        replay.shift(&parties, 1);
                        replay.transfers.insert(transfer.uetr, parties);
                    }
                }
                Entry::PayoutReports { batch } => {
                    for (report, outcome) in batch.reports.iter().zip(outcomes) {
                        if *outcome == TransferOutcome::Accepted {
                            replay.report(&batch.reporter, report.uetr, report.outcome, block.height)?;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let Replay { accepted, payouts, positions, transfers_rejected, .. } = replay;
    ensure!(
        accepted.len() == state.applied_transfer_count()
            && accepted.len() as u64 == state.transfers_accepted_total()
            && accepted.len() as u64 == report.transfers,
        "{} accepted transfers in the blocks, {} in the UETR index, {} in the state total, {} audited",
        accepted.len(),
        state.applied_transfer_count(),
        state.transfers_accepted_total(),
        report.transfers
    );
    for (uetr, height) in &accepted {
        ensure!(state.transfer_height(uetr) == Some(*height), "uetr {uetr} is indexed at the wrong height");
    }
    ensure!(
        payouts.len() as u64 == state.payout_reports_total(),
        "{} accepted payout reports in the blocks, {} in the state",
        payouts.len(),
        state.payout_reports_total()
    );
    for (uetr, record) in state.applied_transfers() {
        if record.payout != PayoutState::Open {
            ensure!(accepted.contains_key(uetr), "payout state of uetr {uetr}, which no block accepted");
        }
        ensure!(
            payouts.get(uetr).copied().unwrap_or(PayoutState::Open) == record.payout,
            "payout state of uetr {uetr}: state says {:?}, the blocks give {:?}",
            record.payout,
            payouts.get(uetr)
        );
    }
    for (currency, sum) in state.position_sums() {
        ensure!(sum.is_zero(), "positions in {} sum to {sum}, not zero", currency.code());
    }
    for participant in state.participants() {
        for currency in &participant.settlement_currencies {
            let expected = positions.get(&(participant.id.clone(), *currency)).copied().unwrap_or_default();
            let stored = state.position(&participant.id, *currency);
            ensure!(
                stored == expected,
                "position of {} in {}: state says {stored}, the blocks give {expected}",
                participant.id,
                currency.code()
            );
        }
    }
    Ok(StoredLedger { hashes, report, transfers_rejected, accepted, payouts })
}

/// What [`check_stored_ledger`] recomputes from the stored blocks.
#[derive(Debug, Default)]
struct Replay {
    accepted: HashMap<Uetr, Height>,
    transfers: HashMap<Uetr, (ParticipantId, ParticipantId, Money)>,
    payouts: HashMap<Uetr, PayoutState>,
    positions: BTreeMap<(ParticipantId, Currency), Decimal>,
    transfers_rejected: u64,
}

impl Replay {
    /// Moves a transfer's amount from origin to destination (`sign` 1), or back (`sign` -1).
    fn shift(&mut self, (origin, destination, amount): &(ParticipantId, ParticipantId, Money), sign: i64) {
        let delta = amount.amount() * Decimal::from(sign);
        *self.positions.entry((origin.clone(), amount.currency())).or_default() -= delta;
        *self.positions.entry((destination.clone(), amount.currency())).or_default() += delta;
    }

    /// An accepted payout report: by the transfer's destination, on a transfer
    /// accepted before, the first report on it; a return moves the amount back.
    fn report(
        &mut self,
        reporter: &ParticipantId,
        uetr: Uetr,
        outcome: PayoutOutcome,
        height: Height,
    ) -> anyhow::Result<()> {
        let parties = self
            .transfers
            .get(&uetr)
            .with_context(|| format!("height {height}: report accepted on uetr {uetr}, which no block accepted"))?
            .clone();
        ensure!(parties.1 == *reporter, "height {height}: uetr {uetr} reported by {reporter}, not its destination");
        if self.payouts.insert(uetr, outcome.state()).is_some() {
            bail!("height {height}: uetr {uetr} reported twice");
        }
        if let PayoutOutcome::Returned { .. } = outcome {
            self.shift(&parties, -1);
        }
        Ok(())
    }
}

/// For a test whose external client (Python, a browser) cannot run here:
/// prints `SKIPPED: why`, or fails when `CI` is set, where every test must run.
pub fn skip_unless_ci(why: &str) -> anyhow::Result<()> {
    anyhow::ensure!(std::env::var_os("CI").is_none(), "CI is set, so this may not skip: {why}");
    println!("SKIPPED: {why}");
    Ok(())
}
