//! Tests of the journal's checkpoints (segments, snapshots, crash points).

use super::*;
use crate::remittance::journal::{segment_temp_path, JOURNAL_FILE, MAGIC};
use crate::remittance::record::{Status, StatusChange};
use crate::remittance::testkit::{incoming_message, origin_record};

const SMALL: JournalOptions = JournalOptions { checkpoint_bytes: 1_024, checkpoints: false };

/// Groups of events like a gateway's: remittances created and moved on,
/// messages received, cursors, some archived.
fn history(groups: usize) -> Vec<Vec<JournalEvent>> {
    let mut out = Vec::new();
    let mut done = Vec::new();
    for i in 0..groups {
        let uetr = Uetr::new_random();
        let mut record = origin_record(uetr);
        record.idempotency_key = format!("key-{i}");
        let mut group = vec![JournalEvent::Created { remittance: Box::new(record) }];
        group.push(JournalEvent::Status {
            uetr,
            change: StatusChange::new(Status::Submitted, 2_000 + i as u64, None, ""),
            ledger: None,
            payout_reference: None,
        });
        if i % 2 == 0 {
            group.push(JournalEvent::Statuses {
                uetrs: vec![uetr],
                change: StatusChange::new(Status::Completed, 3_000 + i as u64, None, ""),
                ledger: None,
            });
            done.push(uetr);
        }
        let (message, _) = incoming_message(Uetr::new_random());
        group.push(JournalEvent::Inbox { message });
        group.push(JournalEvent::Cursor { height: i as u64 });
        if i % 5 == 4 {
            group.push(JournalEvent::Archived { uetrs: std::mem::take(&mut done) });
        }
        out.push(group);
    }
    out
}

fn replay_all(groups: &[Vec<JournalEvent>]) -> SnapshotBody {
    let mut state = State::default();
    for event in groups.iter().flatten() {
        state.apply(event.clone());
    }
    SnapshotBody::of(&state)
}

/// The state a restart on `dir` rebuilds.
fn restart(dir: &Path) -> Result<SnapshotBody, JournalError> {
    let (_, replayed) = Journal::open_with(&dir.join(JOURNAL_FILE), SMALL)?;
    let mut state = replayed.snapshot.unwrap_or_default();
    for event in replayed.events {
        state.apply(event);
    }
    Ok(SnapshotBody::of(&state))
}

async fn write(dir: &Path, groups: &[Vec<JournalEvent>]) {
    let (journal, _) = Journal::open_with(&dir.join(JOURNAL_FILE), SMALL).expect("open");
    for group in groups {
        journal.append(group).await.expect("append");
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The sequence number of the newest segment in `dir`.
fn newest_segment(dir: &Path) -> u64 {
    names(dir).iter().filter_map(|n| segment_seq(n)).max().expect("segments")
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.path().join(entry.file_name())).expect("copy");
    }
    to
}

#[tokio::test]
async fn a_full_segment_is_sealed_and_replay_reads_every_segment_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let groups = history(6);
    write(dir.path(), &groups).await;
    let files = names(dir.path());
    assert!(files.contains(&"journal.log".to_owned()) && files.contains(&"journal-1.log".to_owned()), "{files:?}");
    for seq in 0..files.len() as u64 {
        let size = std::fs::metadata(segment_path(dir.path(), seq)).expect("segment").len();
        // Sealed once past the limit: at most one group beyond it.
        assert!(seq + 1 == files.len() as u64 || size > SMALL.checkpoint_bytes, "segment {seq}: {size} bytes");
    }
    let (_, replayed) = Journal::open_with(&dir.path().join(JOURNAL_FILE), SMALL).expect("reopen");
    let flat: Vec<String> = groups.iter().flatten().map(|e| serde_json::to_string(e).expect("json")).collect();
    let back: Vec<String> = replayed.events.iter().map(|e| serde_json::to_string(e).expect("json")).collect();
    assert_eq!(back, flat);
    assert!(replayed.snapshot.is_none());
    assert_eq!(replayed.segments.len(), files.len());
}

#[tokio::test]
async fn a_checkpoint_then_restart_equals_replaying_the_whole_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let groups = history(12);
    write(dir.path(), &groups).await;
    let segments = names(dir.path()).len() as u64;
    let expected = replay_all(&groups);
    assert_eq!(restart(dir.path()).expect("restart"), expected, "before any checkpoint");
    let done = checkpoint(dir.path(), segments - 2, &mut |_| {}).expect("checkpoint").expect("worth it");
    assert_eq!(done.seq, segments - 2);
    let files = names(dir.path());
    assert_eq!(files[0], format!("journal-{}.log", segments - 1), "{files:?}");
    assert!(files.contains(&format!("snapshot-{}.snap", segments - 2)), "{files:?}");
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(restart(dir.path()).expect("restart"), expected, "after a checkpoint");
    // More writes, a second checkpoint on top of the first.
    let more = history(12 * (SNAPSHOT_GROWTH_FACTOR as usize + 1));
    write(dir.path(), &more).await;
    let last = newest_segment(dir.path());
    checkpoint(dir.path(), last - 1, &mut |_| {}).expect("checkpoint").expect("worth it");
    let all: Vec<Vec<JournalEvent>> = groups.into_iter().chain(more).collect();
    assert_eq!(restart(dir.path()).expect("restart"), replay_all(&all), "after two checkpoints");
}

/// Runs the checkpoint thread on `dir` after announcing `sealed`; with
/// `hang_up` the journal goes away right after the announcement.
fn checkpointer(dir: &Path, sealed: u64, urgent_bytes: u64, quiet: std::time::Duration, hang_up: bool) {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread_dir = dir.to_owned();
    let thread = std::thread::spawn(move || run_checkpointer(&thread_dir, &rx, urgent_bytes, quiet));
    tx.send(sealed).expect("checkpointer listening");
    if !hang_up {
        // Wait (bounded) for the snapshot the lull lets through.
        for _ in 0..3_000 {
            if snapshot_path(dir, sealed).exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    drop(tx);
    thread.join().expect("checkpointer thread");
}

#[tokio::test]
async fn a_busy_journal_defers_its_checkpoint_until_a_lull_or_the_urgent_size() {
    let hour = std::time::Duration::from_secs(3_600);
    for (urgent_bytes, quiet, hang_up, expect_snapshot) in [
        // Not urgent, no lull before the journal closes: deferred.
        (u64::MAX, hour, true, false),
        // Urgent: at once, lull or not.
        (0, hour, true, true),
        // Not urgent, then a lull: it runs.
        (u64::MAX, std::time::Duration::ZERO, false, true),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), &history(12)).await;
        let last = newest_segment(dir.path());
        checkpointer(dir.path(), last - 1, urgent_bytes, quiet, hang_up);
        assert_eq!(
            snapshot_path(dir.path(), last - 1).exists(),
            expect_snapshot,
            "urgent {urgent_bytes}, quiet {quiet:?}: {:?}",
            names(dir.path())
        );
    }
}

#[tokio::test]
async fn a_checkpoint_is_skipped_while_the_snapshot_outweighs_the_sealed_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let groups = history(12);
    write(dir.path(), &groups).await;
    let last = newest_segment(dir.path());
    checkpoint(dir.path(), last - 1, &mut |_| {}).expect("checkpoint").expect("worth it");
    // One small sealed segment after a big snapshot: not yet.
    write(dir.path(), &[vec![JournalEvent::Cursor { height: 99 }; 200]]).await;
    let snapshot = std::fs::metadata(snapshot_path(dir.path(), last - 1)).expect("snapshot").len();
    let sealed = std::fs::metadata(segment_path(dir.path(), last)).expect("segment").len();
    assert!(sealed < snapshot * SNAPSHOT_GROWTH_FACTOR, "{sealed} vs {snapshot}");
    assert_eq!(checkpoint(dir.path(), last, &mut |_| {}).expect("checkpoint"), None);
}

#[tokio::test]
async fn a_crash_at_every_step_of_a_checkpoint_leaves_a_startable_journal() {
    for with_previous in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut groups = history(10);
        write(dir.path(), &groups).await;
        if with_previous {
            let last = newest_segment(dir.path());
            checkpoint(dir.path(), last - 1, &mut |_| {}).expect("checkpoint").expect("worth it");
            let more = history(30);
            write(dir.path(), &more).await;
            groups.extend(more);
        }
        let expected = replay_all(&groups);
        let last = newest_segment(dir.path());
        let mut crashed = Vec::new();
        checkpoint(dir.path(), last - 1, &mut |step| crashed.push((step, copy_dir(dir.path()))))
            .expect("checkpoint")
            .expect("worth it");
        let steps: Vec<Step> = crashed.iter().map(|(step, _)| *step).collect();
        assert_eq!(steps, vec![Step::TempWritten, Step::Renamed, Step::FirstSegmentDeleted]);
        for (step, copy) in &crashed {
            let before = names(copy.path());
            match step {
                Step::TempWritten => assert!(before.iter().any(|n| n.ends_with(".snap.tmp")), "{before:?}"),
                Step::Renamed if with_previous => {
                    assert_eq!(before.iter().filter(|n| n.ends_with(".snap")).count(), 2, "{before:?}");
                }
                _ => {}
            }
            assert_eq!(restart(copy.path()).expect("startable"), expected, "crash at {step:?} ({with_previous})");
            let after = names(copy.path());
            assert!(!after.iter().any(|n| n.ends_with(".tmp")), "{step:?}: {after:?}");
            assert!(after.iter().filter(|n| n.ends_with(".snap")).count() <= 1, "{step:?}: {after:?}");
            // And again: the clean-up itself left a startable journal.
            assert_eq!(restart(copy.path()).expect("startable twice"), expected, "{step:?}");
        }
        assert_eq!(restart(dir.path()).expect("after the whole checkpoint"), expected);
    }
}

#[tokio::test]
async fn a_damaged_snapshot_stops_start_up_naming_the_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), &history(10)).await;
    let last = newest_segment(dir.path());
    checkpoint(dir.path(), last - 1, &mut |_| {}).expect("checkpoint").expect("worth it");
    let path = snapshot_path(dir.path(), last - 1);
    let good = std::fs::read(&path).expect("read");
    for (flip, offset, what) in [(HEADER_BYTES + 40, HEADER_BYTES, "payload"), (0, 0, "magic"), (12, 12, "seq")] {
        let mut bytes = good.clone();
        bytes[flip] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");
        let error = restart(dir.path()).expect_err(what);
        match &error {
            JournalError::Corrupt { path: named, offset: at, .. } => {
                assert_eq!((named, *at), (&path, offset as u64), "{what}: {error}");
            }
            other => panic!("{what}: {other}"),
        }
        assert!(error.to_string().contains(&format!("byte {offset}")), "{error}");
        assert_eq!(std::fs::read(&path).expect("read"), bytes, "{what}: the snapshot is left as it was");
    }
    std::fs::write(&path, &good[..good.len() - 1]).expect("truncate");
    let error = restart(dir.path()).expect_err("short");
    assert!(matches!(error, JournalError::Corrupt { offset: 20, .. }), "{error}");
}

#[tokio::test]
async fn a_missing_segment_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), &history(8)).await;
    let last = newest_segment(dir.path());
    assert!(last >= 3, "{last}");
    std::fs::remove_file(segment_path(dir.path(), 1)).expect("remove");
    let error = restart(dir.path()).expect_err("gap");
    let JournalError::Corrupt { path, offset, reason } = &error else { panic!("{error}") };
    assert_eq!((path, *offset), (&segment_path(dir.path(), 1), 0));
    assert!(reason.contains("journal-2.log"), "{reason}");
    // No snapshot and no segment 0 either.
    std::fs::remove_file(segment_path(dir.path(), 0)).expect("remove");
    let error = restart(dir.path()).expect_err("no start");
    assert!(matches!(&error, JournalError::Corrupt { path, .. } if path.ends_with(JOURNAL_FILE)), "{error}");
}

#[tokio::test]
async fn a_torn_tail_in_a_sealed_segment_is_damage_but_in_the_newest_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), &history(6)).await;
    let last = newest_segment(dir.path());
    let newest = segment_path(dir.path(), last);
    let mut bytes = std::fs::read(&newest).expect("read");
    bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
    std::fs::write(&newest, &bytes).expect("write");
    restart(dir.path()).expect("a torn newest segment is recovered");
    let sealed = segment_path(dir.path(), 0);
    let mut bytes = std::fs::read(&sealed).expect("read");
    let length = bytes.len() as u64;
    bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
    std::fs::write(&sealed, &bytes).expect("write");
    let error = restart(dir.path()).expect_err("sealed");
    assert!(
        matches!(&error, JournalError::Corrupt { path, offset, .. } if *path == sealed && *offset == length),
        "{error}"
    );
}

#[tokio::test]
async fn a_failed_rotation_leaves_no_newer_segment_and_a_torn_tail_stays_recoverable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let groups = history(6);
    {
        let (journal, _) = Journal::open_with(&dir.path().join(JOURNAL_FILE), SMALL).expect("open");
        // Segment 1 cannot be started: its temporary path is taken.
        std::fs::create_dir(segment_temp_path(dir.path(), 1)).expect("block");
        for group in &groups {
            journal.append(group).await.expect("an append while rotation fails");
        }
    }
    let blocker = segment_temp_path(dir.path(), 1);
    let segments: Vec<String> = names(dir.path()).into_iter().filter(|n| segment_seq(n).is_some()).collect();
    assert_eq!(segments, vec![JOURNAL_FILE.to_owned()], "the writer stayed on segment 0, the newest");
    let active = segment_path(dir.path(), 0);
    assert!(std::fs::metadata(&active).expect("segment").len() > SMALL.checkpoint_bytes);
    std::fs::remove_dir(&blocker).expect("unblock");
    // A crash tears the last write of the segment the writer stayed on.
    let mut bytes = std::fs::read(&active).expect("read");
    bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
    std::fs::write(&active, &bytes).expect("write");
    assert_eq!(restart(dir.path()).expect("a torn tail of the newest segment is cut"), replay_all(&groups));
    // Once the disk lets it, the writer rotates again.
    let more = history(6);
    write(dir.path(), &more).await;
    assert!(newest_segment(dir.path()) > 0);
    assert_eq!(restart(dir.path()).expect("rotated"), replay_all(&[groups, more].concat()));
}

#[tokio::test]
async fn a_crash_before_a_new_segment_is_renamed_into_place_leaves_a_startable_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let groups = history(6);
    write(dir.path(), &groups).await;
    let last = newest_segment(dir.path());
    // The next segment written under its temporary name, not renamed, and
    // the last write of the newest segment torn.
    std::fs::write(segment_temp_path(dir.path(), last + 1), MAGIC).expect("temp");
    let newest = segment_path(dir.path(), last);
    let mut bytes = std::fs::read(&newest).expect("read");
    bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
    std::fs::write(&newest, &bytes).expect("write");
    assert_eq!(restart(dir.path()).expect("startable"), replay_all(&groups));
    assert!(!names(dir.path()).iter().any(|n| n.ends_with(".tmp")), "{:?}", names(dir.path()));
}

#[test]
fn a_newer_snapshot_format_is_refused_and_the_header_is_pinned() {
    let state = State::default();
    let bytes = encode_snapshot(7, &state).expect("encode");
    assert_eq!(&bytes[..8], b"RMSNAP01");
    assert_eq!(&bytes[8..12], &1u32.to_le_bytes());
    assert_eq!(&bytes[12..20], &7u64.to_le_bytes());
    assert_eq!(
        std::str::from_utf8(&bytes[HEADER_BYTES..]).expect("utf-8"),
        r#"{"cursor":0,"remittances":[],"idempotency":[],"inbox":[],"incoming":[],"returns_due":[]}"#
    );
    let mut newer = bytes.clone();
    newer[8] = 2;
    let error = decode_snapshot(Path::new("snapshot-7.snap"), 7, &newer).err().expect("refused");
    assert!(error.to_string().contains("format version 2"), "{error}");
}
