//! The engine's event-sourced state: every journal event has a pure
//! [`State::apply`], used both live (after the event is durable) and to
//! replay the journal on start. No IO, no clock, no tasks.

use std::collections::{BTreeSet, HashMap};

use remit_settlement::hash::Digest32;
use remit_settlement::ids::{ParticipantId, Uetr};
use remit_settlement::UetrMap;
use tracing::warn;

use super::journal::{InboxMessage, IncomingTransfer, JournalEvent};
use super::record::{commitment, LedgerPosition, PaymentMessage, Remittance, Role, Status, StatusChange};

/// Everything the engine knows, rebuilt from the journal on start.
#[derive(Default)]
pub(super) struct State {
    // Boxed: growing the map moves pointers, not whole records.
    pub(super) remittances: UetrMap<Box<Remittance>>,
    pub(super) idempotency: HashMap<(String, String), Uetr>,
    pub(super) by_client: HashMap<String, BTreeSet<(u64, Uetr)>>,
    pub(super) inbox: UetrMap<InboxMessage>,
    pub(super) incoming: UetrMap<IncomingTransfer>,
    /// Destination records already built (and their messages checked) for
    /// `accepted` events about to be applied, so the message is not parsed
    /// twice; empty outside [`Engine::commit_accepting`].
    pub(super) prepared: UetrMap<Box<Remittance>>,
    /// Payment message bytes of origin remittances created since start and
    /// not yet taken by the submitter, so the message is serialised once.
    pub(super) message_bytes: UetrMap<Vec<u8>>,
    /// Return reports journalled (`ReturnDue`: code, reason) whose report is
    /// not yet seen certified.
    pub(super) returns_due: UetrMap<(String, String)>,
    pub(super) cursor: u64,
}

impl State {
    /// Applies one event; returns the uetr of a remittance that changed
    /// (for `Statuses`, pushes each changed one to `changed` instead).
    pub(super) fn apply_into(&mut self, event: JournalEvent, changed: &mut Vec<Uetr>) {
        if let JournalEvent::PayoutStarted { uetrs, at_ms } = event {
            let change = StatusChange::new(Status::PayoutPending, at_ms, None, "");
            for uetr in uetrs {
                let Some(record) = self.remittances.get_mut(&uetr) else { continue };
                if record.role == Role::Destination && record.advance(change.clone()) {
                    changed.push(uetr);
                }
            }
        } else if let JournalEvent::Statuses { uetrs, change, ledger } = event {
            for uetr in uetrs {
                let Some(record) = self.remittances.get_mut(&uetr) else { continue };
                let mut moved = false;
                if ledger.is_some() && record.ledger.is_none() {
                    record.ledger = ledger;
                    moved = true;
                }
                if record.advance(change.clone()) || moved {
                    changed.push(uetr);
                }
            }
        } else if let Some(uetr) = self.apply(event) {
            changed.push(uetr);
        }
    }

    /// Applies one event; returns the uetr of a remittance that changed.
    pub(super) fn apply(&mut self, event: JournalEvent) -> Option<Uetr> {
        match event {
            JournalEvent::Statuses { .. } | JournalEvent::PayoutStarted { .. } => {
                let mut changed = Vec::new();
                self.apply_into(event, &mut changed);
                changed.pop()
            }
            JournalEvent::Accepted { uetr, ledger, at_ms } => {
                if self.remittances.contains_key(&uetr) {
                    return None;
                }
                let record = match self.prepared.remove(&uetr) {
                    Some(record) => record,
                    None => {
                        let Some(record) = self.inbox.get(&uetr).and_then(|m| destination_record(m, ledger, at_ms))
                        else {
                            warn!(%uetr, "journal: accepted transfer without a readable payment message; skipped");
                            return None;
                        };
                        Box::new(record)
                    }
                };
                self.incoming.remove(&uetr);
                self.inbox.remove(&uetr);
                self.remittances.insert(uetr, record);
                Some(uetr)
            }
            JournalEvent::Created { remittance } => {
                let uetr = remittance.uetr;
                if self.remittances.contains_key(&uetr) {
                    return None;
                }
                if remittance.role == Role::Origin {
                    self.idempotency.insert((remittance.client_id.clone(), remittance.idempotency_key.clone()), uetr);
                    self.by_client
                        .entry(remittance.client_id.clone())
                        .or_default()
                        .insert((remittance.created_at_ms(), uetr));
                } else {
                    self.incoming.remove(&uetr);
                    self.inbox.remove(&uetr);
                }
                self.remittances.insert(uetr, remittance);
                Some(uetr)
            }
            JournalEvent::Status { uetr, change, ledger, payout_reference } => {
                if ledger.is_some() && matches!(change.status, Status::Completed | Status::Returned) {
                    self.returns_due.remove(&uetr);
                }
                let record = self.remittances.get_mut(&uetr)?;
                let mut changed = false;
                if ledger.is_some() && record.ledger.is_none() {
                    record.ledger = ledger;
                    changed = true;
                }
                if payout_reference.is_some() && record.payout_reference.is_none() {
                    record.payout_reference = payout_reference;
                    changed = true;
                }
                (record.advance(change) || changed).then_some(uetr)
            }
            JournalEvent::PaidOut { uetr, reference } => {
                let record = self.remittances.get_mut(&uetr)?;
                if record.payout_reference.is_some() {
                    return None;
                }
                record.payout_reference = Some(reference);
                Some(uetr)
            }
            JournalEvent::ReturnDue { uetr, reason_code, reason } => {
                // Returned: a message arriving later must not make it payable.
                self.incoming.remove(&uetr);
                self.inbox.remove(&uetr);
                self.returns_due.insert(uetr, (reason_code, reason));
                None
            }
            JournalEvent::MessageDelivered { uetr } => {
                let record = self.remittances.get_mut(&uetr)?;
                record.message_delivered = true;
                None
            }
            JournalEvent::Inbox { message } => {
                if !self.remittances.contains_key(&message.uetr) {
                    self.inbox.insert(message.uetr, message);
                }
                None
            }
            JournalEvent::Incoming { transfer } => {
                if !self.remittances.contains_key(&transfer.uetr) {
                    self.incoming.insert(transfer.uetr, transfer);
                }
                None
            }
            JournalEvent::Cursor { height } => {
                self.cursor = self.cursor.max(height);
                None
            }
            JournalEvent::Archived { uetrs } => {
                for uetr in uetrs {
                    self.forget(&uetr);
                }
                None
            }
            JournalEvent::InboxExpired { uetrs } => {
                for uetr in uetrs {
                    self.inbox.remove(&uetr);
                }
                None
            }
        }
    }

    /// Drops every trace of an archived remittance from memory: its record,
    /// its idempotency key, its place in the client's index, and what the
    /// engine kept for it.
    pub(super) fn forget(&mut self, uetr: &Uetr) {
        self.message_bytes.remove(uetr);
        self.returns_due.remove(uetr);
        self.prepared.remove(uetr);
        let Some(record) = self.remittances.remove(uetr) else { return };
        if record.role != Role::Origin {
            return;
        }
        let slot = (record.client_id.clone(), record.idempotency_key.clone());
        if self.idempotency.get(&slot) == Some(uetr) {
            self.idempotency.remove(&slot);
        }
        if let Some(index) = self.by_client.get_mut(&record.client_id) {
            index.remove(&(record.created_at_ms(), *uetr));
            if index.is_empty() {
                self.by_client.remove(&record.client_id);
            }
        }
    }
}

/// The destination record for an incoming transfer if `message` is its
/// payment message (commitment, uetr, parties and amount all match), as
/// paying participant `me`, final at `now`.
pub(super) fn verify_message(
    me: &ParticipantId,
    incoming: &IncomingTransfer,
    message: &InboxMessage,
    now: u64,
) -> Option<Remittance> {
    let salt: [u8; 32] = message.salt.as_slice().try_into().ok()?;
    if commitment(&salt, &message.message) != incoming.commitment {
        warn!(uetr = %incoming.uetr, "payment message does not match the ledger commitment");
        return None;
    }
    let parsed = PaymentMessage::from_bytes(&message.message).ok()?;
    let matches = parsed.uetr == incoming.uetr
        && parsed.origin == incoming.origin
        && parsed.destination == *me
        && parsed.settlement_amount == incoming.amount;
    if !matches {
        warn!(uetr = %incoming.uetr, "payment message contradicts its ledger transfer");
        return None;
    }
    Some(build_destination_record(parsed, salt, incoming.commitment, incoming.ledger, now))
}

/// The destination's record of a remittance: the payment message as
/// received, final on the ledger at `at_ms`.
pub(super) fn build_destination_record(
    message: PaymentMessage,
    salt: [u8; 32],
    commitment: Digest32,
    ledger: LedgerPosition,
    at_ms: u64,
) -> Remittance {
    Remittance {
        uetr: message.uetr,
        role: Role::Destination,
        client_id: String::new(),
        idempotency_key: String::new(),
        request_fingerprint: String::new(),
        quote_id: None,
        terms: None,
        message,
        salt,
        commitment,
        status: Status::Final,
        history: vec![StatusChange::new(Status::Final, at_ms, None, "")],
        ledger: Some(ledger),
        payout_reference: None,
        message_delivered: true,
    }
}

/// Rebuilds a destination record on replay from its journalled message
/// (checked against the ledger before the `accepted` event was written).
pub(super) fn destination_record(message: &InboxMessage, ledger: LedgerPosition, at_ms: u64) -> Option<Remittance> {
    let salt: [u8; 32] = message.salt.as_slice().try_into().ok()?;
    let parsed = PaymentMessage::from_bytes(&message.message).ok()?;
    let commitment = commitment(&salt, &message.message);
    Some(build_destination_record(parsed, salt, commitment, ledger, at_ms))
}

/// The journal event for a destination record built by `verify_message`.
pub(super) fn accepted_event(record: &Remittance) -> JournalEvent {
    JournalEvent::Accepted {
        uetr: record.uetr,
        ledger: record.ledger.expect("destination records are built with their ledger position"),
        at_ms: record.created_at_ms(),
    }
}

pub(super) fn payout_pending(uetr: Uetr, now: u64) -> JournalEvent {
    JournalEvent::Status {
        uetr,
        change: StatusChange::new(Status::PayoutPending, now, None, ""),
        ledger: None,
        payout_reference: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remittance::payouts::{payout_step, PayoutStep};
    use crate::remittance::testkit::incoming_message;
    use remit_settlement::ids::Height;
    use remit_settlement::money::Money;

    #[test]
    fn replay_rebuilds_a_destination_record_from_its_journalled_message() {
        let uetr = Uetr::new_random();
        let (inbox, message) = incoming_message(uetr);
        let ledger = LedgerPosition { height: Height(7), block_hash: Digest32([3; 32]) };
        let expected = build_destination_record(message, [9; 32], commitment(&[9; 32], &inbox.message), ledger, 2_000);
        let mut state = State::default();
        let mut changed = Vec::new();
        state.apply_into(JournalEvent::Inbox { message: inbox }, &mut changed);
        state.apply_into(JournalEvent::Accepted { uetr, ledger, at_ms: 2_000 }, &mut changed);
        assert_eq!(changed, vec![uetr]);
        let record = state.remittances.get(&uetr).expect("rebuilt");
        assert_eq!(**record, expected);
        assert!(state.inbox.is_empty(), "the message moved into the record");
        // A second accepted event for the same transfer changes nothing.
        state.apply_into(JournalEvent::Accepted { uetr, ledger, at_ms: 9_000 }, &mut changed);
        assert_eq!(changed, vec![uetr]);
        assert_eq!(state.remittances[&uetr].history[0].at_ms, 2_000);
    }

    #[test]
    fn an_accepted_event_without_its_message_is_skipped() {
        let uetr = Uetr::new_random();
        let ledger = LedgerPosition { height: Height(7), block_hash: Digest32([3; 32]) };
        let mut state = State::default();
        let mut changed = Vec::new();
        state.apply_into(JournalEvent::Accepted { uetr, ledger, at_ms: 2_000 }, &mut changed);
        assert!(changed.is_empty());
        assert!(state.remittances.is_empty());
    }

    #[test]
    fn a_grouped_status_advances_each_remittance_once() {
        let (a, b) = (Uetr::new_random(), Uetr::new_random());
        let ledger = LedgerPosition { height: Height(7), block_hash: Digest32([3; 32]) };
        let mut state = State::default();
        let mut changed = Vec::new();
        for uetr in [a, b] {
            let (inbox, _) = incoming_message(uetr);
            state.apply_into(JournalEvent::Inbox { message: inbox }, &mut changed);
            state.apply_into(JournalEvent::Accepted { uetr, ledger, at_ms: 2_000 }, &mut changed);
        }
        changed.clear();
        let change = StatusChange::new(Status::PayoutPending, 3_000, None, "");
        let unknown = Uetr::new_random();
        let event = JournalEvent::Statuses { uetrs: vec![a, unknown, b], change: change.clone(), ledger: None };
        state.apply_into(event.clone(), &mut changed);
        assert_eq!(changed, vec![a, b]);
        changed.clear();
        state.apply_into(event, &mut changed);
        assert!(changed.is_empty(), "a repeated change is ignored");
        for uetr in [a, b] {
            let record = &state.remittances[&uetr];
            assert_eq!(record.status, Status::PayoutPending);
            assert_eq!(record.history.last(), Some(&change));
        }
    }

    /// Replays `events` after a destination record was accepted; returns the
    /// payout step a restart takes for it.
    fn step_after(events: Vec<JournalEvent>) -> (PayoutStep, Status) {
        let uetr = Uetr::new_random();
        let ledger = LedgerPosition { height: Height(7), block_hash: Digest32([3; 32]) };
        let (inbox, _) = incoming_message(uetr);
        let mut state = State::default();
        let mut changed = Vec::new();
        state.apply_into(JournalEvent::Inbox { message: inbox }, &mut changed);
        state.apply_into(JournalEvent::Accepted { uetr, ledger, at_ms: 2_000 }, &mut changed);
        for event in events {
            state.apply_into(with_uetr(event, uetr), &mut changed);
        }
        let record = &state.remittances[&uetr];
        (payout_step(record, state.returns_due.contains_key(&uetr)), record.status)
    }

    /// `event` with its UETR(s) replaced by `uetr`.
    fn with_uetr(event: JournalEvent, uetr: Uetr) -> JournalEvent {
        match event {
            JournalEvent::PayoutStarted { at_ms, .. } => JournalEvent::PayoutStarted { uetrs: vec![uetr], at_ms },
            JournalEvent::Statuses { change, ledger, .. } => {
                JournalEvent::Statuses { uetrs: vec![uetr], change, ledger }
            }
            JournalEvent::Status { change, ledger, payout_reference, .. } => {
                JournalEvent::Status { uetr, change, ledger, payout_reference }
            }
            JournalEvent::PaidOut { reference, .. } => JournalEvent::PaidOut { uetr, reference },
            JournalEvent::ReturnDue { reason_code, reason, .. } => {
                JournalEvent::ReturnDue { uetr, reason_code, reason }
            }
            other => other,
        }
    }

    #[test]
    fn a_restart_takes_the_payout_step_its_journal_shows() {
        let any = Uetr::new_random();
        let ledger = Some(LedgerPosition { height: Height(9), block_hash: Digest32([4; 32]) });
        let started = || JournalEvent::PayoutStarted { uetrs: vec![any], at_ms: 3_000 };
        let old_pending = || JournalEvent::Statuses {
            uetrs: vec![any],
            change: StatusChange::new(Status::PayoutPending, 3_000, None, ""),
            ledger: None,
        };
        let paid = || JournalEvent::PaidOut { uetr: any, reference: "SIM-1".into() };
        let returned = || JournalEvent::ReturnDue { uetr: any, reason_code: "AC04".into(), reason: "closed".into() };
        let certified = |status: Status| JournalEvent::Status {
            uetr: any,
            change: StatusChange::new(status, 4_000, None, ""),
            ledger,
            payout_reference: None,
        };
        let cases: Vec<(&str, Vec<JournalEvent>, (PayoutStep, Status))> = vec![
            ("final: never sent to the bank", vec![], (PayoutStep::Pay, Status::Final)),
            ("in flight", vec![started()], (PayoutStep::AskBank, Status::PayoutPending)),
            (
                "payout_pending from an older journal (also written before the bank call)",
                vec![old_pending()],
                (PayoutStep::AskBank, Status::PayoutPending),
            ),
            (
                "paid, report not certified",
                vec![started(), paid()],
                (PayoutStep::ReportCompleted, Status::PayoutPending),
            ),
            (
                "refused, return not certified",
                vec![started(), returned()],
                (PayoutStep::ReportReturned, Status::PayoutPending),
            ),
            (
                "completion certified",
                vec![started(), paid(), certified(Status::Completed)],
                (PayoutStep::Nothing, Status::Completed),
            ),
            (
                "return certified",
                vec![started(), returned(), certified(Status::Returned)],
                (PayoutStep::Nothing, Status::Returned),
            ),
        ];
        for (name, events, expected) in cases {
            assert_eq!(step_after(events), expected, "{name}");
        }
    }

    #[test]
    fn a_journalled_return_without_a_record_stops_the_fetch_and_clears_when_certified() {
        let uetr = Uetr::new_random();
        let (inbox, _) = incoming_message(uetr);
        let ledger = LedgerPosition { height: Height(7), block_hash: Digest32([3; 32]) };
        let incoming = IncomingTransfer {
            uetr,
            origin: inbox.origin.clone(),
            amount: Money::parse_parts("100.00", "USD", "amount").expect("money"),
            commitment: Digest32([1; 32]),
            ledger,
        };
        let mut state = State::default();
        let mut changed = Vec::new();
        state.apply_into(JournalEvent::Incoming { transfer: incoming }, &mut changed);
        state.apply_into(JournalEvent::Inbox { message: inbox }, &mut changed);
        let (event, _) = crate::remittance::reports::return_without_message(uetr);
        state.apply_into(event, &mut changed);
        assert!(state.incoming.is_empty() && state.inbox.is_empty(), "nothing left to fetch or accept");
        assert_eq!(state.returns_due.get(&uetr).map(|(code, _)| code.as_str()), Some("MS03"));
        let change = StatusChange::new(Status::Returned, 5_000, Some("MS03"), "");
        state.apply_into(
            JournalEvent::Status { uetr, change, ledger: Some(ledger), payout_reference: None },
            &mut changed,
        );
        assert!(state.returns_due.is_empty(), "a certified return is no longer due");
    }
}
