//! The Raft log and vote on sled (trees `raft_log` and `raft_meta` of the
//! node's database). Appends are flushed before openraft is told they are
//! durable.
//!
//! openraft's storage traits fix the error type (`StorageError`, large), so
//! `clippy::result_large_err` is allowed here.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{LogId, OptionalSend, StorageError, StorageIOError, Vote};

use super::TypeConfig;

type Entry = openraft::Entry<TypeConfig>;

const TREE_LOG: &str = "raft_log";
const TREE_META: &str = "raft_meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";

/// Runs blocking storage work without stalling a multi-threaded runtime.
pub(crate) fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Log entries kept in memory after they are appended: a leader reads each
/// new entry back once per follower to replicate it, and every node once
/// more to apply it; from memory that is a copy, from sled a read and a
/// decode of the whole block.
const RECENT_ENTRIES_MAX: usize = 64;

/// The Raft log of a node. Cloning shares the same trees and cache.
#[derive(Clone, Debug)]
pub struct SledRaftLog {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    /// The newest appended entries by index (a copy of what is in `log`).
    recent: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<u64, Entry>>>,
}

impl SledRaftLog {
    /// Opens the log trees in the node's database.
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(Self {
            db: db.clone(),
            log: db.open_tree(TREE_LOG)?,
            meta: db.open_tree(TREE_META)?,
            recent: std::sync::Arc::default(),
        })
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, Entry>> {
        self.recent.lock().expect("the log cache lock is never held across a panic")
    }

    /// The entries `start..end` (end exclusive, `None` for unbounded) from
    /// memory, when every one of them is there.
    fn cached(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry>> {
        let recent = self.recent();
        let (&first, _) = recent.first_key_value()?;
        let (&last, _) = recent.last_key_value()?;
        let end = end.unwrap_or(last + 1);
        if start < first || end > last + 1 {
            return None;
        }
        Some(recent.range(start..end).map(|(_, entry)| entry.clone()).collect())
    }

    fn read_meta<T: for<'de> serde::Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>, StorageError<u64>> {
        match self.meta.get(key).map_err(|e| StorageIOError::read(&e))? {
            Some(bytes) => bincode::deserialize(&bytes).map(Some).map_err(|e| StorageIOError::read(&e).into()),
            None => Ok(None),
        }
    }

    fn write_meta<T: serde::Serialize>(&self, key: &[u8], value: &T, flush: bool) -> Result<(), StorageError<u64>> {
        let bytes = bincode::serialize(value).map_err(|e| StorageIOError::write(&e))?;
        self.meta.insert(key, bytes).map_err(|e| StorageIOError::write(&e))?;
        if flush {
            blocking(|| self.db.flush()).map_err(|e| StorageIOError::write(&e))?;
        }
        Ok(())
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, StorageError<u64>> {
    bincode::deserialize(bytes).map_err(|e| StorageIOError::read_logs(&e).into())
}

impl RaftLogReader<TypeConfig> for SledRaftLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<u64>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end_exclusive = match range.end_bound() {
            Bound::Included(i) => Some(i.saturating_add(1)),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        if let Some(entries) = self.cached(start, end_exclusive) {
            return Ok(entries);
        }
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(index_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut entries = Vec::new();
        for item in self.log.range((Bound::Included(index_key(start)), end)) {
            let (_, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            entries.push(decode_entry(&value)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for SledRaftLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let last_purged_log_id: Option<LogId<u64>> = self.read_meta(KEY_PURGED)?;
        let last = match self.log.last().map_err(|e| StorageIOError::read_logs(&e))? {
            Some((_, value)) => Some(decode_entry(&value)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.write_meta(KEY_VOTE, vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.read_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError<u64>> {
        // Not flushed: the state machine persists its applied position with
        // every block, so a lost committed marker only delays, never loses.
        self.write_meta(KEY_COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.read_meta::<Option<LogId<u64>>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        let mut appended = Vec::new();
        for entry in entries {
            let bytes = bincode::serialize(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            batch.insert(&index_key(entry.log_id.index), bytes);
            appended.push(entry);
        }
        self.log.apply_batch(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        let flushed = blocking(|| self.db.flush());
        match flushed {
            Ok(_) => {
                let mut recent = self.recent();
                // Contiguous with what is cached, or a new run.
                if let (Some(first), Some((&last, _))) = (appended.first(), recent.last_key_value()) {
                    if first.log_id.index != last + 1 {
                        recent.clear();
                    }
                }
                for entry in appended {
                    recent.insert(entry.log_id.index, entry);
                }
                while recent.len() > RECENT_ENTRIES_MAX {
                    recent.pop_first();
                }
                drop(recent);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let message = e.to_string();
                callback.log_io_completed(Err(std::io::Error::other(message)));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.recent().retain(|index, _| *index < log_id.index);
        let mut batch = sled::Batch::default();
        for item in self.log.range(index_key(log_id.index)..) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        blocking(|| self.db.flush()).map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.recent().retain(|index, _| *index > log_id.index);
        self.write_meta(KEY_PURGED, &log_id, true)?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=index_key(log_id.index)) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}
