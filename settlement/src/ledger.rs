//! The ledger state machine. Pure and deterministic: no IO, no clock, no
//! randomness, and no hash-map iteration order reaches a result or a hash.
//! Every replica that applies the same proposals to the same state computes
//! the same blocks, byte for byte.

use std::collections::{BTreeSet, HashMap};

use iso_currency::Currency;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::applied::{AppliedTransfer, AppliedTransferView};
use crate::block::{
    entries_root, results_root, Block, BlockHeader, BlockProposal, Entry, EntryResult, RejectReason, TransferOutcome,
    BLOCK_FORMAT_VERSION,
};
use crate::codec::{DecodeError, Reader, Writer};
use crate::constants::{
    BATCH_TRANSFERS_MAX, BLOCK_ENTRIES_MAX, BLOCK_TRANSFERS_MAX, CHAIN_ID_LEN_MAX, CREATED_AT_HORIZON_MS_DEFAULT,
    CREATED_AT_HORIZON_MS_MAX, CREATED_AT_HORIZON_MS_MIN, CREATED_AT_SKEW_MS_DEFAULT, CREATED_AT_SKEW_MS_MAX,
    GOVERNANCE_NONCES_MAX, PARTICIPANTS_MAX, VALIDATORS_MAX,
};
use crate::governance::{Approval, GovernanceAction, GovernanceConfig, GovernanceProposal};
use crate::hash::{hash_with_domain, Digest32};
use crate::ids::{ChainId, Height, ParticipantId, Uetr, WindowId};
use crate::index::{RestoredSegment, TransferIndex};
use crate::money::{decimal_to_minor_units, minor_units_to_decimal, Money};
use crate::participant::{validate_cap, Participant, ParticipantStatus};
use crate::payout::{PayoutOutcome, PayoutReport, PayoutReportBatch, PayoutState};
use crate::transfer::{Transfer, TransferBatch};

/// Domain tag of the state root. V2 covers everything that decides a future
/// result: counters, last timestamp, parameters, governance keys and used
/// nonces, participants with caps, statuses and positions, and the root of
/// the duplicate index (with payout states).
pub const STATE_ROOT_TAG: &[u8] = b"REMIT_STATE_V2";
/// Domain tag of a state snapshot (everything but the duplicate index, which
/// is stored and snapshotted by segment). V3 adds the parameters, the
/// governance state and the count of forgotten transfers.
pub const STATE_SNAPSHOT_TAG: &[u8] = b"REMIT_STATE_SNAPSHOT_V3";

/// A proposal that cannot be applied at all. The state is left unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The proposal is not for the next height.
    #[error("height {got} proposed, expected {expected}")]
    WrongHeight {
        /// The next height.
        expected: Height,
        /// The proposed height.
        got: Height,
    },
    /// The proposal does not extend the current tip.
    #[error("previous hash {got} does not match the tip {expected}")]
    WrongPrevHash {
        /// The tip hash.
        expected: Digest32,
        /// The proposed previous hash.
        got: Digest32,
    },
    /// The proposer's clock went backwards.
    #[error("timestamp {got} is before the previous block's {previous}")]
    TimestampRegressed {
        /// The previous block's timestamp.
        previous: u64,
        /// The proposed timestamp.
        got: u64,
    },
    /// Over a block or batch size limit.
    #[error("{what} {got} exceeds the limit of {max}")]
    TooLarge {
        /// Which limit.
        what: &'static str,
        /// The size proposed.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// An administrative entry whose data has no canonical encoding (a
    /// participant record that fails validation, a cap in a currency without
    /// minor units). Such an entry could not be stored and read back, so it
    /// never enters a block.
    #[error("entries[{index}]: {reason}")]
    InvalidEntry {
        /// Position of the entry in the proposal.
        index: usize,
        /// What is wrong, naming the field.
        reason: String,
    },
    /// Prechecked signatures given for a different number of entries.
    #[error("{got} signature checks given for {expected} entries")]
    SignatureCheckMismatch {
        /// Number of entries.
        expected: usize,
        /// Number of checks.
        got: usize,
    },
}

/// How batch signatures (of transfer batches and payout report batches) are
/// checked while applying.
#[derive(Debug, Clone)]
pub enum SignatureCheck {
    /// Verify every batch signature inline.
    Verify,
    /// The caller verified them beforehand (for example in parallel, with
    /// [`LedgerState::check_signatures`]); one flag per entry, true = valid.
    Prechecked(Vec<bool>),
}

/// Refuses administrative entries that cannot round-trip through the
/// canonical encoding: `Participant::encode` requires a valid record (its
/// caps exact to minor units) and `Participant::decode` validates, so an
/// invalid registration would either stop the node while hashing the entries
/// or produce a block that the store and auditors cannot decode.
fn check_encodable(index: usize, entry: &Entry) -> Result<(), BlockError> {
    let invalid = |reason: String| BlockError::InvalidEntry { index, reason };
    match entry {
        Entry::RegisterParticipant { participant }
        | Entry::Governance {
            proposal: GovernanceProposal { action: GovernanceAction::RegisterParticipant { participant }, .. },
            ..
        } => participant.validate().map_err(|e| invalid(format!("participant.{e}"))),
        Entry::SetNetDebitCap { currency, .. }
        | Entry::Governance {
            proposal: GovernanceProposal { action: GovernanceAction::SetNetDebitCap { currency, .. }, .. },
            ..
        } if currency.exponent().is_none() => Err(invalid(format!("currency: {} has no minor unit", currency.code()))),
        _ => Ok(()),
    }
}

/// Replay protection: how far a transfer's `created_at` may lie from its
/// block's timestamp (`network.json`, `replay`). A transfer is accepted only
/// when `block time - horizon <= created_at <= block time + future skew`, and
/// the duplicate index forgets a block's transfers once the block is older
/// than `horizon + future skew`: by then none of its UETRs could be accepted
/// again with the same `created_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayWindow {
    /// Oldest `created_at` accepted, in ms before the block's timestamp.
    pub horizon_ms: u64,
    /// Newest `created_at` accepted, in ms after the block's timestamp.
    pub future_skew_ms: u64,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self { horizon_ms: CREATED_AT_HORIZON_MS_DEFAULT, future_skew_ms: CREATED_AT_SKEW_MS_DEFAULT }
    }
}

impl ReplayWindow {
    /// Checks both bounds against their limits.
    pub fn validate(&self) -> Result<(), String> {
        if !(CREATED_AT_HORIZON_MS_MIN..=CREATED_AT_HORIZON_MS_MAX).contains(&self.horizon_ms) {
            return Err(format!(
                "replay.horizon_ms: must be {CREATED_AT_HORIZON_MS_MIN} to {CREATED_AT_HORIZON_MS_MAX}, got {}",
                self.horizon_ms
            ));
        }
        if self.future_skew_ms > CREATED_AT_SKEW_MS_MAX {
            return Err(format!(
                "replay.future_skew_ms: must be at most {CREATED_AT_SKEW_MS_MAX}, got {}",
                self.future_skew_ms
            ));
        }
        Ok(())
    }

    /// How long a block's transfers stay in the duplicate index.
    pub fn retention_ms(&self) -> u64 {
        self.horizon_ms + self.future_skew_ms
    }
}

/// What the state machine takes from `network.json` besides the genesis
/// registrations. Part of the state root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerParams {
    /// The chain.
    pub chain_id: ChainId,
    /// Size of the validator set (a registration's validator index must be below it).
    pub validator_count: u32,
    /// Replay protection.
    pub replay: ReplayWindow,
    /// Who approves administrative entries after genesis.
    pub governance: GovernanceConfig,
}

impl LedgerParams {
    fn encode(&self, w: &mut Writer) {
        w.str(self.chain_id.as_str());
        w.u32(self.validator_count);
        w.u64(self.replay.horizon_ms);
        w.u64(self.replay.future_skew_ms);
        self.governance.encode(w);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let chain_id = ChainId::new(r.str(CHAIN_ID_LEN_MAX)?).map_err(|e| r.error(e))?;
        let validator_count = r.u32()?;
        if validator_count == 0 || validator_count as usize > VALIDATORS_MAX {
            return Err(r.error(format!("validator count {validator_count} out of range")));
        }
        let replay = ReplayWindow { horizon_ms: r.u64()?, future_skew_ms: r.u64()? };
        replay.validate().map_err(|e| r.error(e))?;
        Ok(Self { chain_id, validator_count, replay, governance: GovernanceConfig::decode(r)? })
    }
}

/// A registered participant with its open-window positions, one per settlement currency.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ParticipantState {
    participant: Participant,
    /// Aligned with `participant.settlement_currencies`; positive = net creditor.
    positions: Vec<Decimal>,
}

impl ParticipantState {
    fn currency_slot(&self, currency: Currency) -> Option<usize> {
        self.participant.settlement_currencies.iter().position(|c| *c == currency)
    }
}

/// The ledger's state after some height: parameters, registry, positions,
/// governance nonces, and the duplicate index of accepted transfers with
/// their payout states.
#[derive(Clone, Debug)]
pub struct LedgerState {
    params: LedgerParams,
    /// Height and hash of the last applied block.
    tip: Option<(Height, Digest32)>,
    last_timestamp_ms: u64,
    window: WindowId,
    /// In registration order: a participant's position here is its slot.
    participants: Vec<ParticipantState>,
    slots: HashMap<ParticipantId, usize>,
    transfers: TransferIndex,
    transfers_accepted_total: u64,
    /// Payout reports accepted since genesis (completions and returns).
    payout_reports_total: u64,
    /// Accepted transfers the duplicate index has forgotten (past the retention).
    transfers_forgotten_total: u64,
    /// Nonces of the governance actions accepted so far.
    governance_nonces: BTreeSet<u64>,
}

impl PartialEq for LedgerState {
    fn eq(&self, other: &Self) -> bool {
        self.state_root() == other.state_root() && self.tip == other.tip && self.transfers == other.transfers
    }
}

impl LedgerState {
    /// The empty state before genesis.
    pub fn new(params: LedgerParams) -> Self {
        Self {
            params,
            tip: None,
            last_timestamp_ms: 0,
            window: WindowId(0),
            participants: Vec::new(),
            slots: HashMap::new(),
            transfers: TransferIndex::new(),
            transfers_accepted_total: 0,
            payout_reports_total: 0,
            transfers_forgotten_total: 0,
            governance_nonces: BTreeSet::new(),
        }
    }

    /// The parameters the state was created with.
    pub fn params(&self) -> &LedgerParams {
        &self.params
    }

    /// The chain this state belongs to.
    pub fn chain_id(&self) -> &ChainId {
        &self.params.chain_id
    }

    /// Height and hash of the last applied block, if any.
    pub fn tip(&self) -> Option<(Height, Digest32)> {
        self.tip
    }

    /// The height the next block must have.
    pub fn next_height(&self) -> Height {
        self.tip.map_or(Height::GENESIS, |(height, _)| height.next())
    }

    /// The hash the next block must name as previous.
    pub fn tip_hash(&self) -> Digest32 {
        self.tip.map_or(Digest32::ZERO, |(_, hash)| hash)
    }

    /// Timestamp of the last applied block.
    pub fn last_timestamp_ms(&self) -> u64 {
        self.last_timestamp_ms
    }

    /// The open settlement window.
    pub fn window(&self) -> WindowId {
        self.window
    }

    /// Number of transfers accepted since genesis.
    pub fn transfers_accepted_total(&self) -> u64 {
        self.transfers_accepted_total
    }

    /// Number of accepted transfers the duplicate index has forgotten.
    pub fn transfers_forgotten_total(&self) -> u64 {
        self.transfers_forgotten_total
    }

    /// Nonces of the governance actions accepted so far.
    pub fn governance_nonces(&self) -> &BTreeSet<u64> {
        &self.governance_nonces
    }

    /// A registered participant.
    pub fn participant(&self, id: &ParticipantId) -> Option<&Participant> {
        self.slots.get(id).map(|i| &self.participants[*i].participant)
    }

    /// All participants, sorted by id.
    pub fn participants(&self) -> Vec<&Participant> {
        let mut all: Vec<&Participant> = self.participants.iter().map(|p| &p.participant).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Net position of `id` in `currency` in the open window (zero when none).
    pub fn position(&self, id: &ParticipantId, currency: Currency) -> Decimal {
        self.slots
            .get(id)
            .map(|i| &self.participants[*i])
            .and_then(|state| state.currency_slot(currency).map(|slot| state.positions[slot]))
            .unwrap_or(Decimal::ZERO)
    }

    /// Sum of all positions per currency, sorted by currency. Every sum is zero
    /// in a consistent state.
    pub fn position_sums(&self) -> Vec<(Currency, Decimal)> {
        let mut sums: std::collections::BTreeMap<Currency, Decimal> = std::collections::BTreeMap::new();
        for state in &self.participants {
            for (currency, position) in state.participant.settlement_currencies.iter().zip(&state.positions) {
                *sums.entry(*currency).or_default() += *position;
            }
        }
        sums.into_iter().collect()
    }

    /// Number of payout reports accepted since genesis.
    pub fn payout_reports_total(&self) -> u64 {
        self.payout_reports_total
    }

    /// The duplicate index.
    pub fn index(&self) -> &TransferIndex {
        &self.transfers
    }

    /// The height at which `uetr` was applied, if it is still remembered.
    pub fn transfer_height(&self, uetr: &Uetr) -> Option<Height> {
        self.transfers.get(uetr).map(|record| record.height)
    }

    /// The accepted transfer `uetr`, with its parties, amount and payout
    /// state, if it is still remembered.
    pub fn applied_transfer(&self, uetr: &Uetr) -> Option<AppliedTransferView> {
        let record = self.transfers.get(uetr)?;
        Some(AppliedTransferView {
            height: record.height,
            origin: self.participants[record.origin_slot as usize].participant.id.clone(),
            destination: self.participants[record.destination_slot as usize].participant.id.clone(),
            amount: Money::from_minor_units(record.amount_minor_units, record.currency, "amount")
                .expect("an accepted transfer's amount was a valid Money"),
            payout: record.payout,
        })
    }

    /// Where the payout of the accepted transfer `uetr` stands, if it is still remembered.
    pub fn payout_state(&self, uetr: &Uetr) -> Option<PayoutState> {
        self.transfers.get(uetr).map(|record| record.payout)
    }

    /// Every remembered transfer's record, by height then block order.
    pub fn applied_transfers(&self) -> impl Iterator<Item = (&Uetr, &AppliedTransfer)> {
        self.transfers.iter()
    }

    /// Number of distinct UETRs remembered.
    pub fn applied_transfer_count(&self) -> usize {
        self.transfers.len()
    }

    /// Verifies every batch signature (transfer batches and payout report
    /// batches) of `entries` against the registry as it is now. Registrations
    /// in the same block are not yet visible, so a batch from a participant
    /// registered in the same block is judged by [`SignatureCheck::Verify`] only.
    pub fn check_signatures(&self, entries: &[Entry]) -> Vec<bool> {
        entries.iter().map(|entry| self.signature_valid(entry)).collect()
    }

    /// Whether the entry's signature, if it has one, verifies against the
    /// signer's registered key. (Governance approvals are counted when the
    /// entry is applied.)
    fn signature_valid(&self, entry: &Entry) -> bool {
        match entry {
            Entry::TransferBatch { batch } => self
                .participant(&batch.origin)
                .is_some_and(|origin| batch.verify_signature(self.chain_id(), &origin.origin_key)),
            Entry::PayoutReports { batch } => self
                .participant(&batch.reporter)
                .is_some_and(|reporter| batch.verify_signature(self.chain_id(), &reporter.origin_key)),
            _ => true,
        }
    }

    /// Applies a proposal: checks its structure, applies every entry in order,
    /// forgets what the replay window no longer needs, asserts conservation,
    /// and returns the block with results and roots. On `Err` the state is
    /// unchanged.
    pub fn apply(&mut self, proposal: BlockProposal, signatures: SignatureCheck) -> Result<Block, BlockError> {
        self.check_structure(&proposal, &signatures)?;
        self.transfers.begin_block();
        let entries_root = entries_root(&proposal.entries);
        let BlockProposal { height, prev_hash, timestamp_ms, entries } = proposal;
        let mut results = Vec::with_capacity(entries.len());
        let mut transfer_count = 0usize;
        let mut accepted_count = 0usize;
        for (i, entry) in entries.iter().enumerate() {
            let signature_valid = match &signatures {
                SignatureCheck::Prechecked(flags) => flags[i],
                SignatureCheck::Verify => self.signature_valid(entry),
            };
            let result = self.apply_entry(entry, height, timestamp_ms, signature_valid);
            // The header counts transfers only; accepted reports are in the results.
            if let Entry::TransferBatch { .. } = entry {
                transfer_count += entry.transfer_count();
                accepted_count += result.accepted_transfers();
            }
            results.push(result);
        }
        self.transfers_forgotten_total += self.transfers.end_block(timestamp_ms, self.params.replay.retention_ms());
        self.assert_conserved(height);
        debug_assert_eq!(
            self.transfers.len() as u64,
            self.transfers_accepted_total - self.transfers_forgotten_total,
            "the index holds every accepted transfer not forgotten"
        );
        // The state root covers the new height; the hash is filled in once the
        // header (which contains the root) is hashed.
        self.tip = Some((height, Digest32::ZERO));
        self.last_timestamp_ms = timestamp_ms;
        let header = BlockHeader {
            version: BLOCK_FORMAT_VERSION,
            chain_id: self.params.chain_id.clone(),
            height,
            prev_hash,
            timestamp_ms,
            window: self.window,
            entry_count: u32::try_from(entries.len()).expect("bounded by BLOCK_ENTRIES_MAX"),
            transfer_count: u32::try_from(transfer_count).expect("bounded by BLOCK_TRANSFERS_MAX"),
            accepted_count: u32::try_from(accepted_count).expect("bounded by BLOCK_TRANSFERS_MAX"),
            entries_root,
            results_root: results_root(&results),
            state_root: self.state_root(),
        };
        self.tip = Some((height, header.hash()));
        Ok(Block { header, entries, results })
    }

    fn check_structure(&self, proposal: &BlockProposal, signatures: &SignatureCheck) -> Result<(), BlockError> {
        if proposal.height != self.next_height() {
            return Err(BlockError::WrongHeight { expected: self.next_height(), got: proposal.height });
        }
        if proposal.prev_hash != self.tip_hash() {
            return Err(BlockError::WrongPrevHash { expected: self.tip_hash(), got: proposal.prev_hash });
        }
        if proposal.timestamp_ms < self.last_timestamp_ms {
            return Err(BlockError::TimestampRegressed {
                previous: self.last_timestamp_ms,
                got: proposal.timestamp_ms,
            });
        }
        if proposal.entries.len() > BLOCK_ENTRIES_MAX {
            return Err(BlockError::TooLarge { what: "entries", got: proposal.entries.len(), max: BLOCK_ENTRIES_MAX });
        }
        // A payout report costs about what a transfer does (one index lookup,
        // at most two position updates), so reports count against the same limits.
        let mut transfers = 0usize;
        for (index, entry) in proposal.entries.iter().enumerate() {
            check_encodable(index, entry)?;
            let (count, what) = match entry {
                Entry::PayoutReports { batch } => (batch.reports.len(), "batch reports"),
                _ => (entry.transfer_count(), "batch transfers"),
            };
            if count > BATCH_TRANSFERS_MAX {
                return Err(BlockError::TooLarge { what, got: count, max: BATCH_TRANSFERS_MAX });
            }
            transfers += count;
        }
        if transfers > BLOCK_TRANSFERS_MAX {
            return Err(BlockError::TooLarge {
                what: "block transfers and reports",
                got: transfers,
                max: BLOCK_TRANSFERS_MAX,
            });
        }
        if let SignatureCheck::Prechecked(flags) = signatures {
            if flags.len() != proposal.entries.len() {
                return Err(BlockError::SignatureCheckMismatch { expected: proposal.entries.len(), got: flags.len() });
            }
        }
        Ok(())
    }

    fn apply_entry(&mut self, entry: &Entry, height: Height, timestamp_ms: u64, signature_valid: bool) -> EntryResult {
        // Unsigned administrative entries exist only in the genesis block,
        // which every node derives from network.json.
        let genesis = height == Height::GENESIS;
        let outcome = match entry {
            Entry::RegisterParticipant { .. } | Entry::SetNetDebitCap { .. } | Entry::SetParticipantStatus { .. }
                if !genesis =>
            {
                Err(RejectReason::GovernanceRequired)
            }
            Entry::RegisterParticipant { participant } => self.register(participant),
            Entry::SetNetDebitCap { participant, currency, cap } => self.set_cap(participant, *currency, *cap),
            Entry::SetParticipantStatus { participant, status } => self.set_status(participant, *status),
            Entry::Governance { proposal, approvals } => self.apply_governance(proposal, approvals),
            Entry::TransferBatch { batch } => return self.apply_batch(batch, height, timestamp_ms, signature_valid),
            Entry::PayoutReports { batch } => return self.apply_reports(batch, signature_valid),
        };
        match outcome {
            Ok(()) => EntryResult::Applied,
            Err(reason) => EntryResult::Rejected { reason },
        }
    }

    /// Applies a governance action approved by at least the threshold of
    /// distinct governance keys, once per nonce. Every check comes before
    /// the first write.
    fn apply_governance(&mut self, proposal: &GovernanceProposal, approvals: &[Approval]) -> Result<(), RejectReason> {
        let governance = &self.params.governance;
        if governance.approvals_counted(&self.params.chain_id, proposal, approvals) < governance.threshold as usize {
            return Err(RejectReason::GovernanceApprovalsInsufficient);
        }
        if self.governance_nonces.contains(&proposal.nonce) {
            return Err(RejectReason::GovernanceNonceReused);
        }
        if self.governance_nonces.len() >= GOVERNANCE_NONCES_MAX {
            return Err(RejectReason::GovernanceNoncesExhausted);
        }
        match &proposal.action {
            GovernanceAction::RegisterParticipant { participant } => self.register(participant)?,
            GovernanceAction::SetNetDebitCap { participant, currency, cap } => {
                self.set_cap(participant, *currency, *cap)?;
            }
            GovernanceAction::SetParticipantStatus { participant, status } => self.set_status(participant, *status)?,
        }
        self.governance_nonces.insert(proposal.nonce);
        Ok(())
    }

    fn register(&mut self, participant: &Participant) -> Result<(), RejectReason> {
        participant.validate().map_err(|_| RejectReason::InvalidParticipantData)?;
        if self.slots.contains_key(&participant.id) {
            return Err(RejectReason::AlreadyRegistered);
        }
        if self.participants.len() >= PARTICIPANTS_MAX {
            return Err(RejectReason::TooManyParticipants);
        }
        if let Some(index) = participant.validator_index {
            // The validator set (its BLS key shares) is fixed by the key
            // ceremony: an index outside it names no validator.
            if index >= self.params.validator_count {
                return Err(RejectReason::InvalidParticipantData);
            }
            if self.participants.iter().any(|p| p.participant.validator_index == Some(index)) {
                return Err(RejectReason::ValidatorIndexTaken);
            }
        }
        self.slots.insert(participant.id.clone(), self.participants.len());
        self.participants.push(ParticipantState {
            participant: participant.clone(),
            positions: vec![Decimal::ZERO; participant.settlement_currencies.len()],
        });
        Ok(())
    }

    fn set_cap(&mut self, id: &ParticipantId, currency: Currency, cap: Decimal) -> Result<(), RejectReason> {
        let i = *self.slots.get(id).ok_or(RejectReason::UnknownParticipant)?;
        validate_cap(currency, cap, "cap").map_err(|_| RejectReason::InvalidParticipantData)?;
        let participant = &mut self.participants[i].participant;
        if !participant.settles_in(currency) {
            return Err(RejectReason::CapCurrencyNotSettled);
        }
        participant.net_debit_caps.insert(currency, cap);
        Ok(())
    }

    fn set_status(&mut self, id: &ParticipantId, status: ParticipantStatus) -> Result<(), RejectReason> {
        let i = *self.slots.get(id).ok_or(RejectReason::UnknownParticipant)?;
        self.participants[i].participant.status = status;
        Ok(())
    }

    fn apply_batch(
        &mut self,
        batch: &TransferBatch,
        height: Height,
        timestamp_ms: u64,
        signature_valid: bool,
    ) -> EntryResult {
        let Some(&origin) = self.slots.get(&batch.origin) else {
            return EntryResult::Rejected { reason: RejectReason::UnknownOrigin };
        };
        if !signature_valid {
            return EntryResult::Rejected { reason: RejectReason::BadSignature };
        }
        if self.participants[origin].participant.status != ParticipantStatus::Active {
            return EntryResult::Rejected { reason: RejectReason::OriginSuspended };
        }
        if batch.transfers.is_empty() {
            return EntryResult::Rejected { reason: RejectReason::EmptyBatch };
        }
        let outcomes = batch
            .transfers
            .iter()
            .map(|transfer| match self.apply_transfer(origin, transfer, height, timestamp_ms) {
                Ok(()) => TransferOutcome::Accepted,
                Err(reason) => TransferOutcome::Rejected(reason),
            })
            .collect();
        EntryResult::Batch { outcomes }
    }

    /// Checks one transfer against the state and applies it. Every check comes
    /// before the first write, so a rejected transfer changes nothing.
    fn apply_transfer(
        &mut self,
        origin: usize,
        transfer: &Transfer,
        height: Height,
        timestamp_ms: u64,
    ) -> Result<(), RejectReason> {
        if transfer.origin != self.participants[origin].participant.id {
            return Err(RejectReason::OriginMismatch);
        }
        if self.transfers.contains(&transfer.uetr) {
            return Err(RejectReason::DuplicateUetr);
        }
        let destination = *self.slots.get(&transfer.destination).ok_or(RejectReason::UnknownDestination)?;
        if destination == origin {
            return Err(RejectReason::SameOriginAndDestination);
        }
        let destination_state = &self.participants[destination];
        if destination_state.participant.status != ParticipantStatus::Active {
            return Err(RejectReason::DestinationSuspended);
        }
        let currency = transfer.amount.currency();
        let destination_slot =
            destination_state.currency_slot(currency).ok_or(RejectReason::DestinationCurrencyNotSettled)?;
        let origin_state = &self.participants[origin];
        let origin_slot = origin_state.currency_slot(currency).ok_or(RejectReason::OriginCurrencyNotSettled)?;
        let replay = self.params.replay;
        if transfer.created_at_ms > timestamp_ms.saturating_add(replay.future_skew_ms) {
            return Err(RejectReason::CreatedInFuture);
        }
        // The duplicate index forgets a UETR once a transfer carrying it
        // could no longer pass this check (see `ReplayWindow`).
        if transfer.created_at_ms < timestamp_ms.saturating_sub(replay.horizon_ms) {
            return Err(RejectReason::CreatedTooLongAgo);
        }
        let amount = transfer.amount.amount();
        // Positions are bounded by caps on the debit side and by the total of
        // all transfers on the credit side, far inside Decimal's 7.9e28 range.
        let origin_position =
            origin_state.positions[origin_slot].checked_sub(amount).expect("positions stay far inside Decimal's range");
        if origin_position < -origin_state.participant.net_debit_cap(currency) {
            return Err(RejectReason::NetDebitCapExceeded);
        }
        let record = AppliedTransfer {
            height,
            origin_slot: u32::try_from(origin).expect("slots are bounded by PARTICIPANTS_MAX"),
            destination_slot: u32::try_from(destination).expect("slots are bounded by PARTICIPANTS_MAX"),
            currency,
            amount_minor_units: transfer.amount.minor_units(),
            payout: PayoutState::Open,
        };
        self.transfers.insert(transfer.uetr, record, timestamp_ms);
        self.transfers_accepted_total += 1;
        self.participants[origin].positions[origin_slot] = origin_position;
        let credit = &mut self.participants[destination].positions[destination_slot];
        *credit = credit.checked_add(amount).expect("positions stay far inside Decimal's range");
        Ok(())
    }

    fn apply_reports(&mut self, batch: &PayoutReportBatch, signature_valid: bool) -> EntryResult {
        let Some(&reporter) = self.slots.get(&batch.reporter) else {
            return EntryResult::Rejected { reason: RejectReason::UnknownReporter };
        };
        if !signature_valid {
            return EntryResult::Rejected { reason: RejectReason::BadSignature };
        }
        if batch.reports.is_empty() {
            return EntryResult::Rejected { reason: RejectReason::EmptyBatch };
        }
        // The reporter's status is not checked: a suspended destination must
        // still be able to close out, or send back, payments it already received.
        let outcomes = batch
            .reports
            .iter()
            .map(|report| match self.apply_report(reporter, report) {
                Ok(()) => TransferOutcome::Accepted,
                Err(reason) => TransferOutcome::Rejected(reason),
            })
            .collect();
        EntryResult::Batch { outcomes }
    }

    /// Checks one payout report and applies it. Every check comes before the
    /// first write. A return cannot be refused for the origin's cap: it only
    /// undoes an obligation that was accepted.
    fn apply_report(&mut self, reporter: usize, report: &PayoutReport) -> Result<(), RejectReason> {
        let record = self.transfers.get(&report.uetr).ok_or(RejectReason::UnknownTransfer)?;
        if record.destination_slot as usize != reporter {
            return Err(RejectReason::NotDestination);
        }
        if record.payout != PayoutState::Open {
            return Err(RejectReason::AlreadyReported);
        }
        let record =
            self.transfers.close_payout(&report.uetr, report.outcome.state()).expect("the record was just looked up");
        self.payout_reports_total += 1;
        if let PayoutOutcome::Returned { .. } = report.outcome {
            self.reverse(&record);
        }
        Ok(())
    }

    /// Moves a transfer's amount back: the destination's position goes down
    /// and the origin's up, in the transfer's currency.
    fn reverse(&mut self, record: &AppliedTransfer) {
        let amount = minor_units_to_decimal(i128::from(record.amount_minor_units), record.currency)
            .expect("an accepted amount fits a Decimal");
        let mut shift = |slot: u32, delta: Decimal| {
            let state = &mut self.participants[slot as usize];
            let currency_slot = state
                .currency_slot(record.currency)
                .expect("both parties of an accepted transfer settle in its currency");
            let position = &mut state.positions[currency_slot];
            *position = position.checked_add(delta).expect("positions stay far inside Decimal's range");
        };
        shift(record.destination_slot, -amount);
        shift(record.origin_slot, amount);
    }

    /// Value is conserved: in every currency the positions sum to zero. A
    /// violation means the state machine is wrong, and carrying on would
    /// certify a wrong ledger, so it stops the process.
    fn assert_conserved(&self, height: Height) {
        for (currency, sum) in self.position_sums() {
            assert!(
                sum.is_zero(),
                "conservation violated at height {height}: {} positions sum to {sum}",
                currency.code()
            );
        }
    }

    /// Hash of everything that decides a future result: parameters, tip
    /// height, window, counters and last timestamp, governance nonces, the
    /// registry with caps, statuses and positions (participants by id,
    /// positions by settlement currency), and the duplicate index's root.
    pub fn state_root(&self) -> Digest32 {
        let mut w = Writer::with_capacity(256 * self.participants.len() + 512);
        self.encode_scalars(&mut w);
        let mut sorted: Vec<&ParticipantState> = self.participants.iter().collect();
        sorted.sort_by(|a, b| a.participant.id.cmp(&b.participant.id));
        encode_participants(&mut w, &sorted);
        w.digest(&self.transfers.root());
        hash_with_domain(STATE_ROOT_TAG, w.as_bytes())
    }

    /// Everything but the participants and the index, in one canonical order.
    fn encode_scalars(&self, w: &mut Writer) {
        self.params.encode(w);
        w.option(self.tip.as_ref(), |w, (height, _)| w.u64(height.0));
        w.u64(self.window.0);
        w.u64(self.transfers_accepted_total);
        w.u64(self.payout_reports_total);
        w.u64(self.transfers_forgotten_total);
        w.u64(self.last_timestamp_ms);
        w.len(self.governance_nonces.len());
        for nonce in &self.governance_nonces {
            w.u64(*nonce);
        }
    }

    /// Snapshot of everything but the duplicate index (which the store keeps
    /// by segment and Raft snapshots carry beside it). Unlike the state root,
    /// it lists participants in registration order, so that slots survive a
    /// restore.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(256 * self.participants.len() + 512);
        w.raw(STATE_SNAPSHOT_TAG);
        self.encode_scalars(&mut w);
        encode_participants(&mut w, &self.participants.iter().collect::<Vec<_>>());
        w.digest(&self.tip_hash());
        w.into_bytes()
    }

    /// Restores a snapshot with the duplicate index's segments, recomputing
    /// the index root. Records that name a slot not registered, or a
    /// currency one of their parties does not settle in, are refused; the
    /// caller compares [`LedgerState::state_root`] with the tip block's.
    pub fn decode_snapshot(bytes: &[u8], segments: Vec<RestoredSegment>) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "state snapshot");
        r.tag(STATE_SNAPSHOT_TAG)?;
        let params = LedgerParams::decode(&mut r)?;
        let height = r.option(|r| r.u64())?.map(Height);
        let window = WindowId(r.u64()?);
        let transfers_accepted_total = r.u64()?;
        let payout_reports_total = r.u64()?;
        let transfers_forgotten_total = r.u64()?;
        let last_timestamp_ms = r.u64()?;
        let count = r.len(GOVERNANCE_NONCES_MAX)?;
        let mut governance_nonces = BTreeSet::new();
        for _ in 0..count {
            let nonce = r.u64()?;
            if governance_nonces.last().is_some_and(|last| *last >= nonce) {
                return Err(r.error("governance nonces must be sorted and unique"));
            }
            governance_nonces.insert(nonce);
        }
        let count = r.len(PARTICIPANTS_MAX)?;
        let mut participants = Vec::with_capacity(count);
        let mut slots = HashMap::with_capacity(count);
        for i in 0..count {
            let participant = Participant::decode(&mut r)?;
            let mut positions = Vec::with_capacity(participant.settlement_currencies.len());
            for currency in &participant.settlement_currencies {
                positions.push(
                    minor_units_to_decimal(r.i128()?, *currency).ok_or_else(|| r.error("position out of range"))?,
                );
            }
            if slots.insert(participant.id.clone(), i).is_some() {
                return Err(r.error(format!("participant {} listed twice", participant.id)));
            }
            participants.push(ParticipantState { participant, positions });
        }
        let tip_hash = r.digest()?;
        r.finish()?;
        check_segments(&segments, &participants)?;
        let transfers = TransferIndex::restore(segments, height, last_timestamp_ms, params.replay.retention_ms())?;
        if transfers.len() as u64 != transfers_accepted_total.saturating_sub(transfers_forgotten_total) {
            return Err(DecodeError::new(
                "state snapshot",
                format!(
                    "the index holds {} transfers, the counters say {} accepted and {} forgotten",
                    transfers.len(),
                    transfers_accepted_total,
                    transfers_forgotten_total
                ),
            ));
        }
        Ok(Self {
            params,
            tip: height.map(|h| (h, tip_hash)),
            last_timestamp_ms,
            window,
            participants,
            slots,
            transfers,
            transfers_accepted_total,
            payout_reports_total,
            transfers_forgotten_total,
            governance_nonces,
        })
    }
}

/// Participants with their positions, in the given order.
fn encode_participants(w: &mut Writer, participants: &[&ParticipantState]) {
    w.len(participants.len());
    for state in participants {
        state.participant.encode(w);
        for (currency, position) in state.participant.settlement_currencies.iter().zip(&state.positions) {
            w.i128(decimal_to_minor_units(*position, *currency).expect("positions are sums of exact amounts"));
        }
    }
}

/// Checks that every restored record could have been accepted by the
/// restored registry, so that applying a report to it cannot fail an
/// invariant: both slots registered and settling in its currency, distinct
/// parties and a valid amount.
fn check_segments(segments: &[RestoredSegment], participants: &[ParticipantState]) -> Result<(), DecodeError> {
    let settles = |slot: u32, currency| {
        participants.get(slot as usize).is_some_and(|state| state.currency_slot(currency).is_some())
    };
    for (uetr, record) in segments.iter().flat_map(|segment| &segment.records) {
        let bad = |reason: &str| Err(DecodeError::new("duplicate index", format!("uetr {uetr}: {reason}")));
        if !settles(record.origin_slot, record.currency) || !settles(record.destination_slot, record.currency) {
            return bad("a party is not registered or does not settle in the currency");
        }
        if record.origin_slot == record.destination_slot {
            return bad("origin and destination are the same participant");
        }
        if Money::from_minor_units(record.amount_minor_units, record.currency, "amount").is_err() {
            return bad("the amount is not a valid amount");
        }
    }
    Ok(())
}
