//! Blocks: entries, their results, and the header that chains and commits to both.

use iso_currency::Currency;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::codec::{DecodeError, Reader, Writer};
use crate::constants::{BLOCK_ENTRIES_MAX, BLOCK_TRANSFERS_MAX, CHAIN_ID_LEN_MAX, PARTICIPANT_ID_LEN_MAX};
use crate::governance::{decode_approvals, decode_cap, encode_approvals, encode_cap, Approval, GovernanceProposal};
use crate::hash::{hash_with_domain, merkle_leaf, merkle_root, Digest32};
use crate::ids::{ChainId, Height, ParticipantId, WindowId};
use crate::participant::{Participant, ParticipantStatus};
use crate::payout::PayoutReportBatch;
use crate::transfer::TransferBatch;

/// Version of the block format; part of every block header.
pub const BLOCK_FORMAT_VERSION: u16 = 1;
/// Domain tag of the block hash (hash of the encoded header).
pub const BLOCK_HASH_TAG: &[u8] = b"REMIT_BLOCK_HEADER_V1";
/// Domain tag of a stored or transmitted block.
pub const BLOCK_ENCODING_TAG: &[u8] = b"REMIT_BLOCK_V1";

/// One ledger entry, proposed by the leader and applied by every replica.
///
/// The three unsigned administrative entries are valid only in the genesis
/// block (derived from `network.json`); afterwards administration goes
/// through [`Entry::Governance`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    /// Adds a participant to the registry (genesis only).
    RegisterParticipant {
        /// The full record.
        participant: Participant,
    },
    /// Sets a participant's net debit cap in one currency (genesis only).
    SetNetDebitCap {
        /// Whose cap.
        participant: ParticipantId,
        /// Which currency.
        currency: Currency,
        /// The new cap (non-negative, exact to minor units).
        #[serde(with = "rust_decimal::serde::str")]
        cap: Decimal,
    },
    /// Suspends or reactivates a participant (genesis only).
    SetParticipantStatus {
        /// Whose status.
        participant: ParticipantId,
        /// The new status.
        status: ParticipantStatus,
    },
    /// Transfers signed by one origin.
    TransferBatch {
        /// The batch.
        batch: TransferBatch,
    },
    /// Payout completions and returns reported by one destination.
    PayoutReports {
        /// The signed reports.
        batch: PayoutReportBatch,
    },
    /// An administrative action approved by governance keys.
    Governance {
        /// The action and its nonce.
        proposal: GovernanceProposal,
        /// Signatures of governance keys over the proposal.
        approvals: Vec<Approval>,
    },
}

impl Entry {
    /// Number of transfers the entry carries.
    pub fn transfer_count(&self) -> usize {
        match self {
            Entry::TransferBatch { batch } => batch.transfers.len(),
            _ => 0,
        }
    }

    /// Number of payout reports the entry carries.
    pub fn report_count(&self) -> usize {
        match self {
            Entry::PayoutReports { batch } => batch.reports.len(),
            _ => 0,
        }
    }

    /// Canonical encoding.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Entry::RegisterParticipant { participant } => {
                w.u8(1);
                participant.encode(w);
            }
            Entry::SetNetDebitCap { participant, currency, cap } => {
                w.u8(2);
                encode_cap(w, participant, *currency, *cap);
            }
            Entry::SetParticipantStatus { participant, status } => {
                w.u8(3);
                w.str(participant.as_str());
                w.u8(status.code());
            }
            Entry::TransferBatch { batch } => {
                w.u8(4);
                batch.encode(w);
            }
            Entry::PayoutReports { batch } => {
                w.u8(5);
                batch.encode(w);
            }
            Entry::Governance { proposal, approvals } => {
                w.u8(6);
                proposal.encode(w);
                encode_approvals(w, approvals);
            }
        }
    }

    /// Decodes an entry.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8()? {
            1 => Ok(Entry::RegisterParticipant { participant: Participant::decode(r)? }),
            2 => {
                let (participant, currency, cap) = decode_cap(r)?;
                Ok(Entry::SetNetDebitCap { participant, currency, cap })
            }
            3 => {
                let participant = ParticipantId::new(r.str(PARTICIPANT_ID_LEN_MAX)?).map_err(|e| r.error(e))?;
                let status = ParticipantStatus::from_code(r.u8()?).ok_or_else(|| r.error("bad participant status"))?;
                Ok(Entry::SetParticipantStatus { participant, status })
            }
            4 => Ok(Entry::TransferBatch { batch: TransferBatch::decode(r)? }),
            5 => Ok(Entry::PayoutReports { batch: PayoutReportBatch::decode(r)? }),
            6 => {
                let proposal = GovernanceProposal::decode(r)?;
                Ok(Entry::Governance { proposal, approvals: decode_approvals(r)? })
            }
            other => Err(r.error(format!("unknown entry type {other}"))),
        }
    }
}

/// Why an entry or a transfer was rejected. Business outcomes, not errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The UETR was already applied (DUPL).
    DuplicateUetr,
    /// The origin is not registered.
    UnknownOrigin,
    /// The destination is not registered.
    UnknownDestination,
    /// The origin is suspended (AG01).
    OriginSuspended,
    /// The destination is suspended (AG01).
    DestinationSuspended,
    /// The origin does not settle in the transfer's currency (AM03).
    OriginCurrencyNotSettled,
    /// The destination does not settle in the transfer's currency (AM03).
    DestinationCurrencyNotSettled,
    /// The transfer would take the origin beyond its net debit cap (AM04).
    NetDebitCapExceeded,
    /// Origin and destination are the same participant.
    SameOriginAndDestination,
    /// A transfer's origin differs from the batch's.
    OriginMismatch,
    /// The batch signature does not verify with the origin's key (DS0D).
    BadSignature,
    /// The batch has no transfers (AM18).
    EmptyBatch,
    /// `created_at` lies too far after the block's timestamp (DT01).
    CreatedInFuture,
    /// A registration for an id already registered.
    AlreadyRegistered,
    /// A registration whose validator index is taken.
    ValidatorIndexTaken,
    /// The registry is full.
    TooManyParticipants,
    /// An administrative entry for a participant that is not registered.
    UnknownParticipant,
    /// The participant record or cap fails validation (e.g. a cap with too many decimals).
    InvalidParticipantData,
    /// A cap for a currency the participant does not settle in (AM03).
    CapCurrencyNotSettled,
    /// A payout report batch from a participant that is not registered (RC01).
    UnknownReporter,
    /// A payout report for a UETR never accepted on the ledger (NOOR).
    UnknownTransfer,
    /// A payout report from a participant that is not the transfer's destination (RC07).
    NotDestination,
    /// A payout report for a transfer already reported completed or returned (DUPL).
    AlreadyReported,
    /// `created_at` lies further before the block's timestamp than the
    /// replay horizon (DT01).
    CreatedTooLongAgo,
    /// An unsigned administrative entry after genesis: administration needs
    /// governance approval.
    GovernanceRequired,
    /// Fewer distinct governance keys approved the action than the threshold.
    GovernanceApprovalsInsufficient,
    /// A governance action whose nonce was already used (DUPL).
    GovernanceNonceReused,
    /// The ledger remembers no more governance nonces.
    GovernanceNoncesExhausted,
}

impl RejectReason {
    /// The ISO 20022 status reason code (ExternalStatusReason1Code) where one
    /// fits; for a report on an unknown transfer, NOOR ("no original
    /// transaction received", from the cancellation and investigation codes).
    pub fn iso_code(self) -> Option<&'static str> {
        use RejectReason::*;
        match self {
            DuplicateUetr | AlreadyReported | GovernanceNonceReused => Some("DUPL"),
            UnknownOrigin | UnknownDestination | UnknownParticipant | UnknownReporter => Some("RC01"),
            OriginSuspended | DestinationSuspended => Some("AG01"),
            OriginCurrencyNotSettled | DestinationCurrencyNotSettled | CapCurrencyNotSettled => Some("AM03"),
            NetDebitCapExceeded => Some("AM04"),
            SameOriginAndDestination | OriginMismatch | NotDestination => Some("RC07"),
            UnknownTransfer => Some("NOOR"),
            BadSignature => Some("DS0D"),
            EmptyBatch => Some("AM18"),
            CreatedInFuture | CreatedTooLongAgo => Some("DT01"),
            InvalidParticipantData => Some("FF01"),
            AlreadyRegistered
            | ValidatorIndexTaken
            | TooManyParticipants
            | GovernanceRequired
            | GovernanceApprovalsInsufficient
            | GovernanceNoncesExhausted => None,
        }
    }

    /// Every reason in wire-code order (code = position + 1). New reasons are
    /// appended so that stored codes keep their meaning.
    const ALL: [RejectReason; 28] = {
        use RejectReason::*;
        [
            DuplicateUetr,
            UnknownOrigin,
            UnknownDestination,
            OriginSuspended,
            DestinationSuspended,
            OriginCurrencyNotSettled,
            DestinationCurrencyNotSettled,
            NetDebitCapExceeded,
            SameOriginAndDestination,
            OriginMismatch,
            BadSignature,
            EmptyBatch,
            CreatedInFuture,
            AlreadyRegistered,
            ValidatorIndexTaken,
            TooManyParticipants,
            UnknownParticipant,
            InvalidParticipantData,
            CapCurrencyNotSettled,
            UnknownReporter,
            UnknownTransfer,
            NotDestination,
            AlreadyReported,
            CreatedTooLongAgo,
            GovernanceRequired,
            GovernanceApprovalsInsufficient,
            GovernanceNonceReused,
            GovernanceNoncesExhausted,
        ]
    };

    fn code(self) -> u8 {
        let position = Self::ALL.iter().position(|r| *r == self).expect("ALL lists every reason");
        u8::try_from(position + 1).expect("fewer than 255 reasons")
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }
}

/// What happened to one transfer of a batch, or to one report of a payout
/// report batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "reason", rename_all = "snake_case")]
pub enum TransferOutcome {
    /// Applied: for a transfer the positions moved; for a report the payout
    /// state changed (and, for a return, the positions moved back).
    Accepted,
    /// Not applied.
    Rejected(RejectReason),
}

/// What happened to one entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum EntryResult {
    /// An administrative entry took effect.
    Applied,
    /// The whole entry was refused (for a batch: no transfer of it applied).
    Rejected {
        /// Why.
        reason: RejectReason,
    },
    /// A batch was checked transfer by transfer (or report by report).
    Batch {
        /// One outcome per transfer (or report), in order.
        outcomes: Vec<TransferOutcome>,
    },
}

impl EntryResult {
    /// Canonical encoding.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            EntryResult::Applied => w.u8(1),
            EntryResult::Rejected { reason } => {
                w.u8(2);
                w.u8(reason.code());
            }
            EntryResult::Batch { outcomes } => {
                w.u8(3);
                w.len(outcomes.len());
                for outcome in outcomes {
                    match outcome {
                        TransferOutcome::Accepted => w.u8(0),
                        TransferOutcome::Rejected(reason) => w.u8(reason.code()),
                    }
                }
            }
        }
    }

    /// Decodes a result.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let reason = |r: &mut Reader<'_>| {
            let code = r.u8()?;
            RejectReason::from_code(code).ok_or_else(|| r.error(format!("unknown reject reason {code}")))
        };
        match r.u8()? {
            1 => Ok(EntryResult::Applied),
            2 => Ok(EntryResult::Rejected { reason: reason(r)? }),
            3 => {
                let count = r.len(BLOCK_TRANSFERS_MAX)?;
                let mut outcomes = Vec::with_capacity(count);
                for _ in 0..count {
                    outcomes.push(match r.u8()? {
                        0 => TransferOutcome::Accepted,
                        code => TransferOutcome::Rejected(
                            RejectReason::from_code(code)
                                .ok_or_else(|| r.error(format!("unknown reject reason {code}")))?,
                        ),
                    });
                }
                Ok(EntryResult::Batch { outcomes })
            }
            other => Err(r.error(format!("unknown result type {other}"))),
        }
    }

    /// Number of accepted outcomes: accepted transfers for a transfer batch,
    /// accepted reports for a payout report batch.
    pub fn accepted_transfers(&self) -> usize {
        match self {
            EntryResult::Batch { outcomes } => outcomes.iter().filter(|o| **o == TransferOutcome::Accepted).count(),
            _ => 0,
        }
    }
}

/// What the leader proposes: everything but the results and roots, which every
/// replica computes by applying it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockProposal {
    /// Height the block will have.
    pub height: Height,
    /// Hash of the block at `height - 1` (zero for genesis).
    pub prev_hash: Digest32,
    /// Proposer's clock, milliseconds since the Unix epoch; never decreases.
    pub timestamp_ms: u64,
    /// The entries, applied in order.
    pub entries: Vec<Entry>,
}

/// The part of a block that is hashed: it commits to the entries, their
/// results and the state after applying them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    /// Block format version ([`BLOCK_FORMAT_VERSION`]).
    pub version: u16,
    /// Network the block belongs to.
    pub chain_id: ChainId,
    /// Position in the chain.
    pub height: Height,
    /// Hash of the previous block.
    pub prev_hash: Digest32,
    /// Proposer timestamp, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Settlement window the positions accumulate in.
    pub window: WindowId,
    /// Number of entries.
    pub entry_count: u32,
    /// Number of transfers over all batches (payout reports are not counted).
    pub transfer_count: u32,
    /// Number of transfers accepted (payout reports are not counted).
    pub accepted_count: u32,
    /// Merkle root of the encoded entries.
    pub entries_root: Digest32,
    /// Merkle root of the encoded results.
    pub results_root: Digest32,
    /// Hash of the registry and positions after the block.
    pub state_root: Digest32,
}

impl BlockHeader {
    /// Canonical encoding.
    pub fn encode(&self, w: &mut Writer) {
        w.u16(self.version);
        w.str(self.chain_id.as_str());
        w.u64(self.height.0);
        w.digest(&self.prev_hash);
        w.u64(self.timestamp_ms);
        w.u64(self.window.0);
        w.u32(self.entry_count);
        w.u32(self.transfer_count);
        w.u32(self.accepted_count);
        w.digest(&self.entries_root);
        w.digest(&self.results_root);
        w.digest(&self.state_root);
    }

    /// Decodes a header.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u16()?;
        if version != BLOCK_FORMAT_VERSION {
            return Err(r.error(format!("unsupported block format version {version}")));
        }
        Ok(Self {
            version,
            chain_id: ChainId::new(r.str(CHAIN_ID_LEN_MAX)?).map_err(|e| r.error(e))?,
            height: Height(r.u64()?),
            prev_hash: r.digest()?,
            timestamp_ms: r.u64()?,
            window: WindowId(r.u64()?),
            entry_count: r.u32()?,
            transfer_count: r.u32()?,
            accepted_count: r.u32()?,
            entries_root: r.digest()?,
            results_root: r.digest()?,
            state_root: r.digest()?,
        })
    }

    /// The block hash: SHA-256 over the domain tag and the encoded header.
    pub fn hash(&self) -> Digest32 {
        let mut w = Writer::with_capacity(256);
        self.encode(&mut w);
        hash_with_domain(BLOCK_HASH_TAG, w.as_bytes())
    }
}

/// An applied block: header, entries and per-entry results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The hashed header.
    pub header: BlockHeader,
    /// The entries.
    pub entries: Vec<Entry>,
    /// One result per entry.
    pub results: Vec<EntryResult>,
}

impl Block {
    /// The block hash.
    pub fn hash(&self) -> Digest32 {
        self.header.hash()
    }

    /// The block's height.
    pub fn height(&self) -> Height {
        self.header.height
    }

    /// Canonical encoding of the whole block, for storage and transport.
    pub fn encode(&self) -> Vec<u8> {
        let transfers: usize = self.entries.iter().map(Entry::transfer_count).sum();
        let reports: usize = self.entries.iter().map(Entry::report_count).sum();
        let mut w = Writer::with_capacity(512 + transfers * 100 + reports * 24);
        w.raw(BLOCK_ENCODING_TAG);
        self.header.encode(&mut w);
        w.len(self.entries.len());
        for entry in &self.entries {
            entry.encode(&mut w);
        }
        w.len(self.results.len());
        for result in &self.results {
            result.encode(&mut w);
        }
        w.into_bytes()
    }

    /// Decodes a block written by [`Block::encode`]. Structure only: hashes
    /// and results are checked by verification, not here.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "block");
        r.tag(BLOCK_ENCODING_TAG)?;
        let header = BlockHeader::decode(&mut r)?;
        let count = r.len(BLOCK_ENTRIES_MAX)?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            entries.push(Entry::decode(&mut r)?);
        }
        let count = r.len(BLOCK_ENTRIES_MAX)?;
        let mut results = Vec::with_capacity(count);
        for _ in 0..count {
            results.push(EntryResult::decode(&mut r)?);
        }
        r.finish()?;
        Ok(Self { header, entries, results })
    }
}

/// Merkle root over the canonical encodings of `entries`.
pub fn entries_root(entries: &[Entry]) -> Digest32 {
    let mut w = Writer::default();
    let leaves = entries
        .iter()
        .map(|entry| {
            w.clear();
            entry.encode(&mut w);
            merkle_leaf(w.as_bytes())
        })
        .collect();
    merkle_root(leaves)
}

/// Merkle root over the canonical encodings of `results`.
pub fn results_root(results: &[EntryResult]) -> Digest32 {
    let mut w = Writer::default();
    let leaves = results
        .iter()
        .map(|result| {
            w.clear();
            result.encode(&mut w);
            merkle_leaf(w.as_bytes())
        })
        .collect();
    merkle_root(leaves)
}
