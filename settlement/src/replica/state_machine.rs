//! The Raft state machine: applies committed proposals to the ledger chain,
//! recording the Raft log position in the same atomic batch as each block,
//! and announces every new block for certification.
//!
//! Snapshot rule: a snapshot is built from one consistent view. The Raft
//! position, the membership, the state (registry, counters, the duplicate
//! index) and the tip block are all read under the chain lock, which every
//! apply holds from applying a block to storing it with its Raft position.
//! So the position a snapshot claims is exactly the position its state
//! reflects, and a follower installing it applies the next entry once.
//!
//! Fail-stop: when a durable write fails, the chain rewinds its memory to
//! the disk and refuses further writes, the state machine reports the error
//! to openraft (which stops replicating) and signals [`FailStop`], on which
//! the node exits.
//!
//! openraft's storage traits fix the error type (`StorageError`, large), so
//! `clippy::result_large_err` is allowed here.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, LogId, OptionalSend, StorageError, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use super::log_store::blocking;
use super::{Proposal, ProposalResponse, TypeConfig};
use crate::block::{Block, BlockHeader};
use crate::certify::Certificate;
use crate::chain::Chain;
use crate::ledger::SignatureCheck;
use crate::store::{LedgerStore, SledLedgerStore};

type Entry = openraft::Entry<TypeConfig>;
type Membership = StoredMembership<u64, openraft::BasicNode>;

/// The node's chain, shared between the state machine and the node's services.
pub type SharedChain = Arc<Mutex<Chain<SledLedgerStore>>>;

/// Locks the shared chain. A panic while holding the lock means the chain may
/// be half-updated in memory; carrying on would be unsafe, so it propagates.
///
/// An apply holds the lock until its block is durable, and a sled flush can
/// take a hundred milliseconds or more. A caller on an async runtime that
/// finds the lock taken therefore waits through [`blocking`]: its worker
/// thread hands its other tasks (Raft RPCs, timers, the APIs) to another
/// thread instead of stalling them all behind the flush.
pub fn lock(chain: &SharedChain) -> MutexGuard<'_, Chain<SledLedgerStore>> {
    match chain.try_lock() {
        Ok(guard) => guard,
        Err(std::sync::TryLockError::WouldBlock) => {
            blocking(|| chain.lock().expect("a panic while holding the chain lock stops the node"))
        }
        Err(std::sync::TryLockError::Poisoned(_)) => panic!("a panic while holding the chain lock stops the node"),
    }
}

fn read_meta<T: for<'de> Deserialize<'de>>(
    chain: &Chain<SledLedgerStore>,
    key: &str,
) -> Result<Option<T>, StorageError<u64>> {
    let bytes = chain.store().meta(key).map_err(io_read)?;
    bytes.map(|b| bincode::deserialize(&b).map_err(io_read)).transpose()
}

const META_APPLIED: &str = "raft/applied";
const META_MEMBERSHIP: &str = "raft/membership";

/// Signals that the node must stop because a durable write failed. Cheap to
/// clone; the node waits on [`FailStop::stopped`].
#[derive(Clone, Debug)]
pub struct FailStop {
    sender: Arc<watch::Sender<Option<String>>>,
}

impl Default for FailStop {
    fn default() -> Self {
        Self::new()
    }
}

impl FailStop {
    /// A signal not raised yet.
    pub fn new() -> Self {
        Self { sender: Arc::new(watch::channel(None).0) }
    }

    /// Raises the signal with the reason (the first reason wins).
    pub fn stop(&self, reason: impl Into<String>) {
        let reason = reason.into();
        error!(%reason, "fail-stop: a durable write failed; the node stops");
        self.sender.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// The reason, once raised.
    pub fn reason(&self) -> Option<String> {
        self.sender.borrow().clone()
    }

    /// Waits until the signal is raised; returns the reason.
    pub async fn stopped(&self) -> String {
        let mut receiver = self.sender.subscribe();
        loop {
            if let Some(reason) = receiver.borrow_and_update().clone() {
                return reason;
            }
            if receiver.changed().await.is_err() {
                // The sender lives in `self`, so this cannot happen; wait forever.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A block the state machine just made durable, for the certification round.
#[derive(Clone, Debug)]
pub struct AppliedBlock {
    /// The block's header.
    pub header: BlockHeader,
    /// The whole block, when it was applied here (not for a tip installed
    /// from a snapshot), so readers need not load it back from the store.
    pub block: Option<Arc<crate::Block>>,
}

type StoredSnapshot = (SnapshotMeta<u64, openraft::BasicNode>, Vec<u8>);

/// The ledger as an openraft state machine.
#[derive(Debug)]
pub struct LedgerStateMachine {
    chain: SharedChain,
    applied_blocks: mpsc::UnboundedSender<AppliedBlock>,
    /// The latest snapshot built or installed, shared with snapshot builders
    /// (openraft builds snapshots on a copy of the state machine).
    current_snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    fail_stop: FailStop,
}

/// Everything a far-behind node needs to continue from a snapshot.
#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    applied: Option<LogId<u64>>,
    membership: Membership,
    tip_block: Vec<u8>,
    tip_certificate: Option<Vec<u8>>,
    /// `LedgerState::encode_snapshot`: everything but the duplicate index.
    state: Vec<u8>,
    /// `TransferIndex::encode_snapshot`: every remembered transfer, by
    /// block, with its payout state.
    index: Vec<u8>,
}

fn io_read(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn io_write(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

impl LedgerStateMachine {
    /// A state machine over `chain`, announcing new blocks on `applied_blocks`
    /// and raising `fail_stop` when a durable write fails.
    pub fn new(chain: SharedChain, applied_blocks: mpsc::UnboundedSender<AppliedBlock>, fail_stop: FailStop) -> Self {
        Self { chain, applied_blocks, current_snapshot: Arc::new(Mutex::new(None)), fail_stop }
    }

    fn meta<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>, StorageError<u64>> {
        read_meta(&lock(&self.chain), key)
    }

    /// A failed durable write: stop the node, and tell openraft.
    fn fail(&self, error: impl std::fmt::Display) -> StorageError<u64> {
        self.fail_stop.stop(format!("ledger store: {error}"));
        io_write(error)
    }

    fn apply_one(&mut self, entry: Entry) -> Result<ProposalResponse, StorageError<u64>> {
        let applied = bincode::serialize(&Some(entry.log_id)).map_err(io_write)?;
        match entry.payload {
            EntryPayload::Blank => {
                lock(&self.chain).store().put_meta(&[(META_APPLIED, applied)]).map_err(|e| self.fail(e))?;
                Ok(ProposalResponse::default())
            }
            EntryPayload::Membership(membership) => {
                let stored = Membership::new(Some(entry.log_id), membership);
                let stored = bincode::serialize(&stored).map_err(io_write)?;
                lock(&self.chain)
                    .store()
                    .put_meta(&[(META_APPLIED, applied), (META_MEMBERSHIP, stored)])
                    .map_err(|e| self.fail(e))?;
                Ok(ProposalResponse::default())
            }
            EntryPayload::Normal(proposal) => self.apply_proposal(proposal, applied),
        }
    }

    fn apply_proposal(&mut self, proposal: Proposal, applied: Vec<u8>) -> Result<ProposalResponse, StorageError<u64>> {
        let mut chain = lock(&self.chain);
        let block_proposal = chain.next_proposal(proposal.timestamp_ms, proposal.entries);
        let height = block_proposal.height;
        let span = tracing::info_span!("settlement.replica.apply", height = height.0);
        let _guard = span.enter();
        match chain.append_with_meta(
            block_proposal,
            SignatureCheck::Verify,
            |_| None,
            &[(META_APPLIED, applied.clone())],
        ) {
            Ok((block, _)) => {
                let response = ProposalResponse {
                    block: Some((block.height(), block.hash())),
                    results: block.results.clone(),
                    refused: None,
                };
                // The receiver lives as long as the node; if it is gone the
                // node is shutting down and certification no longer matters.
                let header = block.header.clone();
                let _ = self.applied_blocks.send(AppliedBlock { header, block: Some(Arc::new(block)) });
                Ok(response)
            }
            Err(crate::chain::ChainError::Block(error)) => {
                // A structurally invalid proposal (only a faulty leader makes
                // one) is refused identically on every replica.
                warn!(%error, "proposal refused");
                chain.store().put_meta(&[(META_APPLIED, applied)]).map_err(|e| self.fail(e))?;
                Ok(ProposalResponse { block: None, results: Vec::new(), refused: Some(error.to_string()) })
            }
            Err(error) => Err(self.fail(error)),
        }
    }

    fn set_current_snapshot(&self, snapshot: StoredSnapshot) {
        *self.current_snapshot.lock().expect("snapshot lock is never held across a panic") = Some(snapshot);
    }

    /// Takes one consistent view under the chain lock (see the module
    /// documentation), then encodes it outside the lock.
    fn build_payload(&self) -> Result<StoredSnapshot, StorageError<u64>> {
        let (applied, membership, state, tip_block, tip_certificate) = {
            let chain = lock(&self.chain);
            let applied: Option<LogId<u64>> = read_meta::<Option<LogId<u64>>>(&chain, META_APPLIED)?.flatten();
            let membership: Membership = read_meta(&chain, META_MEMBERSHIP)?.unwrap_or_default();
            let state = chain.state().clone();
            let (height, _) = state.tip().ok_or_else(|| io_read("no block to snapshot"))?;
            let tip_block =
                chain.store().block_bytes(height).map_err(io_read)?.ok_or_else(|| io_read("tip missing"))?;
            let tip_certificate = chain.store().certificate(height).map_err(io_read)?.map(|c| c.to_bytes().to_vec());
            (applied, membership, state, tip_block, tip_certificate)
        };
        let height = state.tip().map_or(0, |(h, _)| h.0);
        let payload = SnapshotPayload {
            applied,
            membership: membership.clone(),
            tip_block,
            tip_certificate,
            state: state.encode_snapshot(),
            index: state.index().encode_snapshot(),
        };
        let bytes = bincode::serialize(&payload).map_err(io_read)?;
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id: format!("h{}-i{}", height, applied.map_or(0, |a| a.index)),
        };
        Ok((meta, bytes))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for LedgerStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let (meta, bytes) = blocking(|| self.build_payload())?;
        info!(snapshot = %meta.snapshot_id, bytes = bytes.len(), "snapshot built");
        self.set_current_snapshot((meta.clone(), bytes.clone()));
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl RaftStateMachine<TypeConfig> for LedgerStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u64>>, Membership), StorageError<u64>> {
        let applied = self.meta::<Option<LogId<u64>>>(META_APPLIED)?.flatten();
        let membership = self.meta(META_MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ProposalResponse>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        blocking(|| entries.into_iter().map(|entry| self.apply_one(entry)).collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Self {
            chain: self.chain.clone(),
            applied_blocks: self.applied_blocks.clone(),
            current_snapshot: self.current_snapshot.clone(),
            fail_stop: self.fail_stop.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let bytes = snapshot.into_inner();
        let payload: SnapshotPayload = bincode::deserialize(&bytes).map_err(io_write)?;
        let tip = Block::decode(&payload.tip_block).map_err(io_write)?;
        let certificate = payload.tip_certificate.as_deref().and_then(Certificate::from_bytes);
        let segments = crate::index::decode_index_snapshot(&payload.index).map_err(io_write)?;
        let state = crate::ledger::LedgerState::decode_snapshot(&payload.state, segments).map_err(io_write)?;
        let applied = bincode::serialize(&payload.applied).map_err(io_write)?;
        let membership = bincode::serialize(&payload.membership).map_err(io_write)?;
        let header = tip.header.clone();
        let certified = certificate.is_some();
        blocking(|| {
            lock(&self.chain).install_snapshot(
                state,
                tip,
                certificate,
                &[(META_APPLIED, applied), (META_MEMBERSHIP, membership)],
            )
        })
        .map_err(|error| match error {
            crate::chain::ChainError::Store(_) | crate::chain::ChainError::Stopped(_) => self.fail(error),
            // A snapshot that does not verify changes nothing here.
            other => io_write(other),
        })?;
        info!(snapshot = %meta.snapshot_id, height = header.height.0, "snapshot installed");
        if !certified {
            // The tip arrived without its certificate: certify it like a block applied here.
            let _ = self.applied_blocks.send(AppliedBlock { header, block: None });
        }
        self.set_current_snapshot((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let current = self.current_snapshot.lock().expect("snapshot lock is never held across a panic");
        Ok(current
            .as_ref()
            .map(|(meta, bytes)| Snapshot { meta: meta.clone(), snapshot: Box::new(Cursor::new(bytes.clone())) }))
    }
}
