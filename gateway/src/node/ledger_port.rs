//! The ledger as the remittance engine sees it: [`IntakeLedger`] submits
//! signed batches through the node's [`LedgerIntake`] (the local proposer on
//! a validator, the validators on a gateway) and turns replies and gRPC
//! statuses into domain outcomes; [`ChainBlocks`] reads the local certified
//! chain.

use std::sync::Arc;

use remit_proto::v1::{SubmitBatchReply, SubmitBatchRequest, SubmitReportsRequest};
use remit_settlement::block::Block;
use remit_settlement::codec::Writer;
use remit_settlement::hash::Digest32;
use remit_settlement::ids::{Height, Uetr};
use remit_settlement::replica::state_machine::lock as lock_chain;
use remit_settlement::replica::SharedChain;
use remit_settlement::store::LedgerStore;
use remit_settlement::{PayoutReportBatch, PayoutState, RejectReason, TransferBatch};
use tonic::Status;

use super::intake::LedgerIntake;
use crate::reject::reason_name;
use crate::remittance::ports::{CertifiedBlocks, EntryOutcome, LedgerError, LedgerOutcome, LedgerPort};
use crate::remittance::recent::RecentBlocks;
use crate::remittance::record::LedgerPosition;

/// Whether a failed submit may be retried with the same batch: anything but
/// a refusal of the batch itself (malformed, not authorised).
pub fn retryable(status: &Status) -> bool {
    !matches!(status.code(), tonic::Code::InvalidArgument | tonic::Code::PermissionDenied)
}

/// A failed submission as a domain error ([`retryable`] decides which).
pub fn ledger_error(status: &Status) -> LedgerError {
    let text = format!("{:?}: {}", status.code(), status.message());
    if retryable(status) {
        LedgerError::Unavailable(text)
    } else {
        LedgerError::Refused(status.message().to_owned())
    }
}

/// A ledger reply as a domain outcome.
pub fn ledger_outcome(reply: &SubmitBatchReply) -> LedgerOutcome {
    if reply.batch_rejected {
        return LedgerOutcome::BatchRejected {
            iso_code: reply.batch_iso_code.clone(),
            reason: reply.batch_reason.clone(),
        };
    }
    let position = <[u8; 32]>::try_from(reply.block_hash.as_slice())
        .ok()
        .map(Digest32)
        .map(|block_hash| LedgerPosition { height: Height(reply.height), block_hash });
    let duplicate = reason_name(RejectReason::DuplicateUetr);
    let entries = reply
        .results
        .iter()
        .map(|result| {
            if result.accepted {
                EntryOutcome::Accepted
            } else if result.reason == duplicate {
                EntryOutcome::Duplicate
            } else {
                EntryOutcome::Rejected { iso_code: result.iso_code.clone(), reason: result.reason.clone() }
            }
        })
        .collect();
    LedgerOutcome::Applied { position, entries }
}

/// The [`LedgerPort`] over the node's intake.
#[derive(Clone, Debug)]
pub struct IntakeLedger {
    intake: Arc<dyn LedgerIntake>,
}

impl IntakeLedger {
    /// Submits through `intake`.
    pub fn new(intake: Arc<dyn LedgerIntake>) -> Self {
        Self { intake }
    }
}

#[async_trait::async_trait]
impl LedgerPort for IntakeLedger {
    async fn submit_transfers(&self, batch: &TransferBatch) -> Result<LedgerOutcome, LedgerError> {
        let mut w = Writer::with_capacity(64 + batch.transfers.len() * 100);
        batch.encode(&mut w);
        let request = SubmitBatchRequest { batch: w.into_bytes(), forwarded: false };
        self.intake.submit(request).await.map(|reply| ledger_outcome(&reply)).map_err(|s| ledger_error(&s))
    }

    async fn submit_reports(&self, batch: &PayoutReportBatch) -> Result<LedgerOutcome, LedgerError> {
        let mut w = Writer::with_capacity(64 + batch.reports.len() * 24);
        batch.encode(&mut w);
        let request = SubmitReportsRequest { batch: w.into_bytes(), forwarded: false };
        self.intake.submit_reports(request).await.map(|reply| ledger_outcome(&reply)).map_err(|s| ledger_error(&s))
    }
}

/// The [`CertifiedBlocks`] of the local chain, with the blocks this node
/// applied recently kept in memory.
#[derive(Clone, Debug)]
pub struct ChainBlocks {
    chain: SharedChain,
    recent: RecentBlocks,
}

impl ChainBlocks {
    /// Reads `chain`, `recent` first.
    pub fn new(chain: SharedChain, recent: RecentBlocks) -> Self {
        Self { chain, recent }
    }
}

#[async_trait::async_trait]
impl CertifiedBlocks for ChainBlocks {
    fn certified_height(&self) -> u64 {
        lock_chain(&self.chain).certified_height().map_or(0, |h| h.0)
    }

    async fn block(&self, height: u64) -> Option<Arc<Block>> {
        if let Some(block) = self.recent.take(height) {
            return Some(block);
        }
        let chain = self.chain.clone();
        let bytes =
            tokio::task::spawn_blocking(move || lock_chain(&chain).store().block_bytes(Height(height)).ok().flatten())
                .await
                .ok()
                .flatten()?;
        Block::decode(&bytes).ok().map(Arc::new)
    }

    fn payout_states(&self, uetrs: &[Uetr]) -> Vec<Option<PayoutState>> {
        let chain = lock_chain(&self.chain);
        uetrs.iter().map(|uetr| chain.state().payout_state(uetr)).collect()
    }
}

#[cfg(test)]
mod tests {
    use remit_proto::v1::TransferResult;

    use super::*;

    #[test]
    fn statuses_are_classified_for_the_retry_policy() {
        let cases = [
            (Status::unavailable("no leader"), LedgerError::Unavailable("Unavailable: no leader".to_owned())),
            (Status::deadline_exceeded("slow"), LedgerError::Unavailable("DeadlineExceeded: slow".to_owned())),
            (Status::internal("oops"), LedgerError::Unavailable("Internal: oops".to_owned())),
            (Status::invalid_argument("bad batch"), LedgerError::Refused("bad batch".to_owned())),
            (Status::permission_denied("not yours"), LedgerError::Refused("not yours".to_owned())),
        ];
        for (status, expected) in cases {
            assert_eq!(ledger_error(&status), expected, "{status:?}");
        }
    }

    #[test]
    fn a_reply_becomes_one_outcome_per_entry() {
        let result = |accepted: bool, reason: &str, iso_code: &str| TransferResult {
            accepted,
            reason: reason.to_owned(),
            iso_code: iso_code.to_owned(),
        };
        let reply = SubmitBatchReply {
            height: 7,
            block_hash: vec![0xab; 32],
            results: vec![
                result(true, "", ""),
                result(false, &reason_name(RejectReason::DuplicateUetr), "DUPL"),
                result(false, "insufficient_collateral", "AM04"),
            ],
            ..Default::default()
        };
        let LedgerOutcome::Applied { position, entries } = ledger_outcome(&reply) else { panic!("applied") };
        assert_eq!(position.map(|p| p.height), Some(Height(7)));
        assert_eq!(
            entries,
            vec![
                EntryOutcome::Accepted,
                EntryOutcome::Duplicate,
                EntryOutcome::Rejected { iso_code: "AM04".to_owned(), reason: "insufficient_collateral".to_owned() },
            ]
        );
        let rejected = SubmitBatchReply {
            batch_rejected: true,
            batch_reason: "bad signature".to_owned(),
            batch_iso_code: "FF01".to_owned(),
            ..Default::default()
        };
        assert_eq!(
            ledger_outcome(&rejected),
            LedgerOutcome::BatchRejected { iso_code: "FF01".to_owned(), reason: "bad signature".to_owned() }
        );
    }
}
