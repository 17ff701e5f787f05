//! Restart in every status: a journal holding a record in each status is
//! written to a real [`Journal`] in a temporary directory, reopened, and the
//! engine started on the replayed events with mocked ports must resume
//! exactly the work that status calls for, and nothing else.

use std::sync::Arc;

use remit_settlement::ids::Uetr;
use remit_settlement::{PayoutOutcome, ReturnReason};

use super::engine::Engine;
use super::journal::{Journal, JournalEvent, JOURNAL_FILE};
use super::ports::PayoutStatus;
use super::record::{commitment, Remittance, Status, StatusChange};
use super::state::build_destination_record;
use super::testkit::{
    incoming_message, incoming_transfer, origin_record, participant, position, settle, start_engine, Script, World,
};

/// What a restarted engine asked of its ports.
#[derive(Debug, Default, PartialEq, Eq)]
struct Work {
    /// Transfer batches submitted (their UETRs).
    batches: Vec<Vec<Uetr>>,
    /// Pushes of payment messages.
    pushes: usize,
    /// Payments.
    pays: usize,
    /// Status questions to the bank.
    asked: usize,
    /// Payout reports submitted.
    reports: Vec<Vec<(Uetr, PayoutOutcome)>>,
    /// Fetches from origins.
    fetches: usize,
}

/// Writes `events` to a journal file, reopens it, and starts `me`'s engine
/// on what it replays; returns once every resumed task has run.
async fn restart(me: &str, events: Vec<JournalEvent>, script: Script) -> (Engine, Arc<World>, Work) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(JOURNAL_FILE);
    let written = events.len();
    {
        let (journal, replayed) = Journal::open(&path).expect("a new journal");
        assert!(replayed.is_empty());
        journal.append(&events).await.expect("durable");
    }
    let (_journal, replayed) = Journal::open(&path).expect("the journal reopens");
    assert_eq!(replayed.len(), written, "every event replays");
    let world = World::new(script);
    let engine = start_engine(me, replayed, &world);
    settle().await;
    let work = {
        let seen = world.seen();
        Work {
            batches: seen.batches.clone(),
            pushes: seen.pushes.len(),
            pays: seen.pays.len(),
            asked: seen.asked.len(),
            reports: seen.reports.clone(),
            fetches: seen.fetches.len(),
        }
    };
    (engine, world, work)
}

/// An origin record of `gw-us` in `status`.
fn origin_in(uetr: Uetr, status: Status) -> Remittance {
    let mut record = origin_record(uetr);
    if status != Status::Received {
        record.history.push(StatusChange::new(status, 2_000, None, ""));
        record.status = status;
    }
    if matches!(status, Status::Committed | Status::Final | Status::Completed | Status::Returned) {
        record.ledger = Some(position(5));
    }
    record
}

/// The destination record of `gw-ph` for [`incoming_message`]`(uetr)`, final.
fn destination_final(uetr: Uetr) -> Remittance {
    let (inbox, message) = incoming_message(uetr);
    let salt = [9; 32];
    build_destination_record(message, salt, commitment(&salt, &inbox.message), position(5), 2_000)
}

fn status(uetr: Uetr, status: Status, certified: bool) -> JournalEvent {
    JournalEvent::Status {
        uetr,
        change: StatusChange::new(status, 3_000, None, ""),
        ledger: certified.then(|| position(6)),
        payout_reference: None,
    }
}

fn created(record: Remittance) -> JournalEvent {
    JournalEvent::Created { remittance: Box::new(record) }
}

#[tokio::test(start_paused = true)]
async fn an_origin_resumes_only_what_its_status_leaves_undone() {
    for status in Status::ALL {
        let uetr = Uetr::new_random();
        let record = origin_in(uetr, status);
        let expected_commitment = record.commitment;
        let (engine, world, work) = restart("gw-us", vec![created(record)], Script::default()).await;
        let resubmits = matches!(status, Status::Received | Status::Submitted);
        let expected = Work {
            batches: if resubmits { vec![vec![uetr]] } else { Vec::new() },
            pushes: usize::from(resubmits),
            ..Work::default()
        };
        assert_eq!(work, expected, "origin restarted in {status:?}");
        if resubmits {
            assert_eq!(world.seen().commitments, vec![vec![expected_commitment]], "{status:?}: the same transfer");
            assert_eq!(engine.record(&uetr).map(|r| r.status), Some(Status::Committed), "{status:?}");
        } else {
            assert_eq!(engine.record(&uetr).map(|r| r.status), Some(status), "{status:?}: left as it was");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_origin_whose_message_was_delivered_resubmits_without_pushing_again() {
    let uetr = Uetr::new_random();
    let record = origin_in(uetr, Status::Submitted);
    let events = vec![created(record), JournalEvent::MessageDelivered { uetr }];
    let (_engine, _world, work) = restart("gw-us", events, Script::default()).await;
    assert_eq!(work, Work { batches: vec![vec![uetr]], ..Work::default() });
}

#[tokio::test(start_paused = true)]
async fn a_final_destination_record_is_paid_without_asking() {
    let uetr = Uetr::new_random();
    let (engine, world, work) = restart("gw-ph", vec![created(destination_final(uetr))], Script::default()).await;
    assert_eq!(work, Work { pays: 1, reports: vec![vec![(uetr, PayoutOutcome::Completed)]], ..Work::default() });
    assert_eq!(world.journalled(|e| matches!(e, JournalEvent::PayoutStarted { .. })), 1);
    assert_eq!(engine.record(&uetr).and_then(|r| r.payout_reference), Some(format!("BK-{uetr}")));
}

#[tokio::test(start_paused = true)]
async fn a_payout_in_flight_that_the_bank_paid_is_asked_for_and_not_paid_again() {
    let uetr = Uetr::new_random();
    let events =
        vec![created(destination_final(uetr)), JournalEvent::PayoutStarted { uetrs: vec![uetr], at_ms: 2_500 }];
    let script = Script { statuses: [PayoutStatus::Paid { reference: "BK-FIRST".into() }].into(), ..Script::default() };
    let (engine, world, work) = restart("gw-ph", events, script).await;
    assert_eq!(work, Work { asked: 1, reports: vec![vec![(uetr, PayoutOutcome::Completed)]], ..Work::default() });
    assert_eq!(
        world.journalled(|e| matches!(e, JournalEvent::PaidOut { reference, .. } if reference == "BK-FIRST")),
        1,
        "the bank's first reference is kept"
    );
    assert_eq!(engine.record(&uetr).and_then(|r| r.payout_reference), Some("BK-FIRST".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn a_payout_in_flight_that_never_reached_the_bank_is_asked_for_then_paid_once() {
    let uetr = Uetr::new_random();
    let events =
        vec![created(destination_final(uetr)), JournalEvent::PayoutStarted { uetrs: vec![uetr], at_ms: 2_500 }];
    let (_engine, world, work) = restart("gw-ph", events, Script::default()).await;
    assert_eq!(
        work,
        Work { asked: 1, pays: 1, reports: vec![vec![(uetr, PayoutOutcome::Completed)]], ..Work::default() }
    );
    assert_eq!(world.journalled(|e| matches!(e, JournalEvent::PayoutStarted { .. })), 0, "already in flight");
}

#[tokio::test(start_paused = true)]
async fn a_journalled_payout_is_only_reported() {
    let uetr = Uetr::new_random();
    let events = vec![
        created(destination_final(uetr)),
        JournalEvent::PayoutStarted { uetrs: vec![uetr], at_ms: 2_500 },
        JournalEvent::PaidOut { uetr, reference: "BK-9".into() },
    ];
    let (_engine, _world, work) = restart("gw-ph", events, Script::default()).await;
    assert_eq!(work, Work { reports: vec![vec![(uetr, PayoutOutcome::Completed)]], ..Work::default() });
}

#[tokio::test(start_paused = true)]
async fn a_journalled_return_is_only_reported() {
    let uetr = Uetr::new_random();
    let events = vec![
        created(destination_final(uetr)),
        JournalEvent::PayoutStarted { uetrs: vec![uetr], at_ms: 2_500 },
        JournalEvent::ReturnDue { uetr, reason_code: "AC04".into(), reason: "closed".into() },
    ];
    let (_engine, _world, work) = restart("gw-ph", events, Script::default()).await;
    let returned = PayoutOutcome::Returned { reason: ReturnReason::new("AC04").expect("code") };
    assert_eq!(work, Work { reports: vec![vec![(uetr, returned)]], ..Work::default() });
}

#[tokio::test(start_paused = true)]
async fn a_destination_record_certified_completed_or_returned_needs_nothing() {
    for end in [Status::Completed, Status::Returned] {
        let uetr = Uetr::new_random();
        let events = vec![
            created(destination_final(uetr)),
            JournalEvent::PayoutStarted { uetrs: vec![uetr], at_ms: 2_500 },
            JournalEvent::PaidOut { uetr, reference: "BK-9".into() },
            status(uetr, end, true),
        ];
        let (engine, _world, work) = restart("gw-ph", events, Script::default()).await;
        assert_eq!(work, Work::default(), "{end:?}");
        assert_eq!(engine.record(&uetr).map(|r| r.status), Some(end));
    }
}

#[tokio::test(start_paused = true)]
async fn a_certified_transfer_without_its_message_is_fetched_after_a_restart() {
    let uetr = Uetr::new_random();
    let (message, _) = incoming_message(uetr);
    let script = Script {
        fetches: [super::ports::FetchedMessages { messages: vec![message], unknown: Vec::new() }].into(),
        ..Script::default()
    };
    let events = vec![JournalEvent::Incoming { transfer: incoming_transfer(uetr) }];
    let (engine, world, work) = restart("gw-ph", events, script).await;
    assert_eq!(
        work,
        Work { fetches: 1, pays: 1, reports: vec![vec![(uetr, PayoutOutcome::Completed)]], ..Work::default() }
    );
    assert_eq!(world.seen().fetches[0], (participant("gw-us"), vec![uetr]));
    assert_eq!(engine.record(&uetr).map(|r| r.status), Some(Status::PayoutPending));
}

#[tokio::test(start_paused = true)]
async fn a_message_received_before_the_crash_is_matched_on_replay_without_a_fetch() {
    let uetr = Uetr::new_random();
    let (message, _) = incoming_message(uetr);
    let events =
        vec![JournalEvent::Inbox { message }, JournalEvent::Accepted { uetr, ledger: position(5), at_ms: 2_000 }];
    let (engine, _world, work) = restart("gw-ph", events, Script::default()).await;
    assert_eq!(work, Work { pays: 1, reports: vec![vec![(uetr, PayoutOutcome::Completed)]], ..Work::default() });
    assert_eq!(engine.record(&uetr).map(|r| r.message.beneficiary.account.value), Some("PH000222".to_owned()));
}
