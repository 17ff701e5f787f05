//! The ports of the remittance workflows: every way the engine reaches the
//! world outside its own records is one of these traits. Adapters live at
//! the edge (`crate::node`: the ledger over the proposer or the validators,
//! the peer exchange over gRPC, the webhook sink, the system clock;
//! `crate::payout`: the banks), and unit tests drive the workflows with
//! `mockall` mocks of them (`workflow_tests.rs`, `restart_tests.rs`).
//!
//! **Invariant:** nothing here names a protobuf type, a transport status
//! code or an HTTP type; errors are domain errors, and the retry policy
//! decides on [`LedgerError::Unavailable`] alone.

use std::sync::Arc;

use remit_settlement::block::Block;
use remit_settlement::ids::{ParticipantId, Uetr};
use remit_settlement::money::Money;
use remit_settlement::{PayoutReportBatch, PayoutState, TransferBatch};

use super::journal::{InboxMessage, JournalError, JournalEvent};
use super::party::Party;
use super::record::{LedgerPosition, Remittance, StatusChange};

// ---------------------------------------------------------------------------
// The ledger
// ---------------------------------------------------------------------------

/// Why the ledger did not answer a submission.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// Not reached, no leader, timed out: the entry may be sent again as is
    /// (the ledger refuses a UETR twice, so a retry never moves money twice).
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    /// Refused for good (malformed or not authorised): sending it again
    /// would be refused again.
    #[error("ledger refused the submission: {0}")]
    Refused(String),
}

/// The ledger's verdict on one entry of an applied batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryOutcome {
    /// Applied.
    Accepted,
    /// The ledger already holds this UETR (an earlier attempt landed).
    Duplicate,
    /// Refused, with the ledger's reason name and its ISO 20022 code (empty
    /// when the ledger gave none).
    Rejected {
        /// The ISO 20022 status reason code, e.g. `AM04`; may be empty.
        iso_code: String,
        /// The ledger's reason, e.g. `insufficient_collateral`.
        reason: String,
    },
}

/// The ledger's answer to a submitted batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerOutcome {
    /// The whole batch was refused (bad signature, unknown origin, ...).
    BatchRejected {
        /// The ISO 20022 code; may be empty.
        iso_code: String,
        /// Why.
        reason: String,
    },
    /// The batch was applied in a block; one outcome per entry, in order.
    Applied {
        /// The block it was applied in, when the ledger said.
        position: Option<LedgerPosition>,
        /// One per entry of the batch.
        entries: Vec<EntryOutcome>,
    },
}

/// Submits signed entries to the ledger; answers once the entry is applied
/// in a block durable on a quorum.
#[cfg_attr(test, mockall::automock)]
#[async_trait::async_trait]
pub trait LedgerPort: Send + Sync {
    /// A transfer batch signed by this gateway as origin.
    async fn submit_transfers(&self, batch: &TransferBatch) -> Result<LedgerOutcome, LedgerError>;
    /// Payout reports signed by this gateway as destination.
    async fn submit_reports(&self, batch: &PayoutReportBatch) -> Result<LedgerOutcome, LedgerError>;
}

/// What the workflows read of the certified chain.
#[cfg_attr(test, mockall::automock)]
#[async_trait::async_trait]
pub trait CertifiedBlocks: Send + Sync {
    /// The highest certified height, 0 before any.
    fn certified_height(&self) -> u64;
    /// The block at `height`, if it is stored (a certified block missing
    /// after a snapshot install comes back later).
    async fn block(&self, height: u64) -> Option<Arc<Block>>;
    /// The payout state of each transfer in `uetrs` (in order), `None` for
    /// a transfer the ledger does not remember.
    fn payout_states(&self, uetrs: &[Uetr]) -> Vec<Option<PayoutState>>;
}

// ---------------------------------------------------------------------------
// Payment messages between gateways
// ---------------------------------------------------------------------------

/// A payment message sent to a destination; the same shape as one received.
pub type OutgoingMessage = InboxMessage;

/// What an origin answered to a fetch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchedMessages {
    /// The messages it holds (each already checked for shape).
    pub messages: Vec<InboxMessage>,
    /// UETRs it holds no remittance for.
    pub unknown: Vec<Uetr>,
}

/// Why a push or a fetch did not go through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// This gateway knows no address for the peer.
    #[error("no address for the gateway {0}")]
    NoAddress(ParticipantId),
    /// The call failed (not reached, refused, timed out).
    #[error("payment message exchange failed: {0}")]
    Failed(String),
}

/// Payment messages between gateways.
#[cfg_attr(test, mockall::automock)]
#[async_trait::async_trait]
pub trait MessageExchange: Send + Sync {
    /// Whether this gateway can reach `peer` at all.
    fn knows(&self, peer: &ParticipantId) -> bool;
    /// Pushes messages to their destination gateway; how many it stored.
    async fn push(&self, destination: &ParticipantId, messages: &[OutgoingMessage]) -> Result<u64, ExchangeError>;
    /// Asks the origin gateway for the messages of `uetrs`.
    async fn fetch(&self, origin: &ParticipantId, uetrs: &[Uetr]) -> Result<FetchedMessages, ExchangeError>;
}

// ---------------------------------------------------------------------------
// Journal, clock, events
// ---------------------------------------------------------------------------

/// The durable record of the engine's events.
#[cfg_attr(test, mockall::automock)]
#[async_trait::async_trait]
pub trait JournalPort: Send + Sync {
    /// Appends `events`; `Ok` only once they are durable.
    async fn append(&self, events: &[JournalEvent]) -> Result<(), JournalError>;
}

/// Wall-clock time.
#[cfg_attr(test, mockall::automock)]
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// Where status changes of origin remittances are announced (webhooks).
#[cfg_attr(test, mockall::automock)]
pub trait EventSink: Send + Sync {
    /// Whether `client` listens at all (nothing is rendered otherwise).
    fn has_endpoint(&self, client: &str) -> bool;
    /// Announces `changes` of `record` (each status change once, in order,
    /// carrying its own status and time).
    fn publish(&self, record: &Remittance, changes: &[StatusChange]);
}

// ---------------------------------------------------------------------------
// Payout
// ---------------------------------------------------------------------------

/// What the destination gateway asks its bank to pay.
#[derive(Clone, Debug)]
pub struct PayoutInstruction {
    /// The remittance's UETR; also the idempotency key of the payout.
    pub uetr: Uetr,
    /// The origin gateway.
    pub origin: ParticipantId,
    /// Who is credited, and to which account.
    pub beneficiary: Party,
    /// The amount credited, in the payout currency.
    pub amount: Money,
    /// ISO 20022 purpose code, e.g. `FAMI` (family maintenance).
    pub purpose: String,
    /// Unstructured remittance information for the beneficiary.
    pub remittance_information: String,
}

/// The outcome of a payout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayoutResult {
    /// The beneficiary was credited.
    Paid {
        /// The bank's reference of the credit.
        reference: String,
    },
    /// The bank refused for good; `reason_code` is an ISO 20022
    /// ExternalReturnReason1Code (4 chars, e.g. "AC04" closed account, "AC01"
    /// incorrect account number, "AC06" blocked account, "AM09"), `reason`
    /// human text.
    Refused {
        /// ISO 20022 return reason code, 4 uppercase letters or digits.
        reason_code: String,
        /// Human-readable reason.
        reason: String,
    },
    /// Could not tell (timeout, 5xx, connection refused): try again later with
    /// the same uetr.
    Failed {
        /// What went wrong.
        reason: String,
    },
}

impl PayoutResult {
    /// `paid`, `refused` or `failed`, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PayoutResult::Paid { .. } => "paid",
            PayoutResult::Refused { .. } => "refused",
            PayoutResult::Failed { .. } => "failed",
        }
    }

    pub(crate) fn refused(reason_code: &str, reason: &str) -> Self {
        PayoutResult::Refused { reason_code: reason_code.to_owned(), reason: reason.to_owned() }
    }

    pub(crate) fn failed(reason: impl Into<String>) -> Self {
        PayoutResult::Failed { reason: reason.into() }
    }
}

/// What the bank knows of a payout, asked by UETR ([`PayoutAdapter::status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayoutStatus {
    /// The bank credited the beneficiary.
    Paid {
        /// The bank's reference of the credit.
        reference: String,
    },
    /// The bank refused the payout for good.
    Refused {
        /// ISO 20022 return reason code, 4 uppercase letters or digits.
        reason_code: String,
        /// Human-readable reason.
        reason: String,
    },
    /// The bank never received a payout with this UETR: it may be paid now
    /// (still under the same idempotency key).
    Unknown,
    /// Could not tell (timeout, 5xx, an answer that is not a status): ask
    /// again later.
    Failed {
        /// What went wrong.
        reason: String,
    },
}

impl PayoutStatus {
    /// `paid`, `refused`, `unknown` or `failed`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PayoutStatus::Paid { .. } => "paid",
            PayoutStatus::Refused { .. } => "refused",
            PayoutStatus::Unknown => "unknown",
            PayoutStatus::Failed { .. } => "failed",
        }
    }
}

impl From<PayoutResult> for PayoutStatus {
    fn from(result: PayoutResult) -> Self {
        match result {
            PayoutResult::Paid { reference } => PayoutStatus::Paid { reference },
            PayoutResult::Refused { reason_code, reason } => PayoutStatus::Refused { reason_code, reason },
            PayoutResult::Failed { reason } => PayoutStatus::Failed { reason },
        }
    }
}

/// Pays beneficiaries at the destination.
#[cfg_attr(test, mockall::automock)]
#[async_trait::async_trait]
pub trait PayoutAdapter: Send + Sync + 'static {
    /// Pays (idempotent per `uetr`: paying the same uetr again must not credit
    /// twice and returns the first outcome).
    async fn pay(&self, instruction: &PayoutInstruction) -> PayoutResult;
    /// What the bank knows of the payout of `uetr`: its outcome, or that it
    /// never received it. Asked after a restart for every payout that was in
    /// flight, before paying it.
    async fn status(&self, uetr: Uetr) -> PayoutStatus;
    /// Short name for logs and metrics ("simulated", "http").
    fn name(&self) -> &'static str;
}

// ---------------------------------------------------------------------------
// The bundle
// ---------------------------------------------------------------------------

/// The port objects an engine runs on (cheap to clone).
#[derive(Clone)]
pub struct EnginePorts {
    /// Submits transfer batches and payout reports.
    pub ledger: Arc<dyn LedgerPort>,
    /// Reads the certified chain.
    pub blocks: Arc<dyn CertifiedBlocks>,
    /// Payment messages to and from the other gateways.
    pub exchange: Arc<dyn MessageExchange>,
    /// The bank.
    pub payout: Arc<dyn PayoutAdapter>,
    /// Sanctions and risk screening of new remittances.
    pub screening: Arc<dyn remit_compliance::Screening>,
    /// Wall-clock time.
    pub clock: Arc<dyn Clock>,
    /// Webhook announcements, when configured.
    pub events: Option<Arc<dyn EventSink>>,
}

impl std::fmt::Debug for EnginePorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnginePorts").field("payout", &self.payout.name()).finish_non_exhaustive()
    }
}
