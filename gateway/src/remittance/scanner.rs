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
    let (mut committed, mut finals, mut pending) = (Vec::new(), Vec::new(), Vec::new());
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
                            // Certified before the submit reply came back:
                            // committed too, so a watcher hears every step.
                            if matches!(record.status, Status::Received | Status::Submitted) {
                                committed.push(transfer.uetr);
                            }
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
    if !committed.is_empty() {
        let change = StatusChange::new(Status::Committed, now, None, "");
        events.push(JournalEvent::Statuses { uetrs: committed, change, ledger: Some(position) });
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

#[cfg(test)]
mod tests {
    use remit_settlement::chain::Chain;
    use remit_settlement::network::{generate_network, write_network, Keyring, NetworkShape};
    use remit_settlement::store::SledLedgerStore;
    use remit_settlement::SignatureCheck;
    use remit_simulations::traffic::{TrafficConfig, TrafficGenerator};

    use super::*;
    use crate::remittance::testkit::origin_record;

    const GENESIS_MS: u64 = 1_800_000_000_000;

    /// One certified block of generated traffic above genesis.
    fn traffic_block(dir: &std::path::Path) -> Block {
        let generated = generate_network(NetworkShape::validators(4), GENESIS_MS).expect("network");
        write_network(&generated, &dir.join("keys")).expect("keys written");
        let keyring = Keyring::load(&dir.join("keys")).expect("keyring");
        let store = SledLedgerStore::open(&dir.join("ledger")).expect("store");
        let mut chain = Chain::open(store, Some(&keyring.network)).expect("chain");
        let certify = |block: &Block| keyring.certify(&block.header).ok();
        chain.append(keyring.network.genesis_proposal(), SignatureCheck::Verify, certify).expect("genesis");
        let mut traffic = TrafficGenerator::new(
            &keyring.network,
            &keyring.identities,
            TrafficConfig { seed: 11, ..Default::default() },
        );
        let at_ms = GENESIS_MS + 1_000;
        let proposal = chain.next_proposal(at_ms, traffic.entries(64, at_ms));
        chain.append(proposal, SignatureCheck::Verify, certify).expect("appended").0
    }

    /// A transfer certified before its submit reply came back still shows
    /// `committed` before `final`; one already committed is not moved twice.
    #[test]
    fn a_certified_origin_transfer_is_committed_then_final() {
        let dir = tempfile::tempdir().expect("temp dir");
        let block = traffic_block(dir.path());
        let accepted: Vec<(Uetr, ParticipantId)> = block
            .entries
            .iter()
            .zip(&block.results)
            .filter_map(|(entry, result)| match (entry, result) {
                (Entry::TransferBatch { batch }, EntryResult::Batch { outcomes }) => Some(
                    batch
                        .transfers
                        .iter()
                        .zip(outcomes)
                        .filter(|(_, o)| **o == TransferOutcome::Accepted)
                        .map(|(t, _)| (t.uetr, t.origin.clone()))
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect();
        let me = accepted.first().expect("traffic was accepted").1.clone();
        let mine: Vec<Uetr> = accepted.iter().filter(|(_, o)| *o == me).map(|(u, _)| *u).collect();
        assert!(mine.len() >= 3, "need three transfers of one origin, got {}", mine.len());
        let mut state = State::default();
        for (uetr, status) in mine.iter().zip([Status::Received, Status::Submitted, Status::Committed]) {
            let mut record = origin_record(*uetr);
            if status != Status::Received {
                record.advance(StatusChange::new(Status::Submitted, 1, None, ""));
            }
            if status == Status::Committed {
                record.advance(StatusChange::new(Status::Committed, 2, None, ""));
            }
            state.remittances.insert(*uetr, Box::new(record));
        }
        let scan = scan_block(&block, &me, &state, 5_000);
        let mut changed = Vec::new();
        for event in scan.events {
            state.apply_into(event, &mut changed);
        }
        let statuses = |uetr: &Uetr| state.remittances[uetr].history.iter().map(|c| c.status).collect::<Vec<_>>();
        use Status::*;
        assert_eq!(statuses(&mine[0]), [Received, Committed, Final]);
        assert_eq!(statuses(&mine[1]), [Received, Submitted, Committed, Final]);
        assert_eq!(statuses(&mine[2]), [Received, Submitted, Committed, Final]);
        let position = LedgerPosition { height: block.height(), block_hash: block.hash() };
        assert!(mine[..3].iter().all(|u| state.remittances[u].ledger == Some(position)));
    }
}
