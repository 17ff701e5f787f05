//! The remit settlement ledger: money and identifiers, the pure ledger state
//! machine, blocks and their canonical encoding, threshold certification, the
//! durable store and offline audit.
//!
//! Invariant: the state machine ([`ledger`]) does no IO, reads no clock and
//! uses no randomness; storage ([`store`]) and time are at the edges.

pub mod applied;
pub mod audit;
pub mod block;
pub mod certify;
pub mod chain;
pub mod codec;
pub mod constants;
pub mod governance;
pub mod hash;
pub mod ids;
pub mod index;
pub mod ledger;
pub mod money;
pub mod network;
pub mod participant;
pub mod payout;
pub mod replica;
pub mod store;
pub mod transfer;
pub mod uetr_map;

pub use applied::{AppliedTransfer, AppliedTransferView};
pub use block::{Block, BlockHeader, BlockProposal, Entry, EntryResult, RejectReason, TransferOutcome};
pub use governance::{Approval, GovernanceAction, GovernanceConfig, GovernanceProposal, SignedProposal};
pub use hash::Digest32;
pub use ids::{ChainId, CountryCode, Height, ParticipantId, Uetr, WindowId};
pub use ledger::{BlockError, LedgerParams, LedgerState, ReplayWindow, SignatureCheck};
pub use money::{Money, MoneyError};
pub use participant::{OriginKey, Participant, ParticipantStatus};
pub use payout::{
    PayoutOutcome, PayoutReport, PayoutReportBatch, PayoutState, ReturnReason, PAYOUT_REPORTS_SIGNATURE_TAG,
};
pub use transfer::{BatchSignature, Transfer, TransferBatch};
pub use uetr_map::UetrMap;
