//! The engine with its archive, on mocked ports in paused time: terminal
//! remittances leave memory after the retention and are still read by
//! UETR, listed, and found by their idempotency key.

use super::errors::ErrorKind;
use super::journal::JournalEvent;
use super::ports::LedgerError;
use super::record::Status;
use super::testkit::{create_input, engine_config, settle, start_engine, status_of, until, Script, World};
use super::validate::ListFilter;

#[tokio::test(start_paused = true)]
async fn an_archived_remittance_is_read_listed_and_returned_to_a_retry_of_its_key() {
    let refused = Script { submits: [Err(LedgerError::Refused("bad signature".into()))].into(), ..Script::default() };
    let world = World::new(refused);
    let engine = start_engine("gw-us", Vec::new(), &world);
    let first = engine.create("c1", create_input("k1")).await.expect("created");
    until("rejected", || status_of(&engine, &first.uetr) == Some(Status::Rejected)).await;
    let live = engine.create("c1", create_input("k2")).await.expect("created");
    settle().await;
    let rejected_at = engine.record(&first.uetr).expect("held").last_change().at_ms;
    let retention = engine_config("gw-us").store.terminal_retention_ms;
    assert_eq!(engine.sweep(rejected_at + retention - 1).await, Ok((0, 0)), "not yet past the retention");
    assert_eq!(engine.sweep(rejected_at + retention).await, Ok((1, 0)));
    let archived = |e: &JournalEvent| matches!(e, JournalEvent::Archived { uetrs } if *uetrs == vec![first.uetr]);
    assert_eq!(world.journalled(archived), 1);
    assert!(!engine.state().remittances.contains_key(&first.uetr), "left memory");
    assert!(engine.state().remittances.contains_key(&live.uetr), "a live remittance stays");

    let got = engine.get("c1", &first.uetr.to_string()).expect("read from the archive");
    assert_eq!((got.uetr, got.status), (first.uetr, Status::Rejected));
    let theirs = engine.get("c2", &first.uetr.to_string()).expect_err("another client's");
    assert_eq!(theirs.kind, ErrorKind::PermissionDenied);
    let (watched, _) = engine.watch("c1", &first.uetr.to_string()).expect("watch");
    assert_eq!(watched.status, Status::Rejected);

    let (again, repeat) = engine.create_or_repeat("c1", create_input("k1")).await.expect("repeat");
    assert_eq!((again.uetr, repeat), (first.uetr, true));
    let mut other = create_input("k1");
    other.purpose = "EDUC".into();
    let refused = engine.create("c1", other).await.expect_err("another request under the archived key");
    assert_eq!((refused.kind, refused.reason_code.as_deref()), (ErrorKind::AlreadyExists, Some("DUPL")));
    settle().await;
    assert_eq!(world.journalled(|e| matches!(e, JournalEvent::Created { .. })), 2, "no second remittance for k1");

    // Both were created at the same (mocked) millisecond: ordered by UETR,
    // one from the archive and one from memory, a page each.
    let mut order = [first.uetr, live.uetr];
    order.sort();
    let filter = ListFilter { page_size: 1, ..ListFilter::default() };
    let (page, token) = engine.list("c1", &filter).expect("list");
    assert_eq!(page.iter().map(|r| r.uetr).collect::<Vec<_>>(), vec![order[0]]);
    let next = ListFilter { page_token: token, ..filter };
    let (page, token) = engine.list("c1", &next).expect("next page");
    assert_eq!((page.iter().map(|r| r.uetr).collect::<Vec<_>>(), token), (vec![order[1]], None));
    // A second sweep finds nothing more to archive.
    assert_eq!(engine.sweep(rejected_at + retention).await, Ok((0, 0)));
}

#[tokio::test(start_paused = true)]
async fn a_sweep_archives_every_due_record_once_in_batches_across_the_map_shards() {
    use super::engine::Engine;
    use super::record::StatusChange;
    use super::testkit::{engine_config, mocked_journal, mocked_ports, origin_record};
    use remit_settlement::ids::Uetr;

    // 200 completed remittances (spread over the record map's shards) and
    // 20 still open, swept in batches of 7: a batch fills up in the middle
    // of a shard, whose scan then goes on after the batch is archived.
    let mut events = Vec::new();
    let (mut done, mut open) = (Vec::new(), Vec::new());
    for i in 0..220u64 {
        let mut record = origin_record(Uetr::new_random());
        record.idempotency_key = format!("key-{i}");
        let status = if i < 200 { Status::Completed } else { Status::Final };
        record.status = status;
        record.history.push(StatusChange::new(status, 1_000 + i, None, ""));
        if i < 200 {
            done.push(record.uetr)
        } else {
            open.push(record.uetr)
        }
        events.push(JournalEvent::Created { remittance: Box::new(record) });
    }
    let world = World::new(Script::default());
    let mut config = engine_config("gw-us");
    config.store.archive_batch_max = 7;
    let retention = config.store.terminal_retention_ms;
    let engine = Engine::start_with_journal(config, mocked_journal(&world), events, mocked_ports(&world))
        .expect("the engine starts");
    assert_eq!(engine.sweep(1_199 + retention).await, Ok((200, 0)));
    let mut archived = Vec::new();
    for event in &world.seen().journal {
        if let JournalEvent::Archived { uetrs } = event {
            assert!(!uetrs.is_empty() && uetrs.len() <= 7, "a batch of {}", uetrs.len());
            archived.extend(uetrs.iter().copied());
        }
    }
    archived.sort();
    done.sort();
    assert_eq!(archived, done, "every due record archived exactly once");
    {
        let state = engine.state();
        assert!(done.iter().all(|uetr| !state.remittances.contains_key(uetr)), "the archived left memory");
        assert!(open.iter().all(|uetr| state.remittances.contains_key(uetr)), "open ones stay");
    }
    for uetr in done.iter().step_by(37) {
        assert_eq!(engine.record(uetr).map(|r| r.status), Some(Status::Completed), "{uetr} read from the archive");
    }
    assert_eq!(engine.sweep(1_199 + retention).await, Ok((0, 0)), "nothing left to archive");
}
