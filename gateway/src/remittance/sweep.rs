//! The sweep: terminal remittances leave memory for the archive after the
//! retention, and inbox entries for transfers never certified expire.
//!
//! Each round (every [`SWEEP_INTERVAL_MAX`] at most) picks batches of up
//! to [`ARCHIVE_BATCH_MAX`] remittances terminal for longer than the
//! retention, writes each to the archive and flushes it, and only then
//! journals `archived` (whose apply drops them from every in-memory map).
//! It scans the record map one shard at a time, taking the engine's state
//! lock for each: at 2 million live records one shard takes 4-5 ms, the
//! whole map 150-230 ms.
//! A crash between the two leaves them in memory and in the archive; the
//! next round archives them again.

use std::time::Duration;

use remit_settlement::ids::Uetr;
use remit_settlement::uetr_map::SHARDS;
use tracing::{info, warn};

use super::engine::Engine;
use super::journal::JournalEvent;
use super::record::Remittance;
use super::state::State;

/// Most remittances archived in one batch (one archive flush, one journal
/// event), by default.
pub const ARCHIVE_BATCH_MAX: usize = 50_000;
/// Longest time between two sweeps.
pub const SWEEP_INTERVAL_MAX: Duration = Duration::from_secs(30);
/// Most inbox entries expired by one event.
pub const INBOX_EXPIRED_BATCH_MAX: usize = 50_000;

/// Time between two sweeps for a retention of `retention_ms`: the
/// retention itself when shorter than [`SWEEP_INTERVAL_MAX`] (at least a
/// second), so a short retention is honoured about on time.
pub fn sweep_interval(retention_ms: u64) -> Duration {
    Duration::from_millis(retention_ms).clamp(Duration::from_secs(1), SWEEP_INTERVAL_MAX)
}

/// The remittances of shard `shard` of the record map that are terminal
/// since at least `retention_ms` before `now_ms` and owe nothing more (no
/// report due).
pub(super) fn due_in_shard(
    state: &State,
    shard: usize,
    now_ms: u64,
    retention_ms: u64,
) -> impl Iterator<Item = &Remittance> {
    state
        .remittances
        .shard_iter(shard)
        .filter(move |(uetr, record)| {
            record.status.is_terminal()
                && record.last_change().at_ms.saturating_add(retention_ms) <= now_ms
                && !state.returns_due.contains_key(uetr)
        })
        .map(|(_, record)| &**record)
}

/// Up to `max` inbox entries older than `ttl_ms` at `now_ms` whose transfer
/// was never certified.
pub(super) fn expired_inbox(state: &State, now_ms: u64, ttl_ms: u64, max: usize) -> Vec<Uetr> {
    state
        .inbox
        .iter()
        .filter(|(uetr, message)| {
            message.received_at_ms.saturating_add(ttl_ms) <= now_ms && !state.incoming.contains_key(uetr)
        })
        .map(|(uetr, _)| *uetr)
        .take(max)
        .collect()
}

impl Engine {
    /// Runs the sweep forever.
    pub(super) async fn run_sweeper(self) {
        let interval = sweep_interval(self.inner.config.store.terminal_retention_ms);
        loop {
            tokio::time::sleep(interval).await;
            if let Err(error) = self.sweep(self.now_ms()).await {
                warn!(%error, "sweep failed; trying again at the next round");
            }
        }
    }

    /// One sweep at `now`: archives every remittance due (in batches) and
    /// expires old inbox entries; returns how many of each.
    pub(super) async fn sweep(&self, now: u64) -> Result<(usize, usize), String> {
        let store = self.inner.config.store;
        let batch_max = store.archive_batch_max.max(1);
        let mut archived = 0;
        let mut batch: Vec<Remittance> = Vec::new();
        // One shard of the record map at a time under the state lock: one
        // scan of every live record held it for about 0.2 s at 2 million.
        let mut shard = 0;
        while shard < SHARDS {
            let shard_done = {
                let state = self.state();
                let room = batch_max - batch.len();
                let before = batch.len();
                batch.extend(due_in_shard(&state, shard, now, store.terminal_retention_ms).take(room).cloned());
                batch.len() - before < room
            };
            if shard_done {
                shard += 1;
            }
            // A full batch, or the last one: archived (and so gone from the
            // map) before the scan goes on, so a shard with more records due
            // than a batch holds is scanned again.
            if batch.len() >= batch_max || (shard == SHARDS && !batch.is_empty()) {
                archived += self.archive_batch(std::mem::take(&mut batch)).await?;
            }
        }
        let expired = {
            let state = self.state();
            expired_inbox(&state, now, store.inbox_ttl_ms, INBOX_EXPIRED_BATCH_MAX)
        };
        let expired_count = expired.len();
        if !expired.is_empty() {
            self.commit(vec![JournalEvent::InboxExpired { uetrs: expired }]).await.map_err(|e| e.to_string())?;
        }
        if archived > 0 || expired_count > 0 {
            info!(archived, inbox_expired = expired_count, "sweep");
        }
        Ok((archived, expired_count))
    }

    /// Writes `batch` to the archive and flushes it, then journals it as
    /// archived (which drops it from memory); returns how many.
    async fn archive_batch(&self, batch: Vec<Remittance>) -> Result<usize, String> {
        let count = batch.len();
        let uetrs: Vec<Uetr> = batch.iter().map(|record| record.uetr).collect();
        let archive = self.inner.archive.clone();
        tokio::task::spawn_blocking(move || archive.store(&batch))
            .await
            .map_err(|e| format!("archive task: {e}"))?
            .map_err(|e| e.to_string())?;
        self.commit(vec![JournalEvent::Archived { uetrs: uetrs.clone() }]).await.map_err(|e| e.to_string())?;
        self.forget_announced(&uetrs);
        Ok(count)
    }

    /// Drops the webhook bookkeeping of archived remittances (nothing more
    /// can change for them).
    fn forget_announced(&self, uetrs: &[Uetr]) {
        let mut announced = self.inner.announced.lock().expect("the announced lock is never held across a panic");
        for uetr in uetrs {
            announced.remove(uetr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remittance::journal::InboxMessage;
    use crate::remittance::record::{Status, StatusChange};
    use crate::remittance::testkit::{incoming_message, origin_record};

    /// Every shard's due records, up to `max` in all.
    fn due_for_archive(state: &State, now_ms: u64, retention_ms: u64, max: usize) -> Vec<Uetr> {
        let mut due = Vec::new();
        for shard in 0..SHARDS {
            due.extend(due_in_shard(state, shard, now_ms, retention_ms).take(max - due.len()).map(|r| r.uetr));
        }
        due
    }

    fn state_with(records: Vec<Remittance>) -> State {
        let mut state = State::default();
        for record in records {
            state.apply(JournalEvent::Created { remittance: Box::new(record) });
        }
        state
    }

    fn at(uetr: Uetr, status: Status, at_ms: u64) -> Remittance {
        let mut record = origin_record(uetr);
        record.status = status;
        record.history.push(StatusChange::new(status, at_ms, None, ""));
        record
    }

    #[test]
    fn only_terminal_records_older_than_the_retention_are_due() {
        let ids: Vec<Uetr> = (0..6).map(|_| Uetr::new_random()).collect();
        let state = state_with(vec![
            at(ids[0], Status::Completed, 10_000),
            at(ids[1], Status::Completed, 15_001),
            at(ids[2], Status::Final, 1_000),
            at(ids[3], Status::Rejected, 2_000),
            at(ids[4], Status::Cancelled, 15_000),
            at(ids[5], Status::PayoutPending, 1_000),
        ]);
        let mut due = due_for_archive(&state, 20_000, 5_000, 100);
        due.sort();
        let mut expected = vec![ids[0], ids[3], ids[4]];
        expected.sort();
        assert_eq!(due, expected);
        assert!(due_for_archive(&state, 20_000, 30_000, 100).is_empty(), "nothing is old enough");
    }

    #[test]
    fn a_return_still_due_keeps_its_record() {
        let uetr = Uetr::new_random();
        let mut state = state_with(vec![at(uetr, Status::Returned, 1_000)]);
        state.returns_due.insert(uetr, ("AC04".into(), "closed".into()));
        assert!(due_for_archive(&state, 100_000, 0, 10).is_empty());
        state.returns_due.clear();
        assert_eq!(due_for_archive(&state, 100_000, 0, 10), vec![uetr]);
    }

    #[test]
    fn batches_hold_at_most_the_maximum() {
        let records: Vec<Remittance> = (0..7).map(|_| at(Uetr::new_random(), Status::Completed, 1)).collect();
        let state = state_with(records);
        assert_eq!(due_for_archive(&state, 10, 0, 3).len(), 3);
        assert_eq!(due_for_archive(&state, 10, 0, 30).len(), 7);
    }

    #[test]
    fn archived_records_leave_every_map() {
        let (a, b) = (Uetr::new_random(), Uetr::new_random());
        let mut state = state_with(vec![at(a, Status::Completed, 1), at(b, Status::Completed, 1)]);
        state.message_bytes.insert(a, vec![1]);
        let key_a = ("c1".to_owned(), format!("key-{a}"));
        assert_eq!(state.idempotency.get(&key_a), Some(&a));
        state.apply(JournalEvent::Archived { uetrs: vec![a] });
        assert!(!state.remittances.contains_key(&a) && state.remittances.contains_key(&b));
        assert_eq!(state.idempotency.get(&key_a), None);
        assert!(state.message_bytes.is_empty());
        assert_eq!(state.by_client["c1"].iter().map(|(_, u)| *u).collect::<Vec<_>>(), vec![b]);
        state.apply(JournalEvent::Archived { uetrs: vec![b] });
        assert!(state.by_client.is_empty() && state.idempotency.is_empty() && state.remittances.is_empty());
    }

    fn inbox(uetr: Uetr, received_at_ms: u64) -> InboxMessage {
        InboxMessage { received_at_ms, ..incoming_message(uetr).0 }
    }

    #[test]
    fn inbox_entries_expire_after_the_ttl_unless_their_transfer_is_certified() {
        let (old, young, waiting) = (Uetr::new_random(), Uetr::new_random(), Uetr::new_random());
        let mut state = State::default();
        for message in [inbox(old, 1_000), inbox(young, 9_000), inbox(waiting, 1_000)] {
            state.apply(JournalEvent::Inbox { message });
        }
        let (transfer_message, _) = incoming_message(waiting);
        state.incoming.insert(
            waiting,
            crate::remittance::journal::IncomingTransfer {
                uetr: waiting,
                origin: transfer_message.origin,
                amount: remit_settlement::money::Money::parse_parts("1.00", "USD", "amount").expect("money"),
                commitment: remit_settlement::hash::Digest32([0; 32]),
                ledger: crate::remittance::record::LedgerPosition {
                    height: remit_settlement::ids::Height(1),
                    block_hash: remit_settlement::hash::Digest32([0; 32]),
                },
            },
        );
        let expired = expired_inbox(&state, 10_000, 5_000, 100);
        assert_eq!(expired, vec![old]);
        state.apply(JournalEvent::InboxExpired { uetrs: expired });
        let mut left: Vec<Uetr> = state.inbox.iter().map(|(u, _)| *u).collect();
        left.sort();
        let mut expected = vec![young, waiting];
        expected.sort();
        assert_eq!(left, expected);
    }
}
