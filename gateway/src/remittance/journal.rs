//! The gateway's own durable record of remittances: an append-only journal
//! of events in one file, written by one writer thread that groups concurrent
//! appends into one write and one `fdatasync` (group commit). An append
//! returns once its events are durable. On start the journal is replayed to
//! rebuild the in-memory state.
//!
//! A journal is a log, not a key-value map: a file costs one copy of the
//! bytes per append, where a sled tree of large values rewrote its leaf
//! pages (measured: the writer spent two thirds of its time in sled's page
//! writes). Callers serialise their events before handing them over, so the
//! events themselves move into the in-memory state without a copy.
//!
//! File layout: the 8-byte magic `RMJRNL01`, then frames, each a `u32`
//! little-endian payload length, the payload's CRC-32 (`u32` LE) and the
//! payload (a JSON array of events). A crash can tear only the last group
//! write, which was never acknowledged: when the first frame that is short
//! or fails its CRC has no valid frame after it, replay truncates the file
//! there. A bad frame *followed* by valid ones is damage to acknowledged
//! events, not a torn write: start-up stops with an error naming the file
//! and the frame's byte offset, and nothing is cut.
//!
//! Customer data lives here (this is the gateway's private store), never on
//! the shared ledger.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use remit_settlement::hash::Digest32;
use remit_settlement::ids::Uetr;
use remit_settlement::money::Money;
use remit_settlement::ParticipantId;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

use super::record::{LedgerPosition, Remittance, StatusChange};

/// The journal's file name inside the gateway directory.
pub const JOURNAL_FILE: &str = "journal.log";
/// First bytes of a journal file.
const MAGIC: &[u8; 8] = b"RMJRNL01";
/// Largest frame accepted on replay (a group of one append).
const FRAME_BYTES_MAX: u32 = 1 << 30;
/// Most bytes written in one group commit.
const GROUP_BYTES_MAX: usize = 64 << 20;

/// A journal fault.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file could not be read or written.
    #[error("journal {path}: {source}")]
    Io {
        /// The journal file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A stored frame does not decode.
    #[error("journal {path}: frame at byte {offset}: {reason}")]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// Where the frame starts.
        offset: u64,
        /// Why.
        reason: String,
    },
    /// Events could not be serialised.
    #[error("journal: cannot encode events: {0}")]
    Encode(String),
    /// The last write failed; the journal refuses further appends.
    #[error("journal write failed: {0}")]
    Write(String),
    /// The writer thread stopped.
    #[error("journal writer stopped")]
    Stopped,
}

/// A payment message as received from an origin gateway, not yet matched to
/// a certified transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxMessage {
    /// The transfer it is for.
    pub uetr: Uetr,
    /// The sender.
    pub origin: ParticipantId,
    /// Salt of the commitment.
    #[serde(with = "hex_bytes")]
    pub salt: Vec<u8>,
    /// The message bytes the commitment covers: UTF-8 JSON (checked on
    /// receipt), journalled as a string.
    #[serde(with = "text_bytes")]
    pub message: Vec<u8>,
}

/// A certified transfer to this gateway whose payment message is not yet
/// in hand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingTransfer {
    /// The transfer.
    pub uetr: Uetr,
    /// Who owes it.
    pub origin: ParticipantId,
    /// Its amount.
    pub amount: Money,
    /// The ledger's commitment to the message.
    pub commitment: Digest32,
    /// Where it is on the ledger.
    pub ledger: LedgerPosition,
}

/// One journal event.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JournalEvent {
    /// A new remittance (origin: created by a client; destination: a
    /// certified transfer with its verified message).
    Created {
        /// The record as first stored.
        remittance: Box<Remittance>,
    },
    /// A certified transfer to this gateway matched the payment message
    /// journalled before it (an `inbox` event): the destination record is
    /// built from that message, so the parties are not journalled twice.
    Accepted {
        /// Which remittance.
        uetr: Uetr,
        /// Where its transfer is on the ledger.
        ledger: LedgerPosition,
        /// When it was accepted (its `final` status).
        at_ms: u64,
    },
    /// A status change.
    Status {
        /// Which remittance.
        uetr: Uetr,
        /// The change.
        change: StatusChange,
        /// The ledger block, when the change comes from the ledger.
        ledger: Option<LedgerPosition>,
        /// The payout reference, when paid.
        payout_reference: Option<String>,
    },
    /// The same status change for many remittances (a submitted batch, the
    /// transfers of one certified block): one event instead of one each.
    Statuses {
        /// Which remittances, in order.
        uetrs: Vec<Uetr>,
        /// The change, applied to each.
        change: StatusChange,
        /// The ledger block, when the change comes from the ledger.
        ledger: Option<LedgerPosition>,
    },
    /// The bank is about to be asked to pay these remittances (destination
    /// side; each moves to `payout_pending`). Durable before the bank is
    /// called, so that a restart asks the bank for the outcome by UETR
    /// instead of paying again.
    PayoutStarted {
        /// Which remittances.
        uetrs: Vec<Uetr>,
        /// When (their `payout_pending` status).
        at_ms: u64,
    },
    /// A return report is due (destination side): the bank refused the
    /// payout, or no valid payment message came. Journalled before the report
    /// is sent to the ledger; after a restart it is sent again until the
    /// ledger holds a report for the transfer.
    ReturnDue {
        /// Which transfer.
        uetr: Uetr,
        /// ISO 20022 return reason code (already checked: `NARR` replaces an
        /// invalid one).
        reason_code: String,
        /// Human-readable reason, kept off the ledger.
        reason: String,
    },
    /// The destination's bank paid the beneficiary (destination side). Also
    /// the journalled record that a completion report is due: until the
    /// ledger's report is certified it is sent again after a restart.
    PaidOut {
        /// Which remittance.
        uetr: Uetr,
        /// The bank's reference for the payout.
        reference: String,
    },
    /// The destination acknowledged the payment message (origin side).
    MessageDelivered {
        /// Which remittance.
        uetr: Uetr,
    },
    /// A payment message arrived from an origin (destination side).
    Inbox {
        /// The message.
        message: InboxMessage,
    },
    /// A certified transfer to this gateway awaits its message.
    Incoming {
        /// The transfer.
        transfer: IncomingTransfer,
    },
    /// The ledger follower processed every certified block up to `height`.
    Cursor {
        /// The last processed height.
        height: u64,
    },
}

/// Merges runs of adjacent status events that carry the same change and
/// ledger position (and no payout reference) into one `Statuses` event.
/// Only adjacent events merge, so each remittance's events keep their order.
pub fn compact(events: Vec<JournalEvent>) -> Vec<JournalEvent> {
    let mut out: Vec<JournalEvent> = Vec::with_capacity(events.len());
    for event in events {
        let JournalEvent::Status { uetr, change, ledger, payout_reference: None } = event else {
            out.push(event);
            continue;
        };
        match out.last_mut() {
            Some(JournalEvent::Statuses { uetrs, change: last_change, ledger: last_ledger })
                if *last_change == change && *last_ledger == ledger =>
            {
                uetrs.push(uetr);
            }
            Some(JournalEvent::Status {
                uetr: first,
                change: last_change,
                ledger: last_ledger,
                payout_reference: None,
            }) if *last_change == change && *last_ledger == ledger => {
                let first = *first;
                let _ = out.pop();
                out.push(JournalEvent::Statuses { uetrs: vec![first, uetr], change, ledger });
            }
            _ => out.push(JournalEvent::Status { uetr, change, ledger, payout_reference: None }),
        }
    }
    out
}

struct Request {
    payload: Vec<u8>,
    done: oneshot::Sender<Result<(), String>>,
}

/// Handle to the journal writer.
#[derive(Clone, Debug)]
pub struct Journal {
    tx: mpsc::UnboundedSender<Request>,
}

#[async_trait::async_trait]
impl super::ports::JournalPort for Journal {
    async fn append(&self, events: &[JournalEvent]) -> Result<(), JournalError> {
        Journal::append(self, events).await
    }
}

impl Journal {
    /// Opens (or creates) the journal file at `path`, returns every stored
    /// event in order and starts the writer thread. A torn last frame (a
    /// group write cut by a crash, never acknowledged) is cut off.
    pub fn open(path: &Path) -> Result<(Self, Vec<JournalEvent>), JournalError> {
        let io = |source| JournalError::Io { path: path.to_owned(), source };
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
        let length = file.metadata().map_err(io)?.len();
        let (events, valid_end) = if length == 0 {
            file.write_all(MAGIC).map_err(io)?;
            file.sync_all().map_err(io)?;
            sync_parent(path).map_err(io)?;
            (Vec::new(), MAGIC.len() as u64)
        } else {
            replay(path, &mut file, length)?
        };
        if valid_end < length {
            warn!(
                path = %path.display(),
                dropped_bytes = length - valid_end,
                "journal ends in an incomplete write (a crash during an unacknowledged append); cutting it off"
            );
            file.set_len(valid_end).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::Start(valid_end)).map_err(io)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let owned = path.to_owned();
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || write_loop(&owned, file, rx))
            .map_err(io)?;
        Ok((Self { tx }, events))
    }

    /// Appends events; returns once they are durable. The events are
    /// serialised before this first awaits.
    pub async fn append(&self, events: &[JournalEvent]) -> Result<(), JournalError> {
        if events.is_empty() {
            return Ok(());
        }
        let payload = serde_json::to_vec(events).map_err(|e| JournalError::Encode(e.to_string()))?;
        let (done, wait) = oneshot::channel();
        self.tx.send(Request { payload, done }).map_err(|_| JournalError::Stopped)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(JournalError::Write(reason)),
            Err(_) => Err(JournalError::Stopped),
        }
    }
}

/// Reads every frame; returns the events and where the valid part ends.
fn replay(path: &Path, file: &mut File, length: u64) -> Result<(Vec<JournalEvent>, u64), JournalError> {
    let corrupt = |offset: u64, reason: String| JournalError::Corrupt { path: path.to_owned(), offset, reason };
    let mut reader = BufReader::with_capacity(1 << 20, &mut *file);
    let mut magic = [0u8; 8];
    if reader.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return Err(corrupt(0, "not a remit gateway journal (bad magic)".into()));
    }
    let mut events = Vec::new();
    let mut offset = MAGIC.len() as u64;
    let mut payload = Vec::new();
    let failure = loop {
        let mut head = [0u8; 8];
        if offset == length {
            break None;
        }
        if offset + 8 > length || reader.read_exact(&mut head).is_err() {
            break Some("incomplete frame header");
        }
        let size = u32::from_le_bytes(head[..4].try_into().expect("4 of 8 bytes"));
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 of 8 bytes"));
        if size > FRAME_BYTES_MAX || offset + 8 + u64::from(size) > length {
            break Some("frame runs past the end of the file");
        }
        payload.resize(size as usize, 0);
        if reader.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
            break Some("frame fails its checksum");
        }
        let group: Vec<JournalEvent> = serde_json::from_slice(&payload).map_err(|e| corrupt(offset, e.to_string()))?;
        events.extend(group);
        offset += 8 + u64::from(size);
    };
    if let Some(reason) = failure {
        drop(reader);
        if let Some(next) = valid_frame_after(file, offset, length)
            .map_err(|source| JournalError::Io { path: path.to_owned(), source })?
        {
            return Err(corrupt(
                offset,
                format!(
                    "{reason}, but a valid frame follows at byte {next}: acknowledged events are damaged \
                     (not a torn last write); nothing was cut: restore the journal from a backup"
                ),
            ));
        }
    }
    Ok((events, offset))
}

/// Where the first valid frame after a bad one at `bad` starts, if any. A
/// torn write is at most one group (the writer stops adding requests past
/// [`GROUP_BYTES_MAX`]); a longer remainder is damage whatever it holds.
fn valid_frame_after(file: &mut File, bad: u64, length: u64) -> std::io::Result<Option<u64>> {
    let remaining = length - bad;
    if remaining > 2 * GROUP_BYTES_MAX as u64 {
        return Ok(Some(length));
    }
    file.seek(SeekFrom::Start(bad))?;
    let mut rest = Vec::with_capacity(usize::try_from(remaining).unwrap_or(0));
    file.read_to_end(&mut rest)?;
    Ok(first_valid_frame(&rest, 1).map(|at| bad + at as u64))
}

/// The first position from `from` in `bytes` where a whole non-empty frame
/// with a matching CRC starts. (An empty frame is what a run of zero bytes
/// looks like, and the writer never writes one.)
fn first_valid_frame(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(8)).find(|&at| {
        let size = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        size > 0 && at + 8 + size <= bytes.len() && crc32fast::hash(&bytes[at + 8..at + 8 + size]) == crc
    })
}

/// Makes a newly created file's directory entry durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

fn write_loop(path: &Path, mut file: File, mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut buffer = Vec::with_capacity(1 << 20);
    let mut failed: Option<String> = None;
    while let Some(first) = rx.blocking_recv() {
        buffer.clear();
        let mut waiters = Vec::new();
        let mut next = Some(first);
        while let Some(request) = next.take() {
            let size = u32::try_from(request.payload.len()).unwrap_or(u32::MAX);
            buffer.extend_from_slice(&size.to_le_bytes());
            buffer.extend_from_slice(&crc32fast::hash(&request.payload).to_le_bytes());
            buffer.extend_from_slice(&request.payload);
            waiters.push(request.done);
            if buffer.len() < GROUP_BYTES_MAX {
                next = rx.try_recv().ok();
            }
        }
        // After a failed write the file's end is unknown: refuse everything
        // rather than acknowledge events that a replay would not see.
        let result = match &failed {
            Some(reason) => Err(reason.clone()),
            None => file.write_all(&buffer).and_then(|()| file.sync_data()).map_err(|e| {
                let reason = format!("{}: {e}", path.display());
                error!(%reason, "journal write failed; the gateway refuses new work until restarted");
                failed = Some(reason.clone());
                reason
            }),
        };
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        hex::decode(text).map_err(|_| serde::de::Error::custom("expected hex digits"))
    }
}

mod text_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        let text = std::str::from_utf8(bytes).map_err(|_| serde::ser::Error::custom("message is not UTF-8"))?;
        serializer.serialize_str(text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        Ok(String::deserialize(deserializer)?.into_bytes())
    }
}

#[cfg(test)]
mod tests {
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
                    assert!(
                        reason.contains(&format!("valid frame follows at byte {}", offsets[3])),
                        "{what}: {reason}"
                    );
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
}
