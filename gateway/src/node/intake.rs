//! Where a node sends what it puts on the ledger (signed transfer batches,
//! payout reports, governance entries): on a validator, its own proposer
//! (which forwards to the Raft leader); on a gateway that is not a
//! validator, the validators over the peer API.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use remit_proto::v1::{SubmitBatchReply, SubmitBatchRequest, SubmitGovernanceRequest, SubmitReportsRequest};
use tonic::{Code, Status};
use tracing::debug;

use super::peers::{Client, Peers};
use super::proposer::Proposer;

/// The answer to a submission: the entry's result in its applied block.
pub type Reply = Result<SubmitBatchReply, Status>;

/// Submits entries to the ledger. Implementations answer once the entry is
/// applied in a block durable on a Raft quorum (committed).
#[tonic::async_trait]
pub trait LedgerIntake: Send + Sync + std::fmt::Debug {
    /// A transfer batch signed by its origin.
    async fn submit(&self, request: SubmitBatchRequest) -> Reply;
    /// Payout reports signed by a destination.
    async fn submit_reports(&self, request: SubmitReportsRequest) -> Reply;
    /// A governance entry with its approvals.
    async fn submit_governance(&self, request: SubmitGovernanceRequest) -> Reply;
}

#[tonic::async_trait]
impl LedgerIntake for Proposer {
    async fn submit(&self, request: SubmitBatchRequest) -> Reply {
        Proposer::submit(self, request).await
    }

    async fn submit_reports(&self, request: SubmitReportsRequest) -> Reply {
        Proposer::submit_reports(self, request).await
    }

    async fn submit_governance(&self, request: SubmitGovernanceRequest) -> Reply {
        Proposer::submit_governance(self, request).await
    }
}

/// No leader known yet.
const LEADER_UNKNOWN: u64 = u64::MAX;

/// The validators' Raft leader as last reported to a gateway (by GetTip).
#[derive(Clone, Debug)]
pub struct LeaderHint(Arc<AtomicU64>);

impl Default for LeaderHint {
    fn default() -> Self {
        Self(Arc::new(AtomicU64::new(LEADER_UNKNOWN)))
    }
}

impl LeaderHint {
    /// The leader's validator index, if known.
    pub fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|leader| *leader != LEADER_UNKNOWN)
    }

    /// Records the leader a validator reported.
    pub fn set(&self, leader: Option<u64>) {
        self.0.store(leader.unwrap_or(LEADER_UNKNOWN), Ordering::Relaxed);
    }
}

/// A gateway's intake: the validators, the leader first. A validator that
/// is not the leader forwards once; one that cannot be reached (or has no
/// leader) is skipped for the next, a round at most, with a short pause.
#[derive(Debug)]
pub struct RemoteIntake {
    peers: Peers,
    leader: LeaderHint,
    next: AtomicUsize,
}

impl RemoteIntake {
    /// An intake over the validators in `peers`.
    pub fn new(peers: Peers, leader: LeaderHint) -> Self {
        Self { peers, leader, next: AtomicUsize::new(0) }
    }

    /// The validators to try, in order: the leader (if known), then the
    /// others starting from a rotating position.
    fn candidates(&self) -> Vec<(u64, Client)> {
        let mut validators: Vec<(u64, Client)> = self.peers.validators().collect();
        if validators.is_empty() {
            return validators;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % validators.len();
        validators.rotate_left(start);
        if let Some(leader) = self.leader.get() {
            if let Some(position) = validators.iter().position(|(index, _)| *index == leader) {
                let first = validators.remove(position);
                validators.insert(0, first);
            }
        }
        validators
    }

    async fn call<F, Fut>(&self, what: &str, call: F) -> Reply
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<SubmitBatchReply>, Status>>,
    {
        let mut last = Status::unavailable("no validator is known (config `peers`)");
        for (index, client) in self.candidates() {
            match call(client).await {
                Ok(reply) => return Ok(reply.into_inner()),
                // Not reached, or no leader there: the entry was not taken.
                Err(status) if status.code() == Code::Unavailable => {
                    debug!(validator = index, what, message = status.message(), "submission not taken; next validator");
                    last = status;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(status) => return Err(status),
            }
        }
        Err(last)
    }
}

#[tonic::async_trait]
impl LedgerIntake for RemoteIntake {
    async fn submit(&self, request: SubmitBatchRequest) -> Reply {
        self.call("batch", |mut client| {
            let request = request.clone();
            async move { client.submit_batch(request).await }
        })
        .await
    }

    async fn submit_reports(&self, request: SubmitReportsRequest) -> Reply {
        self.call("reports", |mut client| {
            let request = request.clone();
            async move { client.submit_reports(request).await }
        })
        .await
    }

    async fn submit_governance(&self, request: SubmitGovernanceRequest) -> Reply {
        self.call("governance", |mut client| {
            let request = request.clone();
            async move { client.submit_governance(request).await }
        })
        .await
    }
}
