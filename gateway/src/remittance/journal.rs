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
//! The journal is a sequence of segments in one directory: `journal.log`
//! is segment 0 (a journal written before segments existed is just that),
//! then `journal-<seq>.log`. Once the active segment grows past
//! [`JournalOptions::checkpoint_bytes`] the writer seals it and starts the
//! next one before acknowledging the write that crossed the limit;
//! `checkpoint.rs` folds sealed segments into a snapshot in the background
//! and opens the directory on start.
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
pub(super) const MAGIC: &[u8; 8] = b"RMJRNL01";
/// Default of [`JournalOptions::checkpoint_bytes`]: 64 MiB.
pub const JOURNAL_CHECKPOINT_BYTES_DEFAULT: u64 = 64 << 20;
/// Smallest [`JournalOptions::checkpoint_bytes`] accepted.
pub const JOURNAL_CHECKPOINT_BYTES_MIN: u64 = 1_024;
const _: () = assert!(JOURNAL_CHECKPOINT_BYTES_MIN <= JOURNAL_CHECKPOINT_BYTES_DEFAULT);
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

/// How a journal grows and compacts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalOptions {
    /// A segment longer than this is sealed and a new one started (before
    /// the write that crossed the limit is acknowledged); at least
    /// [`JOURNAL_CHECKPOINT_BYTES_MIN`].
    pub checkpoint_bytes: u64,
    /// Fold sealed segments into snapshots on a background thread (off only
    /// in tests that run checkpoints step by step).
    pub checkpoints: bool,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self { checkpoint_bytes: JOURNAL_CHECKPOINT_BYTES_DEFAULT, checkpoints: true }
    }
}

/// The file of segment `seq` in the journal directory `dir`: segment 0 is
/// [`JOURNAL_FILE`] (the single file of journals written before segments).
pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    if seq == 0 {
        dir.join(JOURNAL_FILE)
    } else {
        dir.join(format!("journal-{seq}.log"))
    }
}

/// Where segment `seq` is written before it is renamed into place.
pub(super) fn segment_temp_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("journal-{seq}.log.tmp"))
}

/// The sequence number of a segment file name, if it is one.
pub(super) fn segment_seq(name: &str) -> Option<u64> {
    if name == JOURNAL_FILE {
        return Some(0);
    }
    let seq = name.strip_prefix("journal-")?.strip_suffix(".log")?;
    // Only canonical numbers (no sign, no leading zero), so that one file
    // cannot stand for a sequence number another file has.
    (!seq.starts_with('0') && seq.bytes().all(|b| b.is_ascii_digit())).then(|| seq.parse().ok()).flatten()
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
    /// When this gateway received it (Unix ms); an entry whose transfer is
    /// never certified expires [`inbox_ttl_s`] after it. Entries journalled
    /// before the field existed read as 0 and expire at the first sweep.
    ///
    /// [`inbox_ttl_s`]: crate::remittance::engine::StoreOptions::inbox_ttl_ms
    #[serde(default)]
    pub received_at_ms: u64,
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
    /// Terminal remittances written (durably) to the archive before this
    /// event: they leave memory, and are read from the archive from now on.
    Archived {
        /// Which remittances.
        uetrs: Vec<Uetr>,
    },
    /// Inbox entries for transfers never certified, older than the inbox
    /// time to live: dropped.
    InboxExpired {
        /// Which entries.
        uetrs: Vec<Uetr>,
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
    /// Opens (or creates) the journal whose segment 0 is at `path` with the
    /// default options and returns every event after the newest snapshot
    /// (all of them when there is none); see [`Journal::open_with`].
    pub fn open(path: &Path) -> Result<(Self, Vec<JournalEvent>), JournalError> {
        Self::open_with(path, JournalOptions::default()).map(|(journal, replayed)| (journal, replayed.events))
    }

    /// Starts the writer thread on the active segment `seq` (`file`, open
    /// for appending at its end, `length` bytes long). Each segment sealed
    /// is announced on `sealed`.
    pub(super) fn start_writer(
        dir: &Path,
        active: Segment,
        options: JournalOptions,
        sealed: std::sync::mpsc::Sender<u64>,
    ) -> Result<Self, JournalError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer { dir: dir.to_owned(), active, checkpoint_bytes: options.checkpoint_bytes, sealed };
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| JournalError::Io { path: dir.to_owned(), source })?;
        Ok(Self { tx })
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

/// The segment the writer appends to.
pub(super) struct Segment {
    /// Its sequence number.
    pub(super) seq: u64,
    /// The file, positioned at its end.
    pub(super) file: File,
    /// Its length in bytes.
    pub(super) length: u64,
}

/// Opens the newest segment for appending and returns its events: created
/// (with its magic) when missing or empty, a torn last write cut off.
pub(super) fn open_active(path: &Path, seq: u64) -> Result<(Segment, Vec<JournalEvent>), JournalError> {
    let io = |source| JournalError::Io { path: path.to_owned(), source };
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
    let length = file.metadata().map_err(io)?.len();
    // A crash while the writer started this segment can leave it shorter
    // than its magic; nothing in it was ever acknowledged.
    let fresh = length < MAGIC.len() as u64 && {
        let mut head = Vec::new();
        file.read_to_end(&mut head).map_err(io)?;
        MAGIC.starts_with(&head)
    };
    let (events, valid_end) = if fresh {
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(MAGIC).map_err(io)?;
        file.sync_all().map_err(io)?;
        sync_parent(path).map_err(io)?;
        (Vec::new(), MAGIC.len() as u64)
    } else {
        replay(path, &mut file, length)?
    };
    let length = length.max(valid_end);
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
    Ok((Segment { seq, file, length: valid_end }, events))
}

/// Reads a sealed segment whole: it was complete when sealed, so any bad
/// frame (also a last one) is damage.
pub(super) fn read_sealed(path: &Path) -> Result<Vec<JournalEvent>, JournalError> {
    let io = |source| JournalError::Io { path: path.to_owned(), source };
    let mut file = File::open(path).map_err(io)?;
    let length = file.metadata().map_err(io)?.len();
    let (events, valid_end) = replay(path, &mut file, length)?;
    if valid_end < length {
        return Err(JournalError::Corrupt {
            path: path.to_owned(),
            offset: valid_end,
            reason: "a sealed segment (not the newest) ends in a bad frame: acknowledged events are damaged; \
                     restore the journal from a backup"
                .into(),
        });
    }
    Ok(events)
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

struct Writer {
    dir: PathBuf,
    active: Segment,
    checkpoint_bytes: u64,
    sealed: std::sync::mpsc::Sender<u64>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>) {
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
            // After a failed write the file's end is unknown: refuse
            // everything rather than acknowledge events that a replay would
            // not see.
            let result = match &failed {
                Some(reason) => Err(reason.clone()),
                None => self.write(&buffer).map_err(|e| {
                    let reason = format!("{}: {e}", segment_path(&self.dir, self.active.seq).display());
                    error!(%reason, "journal write failed; the gateway refuses new work until restarted");
                    failed = Some(reason.clone());
                    reason
                }),
            };
            if result.is_ok() && self.active.length > self.checkpoint_bytes {
                if let Err(reason) = self.rotate() {
                    error!(%reason, "journal rotation failed; the gateway refuses new work until restarted");
                    failed = Some(reason);
                }
            }
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        }
    }

    fn write(&mut self, buffer: &[u8]) -> std::io::Result<()> {
        self.active.file.write_all(buffer)?;
        self.active.file.sync_data()?;
        self.active.length += buffer.len() as u64;
        Ok(())
    }

    /// Seals the active segment and starts the next one (durable, with its
    /// magic). The next segment is written under a temporary name and renamed
    /// into place, so a failure before the rename leaves no newer segment
    /// behind: the writer stays on the current one, still the newest file (a
    /// restart treats a torn tail only in the newest as a torn write, and in
    /// any other as damage). Returns an error only when a segment that the
    /// writer does not use may be left as the newest; the writer then
    /// refuses further appends, as after a failed write.
    fn rotate(&mut self) -> Result<(), String> {
        let seq = self.active.seq + 1;
        let path = segment_path(&self.dir, seq);
        let temp = segment_temp_path(&self.dir, seq);
        let started = (|| {
            let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&temp)?;
            file.write_all(MAGIC)?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)?;
            Ok::<_, std::io::Error>(file)
        })();
        let file = match started {
            Ok(file) => file,
            Err(e) => {
                // Not renamed: the temporary file is no segment, and a start
                // removes it if this cannot.
                let _ = std::fs::remove_file(&temp);
                warn!(path = %path.display(), error = %e, "cannot start a new journal segment; staying on the current one");
                return Ok(());
            }
        };
        if let Err(e) = sync_parent(&path) {
            // Its name may not survive a crash: events acknowledged in it
            // could vanish. Take it back and stay on the current segment.
            let undone = std::fs::remove_file(&path).and_then(|()| sync_parent(&path));
            return match undone {
                Ok(()) => {
                    warn!(path = %path.display(), error = %e, "cannot make a new journal segment durable; staying on the current one");
                    Ok(())
                }
                Err(undo) => Err(format!(
                    "{}: a new segment is in place but neither durable ({e}) nor removable ({undo})",
                    path.display()
                )),
            };
        }
        let sealed = std::mem::replace(&mut self.active, Segment { seq, file, length: MAGIC.len() as u64 });
        // The checkpointer may have stopped (it only compacts).
        let _ = self.sealed.send(sealed.seq);
        Ok(())
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
#[path = "journal_tests.rs"]
mod tests;
