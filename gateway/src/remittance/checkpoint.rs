//! Checkpoints: the journal's sealed segments folded into a snapshot of the
//! live state, so that start-up time and disk stay bounded.
//!
//! Directory layout (the gateway directory):
//! - `journal.log` (segment 0), `journal-<seq>.log`: the segments, in order;
//!   the newest is the one written to.
//! - `snapshot-<seq>.snap`: the state after every event of segments
//!   `0..=seq`. Header (32 bytes): the magic `RMSNAP01`, the format version
//!   (`u32` LE), `seq` (`u64` LE), the payload length (`u64` LE), the
//!   payload's CRC-32 (`u32` LE); then the payload (JSON, see
//!   [`SnapshotBody`]).
//! - `snapshot-<seq>.snap.tmp`: a snapshot being written.
//!
//! A checkpoint runs on its own thread, at the lowest CPU priority, once no
//! segment has been sealed for [`CHECKPOINT_QUIET`] (or at once when the
//! sealed segments not yet in a snapshot reach [`URGENT_SEGMENTS`]
//! segments), if those segments outweigh [`SNAPSHOT_GROWTH_FACTOR`] times
//! the newest snapshot. It
//! builds the new snapshot from the previous snapshot and the sealed
//! segments through the pure [`State::apply`], never from the engine's live
//! state (no lock taken, no torn view), writes it to the temp file, fsyncs
//! it, renames it into place, fsyncs the directory, and only then deletes
//! the segments it covers and the older snapshot.
//!
//! Start-up: leftover temp files are removed, the newest snapshot is loaded
//! (a damaged one stops start-up naming the file and byte offset), older
//! snapshots and covered segments (a checkpoint cut short while deleting)
//! are removed, and the later segments are replayed in order. A gap in
//! their sequence stops start-up naming the missing file; only the newest
//! segment may end in a torn write, which is cut off.
//!
//! **Invariant:** at every step of a checkpoint the directory holds a
//! snapshot and segments from which the same state is rebuilt.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use remit_settlement::ids::Uetr;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::journal::{
    open_active, read_sealed, segment_path, segment_seq, InboxMessage, IncomingTransfer, Journal, JournalError,
    JournalEvent, JournalOptions,
};
use super::record::{Remittance, Role};
use super::state::State;

/// First bytes of a snapshot file.
const SNAPSHOT_MAGIC: &[u8; 8] = b"RMSNAP01";
/// Version of the snapshot format written (and the only one read).
pub const SNAPSHOT_VERSION: u32 = 1;
/// Bytes of the snapshot header.
const HEADER_BYTES: usize = 32;

/// The snapshot file covering segments `0..=seq`.
pub fn snapshot_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("snapshot-{seq}.snap"))
}

fn temp_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("snapshot-{seq}.snap.tmp"))
}

/// What [`Journal::open_with`] found on disk.
pub struct Replayed {
    /// The state stored by the newest snapshot, if there is one.
    pub(super) snapshot: Option<State>,
    /// The snapshot file loaded.
    pub snapshot_path: Option<PathBuf>,
    /// Every event after the snapshot, in order.
    pub events: Vec<JournalEvent>,
    /// Segments replayed (their files), oldest first.
    pub segments: Vec<PathBuf>,
}

impl std::fmt::Debug for Replayed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayed")
            .field("snapshot_path", &self.snapshot_path)
            .field("events", &self.events.len())
            .field("segments", &self.segments)
            .finish()
    }
}

impl Journal {
    /// Opens (or creates) the journal in the directory of `path` (its
    /// segment 0), loads the newest snapshot, reads the later segments, and
    /// starts the writer and the checkpointer threads.
    pub fn open_with(path: &Path, options: JournalOptions) -> Result<(Self, Replayed), JournalError> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| JournalError::Io { path, source }
        };
        let layout = Layout::scan(&dir).map_err(io(&dir))?;
        for temp in &layout.temps {
            warn!(path = %temp.display(), "removing a snapshot or segment left half-written by a crash");
            std::fs::remove_file(temp).map_err(io(temp))?;
        }
        let newest = layout.snapshots.last().copied();
        let snapshot = newest.map(|seq| read_snapshot(&snapshot_path(&dir, seq), seq)).transpose()?;
        let first = newest.map_or(0, |seq| seq + 1);
        // Leftovers of a checkpoint cut short after its rename.
        let mut removed = !layout.temps.is_empty();
        for seq in layout.snapshots.iter().filter(|&&seq| Some(seq) != newest) {
            std::fs::remove_file(snapshot_path(&dir, *seq)).map_err(io(&snapshot_path(&dir, *seq)))?;
            removed = true;
        }
        for seq in layout.segments.range(..first) {
            std::fs::remove_file(segment_path(&dir, *seq)).map_err(io(&segment_path(&dir, *seq)))?;
            removed = true;
        }
        if removed {
            File::open(&dir).and_then(|d| d.sync_all()).map_err(io(&dir))?;
        }
        let later: Vec<u64> = layout.segments.range(first..).copied().collect();
        let last = check_sequence(&dir, first, newest.is_some(), &later)?;
        let mut events = Vec::new();
        let mut segments = Vec::new();
        for seq in first..last {
            let path = segment_path(&dir, seq);
            events.extend(read_sealed(&path)?);
            segments.push(path);
        }
        let active_path = segment_path(&dir, last);
        let (active, tail) = open_active(&active_path, last)?;
        events.extend(tail);
        segments.push(active_path);
        let (sealed_tx, sealed_rx) = std::sync::mpsc::channel();
        if last > first {
            // Sealed segments from before the restart.
            let _ = sealed_tx.send(last - 1);
        }
        if options.checkpoints {
            let checkpoint_dir = dir.clone();
            let urgent_bytes = options.checkpoint_bytes.saturating_mul(URGENT_SEGMENTS);
            std::thread::Builder::new()
                .name("journal-checkpoint".into())
                .spawn(move || run_checkpointer(&checkpoint_dir, &sealed_rx, urgent_bytes, CHECKPOINT_QUIET))
                .map_err(io(&dir))?;
        }
        let journal = Journal::start_writer(&dir, active, options, sealed_tx)?;
        let snapshot_path = newest.map(|seq| snapshot_path(&dir, seq));
        Ok((journal, Replayed { snapshot, snapshot_path, events, segments }))
    }
}

/// Checks that `later` (the segments after the snapshot, ascending) is
/// `first, first + 1, ...` without a gap; returns the newest segment's
/// sequence number (`first` when there is none yet).
fn check_sequence(dir: &Path, first: u64, has_snapshot: bool, later: &[u64]) -> Result<u64, JournalError> {
    for (expected, &seq) in (first..).zip(later) {
        if seq != expected {
            return Err(missing(dir, expected, seq));
        }
    }
    match later.last() {
        Some(&last) => Ok(last),
        // A snapshot is only written after the writer started the segment
        // after it: that segment's absence means it was lost.
        None if has_snapshot => Err(JournalError::Corrupt {
            path: segment_path(dir, first),
            offset: 0,
            reason: format!(
                "segment missing: the snapshot covers segments up to {}, and no later segment exists",
                first - 1
            ),
        }),
        None => Ok(first),
    }
}

fn missing(dir: &Path, expected: u64, found: u64) -> JournalError {
    JournalError::Corrupt {
        path: segment_path(dir, expected),
        offset: 0,
        reason: format!(
            "segment missing: the journal continues at {} (events in between are lost); restore the journal \
             from a backup",
            segment_path(dir, found).display()
        ),
    }
}

/// The journal files of a directory.
#[derive(Debug, Default)]
struct Layout {
    segments: BTreeSet<u64>,
    snapshots: BTreeSet<u64>,
    temps: Vec<PathBuf>,
}

impl Layout {
    fn scan(dir: &Path) -> std::io::Result<Self> {
        let mut layout = Self::default();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(seq) = segment_seq(name) {
                layout.segments.insert(seq);
            } else if let Some(seq) = snapshot_seq(name) {
                layout.snapshots.insert(seq);
            } else if (name.starts_with("snapshot-") && name.ends_with(".snap.tmp"))
                || (name.starts_with("journal-") && name.ends_with(".log.tmp"))
            {
                layout.temps.push(entry.path());
            }
        }
        Ok(layout)
    }
}

fn snapshot_seq(name: &str) -> Option<u64> {
    let seq = name.strip_prefix("snapshot-")?.strip_suffix(".snap")?;
    (!seq.is_empty() && (seq == "0" || !seq.starts_with('0')) && seq.bytes().all(|b| b.is_ascii_digit()))
        .then(|| seq.parse().ok())
        .flatten()
}

/// The state a snapshot stores: every map of [`State`] that events build
/// (not the engine's caches), sorted so that equal states encode equally.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct SnapshotBody {
    /// The last certified block processed.
    pub(super) cursor: u64,
    /// Records not archived, by UETR.
    pub(super) remittances: Vec<Remittance>,
    /// Idempotency keys of records not archived: client, key, UETR.
    pub(super) idempotency: Vec<(String, String, Uetr)>,
    /// Payment messages waiting for their transfer.
    pub(super) inbox: Vec<InboxMessage>,
    /// Certified transfers waiting for their message.
    pub(super) incoming: Vec<IncomingTransfer>,
    /// Return reports due: UETR, reason code, reason.
    pub(super) returns_due: Vec<(Uetr, String, String)>,
}

impl SnapshotBody {
    /// The snapshot of `state` (tests compare states by it).
    #[cfg(test)]
    pub(super) fn of(state: &State) -> Self {
        let mut remittances: Vec<Remittance> = state.remittances.values().map(|r| (**r).clone()).collect();
        remittances.sort_by_key(|r| r.uetr);
        let mut idempotency: Vec<(String, String, Uetr)> =
            state.idempotency.iter().map(|((client, key), uetr)| (client.clone(), key.clone(), *uetr)).collect();
        idempotency.sort();
        let mut inbox: Vec<InboxMessage> = state.inbox.values().cloned().collect();
        inbox.sort_by_key(|m| m.uetr);
        let mut incoming: Vec<IncomingTransfer> = state.incoming.values().cloned().collect();
        incoming.sort_by_key(|t| t.uetr);
        let mut returns_due: Vec<(Uetr, String, String)> =
            state.returns_due.iter().map(|(uetr, (code, reason))| (*uetr, code.clone(), reason.clone())).collect();
        returns_due.sort();
        Self { cursor: state.cursor, remittances, idempotency, inbox, incoming, returns_due }
    }

    /// The state this snapshot stores.
    pub(super) fn into_state(self) -> State {
        let mut state = State { cursor: self.cursor, ..State::default() };
        for record in self.remittances {
            if record.role == Role::Origin {
                state
                    .by_client
                    .entry(record.client_id.clone())
                    .or_default()
                    .insert((record.created_at_ms(), record.uetr));
            }
            state.remittances.insert(record.uetr, Box::new(record));
        }
        state.idempotency =
            self.idempotency.into_iter().map(|(client, key, uetr)| ((client, key), uetr)).collect::<HashMap<_, _>>();
        for message in self.inbox {
            state.inbox.insert(message.uetr, message);
        }
        for transfer in self.incoming {
            state.incoming.insert(transfer.uetr, transfer);
        }
        for (uetr, code, reason) in self.returns_due {
            state.returns_due.insert(uetr, (code, reason));
        }
        state
    }
}

/// [`SnapshotBody`] borrowed from a state, for encoding without a copy of
/// the records (the same JSON).
#[derive(Serialize)]
struct SnapshotRef<'a> {
    cursor: u64,
    remittances: Vec<&'a Remittance>,
    idempotency: Vec<(&'a str, &'a str, Uetr)>,
    inbox: Vec<&'a InboxMessage>,
    incoming: Vec<&'a IncomingTransfer>,
    returns_due: Vec<(Uetr, &'a str, &'a str)>,
}

impl<'a> SnapshotRef<'a> {
    fn of(state: &'a State) -> Self {
        let mut remittances: Vec<&Remittance> = state.remittances.values().map(|r| &**r).collect();
        remittances.sort_by_key(|r| r.uetr);
        let mut idempotency: Vec<(&str, &str, Uetr)> =
            state.idempotency.iter().map(|((client, key), uetr)| (client.as_str(), key.as_str(), *uetr)).collect();
        idempotency.sort();
        let mut inbox: Vec<&InboxMessage> = state.inbox.values().collect();
        inbox.sort_by_key(|m| m.uetr);
        let mut incoming: Vec<&IncomingTransfer> = state.incoming.values().collect();
        incoming.sort_by_key(|t| t.uetr);
        let mut returns_due: Vec<(Uetr, &str, &str)> =
            state.returns_due.iter().map(|(uetr, (code, reason))| (*uetr, code.as_str(), reason.as_str())).collect();
        returns_due.sort();
        Self { cursor: state.cursor, remittances, idempotency, inbox, incoming, returns_due }
    }
}

/// Counts and checksums what passes through.
struct CrcWriter<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes snapshot `seq` of `state` to `out` (header and payload, the
/// payload streamed, the header filled in after it); returns its size.
pub(super) fn write_snapshot<W: Write + Seek>(out: &mut W, seq: u64, state: &State) -> std::io::Result<u64> {
    out.write_all(&[0u8; HEADER_BYTES])?;
    // The buffer sits in front of the checksum: serde_json writes token by
    // token, and a CRC (and a write call) per token cost a fifth of a
    // checkpoint (measured); per megabyte they cost nothing.
    let mut body = CrcWriter { inner: &mut *out, hasher: Default::default(), bytes: 0 };
    let mut buffered = BufWriter::with_capacity(1 << 20, &mut body);
    serde_json::to_writer(&mut buffered, &SnapshotRef::of(state)).map_err(std::io::Error::other)?;
    buffered.flush()?;
    drop(buffered);
    let (crc, length) = (body.hasher.clone().finalize(), body.bytes);
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(SNAPSHOT_MAGIC);
    header.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    header.extend_from_slice(&seq.to_le_bytes());
    header.extend_from_slice(&length.to_le_bytes());
    header.extend_from_slice(&crc.to_le_bytes());
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&header)?;
    Ok(HEADER_BYTES as u64 + length)
}

/// The bytes of snapshot `seq` of `state` (header and payload).
#[cfg(test)]
pub(super) fn encode_snapshot(seq: u64, state: &State) -> Result<Vec<u8>, JournalError> {
    let mut out = std::io::Cursor::new(Vec::new());
    write_snapshot(&mut out, seq, state).map_err(|e| JournalError::Encode(e.to_string()))?;
    Ok(out.into_inner())
}

/// Loads snapshot `seq` from `path`; any damage is an error naming the file
/// and the byte offset of the bad part.
pub(super) fn read_snapshot(path: &Path, seq: u64) -> Result<State, JournalError> {
    let bytes = std::fs::read(path).map_err(|source| JournalError::Io { path: path.to_owned(), source })?;
    decode_snapshot(path, seq, &bytes)
}

fn decode_snapshot(path: &Path, seq: u64, bytes: &[u8]) -> Result<State, JournalError> {
    let corrupt = |offset: usize, reason: String| JournalError::Corrupt {
        path: path.to_owned(),
        offset: offset as u64,
        reason: format!("snapshot: {reason}"),
    };
    if bytes.len() < HEADER_BYTES {
        return Err(corrupt(
            bytes.len(),
            format!("{} bytes, shorter than its {HEADER_BYTES}-byte header", bytes.len()),
        ));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes of the header"));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes of the header"));
    if &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(corrupt(0, "not a remit gateway snapshot (bad magic)".into()));
    }
    if u32_at(8) != SNAPSHOT_VERSION {
        return Err(corrupt(8, format!("format version {} (this build reads {SNAPSHOT_VERSION})", u32_at(8))));
    }
    if u64_at(12) != seq {
        return Err(corrupt(12, format!("header says segment {}, the file name {seq}", u64_at(12))));
    }
    let payload = &bytes[HEADER_BYTES..];
    if u64_at(20) != payload.len() as u64 {
        return Err(corrupt(20, format!("header says {} payload bytes, the file holds {}", u64_at(20), payload.len())));
    }
    if crc32fast::hash(payload) != u32_at(28) {
        return Err(corrupt(HEADER_BYTES, "payload fails its checksum".into()));
    }
    let body: SnapshotBody = serde_json::from_slice(payload).map_err(|e| {
        // The payload is one line: the column is the byte.
        corrupt(HEADER_BYTES + e.column().saturating_sub(1), format!("payload does not decode: {e}"))
    })?;
    Ok(body.into_state())
}

/// What a checkpoint did.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct CheckpointDone {
    /// The last segment the new snapshot covers.
    pub(super) seq: u64,
    /// Its size.
    pub(super) snapshot_bytes: u64,
    /// Bytes of the segments it replaced.
    pub(super) segment_bytes: u64,
}

/// How long no segment may have been sealed before a checkpoint that is not
/// urgent runs: a checkpoint waits for a lull in the traffic.
pub(super) const CHECKPOINT_QUIET: std::time::Duration = std::time::Duration::from_secs(10);

/// Sealed bytes not yet in a snapshot, in segments of
/// `journal_checkpoint_bytes`, past which a checkpoint runs at once, lull or
/// not (16 segments: 1 GiB at the default, some 15 s of replay at start-up).
pub(super) const URGENT_SEGMENTS: u64 = 16;

/// The checkpoint thread. A checkpoint re-encodes every live record, so it
/// is deferred while the gateway is busy: it runs once no segment has been
/// sealed for `quiet`, or at once when the sealed segments not yet in a
/// snapshot reach `urgent_bytes`. Either way [`checkpoint`] then decides
/// whether it is worth it ([`SNAPSHOT_GROWTH_FACTOR`]).
fn run_checkpointer(
    dir: &Path,
    sealed: &std::sync::mpsc::Receiver<u64>,
    urgent_bytes: u64,
    quiet: std::time::Duration,
) {
    use std::sync::mpsc::RecvTimeoutError;
    lower_thread_priority();
    let mut pending: Option<u64> = None;
    loop {
        let newly = match pending {
            None => match sealed.recv() {
                Ok(seq) => Some(seq),
                Err(_) => return,
            },
            Some(_) => match sealed.recv_timeout(quiet) {
                Ok(seq) => Some(seq),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            },
        };
        if let Some(mut seq) = newly {
            while let Ok(later) = sealed.try_recv() {
                seq = seq.max(later);
            }
            let seq = pending.map_or(seq, |p| p.max(seq));
            pending = Some(seq);
            match unsnapshotted_bytes(dir, seq) {
                Ok(bytes) if bytes < urgent_bytes => continue,
                Ok(_) => {}
                Err(error) => {
                    error!(%error, "journal checkpoint: could not size the sealed segments");
                    continue;
                }
            }
        }
        let Some(seq) = pending.take() else { continue };
        match checkpoint(dir, seq, &mut |_| {}) {
            Ok(Some(done)) => info!(
                seq = done.seq,
                snapshot_bytes = done.snapshot_bytes,
                segment_bytes = done.segment_bytes,
                "journal checkpoint written"
            ),
            Ok(None) => {}
            // The journal still works, it just does not shrink; the next
            // sealed segment tries again.
            Err(error) => error!(%error, "journal checkpoint failed"),
        }
    }
}

/// Bytes of the sealed segments up to `sealed` that no snapshot covers.
fn unsnapshotted_bytes(dir: &Path, sealed: u64) -> std::io::Result<u64> {
    let layout = Layout::scan(dir)?;
    let first = layout.snapshots.last().map_or(0, |seq| seq + 1);
    let mut bytes = 0;
    for seq in first..=sealed {
        match std::fs::metadata(segment_path(dir, seq)) {
            Ok(meta) => bytes += meta.len(),
            // Already folded by a checkpoint that ran meanwhile.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(bytes)
}

/// Moves the calling thread to the lowest CPU priority (nice 19 on Linux).
/// A checkpoint is maintenance: it serialises every live record (measured
/// at about a quarter of a busy node's CPU at normal priority), so under
/// load it yields the cores to the wallet API, the ledger and the payouts
/// and catches up when the load drops; meanwhile the journal only grows by
/// segments. Best effort: where the system refuses, it runs at normal
/// priority.
fn lower_thread_priority() {
    if let Err(error) = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min) {
        warn!(?error, "journal checkpoint: could not lower its priority");
    }
}

/// A step of a checkpoint, for tests that stop it there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// The temp file is written and synced, not renamed.
    TempWritten,
    /// The snapshot is in place; nothing deleted yet.
    Renamed,
    /// The first covered segment is deleted.
    FirstSegmentDeleted,
}

/// A checkpoint runs once the sealed segments outweigh this many times the
/// newest snapshot. Each checkpoint rewrites every live record, so the
/// factor sets the work per journalled byte (with `f`, at most about
/// `(1 + f) / f` snapshot bytes written per record while nothing is
/// archived) against what a restart replays on top of the snapshot (at most
/// `f` times its size, plus the active segment).
pub(super) const SNAPSHOT_GROWTH_FACTOR: u64 = 2;

/// Folds the segments up to `sealed` into a new snapshot when they outweigh
/// [`SNAPSHOT_GROWTH_FACTOR`] times the newest snapshot; returns what it did (`None`: not worth it yet).
/// `at` is called at each [`Step`] (tests copy the directory there to
/// see what a crash at that step leaves).
pub(super) fn checkpoint(
    dir: &Path,
    sealed: u64,
    at: &mut dyn FnMut(Step),
) -> Result<Option<CheckpointDone>, JournalError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| JournalError::Io { path, source }
    };
    let layout = Layout::scan(dir).map_err(io(dir))?;
    let previous = layout.snapshots.last().copied();
    if previous.is_some_and(|seq| seq >= sealed) {
        return Ok(None);
    }
    let first = previous.map_or(0, |seq| seq + 1);
    let snapshot_bytes = match previous {
        Some(seq) => std::fs::metadata(snapshot_path(dir, seq)).map_err(io(&snapshot_path(dir, seq)))?.len(),
        None => 0,
    };
    let mut segment_bytes = 0;
    for seq in first..=sealed {
        let path = segment_path(dir, seq);
        segment_bytes += std::fs::metadata(&path).map_err(io(&path))?.len();
    }
    if segment_bytes <= snapshot_bytes.saturating_mul(SNAPSHOT_GROWTH_FACTOR) {
        return Ok(None);
    }
    let mut state = match previous {
        Some(seq) => read_snapshot(&snapshot_path(dir, seq), seq)?,
        None => State::default(),
    };
    for seq in first..=sealed {
        for event in read_sealed(&segment_path(dir, seq))? {
            state.apply(event);
        }
    }
    let temp = temp_path(dir, sealed);
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&temp).map_err(io(&temp))?;
    let snapshot_bytes = write_snapshot(&mut file, sealed, &state).map_err(io(&temp))?;
    drop(state);
    file.sync_all().map_err(io(&temp))?;
    drop(file);
    at(Step::TempWritten);
    let path = snapshot_path(dir, sealed);
    std::fs::rename(&temp, &path).map_err(io(&path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    at(Step::Renamed);
    for seq in first..=sealed {
        let segment = segment_path(dir, seq);
        std::fs::remove_file(&segment).map_err(io(&segment))?;
        if seq == first {
            at(Step::FirstSegmentDeleted);
        }
    }
    if let Some(seq) = previous {
        std::fs::remove_file(snapshot_path(dir, seq)).map_err(io(&snapshot_path(dir, seq)))?;
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(Some(CheckpointDone { seq: sealed, snapshot_bytes, segment_bytes }))
}

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
mod tests;
