//! The origin and destination workflows driven through `mockall` mocks of
//! their ports (`testkit::mocked_ports`), in paused time: ledger retries and
//! refusals, partial failures, duplicate creates and deliveries, a push that
//! fails before the destination fetches, payout retries.

use std::sync::Arc;

use remit_settlement::ids::Uetr;
use remit_settlement::{PayoutOutcome, PayoutState, ReturnReason};

use super::engine::Engine;
use super::errors::ErrorKind;
use super::journal::{JournalError, JournalEvent};
use super::messages::ReceiveError;
use super::ports::{EntryOutcome, FetchedMessages, LedgerError, LedgerOutcome, PayoutResult};
use super::record::Status;
use super::testkit::{
    create_input, incoming_message, incoming_transfer, participant, position, settle, start_engine, status_of, until,
    Script, World,
};

fn origin(script: Script) -> (Engine, Arc<World>) {
    let world = World::new(script);
    (start_engine("gw-us", Vec::new(), &world), world)
}

/// A destination `gw-ph` that holds a certified transfer to it without its
/// message (as journalled by the follower).
fn destination_waiting(uetr: Uetr, script: Script) -> (Engine, Arc<World>) {
    let world = World::new(script);
    let events = vec![JournalEvent::Incoming { transfer: incoming_transfer(uetr) }];
    (start_engine("gw-ph", events, &world), world)
}

async fn created(engine: &Engine, key: &str) -> Uetr {
    engine.create("c1", create_input(key)).await.expect("created").uetr
}

fn completed(uetr: Uetr) -> (Uetr, PayoutOutcome) {
    (uetr, PayoutOutcome::Completed)
}

// ---- origin ----

#[tokio::test(start_paused = true)]
async fn a_created_remittance_is_durable_then_submitted_pushed_and_committed() {
    let (engine, world) = origin(Script::default());
    let record = engine.create("c1", create_input("k1")).await.expect("created");
    assert_eq!(record.status, Status::Received);
    assert_eq!(
        world.journalled(|e| matches!(e, JournalEvent::Created { remittance } if remittance.uetr == record.uetr)),
        1,
        "journalled before the answer"
    );
    until("committed", || status_of(&engine, &record.uetr) == Some(Status::Committed)).await;
    settle().await;
    let seen = world.seen();
    assert_eq!(seen.batches, vec![vec![record.uetr]]);
    assert_eq!(seen.commitments, vec![vec![record.commitment]]);
    assert_eq!(seen.pushes, vec![(participant("gw-ph"), vec![record.uetr])]);
    drop(seen);
    let record = engine.record(&record.uetr).expect("held");
    assert_eq!(record.ledger, Some(position(3)));
    assert!(record.message_delivered);
    let statuses: Vec<Status> = record.history.iter().map(|c| c.status).collect();
    assert_eq!(statuses, vec![Status::Received, Status::Submitted, Status::Committed]);
    let announced: Vec<Status> = world.seen().announced.iter().map(|(_, s)| *s).collect();
    assert_eq!(announced, statuses, "one webhook event per status change");
}

#[tokio::test(start_paused = true)]
async fn an_unavailable_ledger_is_asked_again_with_the_same_batch() {
    let unavailable = || Err(LedgerError::Unavailable("no leader".into()));
    let (engine, world) = origin(Script { submits: [unavailable(), unavailable()].into(), ..Script::default() });
    let uetr = created(&engine, "k1").await;
    until("committed", || status_of(&engine, &uetr) == Some(Status::Committed)).await;
    let seen = world.seen();
    assert_eq!(seen.batches, vec![vec![uetr]; 3], "three attempts, each with the same UETR");
    assert_eq!(seen.commitments[0], seen.commitments[2]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_submission_rejects_the_batch_without_a_retry() {
    let (engine, world) =
        origin(Script { submits: [Err(LedgerError::Refused("bad signature".into()))].into(), ..Script::default() });
    let uetr = created(&engine, "k1").await;
    until("rejected", || status_of(&engine, &uetr) == Some(Status::Rejected)).await;
    settle().await;
    assert_eq!(world.seen().batches.len(), 1, "not retried");
    let change = engine.record(&uetr).expect("held").history.pop().expect("a change");
    assert_eq!((change.reason_code.as_deref(), change.reason.as_str()), (Some("NARR"), "bad signature"));
}

#[tokio::test(start_paused = true)]
async fn a_batch_the_ledger_rejects_takes_its_reason_code() {
    let rejected = LedgerOutcome::BatchRejected { iso_code: "FF01".into(), reason: "unknown origin".into() };
    let (engine, _world) = origin(Script { submits: [Ok(rejected)].into(), ..Script::default() });
    let uetr = created(&engine, "k1").await;
    until("rejected", || status_of(&engine, &uetr) == Some(Status::Rejected)).await;
    let change = engine.record(&uetr).expect("held").history.pop().expect("a change");
    assert_eq!(change.reason_code.as_deref(), Some("FF01"));
}

#[tokio::test(start_paused = true)]
async fn each_entry_of_a_partly_refused_batch_gets_its_own_outcome() {
    let (engine, world) = origin(Script::default());
    let results = engine.create_many("c1", vec![create_input("a"), create_input("b"), create_input("c")]).await;
    let uetrs: Vec<Uetr> = results.into_iter().map(|r| r.expect("created").uetr).collect();
    {
        let mut script = world.script();
        script.entries.insert(
            uetrs[1],
            EntryOutcome::Rejected { iso_code: "AM04".into(), reason: "insufficient_collateral".into() },
        );
        script.entries.insert(uetrs[2], EntryOutcome::Duplicate);
    }
    until("all decided", || uetrs.iter().all(|u| status_of(&engine, u) != Some(Status::Submitted))).await;
    settle().await;
    assert_eq!(world.seen().batches, vec![uetrs.clone()], "one batch");
    let a = engine.record(&uetrs[0]).expect("a");
    assert_eq!((a.status, a.ledger), (Status::Committed, Some(position(3))));
    let b = engine.record(&uetrs[1]).expect("b");
    let change = b.history.last().expect("a change");
    assert_eq!(
        (b.status, change.reason_code.as_deref(), change.reason.as_str()),
        (Status::Rejected, Some("AM04"), "ledger: insufficient_collateral")
    );
    let c = engine.record(&uetrs[2]).expect("c");
    assert_eq!((c.status, c.ledger), (Status::Committed, None), "a duplicate landed earlier; the follower places it");
}

#[tokio::test(start_paused = true)]
async fn a_repeated_idempotency_key_returns_the_first_remittance_and_submits_it_once() {
    let (engine, world) = origin(Script::default());
    let (first, repeat) = engine.create_or_repeat("c1", create_input("k1")).await.expect("created");
    assert!(!repeat);
    let (again, repeat) = engine.create_or_repeat("c1", create_input("k1")).await.expect("repeat");
    assert!(repeat);
    assert_eq!(again.uetr, first.uetr);
    let mut other = create_input("k1");
    other.purpose = "EDUC".into();
    let refused = engine.create("c1", other).await.expect_err("another request under the same key");
    assert_eq!((refused.kind, refused.reason_code.as_deref()), (ErrorKind::AlreadyExists, Some("DUPL")));
    // Another client's key is its own.
    let theirs = engine.create("c2", create_input("k1")).await.expect("created");
    assert_ne!(theirs.uetr, first.uetr);
    settle().await;
    assert_eq!(world.journalled(|e| matches!(e, JournalEvent::Created { .. })), 2);
    let submitted: usize = world.seen().batches.iter().flatten().filter(|u| **u == first.uetr).count();
    assert_eq!(submitted, 1);
}

#[tokio::test(start_paused = true)]
async fn a_create_that_was_not_journalled_is_refused_and_its_key_freed() {
    let (engine, world) = origin(Script { journal_failures: 1, ..Script::default() });
    let error = engine.create("c1", create_input("k1")).await.expect_err("not durable");
    assert_eq!(error.kind, ErrorKind::Internal);
    let record = engine.create("c1", create_input("k1")).await.expect("the retry creates it");
    settle().await;
    assert_eq!(world.seen().batches, vec![vec![record.uetr]], "only the durable one is submitted");
}

#[tokio::test(start_paused = true)]
async fn a_message_whose_push_fails_stays_for_its_destination_to_fetch() {
    let (engine, world) = origin(Script { push_fails: true, ..Script::default() });
    let uetr = created(&engine, "k1").await;
    settle().await;
    assert_eq!(world.seen().pushes.len(), 8, "pushed with backoff, then left to the fetch");
    let record = engine.record(&uetr).expect("held");
    assert!(!record.message_delivered);
    assert_eq!(record.status, Status::Committed, "the ledger does not wait for the push");
    let (messages, unknown) = engine.messages_for(&[uetr], &participant("gw-ph")).expect("answered");
    assert_eq!(unknown, Vec::<Uetr>::new());
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].message, record.message.to_bytes());
    assert_eq!(super::record::commitment(&record.salt, &messages[0].message), record.commitment);
    let (messages, unknown) = engine.messages_for(&[uetr], &participant("gw-jp")).expect("answered");
    assert!(messages.is_empty(), "never to another participant");
    assert_eq!(unknown, vec![uetr]);
}

// ---- destination ----

#[tokio::test(start_paused = true)]
async fn a_message_delivered_twice_pays_its_waiting_transfer_once() {
    let uetr = Uetr::new_random();
    let (engine, world) = destination_waiting(uetr, Script::default());
    let (message, _) = incoming_message(uetr);
    let origin = participant("gw-us");
    let (a, b) = tokio::join!(
        engine.receive_messages(&origin, vec![message.clone()]),
        engine.receive_messages(&origin, vec![message.clone()])
    );
    assert_eq!((a, b), (Ok(1), Ok(1)));
    assert_eq!(engine.receive_messages(&origin, vec![message]).await, Ok(1), "a late repeat is harmless");
    until("reported", || !world.seen().reports.is_empty()).await;
    settle().await;
    let seen = world.seen();
    assert_eq!(seen.pays.iter().map(|(u, _)| *u).collect::<Vec<_>>(), vec![uetr], "paid once");
    assert_eq!(seen.reports, vec![vec![completed(uetr)]], "reported once");
    assert!(seen.fetches.is_empty(), "nothing to fetch");
    drop(seen);
    assert_eq!(world.journalled(|e| matches!(e, JournalEvent::Accepted { .. })), 1);
    let record = engine.record(&uetr).expect("held");
    assert_eq!(record.payout_reference, Some(format!("BK-{uetr}")));
}

#[tokio::test(start_paused = true)]
async fn a_message_from_another_origin_is_refused_whole() {
    let uetr = Uetr::new_random();
    let (engine, world) = destination_waiting(uetr, Script::default());
    let (message, _) = incoming_message(uetr);
    let refused = engine.receive_messages(&participant("gw-jp"), vec![message]).await;
    assert!(matches!(refused, Err(ReceiveError::PermissionDenied(ref m)) if m.starts_with("messages[0].origin")));
    assert_eq!(world.journalled(|e| matches!(e, JournalEvent::Inbox { .. })), 0, "nothing stored");
}

#[tokio::test(start_paused = true)]
async fn a_message_not_pushed_is_fetched_from_the_origin_and_paid() {
    let uetr = Uetr::new_random();
    let (message, _) = incoming_message(uetr);
    let mut wrong = message.clone();
    wrong.salt = vec![1; 32];
    let script = Script {
        fetches: [
            FetchedMessages::default(),
            FetchedMessages { messages: vec![wrong], unknown: Vec::new() },
            FetchedMessages { messages: vec![message], unknown: Vec::new() },
        ]
        .into(),
        ..Script::default()
    };
    let (engine, world) = destination_waiting(uetr, script);
    until("reported", || !world.seen().reports.is_empty()).await;
    let seen = world.seen();
    assert_eq!(seen.fetches, vec![(participant("gw-us"), vec![uetr]); 3], "asked until a message matches");
    assert_eq!(seen.pays.len(), 1);
    drop(seen);
    assert_eq!(
        world.journalled(|e| matches!(e, JournalEvent::Inbox { message } if message.uetr == uetr)),
        1,
        "the fetched message is journalled with its acceptance"
    );
    assert_eq!(status_of(&engine, &uetr), Some(Status::PayoutPending));
}

#[tokio::test(start_paused = true)]
async fn a_transfer_whose_origin_holds_no_message_is_returned() {
    let uetr = Uetr::new_random();
    let unknown = || FetchedMessages { messages: Vec::new(), unknown: vec![uetr] };
    let (_engine, world) =
        destination_waiting(uetr, Script { fetches: vec![unknown(); 20].into(), ..Script::default() });
    until("return reported", || !world.seen().reports.is_empty()).await;
    let seen = world.seen();
    let returned = PayoutOutcome::Returned { reason: ReturnReason::new("MS03").expect("code") };
    assert_eq!(seen.reports, vec![vec![(uetr, returned)]]);
    assert!(seen.pays.is_empty(), "never paid");
    // Asked at 0.2 s, then every 10 s (the origin said unknown) until 75 s had passed.
    assert_eq!(seen.fetches.len(), 9, "gave up after the give-up time");
    drop(seen);
    assert_eq!(
        world.journalled(|e| matches!(e, JournalEvent::ReturnDue { reason_code, .. } if reason_code == "MS03")),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_payout_is_retried_with_the_same_uetr_after_it_is_journalled_in_flight() {
    let uetr = Uetr::new_random();
    let failed = || PayoutResult::Failed { reason: "HTTP 503".into() };
    let script = Script { pays: [failed(), failed()].into(), ..Script::default() };
    let (engine, world) = destination_waiting(uetr, script);
    let (message, _) = incoming_message(uetr);
    engine.receive_messages(&participant("gw-us"), vec![message]).await.expect("stored");
    until("reported", || !world.seen().reports.is_empty()).await;
    let seen = world.seen();
    assert_eq!(seen.pays.iter().map(|(u, _)| *u).collect::<Vec<_>>(), vec![uetr; 3]);
    let started_at = seen
        .journal
        .iter()
        .position(|e| matches!(e, JournalEvent::PayoutStarted { uetrs, .. } if uetrs == &vec![uetr]))
        .expect("journalled in flight");
    assert!(seen.pays[0].1 > started_at, "the bank is called only once PayoutStarted is durable");
    assert!(seen.asked.is_empty(), "a payout started in this run is not asked for");
    drop(seen);
    assert_eq!(world.journalled(|e| matches!(e, JournalEvent::PaidOut { uetr: u, .. } if *u == uetr)), 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_payout_is_journalled_and_reported_as_returned() {
    let uetr = Uetr::new_random();
    let refused = PayoutResult::Refused { reason_code: "AC04".into(), reason: "closed account".into() };
    let (engine, world) = destination_waiting(uetr, Script { pays: [refused].into(), ..Script::default() });
    let (message, _) = incoming_message(uetr);
    engine.receive_messages(&participant("gw-us"), vec![message]).await.expect("stored");
    until("reported", || !world.seen().reports.is_empty()).await;
    let returned = PayoutOutcome::Returned { reason: ReturnReason::new("AC04").expect("code") };
    assert_eq!(world.seen().reports, vec![vec![(uetr, returned)]]);
    let due = world.journalled(
        |e| matches!(e, JournalEvent::ReturnDue { uetr: u, reason_code, reason } if *u == uetr && reason_code == "AC04" && reason == "closed account"),
    );
    assert_eq!(due, 1, "journalled before it is reported");
}

#[tokio::test(start_paused = true)]
async fn a_transfer_already_reported_on_the_ledger_is_not_paid_again() {
    let uetr = Uetr::new_random();
    let mut script = Script::default();
    script.chain.insert(uetr, PayoutState::Completed);
    let (engine, world) = destination_waiting(uetr, script);
    let (message, _) = incoming_message(uetr);
    engine.receive_messages(&participant("gw-us"), vec![message]).await.expect("stored");
    settle().await;
    assert!(world.seen().pays.is_empty());
    assert_eq!(status_of(&engine, &uetr), Some(Status::Final));
}

#[tokio::test(start_paused = true)]
async fn a_delivery_the_journal_cannot_take_is_unavailable_to_the_origin() {
    let uetr = Uetr::new_random();
    let (engine, world) = destination_waiting(uetr, Script::default());
    world.script().journal_failures = 1;
    let (message, _) = incoming_message(uetr);
    let error = engine.receive_messages(&participant("gw-us"), vec![message]).await.expect_err("not durable");
    assert_eq!(error, ReceiveError::Unavailable(JournalError::Write("disk full".into()).to_string()));
    assert!(world.seen().pays.is_empty(), "nothing paid on a message that is not durable");
}
