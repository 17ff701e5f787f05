//! The block scanner: what one certified block means for this gateway, as a
//! pure function of the block, the engine's state and the time. It reads
//! nothing else and writes nothing: the engine journals the events it
//! returns and only then acts on them (queues payouts and fetches).

use remit_settlement::block::{Block, Entry, EntryResult, TransferOutcome};
use remit_settlement::ids::{ParticipantId, Uetr};

use super::journal::{IncomingTransfer, JournalEvent};
use super::record::{LedgerPosition, Remittance, Status, StatusChange};
use super::state::{accepted_event, verify_message, State};

/// What a certified block changes for this gateway.
#[derive(Debug, Default)]
pub(super) struct BlockScan {
    /// Journal events, to be appended (with the cursor) before anything else.
    pub events: Vec<JournalEvent>,
    /// Incoming transfers whose payment message is missing or bad: fetch them.
    pub waiting: Vec<(Uetr, IncomingTransfer)>,
    /// The destination records the `accepted` events among `events` stand for.
    pub accepted: Vec<Remittance>,
    /// Incoming transfers ready to pay once `events` are durable.
    pub payable: Vec<Uetr>,
}

impl BlockScan {
    /// Appends the scan of a later block.
    pub(super) fn extend(&mut self, later: BlockScan) {
        self.events.extend(later.events);
        self.waiting.extend(later.waiting);
        self.accepted.extend(later.accepted);
        self.payable.extend(later.payable);
    }
}

/// Scans one certified block as participant `me` at time `now`: origin
/// transfers that became final (and payout_pending when the destination
/// already holds the message), incoming transfers matched with a checked
/// message from the inbox or left waiting for one, and payout reports
/// that concern this gateway.
pub(super) fn scan_block(block: &Block, me: &ParticipantId, state: &State, now: u64) -> BlockScan {
    let position = LedgerPosition { height: block.height(), block_hash: block.hash() };
    let mut events = Vec::new();
    let mut waiting = Vec::new();
    let mut accepted_incoming = Vec::new();
    // Grouped by kind so that the journal stores one event per kind.
    let (mut finals, mut pending) = (Vec::new(), Vec::new());
    for (entry, result) in block.entries.iter().zip(&block.results) {
        let EntryResult::Batch { outcomes } = result else { continue };
        match entry {
            Entry::TransferBatch { batch } => {
                for (transfer, outcome) in batch.transfers.iter().zip(outcomes) {
                    if *outcome != TransferOutcome::Accepted {
                        continue;
                    }
                    if &transfer.origin == me {
                        if let Some(record) = state.remittances.get(&transfer.uetr) {
                            finals.push(transfer.uetr);
                            if record.message_delivered {
                                pending.push(transfer.uetr);
                            }
                        }
                    } else if &transfer.destination == me && !state.remittances.contains_key(&transfer.uetr) {
                        let incoming = IncomingTransfer {
                            uetr: transfer.uetr,
                            origin: transfer.origin.clone(),
                            amount: transfer.amount,
                            commitment: transfer.payload_commitment,
                            ledger: position,
                        };
                        match state.inbox.get(&transfer.uetr).and_then(|m| verify_message(me, &incoming, m, now)) {
                            Some(record) => accepted_incoming.push(record),
                            None => {
                                events.push(JournalEvent::Incoming { transfer: incoming.clone() });
                                waiting.push((transfer.uetr, incoming));
                            }
                        }
                    }
                }
            }
            other => {
                let role_of = |uetr: &Uetr| state.remittances.get(uetr).map(|r| r.role);
                super::reports::scan_reports(other, outcomes, me, &role_of, now, position, &mut events);
            }
        }
    }
    if !finals.is_empty() {
        let change = StatusChange::new(Status::Final, now, None, "");
        events.push(JournalEvent::Statuses { uetrs: finals, change, ledger: Some(position) });
    }
    if !pending.is_empty() {
        let change = StatusChange::new(Status::PayoutPending, now, None, "");
        events.push(JournalEvent::Statuses { uetrs: pending, change, ledger: None });
    }
    let mut payable = Vec::with_capacity(accepted_incoming.len());
    for record in &accepted_incoming {
        payable.push(record.uetr);
        events.push(accepted_event(record));
    }
    BlockScan { events, waiting, accepted: accepted_incoming, payable }
}
