//! Tests of the journal's frames, replay and event encoding.

use super::*;

fn cursor(height: u64) -> JournalEvent {
    JournalEvent::Cursor { height }
}

fn heights(events: &[JournalEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| match e {
            JournalEvent::Cursor { height } => *height,
            other => panic!("unexpected event {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn appends_survive_reopen_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(JOURNAL_FILE);
    {
        let (journal, events) = Journal::open(&path).expect("open");
        assert!(events.is_empty());
        journal.append(&[cursor(1), cursor(2)]).await.expect("append");
        let appends: Vec<_> = (3..50)
            .map(|h| {
                let journal = journal.clone();
                tokio::spawn(async move { journal.append(&[cursor(h)]).await })
            })
            .collect();
        for append in appends {
            append.await.expect("task").expect("append");
        }
    }
    let (_, events) = Journal::open(&path).expect("reopen");
    let mut seen = heights(&events);
    assert_eq!(&seen[..2], &[1, 2]);
    seen.sort_unstable();
    assert_eq!(seen, (1..50).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_torn_last_frame_is_cut_off_and_appends_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(JOURNAL_FILE);
    {
        let (journal, _) = Journal::open(&path).expect("open");
        journal.append(&[cursor(1)]).await.expect("append");
        journal.append(&[cursor(2)]).await.expect("append");
    }
    let full = std::fs::metadata(&path).expect("metadata").len();
    // A crash in the middle of the second frame's write.
    let file = OpenOptions::new().write(true).open(&path).expect("open file");
    file.set_len(full - 3).expect("truncate");
    drop(file);
    {
        let (journal, events) = Journal::open(&path).expect("reopen");
        assert_eq!(heights(&events), vec![1]);
        journal.append(&[cursor(3)]).await.expect("append after the cut");
    }
    let (_, events) = Journal::open(&path).expect("reopen");
    assert_eq!(heights(&events), vec![1, 3]);
}

#[tokio::test]
async fn a_last_frame_failing_its_checksum_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(JOURNAL_FILE);
    {
        let (journal, _) = Journal::open(&path).expect("open");
        journal.append(&[cursor(1)]).await.expect("append");
        journal.append(&[cursor(2)]).await.expect("append");
    }
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 2;
    bytes[last] ^= 0x55;
    std::fs::write(&path, &bytes).expect("write");
    let (journal, events) = Journal::open(&path).expect("reopen");
    assert_eq!(heights(&events), vec![1]);
    journal.append(&[cursor(3)]).await.expect("appends continue after the cut");
    drop(journal);
    let (_, events) = Journal::open(&path).expect("reopen");
    assert_eq!(heights(&events), vec![1, 3]);
}

/// Byte offsets of the frames of `bytes` (a whole, valid journal).
fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = MAGIC.len();
    while at < bytes.len() {
        offsets.push(at);
        at += 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
    }
    offsets
}

/// A closed journal of `frames` frames, cursor events 1..=frames.
async fn journal_of_cursors(frames: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(JOURNAL_FILE);
    let (journal, _) = Journal::open(&path).expect("open");
    for height in 1..=frames {
        journal.append(&[cursor(height)]).await.expect("append");
    }
    (dir, path)
}

#[tokio::test]
async fn a_damaged_frame_before_valid_ones_stops_the_replay_and_cuts_nothing() {
    let (_dir, path) = journal_of_cursors(5).await;
    let good = std::fs::read(&path).expect("read");
    let offsets = frame_offsets(&good);
    assert_eq!(offsets.len(), 5);
    // One byte flipped in the payload of the third frame, and (another
    // case) in its length field.
    for (flip, what) in [(offsets[2] + 12, "payload"), (offsets[2] + 1, "length")] {
        let mut bytes = good.clone();
        bytes[flip] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");
        let error = Journal::open(&path).expect_err(what);
        match &error {
            JournalError::Corrupt { path: named, offset, reason } => {
                assert_eq!(named, &path, "{what}");
                assert_eq!(*offset, offsets[2] as u64, "{what}: the bad frame's offset");
                assert!(reason.contains(&format!("valid frame follows at byte {}", offsets[3])), "{what}: {reason}");
            }
            other => panic!("{what}: {other}"),
        }
        let text = error.to_string();
        assert!(text.contains(JOURNAL_FILE) && text.contains(&format!("byte {}", offsets[2])), "{text}");
        assert_eq!(std::fs::read(&path).expect("read"), bytes, "{what}: nothing was cut");
    }
}

#[tokio::test]
async fn a_torn_group_write_of_several_frames_is_cut_at_its_first() {
    let (_dir, path) = journal_of_cursors(3).await;
    let mut bytes = std::fs::read(&path).expect("read");
    let offsets = frame_offsets(&bytes);
    // The crash left the last group's frames with zeroed blocks in place
    // of their bytes: nothing valid follows the first bad frame.
    for byte in &mut bytes[offsets[1] + 3..] {
        *byte = 0;
    }
    std::fs::write(&path, &bytes).expect("write");
    let (_, events) = Journal::open(&path).expect("a torn tail is recovered");
    assert_eq!(heights(&events), vec![1]);
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), offsets[1] as u64);
}

#[test]
fn a_file_that_is_not_a_journal_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(JOURNAL_FILE);
    std::fs::write(&path, b"something else entirely").expect("write");
    let error = Journal::open(&path).expect_err("bad magic");
    assert!(error.to_string().contains("bad magic"), "{error}");
}

#[test]
fn adjacent_equal_status_changes_merge_and_order_is_kept() {
    use crate::remittance::record::Status;
    let (a, b, c) = (Uetr::new_random(), Uetr::new_random(), Uetr::new_random());
    let status = |uetr: Uetr, s: Status| JournalEvent::Status {
        uetr,
        change: StatusChange::new(s, 10, None, ""),
        ledger: None,
        payout_reference: None,
    };
    let events = vec![
        status(a, Status::Final),
        status(b, Status::Final),
        status(c, Status::Final),
        status(a, Status::PayoutPending),
        cursor(4),
        status(b, Status::PayoutPending),
    ];
    let compacted = compact(events);
    assert_eq!(compacted.len(), 4, "{compacted:?}");
    let JournalEvent::Statuses { uetrs, change, .. } = &compacted[0] else { panic!("{compacted:?}") };
    assert_eq!((uetrs.clone(), change.status), (vec![a, b, c], Status::Final));
    assert!(matches!(&compacted[1], JournalEvent::Status { uetr, .. } if *uetr == a));
    assert!(matches!(&compacted[2], JournalEvent::Cursor { height: 4 }));
    assert!(matches!(&compacted[3], JournalEvent::Status { uetr, .. } if *uetr == b));
}

#[test]
fn inbox_messages_are_journalled_as_text() {
    let message = InboxMessage {
        uetr: Uetr::new_random(),
        origin: ParticipantId::new("gw-us").expect("id"),
        salt: vec![7; 32],
        message: br#"{"a":"b"}"#.to_vec(),
        received_at_ms: 5,
    };
    let json = serde_json::to_string(&JournalEvent::Inbox { message: message.clone() }).expect("json");
    assert!(json.contains(r#""message":"{\"a\":\"b\"}""#), "{json}");
    let back: JournalEvent = serde_json::from_str(&json).expect("parse");
    let JournalEvent::Inbox { message: back } = back else { panic!("not an inbox event") };
    assert_eq!(back, message);
}

#[test]
fn payout_events_round_trip_and_old_journals_still_parse() {
    let uetr = Uetr::new_random();
    let events = vec![
        JournalEvent::PayoutStarted { uetrs: vec![uetr], at_ms: 7 },
        JournalEvent::ReturnDue { uetr, reason_code: "AC04".into(), reason: "closed".into() },
    ];
    let json = serde_json::to_string(&events).expect("json");
    assert_eq!(
        json,
        format!(
            r#"[{{"event":"payout_started","uetrs":["{uetr}"],"at_ms":7}},{{"event":"return_due","uetr":"{uetr}","reason_code":"AC04","reason":"closed"}}]"#
        )
    );
    let back: Vec<JournalEvent> = serde_json::from_str(&json).expect("parse");
    assert!(matches!(&back[0], JournalEvent::PayoutStarted { uetrs, at_ms: 7 } if uetrs == &vec![uetr]));
    assert!(matches!(&back[1], JournalEvent::ReturnDue { reason_code, .. } if reason_code == "AC04"));
    // A frame written before these events existed.
    let old =
        format!(r#"[{{"event":"paid_out","uetr":"{uetr}","reference":"SIM-1"}},{{"event":"cursor","height":3}}]"#);
    let back: Vec<JournalEvent> = serde_json::from_str(&old).expect("an old frame parses");
    assert!(matches!(&back[0], JournalEvent::PaidOut { reference, .. } if reference == "SIM-1"));
}
