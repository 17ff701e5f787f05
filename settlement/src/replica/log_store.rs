//! The Raft log and vote on sled (trees `raft_log` and `raft_meta` of a
//! database of their own, `<data_dir>/raft`). Appends are flushed before
//! openraft is told they are durable.
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
    /// Opens the log trees in `db`, first moving them there from `earlier`
    /// (the ledger's database, where an earlier layout kept them) when `db`
    /// holds no Raft state yet. Losing the vote would let a restarted
    /// validator vote twice in a term, so the move is crash-safe: the log and
    /// then the vote are copied and flushed, and only then are the earlier
    /// trees dropped. A crash before the vote is copied repeats the copy
    /// (the same keys, the same values); a crash after it drops the earlier
    /// trees on the next start. Returns the log and whether it was moved.
    pub fn open_moving_from(db: &sled::Db, earlier: &sled::Db) -> Result<(Self, bool), sled::Error> {
        let log = Self::open(db)?;
        let has_trees = |db: &sled::Db| db.tree_names().iter().any(|name| name.as_ref() == TREE_META.as_bytes());
        if !has_trees(earlier) {
            return Ok((log, false));
        }
        let earlier_meta = earlier.open_tree(TREE_META)?;
        let earlier_log = earlier.open_tree(TREE_LOG)?;
        let moved = log.meta.is_empty() && !earlier_meta.is_empty();
        if moved {
            for (from, to) in [(&earlier_log, &log.log), (&earlier_meta, &log.meta)] {
                let mut batch = sled::Batch::default();
                for item in from.iter() {
                    let (key, value) = item?;
                    batch.insert(key, value);
                }
                to.apply_batch(batch)?;
                db.flush()?;
            }
        }
        drop((earlier_meta, earlier_log));
        earlier.drop_tree(TREE_LOG)?;
        earlier.drop_tree(TREE_META)?;
        earlier.flush()?;
        Ok((log, moved))
    }

    /// Opens the log trees in `db`.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn temporary() -> sled::Db {
        sled::Config::new().temporary(true).open().expect("temporary sled")
    }

    fn contents(tree: &sled::Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
        tree.iter().map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("readable")).collect()
    }

    /// A ledger database of the earlier layout: two log entries and a vote.
    fn earlier_layout() -> sled::Db {
        let db = temporary();
        let log = db.open_tree(TREE_LOG).expect("tree");
        log.insert(index_key(1), b"entry one".to_vec()).expect("insert");
        log.insert(index_key(2), b"entry two".to_vec()).expect("insert");
        db.open_tree(TREE_META).expect("tree").insert(KEY_VOTE, b"vote".to_vec()).expect("insert");
        db.open_tree("blocks").expect("tree").insert(b"b1", b"ledger data".to_vec()).expect("insert");
        db
    }

    fn has_raft_trees(db: &sled::Db) -> bool {
        db.tree_names().iter().any(|name| name.as_ref() == TREE_META.as_bytes() || name.as_ref() == TREE_LOG.as_bytes())
    }

    fn expected_log() -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![(index_key(1).to_vec(), b"entry one".to_vec()), (index_key(2).to_vec(), b"entry two".to_vec())]
    }

    #[test]
    fn an_earlier_layout_moves_its_log_and_vote_once_and_keeps_the_ledger() {
        let earlier = earlier_layout();
        let db = temporary();
        let (log, moved) = SledRaftLog::open_moving_from(&db, &earlier).expect("opens");
        assert!(moved);
        assert_eq!(contents(&log.log), expected_log());
        assert_eq!(contents(&log.meta), vec![(KEY_VOTE.to_vec(), b"vote".to_vec())]);
        assert!(!has_raft_trees(&earlier), "the earlier trees are gone");
        assert_eq!(earlier.open_tree("blocks").expect("tree").len(), 1, "ledger data untouched");
        let (again, moved) = SledRaftLog::open_moving_from(&db, &earlier).expect("opens");
        assert!(!moved, "nothing left to move");
        assert_eq!(contents(&again.log), expected_log());
    }

    #[test]
    fn a_move_cut_before_the_vote_is_repeated_whole() {
        let earlier = earlier_layout();
        let db = temporary();
        // The crash: the log was copied, the vote was not.
        db.open_tree(TREE_LOG).expect("tree").insert(index_key(1), b"entry one".to_vec()).expect("insert");
        let (log, moved) = SledRaftLog::open_moving_from(&db, &earlier).expect("opens");
        assert!(moved);
        assert_eq!(contents(&log.log), expected_log());
        assert_eq!(contents(&log.meta), vec![(KEY_VOTE.to_vec(), b"vote".to_vec())]);
        assert!(!has_raft_trees(&earlier));
    }

    #[test]
    fn a_move_cut_after_the_vote_only_drops_the_earlier_trees() {
        let earlier = earlier_layout();
        let db = temporary();
        // The crash: everything was copied, and the node voted again since.
        let log = db.open_tree(TREE_LOG).expect("tree");
        log.insert(index_key(1), b"entry one".to_vec()).expect("insert");
        log.insert(index_key(2), b"entry two".to_vec()).expect("insert");
        db.open_tree(TREE_META).expect("tree").insert(KEY_VOTE, b"newer vote".to_vec()).expect("insert");
        let (log, moved) = SledRaftLog::open_moving_from(&db, &earlier).expect("opens");
        assert!(!moved);
        assert_eq!(contents(&log.meta), vec![(KEY_VOTE.to_vec(), b"newer vote".to_vec())], "the newer vote stays");
        assert!(!has_raft_trees(&earlier));
    }

    #[test]
    fn a_new_node_moves_nothing() {
        let (earlier, db) = (temporary(), temporary());
        let (log, moved) = SledRaftLog::open_moving_from(&db, &earlier).expect("opens");
        assert!(!moved);
        assert!(log.log.is_empty() && log.meta.is_empty());
    }
}
