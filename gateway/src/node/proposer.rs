//! Batch intake and block cutting. Any node accepts a signed batch; a
//! follower forwards it to the leader. The leader queues batches (bounded:
//! beyond the limit it refuses with RESOURCE_EXHAUSTED) and cuts a block
//! proposal when one of these holds:
//! - the pipeline is idle: every block it proposed is certified (and the
//!   oldest batch has waited [`BLOCK_GATHER_MS`] for company, and the
//!   previous block was cut at least `block.interval_ms_min` ago), so a
//!   quiet network answers at once;
//! - `block.transfers_max` transfers are pending;
//! - the oldest batch has waited `block.age_ms_max`.
//!
//! Under load the first rule adapts the block rate to what certification
//! sustains: blocks grow while a round is running instead of multiplying
//! the per-block BLS work. A batch is answered once its block is applied,
//! i.e. durable on a quorum; certification follows.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use remit_proto::v1::{
    SubmitBatchReply, SubmitBatchRequest, SubmitGovernanceRequest, SubmitReportsRequest, TransferResult,
};
use remit_settlement::block::{EntryResult, TransferOutcome};
use remit_settlement::codec::Reader;
use remit_settlement::constants::{BLOCK_ENTRIES_MAX, BLOCK_TRANSFERS_MAX};
use remit_settlement::replica::{Proposal, Raft};
use remit_settlement::{Entry, PayoutReportBatch, TransferBatch};
use tokio::sync::{oneshot, Notify, Semaphore};
use tonic::Status;
use tracing::{debug, info_span, warn, Instrument};

use super::follower::CertifiedHeight;
use super::peers::Peers;
use crate::config::BlockSection;
use crate::constants::{PENDING_TRANSFERS_MAX, PROPOSALS_IN_FLIGHT_MAX};
use crate::metrics::Metrics;

type Reply = Result<SubmitBatchReply, Status>;

struct PendingBatch {
    entry: Entry,
    count: usize,
    reply: oneshot::Sender<Reply>,
    received: Instant,
}

#[derive(Default)]
struct Queue {
    batches: VecDeque<PendingBatch>,
    transfers: usize,
    /// When the previous block was cut.
    last_cut: Option<Instant>,
}

/// How long the oldest batch waits for others before an idle pipeline cuts
/// a block for it.
pub const BLOCK_GATHER_MS: u64 = 5;

/// Intake queue and block cutter of one node.
pub struct Proposer {
    me: u64,
    raft: Raft,
    peers: Peers,
    metrics: Metrics,
    block: BlockSection,
    queue: Mutex<Queue>,
    wake: Notify,
    in_flight: Arc<Semaphore>,
    /// Height of the newest block this node proposed and saw applied.
    proposed_max: std::sync::atomic::AtomicU64,
    /// Proposals submitted to Raft and not answered yet.
    proposing: std::sync::atomic::AtomicUsize,
    certified: CertifiedHeight,
}

impl std::fmt::Debug for Proposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proposer(validator {})", self.me)
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The reply to a batch from its entry's result in an applied block.
pub fn reply_for(height: u64, block_hash: &[u8], result: &EntryResult) -> SubmitBatchReply {
    let mut reply = SubmitBatchReply { height, block_hash: block_hash.to_vec(), ..Default::default() };
    match result {
        EntryResult::Rejected { reason } => {
            reply.batch_rejected = true;
            reply.batch_reason = reason_name(*reason);
            reply.batch_iso_code = reason.iso_code().unwrap_or_default().to_owned();
        }
        EntryResult::Batch { outcomes } => {
            reply.results = outcomes
                .iter()
                .map(|outcome| match outcome {
                    TransferOutcome::Accepted => TransferResult { accepted: true, ..Default::default() },
                    TransferOutcome::Rejected(reason) => TransferResult {
                        accepted: false,
                        reason: reason_name(*reason),
                        iso_code: reason.iso_code().unwrap_or_default().to_owned(),
                    },
                })
                .collect();
        }
        EntryResult::Applied => {}
    }
    reply
}

pub use crate::reject::reason_name;

impl Proposer {
    /// A proposer for validator `me`; `certified` tells it when its blocks are certified.
    pub fn new(
        me: u64,
        raft: Raft,
        peers: Peers,
        metrics: Metrics,
        block: BlockSection,
        certified: CertifiedHeight,
    ) -> Arc<Self> {
        Arc::new(Self {
            me,
            raft,
            peers,
            metrics,
            block,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            in_flight: Arc::new(Semaphore::new(PROPOSALS_IN_FLIGHT_MAX)),
            proposed_max: std::sync::atomic::AtomicU64::new(0),
            proposing: std::sync::atomic::AtomicUsize::new(0),
            certified,
        })
    }

    /// Whether every block this node proposed is applied and certified.
    fn pipeline_idle(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.proposing.load(Relaxed) == 0 && self.certified.current().unwrap_or(0) >= self.proposed_max.load(Relaxed)
    }

    fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().expect("the queue lock is never held across a panic")
    }

    /// Handles SubmitBatch: queue here when leading, else forward once.
    pub async fn submit(&self, request: SubmitBatchRequest) -> Reply {
        let mut reader = Reader::new(&request.batch, "batch");
        let batch = TransferBatch::decode(&mut reader)
            .and_then(|batch| reader.finish().map(|()| batch))
            .map_err(|e| Status::invalid_argument(format!("batch: {e}")))?;
        let forwarded = request.forwarded;
        self.route(Entry::TransferBatch { batch }, forwarded, |mut client| async move {
            client.submit_batch(SubmitBatchRequest { batch: request.batch, forwarded: true }).await
        })
        .await
    }

    /// Handles SubmitReports: payout reports signed by a destination.
    pub async fn submit_reports(&self, request: SubmitReportsRequest) -> Reply {
        let mut reader = Reader::new(&request.batch, "reports");
        let batch = PayoutReportBatch::decode(&mut reader)
            .and_then(|batch| reader.finish().map(|()| batch))
            .map_err(|e| Status::invalid_argument(format!("batch: {e}")))?;
        let forwarded = request.forwarded;
        self.route(Entry::PayoutReports { batch }, forwarded, |mut client| async move {
            client.submit_reports(SubmitReportsRequest { batch: request.batch, forwarded: true }).await
        })
        .await
    }

    /// Handles SubmitGovernance: an administrative entry with its approvals
    /// (checked by the state machine, like every other entry).
    pub async fn submit_governance(&self, request: SubmitGovernanceRequest) -> Reply {
        let mut reader = Reader::new(&request.entry, "entry");
        let entry = Entry::decode(&mut reader)
            .and_then(|entry| reader.finish().map(|()| entry))
            .map_err(|e| Status::invalid_argument(format!("entry: {e}")))?;
        if !matches!(entry, Entry::Governance { .. }) {
            return Err(Status::invalid_argument("entry: not a governance entry"));
        }
        let forwarded = request.forwarded;
        self.route(entry, forwarded, |mut client| async move {
            client.submit_governance(SubmitGovernanceRequest { entry: request.entry, forwarded: true }).await
        })
        .await
    }

    /// Queues `entry` here when leading; otherwise forwards the request to
    /// the leader once (a forwarded request that finds no leader here is
    /// refused, so requests never bounce between nodes).
    async fn route<F, Fut>(&self, entry: Entry, forwarded: bool, forward: F) -> Reply
    where
        F: FnOnce(super::peers::Client) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<SubmitBatchReply>, Status>>,
    {
        match self.leader() {
            Some(leader) if leader == self.me => self.enqueue(entry).await,
            Some(leader) if !forwarded => {
                let client =
                    self.peers.client(leader).ok_or_else(|| Status::unavailable("leader has no known address"))?;
                forward(client).await.map(tonic::Response::into_inner)
            }
            Some(_) => Err(Status::unavailable("not the leader (leadership changed); retry")),
            None => Err(Status::unavailable("no leader elected yet; retry")),
        }
    }

    async fn enqueue(&self, entry: Entry) -> Reply {
        let count = (entry.transfer_count() + entry.report_count()).max(1);
        self.metrics.batch_transfers.observe(count as f64);
        let (reply, receive) = oneshot::channel();
        {
            let mut queue = self.queue();
            if queue.transfers + count > PENDING_TRANSFERS_MAX {
                return Err(Status::resource_exhausted(format!(
                    "{} transfers pending at the leader (limit {PENDING_TRANSFERS_MAX}); slow down and retry",
                    queue.transfers
                )));
            }
            queue.transfers += count;
            queue.batches.push_back(PendingBatch { entry, count, reply, received: Instant::now() });
        }
        self.wake.notify_one();
        receive.await.unwrap_or_else(|_| Err(Status::unavailable("node shutting down; retry")))
    }

    /// Takes batches for one block, when a block is due.
    fn take_block(&self, force: bool) -> Option<Vec<PendingBatch>> {
        let idle = self.pipeline_idle();
        let mut queue = self.queue();
        let waited = queue.batches.front().map_or(Duration::ZERO, |b| b.received.elapsed());
        let spaced =
            queue.last_cut.is_none_or(|cut| cut.elapsed() >= Duration::from_millis(self.block.interval_ms_min));
        let due = queue.transfers >= self.block.transfers_max
            || waited >= Duration::from_millis(self.block.age_ms_max)
            || (idle && spaced && waited >= Duration::from_millis(BLOCK_GATHER_MS));
        if queue.batches.is_empty() || !(due || force) {
            return None;
        }
        let mut taken = Vec::new();
        let mut transfers = 0;
        while let Some(next) = queue.batches.front() {
            let count = next.count;
            // A block is refused whole beyond either limit of the state
            // machine: transfers and reports, or entries (many small batches).
            let full = transfers + count > BLOCK_TRANSFERS_MAX
                || transfers >= self.block.transfers_max
                || taken.len() >= BLOCK_ENTRIES_MAX;
            if !taken.is_empty() && full {
                break;
            }
            transfers += count;
            taken.push(queue.batches.pop_front().expect("front exists"));
        }
        queue.transfers -= transfers;
        queue.last_cut = Some(Instant::now());
        Some(taken)
    }

    fn fail_all(&self, status: &Status) {
        let drained: Vec<PendingBatch> = {
            let mut queue = self.queue();
            queue.transfers = 0;
            queue.batches.drain(..).collect()
        };
        for pending in drained {
            let _ = pending.reply.send(Err(status.clone()));
        }
    }

    /// The cutting loop; runs for the node's lifetime.
    pub async fn run(self: Arc<Self>) {
        let age_max = Duration::from_millis(self.block.age_ms_max.max(1));
        let gather = Duration::from_millis(BLOCK_GATHER_MS);
        let interval_min = Duration::from_millis(self.block.interval_ms_min);
        loop {
            // Wake when the oldest pending batch comes due (sooner when the
            // pipeline is idle), when a batch arrives or a proposal is
            // answered (`wake`), or when this node's newest block is
            // certified while nothing else is in flight.
            use std::sync::atomic::Ordering::Relaxed;
            let idle = self.pipeline_idle();
            let wait = if idle { gather } else { age_max };
            let due = {
                let queue = self.queue();
                let spaced_from = queue.last_cut.map(|cut| cut + interval_min);
                match queue.batches.front() {
                    None => Instant::now() + age_max,
                    Some(oldest) if idle => (oldest.received + wait)
                        .max(spaced_from.unwrap_or(oldest.received))
                        .min(oldest.received + age_max),
                    Some(oldest) => oldest.received + wait,
                }
            };
            let certified = self.certified.clone();
            let target = self.proposed_max.load(Relaxed);
            let awaiting_certificate = !idle && self.proposing.load(Relaxed) == 0;
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep_until(due.into()) => {}
                () = certified.wait_for(target, age_max), if awaiting_certificate => {}
            }
            if self.leader() != Some(self.me) {
                if !self.queue().batches.is_empty() {
                    self.fail_all(&Status::unavailable("leadership lost before the batch was proposed; retry"));
                }
                continue;
            }
            while let Some(batches) = self.take_block(false) {
                let Ok(permit) = self.in_flight.clone().acquire_owned().await else { return };
                let this = self.clone();
                tokio::spawn(async move {
                    this.propose(batches).await;
                    drop(permit);
                });
            }
        }
    }

    async fn propose(&self, batches: Vec<PendingBatch>) {
        use std::sync::atomic::Ordering::Relaxed;
        self.proposing.fetch_add(1, Relaxed);
        self.propose_and_answer(batches).await;
        self.proposing.fetch_sub(1, Relaxed);
        self.wake.notify_one();
    }

    async fn propose_and_answer(&self, batches: Vec<PendingBatch>) {
        let transfers: usize = batches.iter().map(|b| b.count).sum();
        let (entries, replies): (Vec<Entry>, Vec<oneshot::Sender<Reply>>) =
            batches.into_iter().map(|p| (p.entry, p.reply)).unzip();
        let span = info_span!("settlement.propose", batches = entries.len(), transfers);
        debug!(transfers, "proposing");
        self.metrics.proposals.inc();
        let result = self.raft.client_write(Proposal::new(now_ms(), entries)).instrument(span).await;
        match result {
            Ok(response) => {
                let data = response.data;
                match (data.block, data.refused) {
                    (Some((height, hash)), None) => {
                        debug!(height = height.0, transfers, "block applied");
                        self.proposed_max.fetch_max(height.0, std::sync::atomic::Ordering::Relaxed);
                        for (reply, result) in replies.into_iter().zip(&data.results) {
                            let _ = reply.send(Ok(reply_for(height.0, &hash.0, result)));
                        }
                    }
                    (_, refused) => {
                        let status = Status::internal(format!("proposal refused: {}", refused.unwrap_or_default()));
                        for reply in replies {
                            let _ = reply.send(Err(status.clone()));
                        }
                    }
                }
            }
            Err(error) => {
                warn!(%error, "proposal failed");
                let status = Status::unavailable(format!("proposal not committed ({error}); retry"));
                for reply in replies {
                    let _ = reply.send(Err(status.clone()));
                }
            }
        }
    }
}
