//! The dispatcher: one queue per client, delivery workers with retries and
//! backoff, the bounded delivery log, and the optional sled tree of pending
//! events.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng as _;
use remit_settlement::Uetr;
use tokio::task::JoinSet;
use tracing::Instrument as _;

use super::signing::sign;
use super::store::{decode_pending, encode_pending};
use super::*;
use crate::outbound::describe_transport_error;

// ---------------------------------------------------------------------------
// Dispatcher
// ---------------------------------------------------------------------------

/// An event waiting for delivery, with its key in the pending tree.
struct Queued {
    seq: u64,
    event: WebhookEvent,
}

#[derive(Default)]
struct ClientQueue {
    pending: VecDeque<Queued>,
    /// Remittances with a delivery in flight; their later events wait.
    busy: HashSet<Uetr>,
    in_flight: usize,
    /// Oldest first.
    log: VecDeque<DeliveryRecord>,
}

impl ClientQueue {
    fn push_record(&mut self, record: DeliveryRecord) {
        if self.log.len() >= WEBHOOK_LOG_PER_CLIENT_MAX {
            self.log.pop_front();
        }
        self.log.push_back(record);
    }

    fn record_mut(&mut self, event_id: &str) -> Option<&mut DeliveryRecord> {
        self.log.iter_mut().rev().find(|r| r.event_id == event_id)
    }
}

#[derive(Default)]
struct Queues {
    clients: HashMap<String, ClientQueue>,
    in_flight: usize,
}

/// A delivery handed to a worker.
struct Job {
    seq: u64,
    event: WebhookEvent,
}

struct Inner {
    endpoints: HashMap<String, WebhookEndpoint>,
    tree: Option<sled::Tree>,
    policy: RetryPolicy,
    client: reqwest::Client,
    queues: Mutex<Queues>,
    wake: tokio::sync::Notify,
    next_seq: AtomicU64,
    dirty: AtomicBool,
}

/// Delivers webhook events: one queue per client, retries with backoff, an
/// optional sled tree for pending events and a bounded delivery log. Cheap to
/// clone; clones share everything.
#[derive(Clone)]
pub struct WebhookDispatcher {
    inner: Arc<Inner>,
}

impl fmt::Debug for WebhookDispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookDispatcher")
            .field("clients", &self.inner.endpoints.len())
            .field("persistent", &self.inner.tree.is_some())
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl WebhookDispatcher {
    /// A dispatcher for `endpoints` (by client id). With a tree, the events
    /// still pending in it are queued again, in their original order.
    /// Nothing is sent before [`WebhookDispatcher::spawn`].
    pub fn new(endpoints: HashMap<String, WebhookEndpoint>, tree: Option<sled::Tree>, policy: RetryPolicy) -> Self {
        let policy = policy.clamped();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(policy.timeout_ms))
            .build()
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot build the webhook HTTP client with its settings; using defaults");
                reqwest::Client::new()
            });
        let inner = Inner {
            endpoints,
            tree,
            policy,
            client,
            queues: Mutex::new(Queues::default()),
            wake: tokio::sync::Notify::new(),
            next_seq: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
        };
        inner.restore();
        Self { inner: Arc::new(inner) }
    }

    /// Whether `client_id` registered an endpoint.
    pub fn has_endpoint(&self, client_id: &str) -> bool {
        self.inner.endpoints.contains_key(client_id)
    }

    /// Queues `event` for its client without waiting (ignored if the client
    /// has no endpoint). With a tree, the event is written to it (flushed
    /// within [`WEBHOOK_FLUSH_INTERVAL_MS`] by the running dispatcher).
    pub fn enqueue(&self, event: WebhookEvent) {
        if !self.has_endpoint(&event.client_id) {
            tracing::debug!(client_id = %event.client_id, "no webhook endpoint; event dropped");
            return;
        }
        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        let enqueued_at_ms = now_ms();
        // Stored before it is queued, so that a delivery that ends at once
        // cannot remove it from the tree before it was written.
        self.inner.persist(seq, enqueued_at_ms, &event);
        if self.inner.admit(seq, event, enqueued_at_ms) {
            self.inner.wake.notify_one();
        } else {
            self.inner.forget(seq);
        }
    }

    /// Starts delivering: one task that hands ready events to delivery tasks
    /// and flushes the tree. Aborting the handle stops every delivery; events
    /// not yet delivered stay in the tree.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let inner = self.inner.clone();
        tokio::spawn(run(inner).instrument(tracing::info_span!("gateway.webhook.dispatch")))
    }

    /// The newest `limit` delivery records of `client_id`, newest first.
    pub fn deliveries(&self, client_id: &str, limit: usize) -> Vec<DeliveryRecord> {
        let queues = self.inner.lock();
        queues.clients.get(client_id).map_or_else(Vec::new, |q| q.log.iter().rev().take(limit).cloned().collect())
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        // Every critical section below leaves the queues consistent at each
        // statement that can panic (none allocate half a change), so a poisoned
        // lock is still usable.
        self.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a pending event and its record; false (and a failed record) when
    /// the client's queue is full.
    fn admit(&self, seq: u64, event: WebhookEvent, enqueued_at_ms: u64) -> bool {
        let mut queues = self.lock();
        let queue = queues.clients.entry(event.client_id.clone()).or_default();
        let full = queue.pending.len() >= WEBHOOK_PENDING_PER_CLIENT_MAX;
        queue.push_record(DeliveryRecord {
            event_id: event.event_id.clone(),
            uetr: event.uetr,
            status: event.status,
            attempts: 0,
            state: if full { DeliveryState::Failed } else { DeliveryState::Pending },
            last_http_status: None,
            last_error: full.then(|| "delivery queue full".to_owned()),
            created_at_ms: enqueued_at_ms,
            updated_at_ms: enqueued_at_ms,
        });
        if full {
            tracing::warn!(client_id = %event.client_id, event_id = %event.event_id, "webhook queue full; event failed");
            return false;
        }
        queue.pending.push_back(Queued { seq, event });
        true
    }

    fn persist(&self, seq: u64, enqueued_at_ms: u64, event: &WebhookEvent) {
        let Some(tree) = &self.tree else { return };
        let stored = encode_pending(enqueued_at_ms, event).map_err(|e| e.to_string());
        match stored.and_then(|value| tree.insert(seq.to_be_bytes(), value).map_err(|e| e.to_string())) {
            Ok(_) => self.dirty.store(true, Ordering::Release),
            Err(e) => tracing::error!(event_id = %event.event_id, error = %e, "cannot store a pending webhook event"),
        }
    }

    fn forget(&self, seq: u64) {
        let Some(tree) = &self.tree else { return };
        match tree.remove(seq.to_be_bytes()) {
            Ok(_) => self.dirty.store(true, Ordering::Release),
            Err(e) => tracing::error!(seq, error = %e, "cannot remove a finished webhook event from the store"),
        }
    }

    /// Queues the events left in the tree by a previous run.
    fn restore(&self) {
        let Some(tree) = &self.tree else { return };
        let mut restored = 0usize;
        let mut next_seq = 0u64;
        for entry in tree.iter() {
            let (key, value) = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the pending webhook tree; stopping the restore");
                    break;
                }
            };
            let Ok(key_bytes) = <[u8; 8]>::try_from(key.as_ref()) else {
                tracing::error!(key = %hex::encode(&key), "pending webhook key is not 8 bytes; skipped");
                continue;
            };
            let seq = u64::from_be_bytes(key_bytes);
            next_seq = next_seq.max(seq.saturating_add(1));
            let stored = match decode_pending(&value) {
                Ok(stored) => stored,
                Err(e) => {
                    tracing::error!(seq, error = %e, "cannot decode a pending webhook event; skipped");
                    continue;
                }
            };
            if !self.endpoints.contains_key(&stored.event.client_id) {
                tracing::warn!(client_id = %stored.event.client_id, seq, "pending webhook for a client without an endpoint; dropped");
                self.forget(seq);
                continue;
            }
            if self.admit(seq, stored.event, stored.enqueued_at_ms) {
                restored += 1;
            } else {
                self.forget(seq);
            }
        }
        self.next_seq.store(next_seq, Ordering::Relaxed);
        if restored > 0 {
            tracing::info!(restored, "pending webhook events queued again");
        }
    }

    /// Takes every event that may start now: per client in enqueue order,
    /// skipping remittances with a delivery in flight, within the limits.
    fn take_ready(&self) -> Vec<Job> {
        let mut queues = self.lock();
        let Queues { clients, in_flight } = &mut *queues;
        let mut jobs = Vec::new();
        for queue in clients.values_mut() {
            let mut index = 0;
            while index < queue.pending.len()
                && queue.in_flight < WEBHOOK_IN_FLIGHT_PER_CLIENT_MAX
                && *in_flight < WEBHOOK_IN_FLIGHT_MAX
            {
                if queue.busy.contains(&queue.pending[index].event.uetr) {
                    index += 1;
                    continue;
                }
                let Some(queued) = queue.pending.remove(index) else { break };
                queue.busy.insert(queued.event.uetr);
                queue.in_flight += 1;
                *in_flight += 1;
                jobs.push(Job { seq: queued.seq, event: queued.event });
            }
        }
        jobs
    }

    /// Frees the slot of a finished delivery.
    fn release(&self, client_id: &str, uetr: Uetr) {
        let mut queues = self.lock();
        queues.in_flight = queues.in_flight.saturating_sub(1);
        if let Some(queue) = queues.clients.get_mut(client_id) {
            queue.busy.remove(&uetr);
            queue.in_flight = queue.in_flight.saturating_sub(1);
        }
    }

    fn update_record(&self, event: &WebhookEvent, update: impl FnOnce(&mut DeliveryRecord)) {
        let mut queues = self.lock();
        if let Some(record) = queues.clients.get_mut(&event.client_id).and_then(|q| q.record_mut(&event.event_id)) {
            update(record);
            record.updated_at_ms = now_ms();
        }
    }

    async fn flush_if_dirty(&self) {
        let Some(tree) = &self.tree else { return };
        if self.dirty.swap(false, Ordering::AcqRel) {
            if let Err(e) = tree.flush_async().await {
                self.dirty.store(true, Ordering::Release);
                tracing::error!(error = %e, "cannot flush the pending webhook tree");
            }
        }
    }
}

/// The dispatch loop: starts ready deliveries, frees their slots when they
/// end, flushes the tree.
async fn run(inner: Arc<Inner>) {
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut running: HashMap<tokio::task::Id, (String, Uetr)> = HashMap::new();
    let mut flush = tokio::time::interval(Duration::from_millis(WEBHOOK_FLUSH_INTERVAL_MS));
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        for job in inner.take_ready() {
            let key = (job.event.client_id.clone(), job.event.uetr);
            let handle = tasks.spawn(deliver(inner.clone(), job));
            running.insert(handle.id(), key);
        }
        tokio::select! {
            () = inner.wake.notified() => {}
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => {
                        tracing::error!(error = %e, "a webhook delivery task ended abnormally");
                        e.id()
                    }
                };
                if let Some((client_id, uetr)) = running.remove(&id) {
                    inner.release(&client_id, uetr);
                }
            }
            _ = flush.tick() => inner.flush_if_dirty().await,
        }
    }
}

/// Why one attempt did not deliver.
struct AttemptFailure {
    http_status: Option<u16>,
    error: String,
}

/// Delivers one event: attempts with backoff until a 2xx or `attempts_max`.
async fn deliver(inner: Arc<Inner>, job: Job) {
    let event = &job.event;
    let span = tracing::info_span!(
        "gateway.webhook.deliver",
        client_id = %event.client_id,
        event_id = %event.event_id,
        uetr = %event.uetr,
        status = event.status.as_str()
    );
    async {
        let policy = inner.policy;
        let body = match serde_json::to_vec(event) {
            Ok(body) => body,
            Err(e) => {
                finish(&inner, &job, 0, DeliveryState::Failed, None, Some(format!("cannot encode the event: {e}")));
                return;
            }
        };
        let Some(endpoint) = inner.endpoints.get(&event.client_id) else {
            finish(&inner, &job, 0, DeliveryState::Failed, None, Some("no endpoint".to_owned()));
            return;
        };
        for attempt in 1..=policy.attempts_max {
            match attempt_once(&inner, endpoint, event, &body).await {
                Ok(http_status) => {
                    tracing::info!(attempt, http_status, "webhook delivered");
                    finish(&inner, &job, attempt, DeliveryState::Delivered, Some(http_status), None);
                    return;
                }
                Err(failure) if attempt == policy.attempts_max => {
                    tracing::warn!(attempt, http_status = failure.http_status, error = %failure.error, "webhook failed for good");
                    finish(&inner, &job, attempt, DeliveryState::Failed, failure.http_status, Some(failure.error));
                    return;
                }
                Err(failure) => {
                    let delay_ms = with_jitter(policy.backoff_ms(attempt));
                    tracing::info!(attempt, http_status = failure.http_status, error = %failure.error, delay_ms, "webhook attempt failed; retrying");
                    inner.update_record(event, |record| {
                        record.attempts = attempt;
                        record.last_http_status = failure.http_status;
                        record.last_error = Some(failure.error);
                    });
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                }
            }
        }
    }
    .instrument(span)
    .await;
}

fn finish(
    inner: &Inner,
    job: &Job,
    attempts: u32,
    state: DeliveryState,
    http_status: Option<u16>,
    error: Option<String>,
) {
    inner.update_record(&job.event, |record| {
        record.attempts = attempts;
        record.state = state;
        record.last_http_status = http_status;
        record.last_error = error;
    });
    inner.forget(job.seq);
}

/// `delay_ms` plus up to 10% random jitter.
pub(super) fn with_jitter(delay_ms: u64) -> u64 {
    let jitter_max = delay_ms / 10;
    delay_ms.saturating_add(rand::thread_rng().gen_range(0..=jitter_max))
}

async fn attempt_once(
    inner: &Inner,
    endpoint: &WebhookEndpoint,
    event: &WebhookEvent,
    body: &[u8],
) -> Result<u16, AttemptFailure> {
    let timestamp_s = now_ms() / 1_000;
    let response = inner
        .client
        .post(&endpoint.url)
        .timeout(Duration::from_millis(inner.policy.timeout_ms))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(EVENT_ID_HEADER, &event.event_id)
        .header(SIGNATURE_HEADER, sign(&endpoint.secret, timestamp_s, body))
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| AttemptFailure {
            http_status: None,
            error: describe_transport_error(&e, WEBHOOK_ERROR_LEN_MAX),
        })?;
    let status = response.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        let error = match status.canonical_reason() {
            Some(text) => format!("HTTP {} {text}", status.as_u16()),
            None => format!("HTTP {}", status.as_u16()),
        };
        Err(AttemptFailure { http_status: Some(status.as_u16()), error })
    }
}
