//! The ledger state machine. Pure and deterministic: no IO, no clock, no
//! randomness, and no hash-map iteration order reaches a result or a hash.
//! Every replica that applies the same proposals to the same state computes
//! the same blocks, byte for byte.

use std::collections::HashMap;

use iso_currency::Currency;
use rust_decimal::Decimal;

use crate::applied::{AppliedTransfer, AppliedTransferView};
use crate::block::{
    entries_root, results_root, Block, BlockHeader, BlockProposal, Entry, EntryResult, RejectReason, TransferOutcome,
    BLOCK_FORMAT_VERSION,
};
use crate::codec::{DecodeError, Reader, Writer};
use crate::constants::{
    BATCH_TRANSFERS_MAX, BLOCK_ENTRIES_MAX, BLOCK_TRANSFERS_MAX, CHAIN_ID_LEN_MAX, CREATED_AT_SKEW_MS_MAX,
    PARTICIPANTS_MAX,
};
use crate::hash::{hash_with_domain, Digest32};
use crate::ids::{ChainId, Height, ParticipantId, Uetr, WindowId};
use crate::money::{decimal_to_minor_units, minor_units_to_decimal, Money};
use crate::participant::{validate_cap, Participant, ParticipantStatus};
use crate::payout::{PayoutOutcome, PayoutReport, PayoutReportBatch, PayoutState};
use crate::transfer::{Transfer, TransferBatch};

/// Domain tag of the state root.
pub const STATE_ROOT_TAG: &[u8] = b"REMIT_STATE_V1";
/// Domain tag of a state snapshot. V2 keeps participants in registration
/// order (the slots the applied-transfer index refers to) and adds the count
/// of accepted payout reports.
pub const STATE_SNAPSHOT_TAG: &[u8] = b"REMIT_STATE_SNAPSHOT_V2";

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
        Entry::RegisterParticipant { participant } => {
            participant.validate().map_err(|e| invalid(format!("participant.{e}")))
        }
        Entry::SetNetDebitCap { currency, .. } if currency.exponent().is_none() => {
            Err(invalid(format!("currency: {} has no minor unit", currency.code())))
        }
        _ => Ok(()),
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

/// The ledger's state after some height: registry, positions, and the index
/// of accepted transfers with their payout states.
#[derive(Clone, Debug)]
pub struct LedgerState {
    chain_id: ChainId,
    /// Height and hash of the last applied block.
    tip: Option<(Height, Digest32)>,
    last_timestamp_ms: u64,
    window: WindowId,
    /// In registration order: a participant's position here is its slot.
    participants: Vec<ParticipantState>,
    index: HashMap<ParticipantId, usize>,
    applied_transfers: HashMap<Uetr, AppliedTransfer>,
    transfers_accepted_total: u64,
    /// Payout reports accepted since genesis (completions and returns).
    payout_reports_total: u64,
}

impl PartialEq for LedgerState {
    fn eq(&self, other: &Self) -> bool {
        self.state_root() == other.state_root()
            && self.tip == other.tip
            && self.applied_transfers == other.applied_transfers
            && self.payout_reports_total == other.payout_reports_total
    }
}

impl LedgerState {
    /// The empty state before genesis.
    pub fn new(chain_id: ChainId) -> Self {
        Self {
            chain_id,
            tip: None,
            last_timestamp_ms: 0,
            window: WindowId(0),
            participants: Vec::new(),
            index: HashMap::new(),
            applied_transfers: HashMap::new(),
            transfers_accepted_total: 0,
            payout_reports_total: 0,
        }
    }

    /// The chain this state belongs to.
    pub fn chain_id(&self) -> &ChainId {
        &self.chain_id
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

    /// A registered participant.
    pub fn participant(&self, id: &ParticipantId) -> Option<&Participant> {
        self.index.get(id).map(|i| &self.participants[*i].participant)
    }

    /// All participants, sorted by id.
    pub fn participants(&self) -> Vec<&Participant> {
        let mut all: Vec<&Participant> = self.participants.iter().map(|p| &p.participant).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Net position of `id` in `currency` in the open window (zero when none).
    pub fn position(&self, id: &ParticipantId, currency: Currency) -> Decimal {
        self.index
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

    /// The height at which `uetr` was applied, if it was.
    pub fn transfer_height(&self, uetr: &Uetr) -> Option<Height> {
        self.applied_transfers.get(uetr).map(|record| record.height)
    }

    /// The accepted transfer `uetr`, with its parties, amount and payout state.
    pub fn applied_transfer(&self, uetr: &Uetr) -> Option<AppliedTransferView> {
        let record = self.applied_transfers.get(uetr)?;
        Some(AppliedTransferView {
            height: record.height,
            origin: self.participants[record.origin_slot as usize].participant.id.clone(),
            destination: self.participants[record.destination_slot as usize].participant.id.clone(),
            amount: Money::from_minor_units(record.amount_minor_units, record.currency, "amount")
                .expect("an accepted transfer's amount was a valid Money"),
            payout: record.payout,
        })
    }

    /// Where the payout of the accepted transfer `uetr` stands.
    pub fn payout_state(&self, uetr: &Uetr) -> Option<PayoutState> {
        self.applied_transfers.get(uetr).map(|record| record.payout)
    }

    /// Every accepted transfer's record, in no particular order.
    pub fn applied_transfers(&self) -> impl ExactSizeIterator<Item = (&Uetr, &AppliedTransfer)> {
        self.applied_transfers.iter()
    }

    /// Number of distinct UETRs applied.
    pub fn applied_transfer_count(&self) -> usize {
        self.applied_transfers.len()
    }

    /// The record of `transfer` if it was accepted at `height` exactly as
    /// given (same parties, currency and amount); for the store, which writes
    /// a block's records from the state and checks they agree with the block.
    pub(crate) fn applied_record_of(&self, transfer: &Transfer, height: Height) -> Option<&AppliedTransfer> {
        let record = self.applied_transfers.get(&transfer.uetr)?;
        let matches = record.height == height
            && self.participants[record.origin_slot as usize].participant.id == transfer.origin
            && self.participants[record.destination_slot as usize].participant.id == transfer.destination
            && record.currency == transfer.amount.currency()
            && record.amount_minor_units == transfer.amount.minor_units();
        matches.then_some(record)
    }

    /// Verifies every batch signature (transfer batches and payout report
    /// batches) of `entries` against the registry as it is now. Registrations
    /// in the same block are not yet visible, so a batch from a participant
    /// registered in the same block is judged by [`SignatureCheck::Verify`] only.
    pub fn check_signatures(&self, entries: &[Entry]) -> Vec<bool> {
        entries.iter().map(|entry| self.signature_valid(entry)).collect()
    }

    /// Whether the entry's signature, if it has one, verifies against the
    /// signer's registered key.
    fn signature_valid(&self, entry: &Entry) -> bool {
        match entry {
            Entry::TransferBatch { batch } => self
                .participant(&batch.origin)
                .is_some_and(|origin| batch.verify_signature(&self.chain_id, &origin.origin_key)),
            Entry::PayoutReports { batch } => self
                .participant(&batch.reporter)
                .is_some_and(|reporter| batch.verify_signature(&self.chain_id, &reporter.origin_key)),
            _ => true,
        }
    }

    /// Applies a proposal: checks its structure, applies every entry in order,
    /// asserts conservation, and returns the block with results and roots.
    /// On `Err` the state is unchanged.
    pub fn apply(&mut self, proposal: BlockProposal, signatures: SignatureCheck) -> Result<Block, BlockError> {
        self.check_structure(&proposal, &signatures)?;
        // One allocation for the block's index growth, instead of rehashing
        // the growing index (32-byte records) while transfers are inserted.
        self.applied_transfers.reserve(proposal.entries.iter().map(Entry::transfer_count).sum());
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
        self.assert_conserved(height);
        // The state root covers the new height; the hash is filled in once the
        // header (which contains the root) is hashed.
        self.tip = Some((height, Digest32::ZERO));
        self.last_timestamp_ms = timestamp_ms;
        let header = BlockHeader {
            version: BLOCK_FORMAT_VERSION,
            chain_id: self.chain_id.clone(),
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
        let outcome = match entry {
            Entry::RegisterParticipant { participant } => self.register(participant),
            Entry::SetNetDebitCap { participant, currency, cap } => self.set_cap(participant, *currency, *cap),
            Entry::SetParticipantStatus { participant, status } => self.set_status(participant, *status),
            Entry::TransferBatch { batch } => return self.apply_batch(batch, height, timestamp_ms, signature_valid),
            Entry::PayoutReports { batch } => return self.apply_reports(batch, signature_valid),
        };
        match outcome {
            Ok(()) => EntryResult::Applied,
            Err(reason) => EntryResult::Rejected { reason },
        }
    }

    fn register(&mut self, participant: &Participant) -> Result<(), RejectReason> {
        participant.validate().map_err(|_| RejectReason::InvalidParticipantData)?;
        if self.index.contains_key(&participant.id) {
            return Err(RejectReason::AlreadyRegistered);
        }
        if self.participants.len() >= PARTICIPANTS_MAX {
            return Err(RejectReason::TooManyParticipants);
        }
        if let Some(index) = participant.validator_index {
            if self.participants.iter().any(|p| p.participant.validator_index == Some(index)) {
                return Err(RejectReason::ValidatorIndexTaken);
            }
        }
        self.index.insert(participant.id.clone(), self.participants.len());
        self.participants.push(ParticipantState {
            participant: participant.clone(),
            positions: vec![Decimal::ZERO; participant.settlement_currencies.len()],
        });
        Ok(())
    }

    fn set_cap(&mut self, id: &ParticipantId, currency: Currency, cap: Decimal) -> Result<(), RejectReason> {
        let i = *self.index.get(id).ok_or(RejectReason::UnknownParticipant)?;
        validate_cap(currency, cap, "cap").map_err(|_| RejectReason::InvalidParticipantData)?;
        let participant = &mut self.participants[i].participant;
        if !participant.settles_in(currency) {
            return Err(RejectReason::CapCurrencyNotSettled);
        }
        participant.net_debit_caps.insert(currency, cap);
        Ok(())
    }

    fn set_status(&mut self, id: &ParticipantId, status: ParticipantStatus) -> Result<(), RejectReason> {
        let i = *self.index.get(id).ok_or(RejectReason::UnknownParticipant)?;
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
        let Some(&origin) = self.index.get(&batch.origin) else {
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
        let created_at_ms_max = timestamp_ms.saturating_add(CREATED_AT_SKEW_MS_MAX);
        let outcomes = batch
            .transfers
            .iter()
            .map(|transfer| match self.apply_transfer(origin, transfer, height, created_at_ms_max) {
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
        created_at_ms_max: u64,
    ) -> Result<(), RejectReason> {
        if transfer.origin != self.participants[origin].participant.id {
            return Err(RejectReason::OriginMismatch);
        }
        if self.applied_transfers.contains_key(&transfer.uetr) {
            return Err(RejectReason::DuplicateUetr);
        }
        let destination = *self.index.get(&transfer.destination).ok_or(RejectReason::UnknownDestination)?;
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
        if transfer.created_at_ms > created_at_ms_max {
            return Err(RejectReason::CreatedInFuture);
        }
        let amount = transfer.amount.amount();
        // Positions are bounded by caps on the debit side and by the total of
        // all transfers on the credit side, far inside Decimal's 7.9e28 range.
        let origin_position =
            origin_state.positions[origin_slot].checked_sub(amount).expect("positions stay far inside Decimal's range");
        if origin_position < -origin_state.participant.net_debit_cap(currency) {
            return Err(RejectReason::NetDebitCapExceeded);
        }
        self.applied_transfers.insert(
            transfer.uetr,
            AppliedTransfer {
                height,
                origin_slot: u32::try_from(origin).expect("slots are bounded by PARTICIPANTS_MAX"),
                destination_slot: u32::try_from(destination).expect("slots are bounded by PARTICIPANTS_MAX"),
                currency,
                amount_minor_units: transfer.amount.minor_units(),
                payout: PayoutState::Open,
            },
        );
        self.transfers_accepted_total += 1;
        self.participants[origin].positions[origin_slot] = origin_position;
        let credit = &mut self.participants[destination].positions[destination_slot];
        *credit = credit.checked_add(amount).expect("positions stay far inside Decimal's range");
        Ok(())
    }

    fn apply_reports(&mut self, batch: &PayoutReportBatch, signature_valid: bool) -> EntryResult {
        let Some(&reporter) = self.index.get(&batch.reporter) else {
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
        let record = self.applied_transfers.get_mut(&report.uetr).ok_or(RejectReason::UnknownTransfer)?;
        if record.destination_slot as usize != reporter {
            return Err(RejectReason::NotDestination);
        }
        if record.payout != PayoutState::Open {
            return Err(RejectReason::AlreadyReported);
        }
        record.payout = report.outcome.state();
        let record = *record;
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

    /// Hash of the registry and positions, in canonical order (participants by
    /// id, positions by settlement currency), with the height, window and count
    /// of accepted transfers.
    pub fn state_root(&self) -> Digest32 {
        let mut w = Writer::with_capacity(256 * self.participants.len() + 64);
        self.encode_body(&mut w);
        hash_with_domain(STATE_ROOT_TAG, w.as_bytes())
    }

    fn encode_body(&self, w: &mut Writer) {
        self.encode_counters(w);
        let mut sorted: Vec<&ParticipantState> = self.participants.iter().collect();
        sorted.sort_by(|a, b| a.participant.id.cmp(&b.participant.id));
        encode_participants(w, &sorted);
    }

    fn encode_counters(&self, w: &mut Writer) {
        w.str(self.chain_id.as_str());
        w.option(self.tip.as_ref(), |w, (height, _)| w.u64(height.0));
        w.u64(self.window.0);
        w.u64(self.transfers_accepted_total);
    }

    /// Snapshot of everything but the applied-transfer index (which the store
    /// keeps per block and rebuilds on open). Unlike the state root, it lists
    /// participants in registration order, so that slots survive a restore.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(256 * self.participants.len() + 128);
        w.raw(STATE_SNAPSHOT_TAG);
        self.encode_counters(&mut w);
        w.u64(self.payout_reports_total);
        encode_participants(&mut w, &self.participants.iter().collect::<Vec<_>>());
        w.digest(&self.tip_hash());
        w.u64(self.last_timestamp_ms);
        w.into_bytes()
    }

    /// Restores a snapshot; `applied` holds every accepted transfer's record
    /// with its payout state. Records that name a slot not registered, or a
    /// currency one of their parties does not settle in, are refused.
    pub fn decode_snapshot(bytes: &[u8], applied: HashMap<Uetr, AppliedTransfer>) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "state snapshot");
        r.tag(STATE_SNAPSHOT_TAG)?;
        let chain_id = ChainId::new(r.str(CHAIN_ID_LEN_MAX)?).map_err(|e| r.error(e))?;
        let height = r.option(|r| r.u64())?.map(Height);
        let window = WindowId(r.u64()?);
        let transfers_accepted_total = r.u64()?;
        let payout_reports_total = r.u64()?;
        let count = r.len(PARTICIPANTS_MAX)?;
        let mut participants = Vec::with_capacity(count);
        let mut index = HashMap::with_capacity(count);
        for i in 0..count {
            let participant = Participant::decode(&mut r)?;
            let mut positions = Vec::with_capacity(participant.settlement_currencies.len());
            for currency in &participant.settlement_currencies {
                positions.push(
                    minor_units_to_decimal(r.i128()?, *currency).ok_or_else(|| r.error("position out of range"))?,
                );
            }
            index.insert(participant.id.clone(), i);
            participants.push(ParticipantState { participant, positions });
        }
        let tip_hash = r.digest()?;
        let last_timestamp_ms = r.u64()?;
        r.finish()?;
        check_applied(&applied, &participants, height)?;
        Ok(Self {
            chain_id,
            tip: height.map(|h| (h, tip_hash)),
            last_timestamp_ms,
            window,
            participants,
            index,
            applied_transfers: applied,
            transfers_accepted_total,
            payout_reports_total,
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
/// invariant: both slots registered and settling in its currency, a valid
/// amount, and a height not above the tip.
fn check_applied(
    applied: &HashMap<Uetr, AppliedTransfer>,
    participants: &[ParticipantState],
    tip: Option<Height>,
) -> Result<(), DecodeError> {
    let settles = |slot: u32, currency| {
        participants.get(slot as usize).is_some_and(|state| state.currency_slot(currency).is_some())
    };
    for (uetr, record) in applied {
        let bad = |reason: &str| Err(DecodeError::new("applied-transfer index", format!("uetr {uetr}: {reason}")));
        if !settles(record.origin_slot, record.currency) || !settles(record.destination_slot, record.currency) {
            return bad("a party is not registered or does not settle in the currency");
        }
        if record.origin_slot == record.destination_slot {
            return bad("origin and destination are the same participant");
        }
        if Money::from_minor_units(record.amount_minor_units, record.currency, "amount").is_err() {
            return bad("the amount is not a valid amount");
        }
        if tip.is_none_or(|tip| record.height > tip) {
            return bad("applied above the tip");
        }
    }
    Ok(())
}
