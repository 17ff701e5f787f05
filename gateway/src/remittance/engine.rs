//! The remittance engine of one gateway: what the wallet API calls, and the
//! background tasks that carry remittances through the ledger.
//!
//! Origin side: a create request is validated, its quote taken, screened,
//! and journalled (durable) before it is answered. The submitter groups
//! accepted remittances into transfer batches signed with the gateway's
//! ed25519 key, sends each payment message to its destination gateway, and
//! submits the batch to the ledger, retrying with the same UETRs (the
//! ledger refuses a UETR twice, so a retry never moves money twice).
//!
//! Both sides: the follower reads every certified block in order and turns
//! what concerns this gateway into status changes (final; completed or
//! returned when the destination's payout report is certified), journalled
//! together with its position so a restart resumes exactly.
//!
//! Destination side: a certified transfer to this gateway is matched with its
//! payment message (pushed by the origin, or fetched from it), checked
//! against the ledger commitment, paid through the [`PayoutAdapter`](super::ports::PayoutAdapter), and the
//! outcome reported on the ledger in a batch signed by this gateway.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use remit_settlement::ids::{ChainId, ParticipantId, Uetr};
use remit_settlement::UetrMap;
use tokio::sync::{broadcast, mpsc, Notify};
use tracing::{info, warn};

use super::archive::{Archive, ArchiveError, GATEWAY_ARCHIVE_SUBDIR};
use super::corridor::Corridors;
use super::fx::RateSource;
use super::journal::{IncomingTransfer, Journal, JournalError, JournalEvent, JournalOptions};
use super::payouts::{payout_step, PayoutQueue, PayoutStep};
use super::ports::{EnginePorts, JournalPort};
use super::quote::QuoteBook;
use super::record::{Remittance, Role, Status};
use super::state::State;

pub use super::errors::{ErrorKind, RequestError};
pub use super::validate::{CreateInput, ListFilter, IDEMPOTENCY_KEY_LEN_MAX, REMITTANCE_INFORMATION_LEN_MAX};

/// Remittances per transfer batch the origin signs.
pub const SUBMIT_BATCH_MAX: usize = 4_096;
/// Longest a remittance waits for its batch to fill. Each batch costs one
/// ed25519 signature, one SubmitBatch call (forwarded to the leader) and a
/// signature check on every validator: at 10 ms a 20,000/s load made about
/// 400 batches a second and tipped the network into queueing (BENCHMARKS.md).
pub const SUBMIT_BATCH_AGE_MS: u64 = 25;
/// Transfer batches in flight to the ledger at once.
pub const SUBMITS_IN_FLIGHT_MAX: usize = 64;
/// Remittances accepted by one batch submit call.
pub const SUBMIT_MANY_MAX: usize = 1_000;
/// Largest payment message accepted from a peer.
pub const PAYMENT_MESSAGE_BYTES_MAX: usize = 64 * 1024;
/// Attempts to fetch a missing or bad payment message before returning the
/// transfer (about a minute with backoff).
pub const MESSAGE_FETCH_ATTEMPTS_MAX: u32 = 12;
/// A transfer whose message is still missing this long after it was first
/// seen is returned, whatever the number of attempts.
pub(super) const MESSAGE_FETCH_GIVE_UP: Duration = Duration::from_secs(75);
/// Wait before the first look for a missing message (the push may be late).
pub(super) const MESSAGE_FETCH_FIRST_WAIT: Duration = Duration::from_millis(200);
/// Longest wait between two fetches of a missing message; also the wait
/// after an origin said it holds no remittance for the transfer at all.
pub(super) const MESSAGE_FETCH_WAIT_MAX: Duration = Duration::from_secs(10);
/// Fetches are due on a grid of this step, so that one round (one call per
/// origin) serves every transfer due in the step.
pub(super) const MESSAGE_FETCH_TICK: Duration = Duration::from_millis(50);
/// Most messages asked of an origin in one FetchPaymentMessages call.
pub const FETCH_MESSAGES_MAX: usize = 1_000;

/// Status updates buffered for slow watchers.
pub(super) const UPDATES_CAPACITY: usize = 65_536;
/// Most remittances paid out in one batch.
pub(super) const PAYOUT_BATCH_MAX: usize = 1_024;
/// Payout batches in flight at once.
pub(super) const PAYOUT_BATCHES_IN_FLIGHT_MAX: usize = 8;

/// Fixed parts of an engine.
pub struct EngineConfig {
    /// This gateway's participant id.
    pub me: ParticipantId,
    /// The chain.
    pub chain_id: ChainId,
    /// This participant's ed25519 key (signs transfer and report batches).
    pub signing_key: SigningKey,
    /// Served corridors.
    pub corridors: Corridors,
    /// FX rates.
    pub rates: Arc<dyn RateSource>,
    /// Quote lifetime.
    pub quote_ttl_ms: u64,
    /// Push payment messages to destinations (off only in tests, which
    /// then see destinations fetch them).
    pub push_messages: bool,
    /// How the journal, the archive and the inbox are kept bounded.
    pub store: StoreOptions,
}

/// How the engine keeps its store bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Journal segments and checkpoints.
    pub journal: JournalOptions,
    /// How long a terminal remittance stays in memory before it moves to
    /// the archive.
    pub terminal_retention_ms: u64,
    /// How long a payment message waits for its transfer to be certified
    /// before it is dropped.
    pub inbox_ttl_ms: u64,
    /// Most remittances archived in one batch (one archive flush, one
    /// journal event).
    pub archive_batch_max: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            journal: JournalOptions::default(),
            terminal_retention_ms: 300_000,
            inbox_ttl_ms: 86_400_000,
            archive_batch_max: super::sweep::ARCHIVE_BATCH_MAX,
        }
    }
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EngineConfig({})", self.me)
    }
}

/// Why the engine did not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineStartError {
    /// The journal could not be opened or replayed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The engine's configuration is unusable.
    #[error("remittance engine: {0}")]
    Config(String),
    /// The archive could not be opened.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

pub(super) struct Inner {
    pub(super) config: EngineConfig,
    pub(super) quotes: QuoteBook,
    pub(super) ports: EnginePorts,
    /// Status changes already announced to webhooks, per origin remittance
    /// (how long a prefix of its history).
    pub(super) announced: Mutex<UetrMap<usize>>,
    pub(super) state: Mutex<State>,
    pub(super) journal: Arc<dyn JournalPort>,
    /// Terminal remittances that left memory.
    pub(super) archive: Archive,
    pub(super) updates: broadcast::Sender<Arc<Remittance>>,
    pub(super) created: Notify,
    pub(super) submit_tx: mpsc::UnboundedSender<Uetr>,
    pub(super) payout_tx: mpsc::UnboundedSender<Uetr>,
    /// UETRs queued for payout or being paid (each once).
    pub(super) payout_queue: PayoutQueue,
    pub(super) fetch_tx: mpsc::UnboundedSender<(Uetr, IncomingTransfer)>,
    pub(super) report_tx: mpsc::UnboundedSender<super::reports::PendingReport>,
}

/// The remittance engine (cheap to clone).
#[derive(Clone)]
pub struct Engine {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Engine({})", self.inner.config.me)
    }
}

impl Engine {
    /// Opens the journal at `journal_path`, replays it, and starts the
    /// engine's tasks on `ports`.
    pub fn start(
        config: EngineConfig,
        journal_path: &std::path::Path,
        ports: EnginePorts,
    ) -> Result<Self, EngineStartError> {
        let (journal, replay) = Journal::open_with(journal_path, config.store.journal)?;
        let archive_dir = journal_path.parent().unwrap_or(std::path::Path::new(".")).join(GATEWAY_ARCHIVE_SUBDIR);
        let archive = Archive::open(&archive_dir)?;
        info!(
            snapshot = ?replay.snapshot_path,
            segments = replay.segments.len(),
            "journal opened"
        );
        let state = replay.snapshot.unwrap_or_default();
        Self::start_restored(config, Arc::new(journal), state, replay.events, archive, ports)
    }

    /// Starts the engine on `journal`, whose replayed `events` rebuild the
    /// state (tests pass a mock journal, or a real one reopened), with an
    /// archive that lives as long as the process.
    pub fn start_with_journal(
        config: EngineConfig,
        journal: Arc<dyn JournalPort>,
        events: Vec<JournalEvent>,
        ports: EnginePorts,
    ) -> Result<Self, EngineStartError> {
        Self::start_restored(config, journal, State::default(), events, Archive::temporary()?, ports)
    }

    /// Starts the engine on `state` (from a snapshot) and the `events`
    /// journalled after it.
    fn start_restored(
        config: EngineConfig,
        journal: Arc<dyn JournalPort>,
        mut state: State,
        events: Vec<JournalEvent>,
        archive: Archive,
        ports: EnginePorts,
    ) -> Result<Self, EngineStartError> {
        let from_snapshot = state.remittances.len();
        let replayed = events.len();
        let mut changed = Vec::new();
        for event in events {
            state.apply_into(event, &mut changed);
            changed.clear();
        }
        let quotes = QuoteBook::new(config.quote_ttl_ms).map_err(|e| EngineStartError::Config(e.to_string()))?;
        // Changes journalled before this start were announced then (the
        // webhook queue is durable): only later ones are new.
        let announced: UetrMap<usize> = state
            .remittances
            .iter()
            .filter(|(_, record)| record.role == Role::Origin)
            .map(|(uetr, record)| (*uetr, record.history.len()))
            .collect();
        let (submit_tx, submit_rx) = mpsc::unbounded_channel();
        let (payout_tx, payout_rx) = mpsc::unbounded_channel();
        let (fetch_tx, fetch_rx) = mpsc::unbounded_channel();
        let (report_tx, report_rx) = mpsc::unbounded_channel();
        let (updates, _) = broadcast::channel(UPDATES_CAPACITY);
        let inner = Arc::new(Inner {
            config,
            quotes,
            ports,
            announced: Mutex::new(announced),
            state: Mutex::new(state),
            journal,
            archive,
            updates,
            created: Notify::new(),
            submit_tx,
            payout_tx,
            payout_queue: PayoutQueue::default(),
            fetch_tx,
            report_tx,
        });
        let engine = Self { inner };
        let resumed = engine.resume();
        info!(
            snapshot_records = from_snapshot,
            events = replayed,
            resumed,
            cursor = engine.state().cursor,
            "remittance engine started"
        );
        tokio::spawn(engine.clone().run_sweeper());
        tokio::spawn(engine.clone().run_submitter(submit_rx));
        tokio::spawn(engine.clone().run_follower());
        tokio::spawn(engine.clone().run_payouts(payout_rx));
        tokio::spawn(engine.clone().run_fetcher(fetch_rx));
        tokio::spawn(super::reporting::run_reporter(engine.clone(), report_rx));
        let purger = engine.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                purger.inner.quotes.purge_expired(purger.now_ms());
            }
        });
        Ok(engine)
    }

    /// Re-queues work interrupted by a restart; returns how many. A payout
    /// that may have reached the bank is queued too: `pay_out` asks the bank
    /// for it before paying. A journalled report is sent again (the
    /// reporter drops it if the ledger already holds one).
    fn resume(&self) -> usize {
        let state = self.state();
        let mut resumed = 0;
        for record in state.remittances.values() {
            let return_due = state.returns_due.get(&record.uetr);
            let queue = match (record.role, record.status) {
                (Role::Origin, Status::Received | Status::Submitted) => self.inner.submit_tx.send(record.uetr),
                (Role::Destination, _) => match payout_step(record, return_due.is_some()) {
                    PayoutStep::Pay | PayoutStep::AskBank => self.inner.payout_tx.send(record.uetr),
                    PayoutStep::ReportCompleted => {
                        self.queue_report(super::reports::completed(record.uetr));
                        Ok(())
                    }
                    // Sent below with the returns that have no record.
                    PayoutStep::ReportReturned | PayoutStep::Nothing => continue,
                },
                _ => continue,
            };
            if queue.is_ok() {
                resumed += 1;
            }
        }
        for (uetr, (reason_code, reason)) in state.returns_due.iter() {
            self.queue_report(super::reports::return_due(*uetr, reason_code, reason).1);
            resumed += 1;
        }
        for (uetr, incoming) in state.incoming.iter() {
            if self.inner.fetch_tx.send((*uetr, incoming.clone())).is_ok() {
                resumed += 1;
            }
        }
        resumed
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().expect("the engine state lock is never held across a panic")
    }

    /// This gateway's participant id.
    pub fn me(&self) -> &ParticipantId {
        &self.inner.config.me
    }

    /// Milliseconds since the Unix epoch, by the engine's clock.
    pub(super) fn now_ms(&self) -> u64 {
        self.inner.ports.clock.now_ms()
    }

    pub(super) fn ports(&self) -> &EnginePorts {
        &self.inner.ports
    }

    /// Whether anyone would receive a change to one of `client`'s
    /// remittances (a watcher, or the client's webhook); when nobody would,
    /// records are not copied for publishing.
    pub(super) fn has_listeners(&self, client: &str) -> bool {
        self.inner.updates.receiver_count() > 0
            || self.inner.ports.events.as_ref().is_some_and(|events| events.has_endpoint(client))
    }

    /// Sends a changed record to watchers, and to webhooks one event per
    /// status change not announced yet, each carrying that status and the
    /// time of the change (a record can pass several statuses between two
    /// publications, and can be published twice for one change).
    pub(super) fn publish(&self, record: Remittance) {
        if let (Some(events), Role::Origin) = (&self.inner.ports.events, record.role) {
            if events.has_endpoint(&record.client_id) {
                let from = {
                    let mut announced =
                        self.inner.announced.lock().expect("the announced lock is never held across a panic");
                    let from = announced.get(&record.uetr).copied().unwrap_or(0);
                    announced.insert(record.uetr, record.history.len());
                    from
                };
                if from < record.history.len() {
                    events.publish(&record, &record.history[from..]);
                }
            }
        }
        let _ = self.inner.updates.send(Arc::new(record));
    }

    /// Journals events, applies them, and publishes what changed.
    pub(super) async fn commit(&self, events: Vec<JournalEvent>) -> Result<(), JournalError> {
        self.commit_accepting(events, Vec::new()).await
    }

    /// [`Engine::commit`], with the destination records that its `accepted`
    /// events stand for, already built from their checked messages.
    pub(super) async fn commit_accepting(
        &self,
        events: Vec<JournalEvent>,
        prepared: Vec<Remittance>,
    ) -> Result<(), JournalError> {
        if events.is_empty() {
            return Ok(());
        }
        let events = super::journal::compact(events);
        self.inner.journal.append(&events).await?;
        let changed: Vec<Remittance> = {
            let mut state = self.state();
            state.prepared.extend(prepared.into_iter().map(|record| (record.uetr, Box::new(record))));
            let mut uetrs = Vec::new();
            for event in events {
                state.apply_into(event, &mut uetrs);
            }
            state.prepared.clear();
            uetrs
                .iter()
                .filter_map(|u| state.remittances.get(u))
                .filter(|record| self.has_listeners(&record.client_id))
                .map(|record| (**record).clone())
                .collect()
        };
        for record in changed {
            self.publish(record);
        }
        Ok(())
    }

    pub(super) async fn commit_or_log(&self, events: Vec<JournalEvent>) {
        if let Err(error) = self.commit(events).await {
            warn!(%error, "journal append failed; the ledger follower will re-derive ledger states");
        }
    }

    pub(crate) fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Hands a journalled report to the reporter.
    pub(super) fn queue_report(&self, report: super::reports::PendingReport) {
        let _ = self.inner.report_tx.send(report);
    }
}

pub(super) fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}
