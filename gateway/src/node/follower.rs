//! How a gateway that is not a validator keeps its copy of the ledger: it
//! asks the validators for the certified blocks after its tip (a long poll,
//! so a new certificate reaches it within milliseconds), verifies each
//! block's certificate against the group key, replays the block with the
//! state machine and stores it with its certificate only when the replay
//! gives exactly the certified block. A validator that serves anything else
//! (a body that does not match its header, a certificate that does not
//! verify) is counted, logged and replaced by the next one.
//!
//! Also here: [`CertifiedHeight`], the newest certified height of this node,
//! which the peer service's long poll waits on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use remit_proto::v1::{GetBlocksRequest, GetTipRequest};
use remit_settlement::block::Block;
use remit_settlement::certify::Certificate;
use remit_settlement::chain::ChainError;
use remit_settlement::replica::state_machine::lock;
use remit_settlement::replica::{FailStop, SharedChain};
use tokio::sync::watch;
use tracing::{debug, info, info_span, warn, Instrument};

use super::intake::LeaderHint;
use super::peers::Peers;
use crate::constants::{FOLLOW_RETRY_MS_MAX, FOLLOW_TIP_EVERY_MS, FOLLOW_WAIT_MS, GET_BLOCKS_LIMIT_MAX};
use crate::metrics::Metrics;
use crate::remittance::recent::RecentBlocks;

/// The newest certified height of this node, watched by long polls.
#[derive(Clone, Debug)]
pub struct CertifiedHeight(Arc<watch::Sender<Option<u64>>>);

impl CertifiedHeight {
    /// Starts at `height`.
    pub fn new(height: Option<u64>) -> Self {
        Self(Arc::new(watch::channel(height).0))
    }

    /// Records a newly certified height (never goes back).
    pub fn publish(&self, height: u64) {
        self.0.send_if_modified(|current| {
            if current.is_none_or(|c| c < height) {
                *current = Some(height);
                true
            } else {
                false
            }
        });
    }

    /// The newest certified height.
    pub fn current(&self) -> Option<u64> {
        *self.0.borrow()
    }

    /// Waits until some block at or above `height` is certified, or `timeout`.
    pub async fn wait_for(&self, height: u64, timeout: Duration) {
        let mut receiver = self.0.subscribe();
        let _ = tokio::time::timeout(timeout, receiver.wait_for(|current| current.is_some_and(|c| c >= height))).await;
    }
}

/// Why a batch of blocks from a validator was not taken.
enum Refusal {
    /// The validator served something that does not verify.
    Lied(String),
    /// This node cannot store: it must stop.
    Fatal(String),
}

/// Follows the certified chain from the validators (gateway role).
pub struct ChainFollower {
    chain: SharedChain,
    peers: Peers,
    metrics: Metrics,
    recent: RecentBlocks,
    leader: LeaderHint,
    certified: CertifiedHeight,
    fail_stop: FailStop,
}

impl std::fmt::Debug for ChainFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChainFollower({} validators)", self.peers.validator_count())
    }
}

impl ChainFollower {
    /// A follower of the validators in `peers`, storing into `chain`.
    pub fn new(
        chain: SharedChain,
        peers: Peers,
        metrics: Metrics,
        recent: RecentBlocks,
        leader: LeaderHint,
        certified: CertifiedHeight,
        fail_stop: FailStop,
    ) -> Self {
        Self { chain, peers, metrics, recent, leader, certified, fail_stop }
    }

    /// Runs for the node's lifetime (or until a durable write fails).
    pub async fn run(self) {
        let validators: Vec<u64> = self.peers.validators().map(|(index, _)| index).collect();
        if validators.is_empty() {
            warn!("no validator address in config `peers`: this gateway cannot follow the ledger");
            return;
        }
        let mut current = 0usize;
        let mut backoff = Duration::from_millis(50);
        let mut tip_checked = Instant::now() - Duration::from_millis(FOLLOW_TIP_EVERY_MS);
        loop {
            let validator = validators[current % validators.len()];
            let Some(mut client) = self.peers.client(validator) else { return };
            if tip_checked.elapsed() >= Duration::from_millis(FOLLOW_TIP_EVERY_MS) {
                tip_checked = Instant::now();
                match client.get_tip(GetTipRequest {}).await {
                    Ok(tip) => self.leader.set(tip.into_inner().leader),
                    Err(status) => debug!(validator, %status, "tip not read"),
                }
            }
            let from = lock(&self.chain).state().next_height().0;
            let request = GetBlocksRequest {
                from_height: from,
                limit: GET_BLOCKS_LIMIT_MAX,
                certificates_only: false,
                certified_only: true,
                wait_ms: u32::try_from(FOLLOW_WAIT_MS).unwrap_or(u32::MAX),
            };
            let blocks = match client.get_blocks(request).await {
                Ok(response) => response.into_inner().blocks,
                Err(status) => {
                    debug!(validator, %status, "blocks not read; trying the next validator");
                    current += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(FOLLOW_RETRY_MS_MAX));
                    continue;
                }
            };
            backoff = Duration::from_millis(50);
            if blocks.is_empty() {
                continue;
            }
            let span = info_span!("remit.follow.blocks", validator, from, count = blocks.len());
            match self.take(blocks).instrument(span).await {
                Ok(()) => {}
                Err(Refusal::Lied(reason)) => {
                    self.metrics.blocks_refused.inc();
                    warn!(validator, %reason, "refused blocks from a validator; asking the next one");
                    current += 1;
                }
                Err(Refusal::Fatal(reason)) => {
                    self.fail_stop.stop(reason);
                    return;
                }
            }
        }
    }

    /// Verifies and stores blocks in height order; stops at the first that
    /// does not verify (the ones before it are kept).
    async fn take(&self, blocks: Vec<remit_proto::v1::EncodedBlock>) -> Result<(), Refusal> {
        let chain = self.chain.clone();
        let (appended, refusal) = tokio::task::spawn_blocking(move || {
            let mut chain = lock(&chain);
            let mut appended = Vec::new();
            for encoded in blocks {
                let block = match Block::decode(&encoded.block) {
                    Ok(block) => block,
                    Err(e) => return (appended, Some(Refusal::Lied(format!("block {}: {e}", encoded.height)))),
                };
                let Some(certificate) = Certificate::from_bytes(&encoded.certificate) else {
                    let reason = format!("block {}: no valid certificate", encoded.height);
                    return (appended, Some(Refusal::Lied(reason)));
                };
                match chain.append_certified(&block, &certificate) {
                    Ok(()) => appended.push(Arc::new(block)),
                    Err(error @ (ChainError::Store(_) | ChainError::Stopped(_))) => {
                        return (appended, Some(Refusal::Fatal(format!("ledger store: {error}"))));
                    }
                    Err(error) => return (appended, Some(Refusal::Lied(error.to_string()))),
                }
            }
            (appended, None)
        })
        .await
        .map_err(|e| Refusal::Fatal(format!("follower task: {e}")))?;
        self.publish(&appended);
        match refusal {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    fn publish(&self, appended: &[Arc<Block>]) {
        if let Some(last) = appended.last() {
            let height = last.height().0;
            for block in appended {
                self.metrics.block_transfers.observe(f64::from(block.header.transfer_count));
                self.recent.insert(block.clone());
            }
            let gauge = i64::try_from(height).unwrap_or(i64::MAX);
            self.metrics.height.set(gauge);
            self.metrics.certified_height.set(gauge);
            self.certified.publish(height);
            if appended.len() > 1 {
                info!(count = appended.len(), height, "caught up on certified blocks");
            }
        }
    }
}
