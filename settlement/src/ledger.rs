//! The ledger state machine. Pure and deterministic: no IO, no clock, no
//! randomness, and no hash-map iteration order reaches a result or a hash.
//! Every replica that applies the same proposals to the same state computes
//! the same blocks, byte for byte.

use std::collections::HashMap;

use iso_currency::Currency;
use rust_decimal::Decimal;

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
use crate::money::{decimal_to_minor_units, minor_units_to_decimal};
use crate::participant::{validate_cap, Participant, ParticipantStatus};
use crate::transfer::{Transfer, TransferBatch};

/// Domain tag of the state root.
pub const STATE_ROOT_TAG: &[u8] = b"REMIT_STATE_V1";
/// Domain tag of a state snapshot.
pub const STATE_SNAPSHOT_TAG: &[u8] = b"REMIT_STATE_SNAPSHOT_V1";

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

/// How batch signatures are checked while applying.
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

/// The ledger's state after some height: registry, positions, applied UETRs.
#[derive(Clone, Debug)]
pub struct LedgerState {
    chain_id: ChainId,
    /// Height and hash of the last applied block.
    tip: Option<(Height, Digest32)>,
    last_timestamp_ms: u64,
    window: WindowId,
    participants: Vec<ParticipantState>,
    index: HashMap<ParticipantId, usize>,
    applied_transfers: HashMap<Uetr, Height>,
    transfers_accepted_total: u64,
}

impl PartialEq for LedgerState {
    fn eq(&self, other: &Self) -> bool {
        self.state_root() == other.state_root()
            && self.tip == other.tip
            && self.applied_transfers == other.applied_transfers
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

    /// The height at which `uetr` was applied, if it was.
    pub fn transfer_height(&self, uetr: &Uetr) -> Option<Height> {
        self.applied_transfers.get(uetr).copied()
    }

    /// Every applied UETR with its height, in no particular order.
    pub fn applied_transfers(&self) -> impl Iterator<Item = (&Uetr, &Height)> {
        self.applied_transfers.iter()
    }

    /// Number of distinct UETRs applied.
    pub fn applied_transfer_count(&self) -> usize {
        self.applied_transfers.len()
    }

    /// Verifies every batch signature of `entries` against the registry as it
    /// is now. Registrations in the same block are not yet visible, so a batch
    /// from a participant registered in the same block is judged by
    /// [`SignatureCheck::Verify`] only.
    pub fn check_signatures(&self, entries: &[Entry]) -> Vec<bool> {
        entries
            .iter()
            .map(|entry| match entry {
                Entry::TransferBatch { batch } => self.batch_signature_valid(batch),
                _ => true,
            })
            .collect()
    }

    fn batch_signature_valid(&self, batch: &TransferBatch) -> bool {
        self.participant(&batch.origin).is_some_and(|origin| batch.verify_signature(&self.chain_id, &origin.origin_key))
    }

    /// Applies a proposal: checks its structure, applies every entry in order,
    /// asserts conservation, and returns the block with results and roots.
    /// On `Err` the state is unchanged.
    pub fn apply(&mut self, proposal: BlockProposal, signatures: SignatureCheck) -> Result<Block, BlockError> {
        self.check_structure(&proposal, &signatures)?;
        let entries_root = entries_root(&proposal.entries);
        let BlockProposal { height, prev_hash, timestamp_ms, entries } = proposal;
        let mut results = Vec::with_capacity(entries.len());
        let mut transfer_count = 0usize;
        let mut accepted_count = 0usize;
        for (i, entry) in entries.iter().enumerate() {
            let signature_valid = match &signatures {
                SignatureCheck::Prechecked(flags) => flags[i],
                SignatureCheck::Verify => match entry {
                    Entry::TransferBatch { batch } => self.batch_signature_valid(batch),
                    _ => true,
                },
            };
            let result = self.apply_entry(entry, height, timestamp_ms, signature_valid);
            transfer_count += entry.transfer_count();
            accepted_count += result.accepted_transfers();
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
        let mut transfers = 0usize;
        for (index, entry) in proposal.entries.iter().enumerate() {
            check_encodable(index, entry)?;
            let count = entry.transfer_count();
            if count > BATCH_TRANSFERS_MAX {
                return Err(BlockError::TooLarge { what: "batch transfers", got: count, max: BATCH_TRANSFERS_MAX });
            }
            transfers += count;
        }
        if transfers > BLOCK_TRANSFERS_MAX {
            return Err(BlockError::TooLarge { what: "block transfers", got: transfers, max: BLOCK_TRANSFERS_MAX });
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
        self.applied_transfers.insert(transfer.uetr, height);
        self.transfers_accepted_total += 1;
        self.participants[origin].positions[origin_slot] = origin_position;
        let credit = &mut self.participants[destination].positions[destination_slot];
        *credit = credit.checked_add(amount).expect("positions stay far inside Decimal's range");
        Ok(())
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
        w.str(self.chain_id.as_str());
        w.option(self.tip.as_ref(), |w, (height, _)| w.u64(height.0));
        w.u64(self.window.0);
        w.u64(self.transfers_accepted_total);
        let mut sorted: Vec<&ParticipantState> = self.participants.iter().collect();
        sorted.sort_by(|a, b| a.participant.id.cmp(&b.participant.id));
        w.len(sorted.len());
        for state in sorted {
            state.participant.encode(w);
            for (currency, position) in state.participant.settlement_currencies.iter().zip(&state.positions) {
                w.i128(decimal_to_minor_units(*position, *currency).expect("positions are sums of exact amounts"));
            }
        }
    }

    /// Snapshot of everything but the applied-UETR index (which the store
    /// keeps per block and rebuilds on open).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(256 * self.participants.len() + 128);
        w.raw(STATE_SNAPSHOT_TAG);
        self.encode_body(&mut w);
        w.digest(&self.tip_hash());
        w.u64(self.last_timestamp_ms);
        w.into_bytes()
    }

    /// Restores a snapshot; `applied` lists every applied UETR with its height.
    pub fn decode_snapshot(bytes: &[u8], applied: HashMap<Uetr, Height>) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "state snapshot");
        r.tag(STATE_SNAPSHOT_TAG)?;
        let chain_id = ChainId::new(r.str(CHAIN_ID_LEN_MAX)?).map_err(|e| r.error(e))?;
        let height = r.option(|r| r.u64())?.map(Height);
        let window = WindowId(r.u64()?);
        let transfers_accepted_total = r.u64()?;
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
        Ok(Self {
            chain_id,
            tip: height.map(|h| (h, tip_hash)),
            last_timestamp_ms,
            window,
            participants,
            index,
            applied_transfers: applied,
            transfers_accepted_total,
        })
    }
}
