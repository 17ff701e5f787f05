//! Webhooks to wallet clients: when a client's remittance changes status the
//! gateway POSTs a signed [`WebhookEvent`] to the URL the client registered,
//! retrying with exponential backoff, and keeps a bounded delivery log per
//! client.
//!
//! # Wire format
//!
//! `POST <url>` with `Content-Type: application/json`, the event as the body,
//! and the headers
//!
//! - `Remit-Event-Id: <event_id>`, the same on every attempt: receivers dedupe by it;
//! - `Remit-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`,
//!   computed afresh for every attempt (see [`sign`] and [`verify`]). The MAC
//!   covers the timestamp and the body, so a replay with a new timestamp fails
//!   and an old one is refused by the receiver's tolerance.
//!
//! Any 2xx answer is a delivery; anything else (another status, a timeout, a
//! connection error) is retried after `backoff_initial_ms`, doubling up to
//! `backoff_max_ms` with up to 10% jitter, until `attempts_max` attempts have
//! been made; the delivery is then `failed`. Redirects are not followed.
//!
//! # What is guaranteed
//!
//! - Clients are independent: every client has its own queue and at most
//!   [`WEBHOOK_IN_FLIGHT_PER_CLIENT_MAX`] deliveries in flight, so a slow or
//!   dead endpoint delays only its own client's events.
//! - Events of one remittance (same client and UETR) are delivered one at a
//!   time in the order they were enqueued: an event is not attempted before
//!   the previous event of that remittance was delivered or has failed for
//!   good. If one fails, later ones are still sent, so receivers should trust
//!   `status` and `created_at_ms` rather than arrival order alone. Events of
//!   different remittances may arrive in any order.
//! - Delivery is at least once: a crash between a 2xx and removing the event
//!   from the store sends it again after the restart, with the same event id.
//! - With a sled tree, pending events survive a restart: each is written on
//!   enqueue and removed when it is delivered or has failed; the tree is
//!   flushed every [`WEBHOOK_FLUSH_INTERVAL_MS`] when it changed, so a crash
//!   can lose the events of that last interval. The attempt count restarts
//!   from zero after a restart.
//!
//! **Invariant:** webhook secrets never reach a log or a `Debug` rendering,
//! nor do endpoint URLs beyond their origin (a URL may carry a token).
//!
//! # Persistence
//!
//! Tree given to [`WebhookDispatcher::new`] (e.g. `webhook_pending`): key =
//! enqueue sequence as u64 big-endian; value = [`PENDING_ENCODING_V1`] byte
//! followed by JSON `{"enqueued_at_ms": u64, "event": WebhookEvent}`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use rand::Rng as _;
use remit_settlement::Uetr;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::outbound::describe_transport_error;
use crate::remittance::record::Status;

/// Delivery records kept per client (the oldest are dropped first).
pub const WEBHOOK_LOG_PER_CLIENT_MAX: usize = 1_000;
/// Events waiting per client; an event beyond it is recorded as failed.
pub const WEBHOOK_PENDING_PER_CLIENT_MAX: usize = 10_000;
/// Deliveries in flight (including their backoff waits) per client.
pub const WEBHOOK_IN_FLIGHT_PER_CLIENT_MAX: usize = 4;
/// Deliveries in flight over all clients.
pub const WEBHOOK_IN_FLIGHT_MAX: usize = 256;
/// How often the pending tree is flushed when it changed.
pub const WEBHOOK_FLUSH_INTERVAL_MS: u64 = 200;
/// Longest error text kept in a delivery record.
pub const WEBHOOK_ERROR_LEN_MAX: usize = 200;
/// Most `v1=` and other parts read from a `Remit-Signature` header.
pub const SIGNATURE_HEADER_PARTS_MAX: usize = 16;
/// Upper bound of `RetryPolicy::attempts_max`.
pub const WEBHOOK_ATTEMPTS_MAX_LIMIT: u32 = 100;
/// Version byte that starts every pending event stored in the sled tree.
pub const PENDING_ENCODING_V1: u8 = 1;
/// Name of the event id header.
pub const EVENT_ID_HEADER: &str = "Remit-Event-Id";
/// Name of the signature header.
pub const SIGNATURE_HEADER: &str = "Remit-Signature";

const _: () = assert!(WEBHOOK_IN_FLIGHT_PER_CLIENT_MAX <= WEBHOOK_IN_FLIGHT_MAX);
const _: () = assert!(WEBHOOK_LOG_PER_CLIENT_MAX > 0 && WEBHOOK_PENDING_PER_CLIENT_MAX > 0);

type HmacSha256 = Hmac<Sha256>;

// ---------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------

/// Why a `Remit-Signature` header was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookVerifyError {
    /// The header is not `t=<unix seconds>,v1=<64 hex digits>[,v1=...]`.
    #[error("Remit-Signature: malformed header ({0})")]
    Malformed(&'static str),
    /// No `v1` signature matches the body under this secret (tampered body,
    /// wrong secret or altered timestamp).
    #[error("Remit-Signature: no v1 signature matches the body")]
    SignatureMismatch,
    /// The signature is genuine but its timestamp is too far from now.
    #[error("Remit-Signature: timestamp {timestamp_s} is more than {tolerance_s} s away from now ({now_s})")]
    OutsideTolerance {
        /// The signed timestamp.
        timestamp_s: u64,
        /// The receiver's clock.
        now_s: u64,
        /// The tolerance allowed.
        tolerance_s: u64,
    },
}

fn mac(secret: &[u8], timestamp_s: u64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `Remit-Signature` header value for `body` sent at `timestamp_s`:
/// `t=<timestamp_s>,v1=<hex HMAC-SHA256(secret, "<timestamp_s>." + body)>`.
pub fn sign(secret: &[u8], timestamp_s: u64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp_s, body).finalize().into_bytes();
    format!("t={timestamp_s},v1={}", hex::encode(tag))
}

/// Checks a `Remit-Signature` header for `body`: one `t=` timestamp and one or
/// more `v1=` signatures (several during a secret rotation; unknown keys are
/// ignored). Accepts when a `v1` matches, compared in constant time, and the
/// timestamp is within `tolerance_s` of `now_s` either way.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_s: u64,
    tolerance_s: u64,
) -> Result<(), WebhookVerifyError> {
    let (timestamp_s, signatures) = parse_signature_header(header)?;
    let authentic = signatures.iter().any(|tag| mac(secret, timestamp_s, body).verify_slice(tag).is_ok());
    if !authentic {
        return Err(WebhookVerifyError::SignatureMismatch);
    }
    if timestamp_s.abs_diff(now_s) > tolerance_s {
        return Err(WebhookVerifyError::OutsideTolerance { timestamp_s, now_s, tolerance_s });
    }
    Ok(())
}

fn parse_signature_header(header: &str) -> Result<(u64, Vec<[u8; 32]>), WebhookVerifyError> {
    use WebhookVerifyError::Malformed;
    let mut timestamp_s = None;
    let mut signatures = Vec::new();
    for (index, part) in header.split(',').enumerate() {
        if index >= SIGNATURE_HEADER_PARTS_MAX {
            return Err(Malformed("too many parts"));
        }
        let (key, value) = part.trim().split_once('=').ok_or(Malformed("expected comma-separated key=value pairs"))?;
        match key {
            "t" => {
                if timestamp_s.is_some() {
                    return Err(Malformed("more than one t"));
                }
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Malformed("t is not a number of seconds"));
                }
                timestamp_s = Some(value.parse::<u64>().map_err(|_| Malformed("t is out of range"))?);
            }
            "v1" => {
                let mut tag = [0u8; 32];
                hex::decode_to_slice(value, &mut tag).map_err(|_| Malformed("v1 is not 64 hex digits"))?;
                signatures.push(tag);
            }
            _ => {}
        }
    }
    let timestamp_s = timestamp_s.ok_or(Malformed("no t"))?;
    if signatures.is_empty() {
        return Err(Malformed("no v1"));
    }
    Ok((timestamp_s, signatures))
}

// ---------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------

/// Where a client's webhooks go. `Debug` shows only the URL's origin and
/// hides the secret.
#[derive(Clone)]
pub struct WebhookEndpoint {
    /// The receiver, `http://` or `https://`.
    pub url: String,
    /// The HMAC key shared with the client.
    pub secret: Vec<u8>,
}

/// A webhook endpoint that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookEndpointError {
    /// The URL does not parse or is not http(s).
    #[error("webhook url: {0}")]
    Url(String),
    /// The secret is shorter than [`WEBHOOK_SECRET_LEN_MIN`] bytes.
    #[error("webhook secret: shorter than {WEBHOOK_SECRET_LEN_MIN} bytes")]
    SecretTooShort,
}

/// Shortest webhook secret accepted by [`WebhookEndpoint::new`].
pub const WEBHOOK_SECRET_LEN_MIN: usize = 16;

impl WebhookEndpoint {
    /// Checks that `url` is an http(s) URL and the secret is at least
    /// [`WEBHOOK_SECRET_LEN_MIN`] bytes.
    pub fn new(url: impl Into<String>, secret: impl Into<Vec<u8>>) -> Result<Self, WebhookEndpointError> {
        let url = url.into();
        let parsed = reqwest::Url::parse(&url).map_err(|e| WebhookEndpointError::Url(e.to_string()))?;
        if let Some(reason) = crate::outbound::refuse_insecure_url(&parsed) {
            return Err(WebhookEndpointError::Url(reason));
        }
        let secret = secret.into();
        if secret.len() < WEBHOOK_SECRET_LEN_MIN {
            return Err(WebhookEndpointError::SecretTooShort);
        }
        Ok(Self { url, secret })
    }

    /// `scheme://host:port` of the URL, safe to log.
    pub fn origin(&self) -> String {
        match reqwest::Url::parse(&self.url) {
            Ok(url) => url.origin().ascii_serialization(),
            Err(_) => "<invalid url>".to_owned(),
        }
    }
}

impl fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookEndpoint").field("origin", &self.origin()).field("secret", &"***").finish()
    }
}

/// A status change sent to a client. `Debug` omits `data`, which may hold
/// personal data.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct WebhookEvent {
    /// A UUID v4, the same on every attempt; receivers dedupe by it.
    pub event_id: String,
    /// The wallet client the remittance belongs to.
    pub client_id: String,
    /// The remittance.
    pub uetr: Uetr,
    /// Its new status.
    pub status: Status,
    /// When the status changed, Unix milliseconds.
    pub created_at_ms: u64,
    /// The remittance as the REST API shows it.
    pub data: serde_json::Value,
}

impl WebhookEvent {
    /// An event with a fresh random id.
    pub fn new(
        client_id: impl Into<String>,
        uetr: Uetr,
        status: Status,
        created_at_ms: u64,
        data: serde_json::Value,
    ) -> Self {
        Self {
            event_id: uuid::Uuid::new_v4().to_string(),
            client_id: client_id.into(),
            uetr,
            status,
            created_at_ms,
            data,
        }
    }
}

impl fmt::Debug for WebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookEvent")
            .field("event_id", &self.event_id)
            .field("client_id", &self.client_id)
            .field("uetr", &self.uetr)
            .field("status", &self.status)
            .field("created_at_ms", &self.created_at_ms)
            .finish_non_exhaustive()
    }
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its first attempt or a retry.
    Pending,
    /// A 2xx was received.
    Delivered,
    /// Every attempt failed (or the client's queue was full).
    Failed,
}

/// The delivery of one event, as the delivery log shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The event.
    pub event_id: String,
    /// The remittance.
    pub uetr: Uetr,
    /// The status the event announces.
    pub status: Status,
    /// Attempts made so far.
    pub attempts: u32,
    /// Where the delivery stands.
    pub state: DeliveryState,
    /// The HTTP status of the last attempt, if one was answered.
    pub last_http_status: Option<u16>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// When the event was enqueued, Unix milliseconds.
    pub created_at_ms: u64,
    /// When the record last changed, Unix milliseconds.
    pub updated_at_ms: u64,
}

/// How deliveries are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts before a delivery is `failed` (1..=100).
    pub attempts_max: u32,
    /// Wait after the first failed attempt; doubled after each further one.
    pub backoff_initial_ms: u64,
    /// Longest wait between attempts.
    pub backoff_max_ms: u64,
    /// Timeout of one attempt.
    pub timeout_ms: u64,
}

impl Default for RetryPolicy {
    /// 8 attempts, 500 ms doubling to 60 s, 5 s timeout.
    fn default() -> Self {
        Self { attempts_max: 8, backoff_initial_ms: 500, backoff_max_ms: 60_000, timeout_ms: 5_000 }
    }
}

impl RetryPolicy {
    /// The policy with every value brought into its usable range.
    fn clamped(self) -> Self {
        Self {
            attempts_max: self.attempts_max.clamp(1, WEBHOOK_ATTEMPTS_MAX_LIMIT),
            backoff_initial_ms: self.backoff_initial_ms.max(1),
            backoff_max_ms: self.backoff_max_ms.max(self.backoff_initial_ms.max(1)),
            timeout_ms: self.timeout_ms.max(1),
        }
    }

    /// The wait after `failed_attempts` failed attempts, without jitter.
    pub fn backoff_ms(&self, failed_attempts: u32) -> u64 {
        let doublings = failed_attempts.saturating_sub(1).min(63);
        self.backoff_initial_ms.saturating_mul(1u64 << doublings).min(self.backoff_max_ms)
    }
}

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

#[derive(Serialize, Deserialize)]
struct StoredPending {
    enqueued_at_ms: u64,
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

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The stored form of a pending event (see the module docs).
fn encode_pending(enqueued_at_ms: u64, event: &WebhookEvent) -> Result<Vec<u8>, serde_json::Error> {
    let mut bytes = vec![PENDING_ENCODING_V1];
    serde_json::to_writer(&mut bytes, &StoredPending { enqueued_at_ms, event: event.clone() })?;
    Ok(bytes)
}

fn decode_pending(bytes: &[u8]) -> Result<StoredPending, String> {
    match bytes.split_first() {
        Some((&PENDING_ENCODING_V1, json)) => serde_json::from_slice(json).map_err(|e| e.to_string()),
        Some((version, _)) => Err(format!("unknown encoding version {version}")),
        None => Err("empty value".to_owned()),
    }
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
fn with_jitter(delay_ms: u64) -> u64 {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use axum::Router;

    use super::*;

    const SECRET: &[u8] = b"whsec-test-0123456789abcdef";

    fn fast_policy(attempts_max: u32) -> RetryPolicy {
        RetryPolicy { attempts_max, backoff_initial_ms: 20, backoff_max_ms: 50, timeout_ms: 2_000 }
    }

    fn event(client_id: &str, uetr: Uetr, status: Status) -> WebhookEvent {
        WebhookEvent::new(
            client_id,
            uetr,
            status,
            1_700_000_000_000,
            serde_json::json!({"uetr": uetr, "status": status}),
        )
    }

    /// One request as the receiver saw it.
    #[derive(Clone, Debug)]
    struct Received {
        event_id: String,
        signature: String,
        body: Bytes,
    }

    /// A receiver that answers 500 to its first `fail_first` requests, then
    /// 200 (after `delay` each).
    struct Receiver {
        fail_first: usize,
        delay: Duration,
        count: AtomicUsize,
        received: Mutex<Vec<Received>>,
    }

    impl Receiver {
        fn received(&self) -> Vec<Received> {
            self.received.lock().expect("lock").clone()
        }
    }

    async fn receiver(fail_first: usize, delay: Duration) -> (String, Arc<Receiver>) {
        async fn hook(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let received = Received { event_id: header(EVENT_ID_HEADER), signature: header(SIGNATURE_HEADER), body };
            receiver.received.lock().expect("lock").push(received);
            let n = receiver.count.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(receiver.delay).await;
            if n < receiver.fail_first {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        }
        let state =
            Arc::new(Receiver { fail_first, delay, count: AtomicUsize::new(0), received: Mutex::new(Vec::new()) });
        let app = Router::new().route("/hook", post(hook)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}/hook"), state)
    }

    fn endpoints(entries: &[(&str, &str)]) -> HashMap<String, WebhookEndpoint> {
        entries
            .iter()
            .map(|(client, url)| ((*client).to_owned(), WebhookEndpoint::new(*url, SECRET).expect("valid endpoint")))
            .collect()
    }

    /// Waits up to 10 s for `done`.
    async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn finished(dispatcher: &WebhookDispatcher, client_id: &str, count: usize) -> bool {
        let records = dispatcher.deliveries(client_id, usize::MAX);
        records.len() == count && records.iter().all(|r| r.state != DeliveryState::Pending)
    }

    #[test]
    fn signatures_verify_and_reject_specifically() {
        let body = br#"{"event_id":"e-1"}"#;
        let now = 1_700_000_000;
        let header = sign(SECRET, now, body);
        assert!(header.starts_with(&format!("t={now},v1=")), "{header}");
        assert_eq!(header.len(), format!("t={now},v1=").len() + 64);

        let check = |secret: &[u8], header: &str, body: &[u8], expected: Result<(), WebhookVerifyError>| {
            assert_eq!(verify(secret, header, body, now, 300), expected, "{header}");
        };
        let stale = sign(SECRET, now - 301, body);
        let future = sign(SECRET, now + 301, body);
        let rotated = format!("t={now},v1={},v1={}", "00".repeat(32), &header[header.len() - 64..]);
        let forged_time = header.replacen(&now.to_string(), &(now + 1).to_string(), 1);
        let malformed = WebhookVerifyError::Malformed;
        check(SECRET, &header, body, Ok(()));
        check(SECRET, &sign(SECRET, now - 300, body), body, Ok(()));
        check(SECRET, &rotated, body, Ok(()));
        check(SECRET, &format!("{header},v2=abc"), body, Ok(()));
        check(SECRET, &header, br#"{"event_id":"e-2"}"#, Err(WebhookVerifyError::SignatureMismatch));
        check(b"another-secret-0123456789", &header, body, Err(WebhookVerifyError::SignatureMismatch));
        check(SECRET, &forged_time, body, Err(WebhookVerifyError::SignatureMismatch));
        let outside = |timestamp_s| WebhookVerifyError::OutsideTolerance { timestamp_s, now_s: now, tolerance_s: 300 };
        check(SECRET, &stale, body, Err(outside(now - 301)));
        check(SECRET, &future, body, Err(outside(now + 301)));
        check(SECRET, "", body, Err(malformed("expected comma-separated key=value pairs")));
        check(SECRET, "garbage", body, Err(malformed("expected comma-separated key=value pairs")));
        check(SECRET, &header[..header.find(',').expect("comma")], body, Err(malformed("no v1")));
        check(SECRET, &header[header.find(',').expect("comma") + 1..], body, Err(malformed("no t")));
        check(SECRET, &format!("t=abc,v1={}", "00".repeat(32)), body, Err(malformed("t is not a number of seconds")));
        check(SECRET, &format!("t=-5,v1={}", "00".repeat(32)), body, Err(malformed("t is not a number of seconds")));
        check(
            SECRET,
            &format!("t=99999999999999999999,v1={}", "00".repeat(32)),
            body,
            Err(malformed("t is out of range")),
        );
        check(SECRET, &format!("t=1,t=2,v1={}", "00".repeat(32)), body, Err(malformed("more than one t")));
        check(SECRET, &format!("t={now},v1=zz"), body, Err(malformed("v1 is not 64 hex digits")));
        check(SECRET, &format!("t={now},v1={}", "00".repeat(31)), body, Err(malformed("v1 is not 64 hex digits")));
        check(SECRET, &format!("{header}{}", ",x=1".repeat(16)), body, Err(malformed("too many parts")));
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Pinned so that receivers in other languages can check their code.
        let header = sign(b"secret", 1_700_000_000, b"{}");
        let mut expected = HmacSha256::new_from_slice(b"secret").expect("any key length");
        expected.update(b"1700000000.{}");
        assert_eq!(header, format!("t=1700000000,v1={}", hex::encode(expected.finalize().into_bytes())));
    }

    #[test]
    fn backoff_doubles_up_to_the_max() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy,
            RetryPolicy { attempts_max: 8, backoff_initial_ms: 500, backoff_max_ms: 60_000, timeout_ms: 5_000 }
        );
        let waits: Vec<u64> = (1..=9).map(|n| policy.backoff_ms(n)).collect();
        assert_eq!(waits, [500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]);
        assert_eq!(policy.backoff_ms(u32::MAX), 60_000);
        for _ in 0..100 {
            let delay = with_jitter(1_000);
            assert!((1_000..=1_100).contains(&delay), "{delay}");
        }
        let clamped =
            RetryPolicy { attempts_max: 0, backoff_initial_ms: 0, backoff_max_ms: 0, timeout_ms: 0 }.clamped();
        assert_eq!(clamped, RetryPolicy { attempts_max: 1, backoff_initial_ms: 1, backoff_max_ms: 1, timeout_ms: 1 });
    }

    #[test]
    fn secrets_and_personal_data_stay_out_of_debug() {
        let endpoint = WebhookEndpoint::new("https://hooks.example.com/in?token=abc123", SECRET).expect("valid");
        let shown = format!("{endpoint:?}");
        assert!(shown.contains("https://hooks.example.com"), "{shown}");
        assert!(!shown.contains("whsec") && !shown.contains("abc123"), "{shown}");
        let dispatcher =
            WebhookDispatcher::new(HashMap::from([("c1".to_owned(), endpoint)]), None, RetryPolicy::default());
        assert!(!format!("{dispatcher:?}").contains("whsec"));
        let shown = format!("{:?}", event("c1", Uetr::new_random(), Status::Completed));
        assert!(!shown.contains("data"), "{shown}");

        assert_eq!(
            WebhookEndpoint::new("https://x", b"short".to_vec()).map(|_| ()),
            Err(WebhookEndpointError::SecretTooShort)
        );
        assert!(matches!(WebhookEndpoint::new("ftp://x", SECRET), Err(WebhookEndpointError::Url(_))));
        assert!(matches!(WebhookEndpoint::new("not a url", SECRET), Err(WebhookEndpointError::Url(_))));
    }

    #[test]
    fn pending_encoding_is_pinned() {
        let uetr: Uetr = "eb6305c9-1f7f-49de-aed0-16487c27b42d".parse().expect("v4 uetr");
        let event = WebhookEvent {
            event_id: "0b0a6f5e-8d4c-4f3e-9d55-2a8e6f1b7c01".to_owned(),
            client_id: "wallet-1".to_owned(),
            uetr,
            status: Status::PayoutPending,
            created_at_ms: 1_700_000_000_000,
            data: serde_json::json!({"amount": "100.00"}),
        };
        let bytes = encode_pending(1_700_000_000_123, &event).expect("encodes");
        let expected = concat!(
            "\u{1}{\"enqueued_at_ms\":1700000000123,\"event\":{\"event_id\":\"0b0a6f5e-8d4c-4f3e-9d55-2a8e6f1b7c01\",",
            "\"client_id\":\"wallet-1\",\"uetr\":\"eb6305c9-1f7f-49de-aed0-16487c27b42d\",\"status\":\"payout_pending\",",
            "\"created_at_ms\":1700000000000,\"data\":{\"amount\":\"100.00\"}}}"
        );
        assert_eq!(String::from_utf8(bytes.clone()).expect("utf-8"), expected);
        let decoded = decode_pending(&bytes).expect("decodes");
        assert_eq!(decoded.event, event);
        assert_eq!(decoded.enqueued_at_ms, 1_700_000_000_123);
        assert!(decode_pending(b"\x02{}").is_err());
        assert!(decode_pending(b"").is_err());
    }

    #[tokio::test]
    async fn events_of_clients_without_endpoint_are_ignored() {
        let dispatcher = WebhookDispatcher::new(endpoints(&[("c1", "http://127.0.0.1:9/hook")]), None, fast_policy(1));
        assert!(dispatcher.has_endpoint("c1"));
        assert!(!dispatcher.has_endpoint("c2"));
        dispatcher.enqueue(event("c2", Uetr::new_random(), Status::Completed));
        assert!(dispatcher.deliveries("c2", 10).is_empty());
    }

    #[tokio::test]
    async fn delivery_log_is_bounded_and_newest_first() {
        let dispatcher = WebhookDispatcher::new(endpoints(&[("c1", "http://127.0.0.1:9/hook")]), None, fast_policy(1));
        let events: Vec<WebhookEvent> =
            (0..WEBHOOK_LOG_PER_CLIENT_MAX + 5).map(|_| event("c1", Uetr::new_random(), Status::Submitted)).collect();
        for event in &events {
            dispatcher.enqueue(event.clone());
        }
        let all = dispatcher.deliveries("c1", usize::MAX);
        assert_eq!(all.len(), WEBHOOK_LOG_PER_CLIENT_MAX);
        assert_eq!(all[0].event_id, events[events.len() - 1].event_id);
        assert_eq!(all[all.len() - 1].event_id, events[5].event_id);
        let newest = dispatcher.deliveries("c1", 2);
        assert_eq!(newest.len(), 2);
        assert_eq!(newest[1].event_id, events[events.len() - 2].event_id);
        assert!(all.iter().all(|r| r.state == DeliveryState::Pending && r.attempts == 0));
    }

    #[tokio::test]
    async fn failed_attempts_are_retried_with_the_same_event_id_and_fresh_signatures() {
        let (url, receiver) = receiver(2, Duration::ZERO).await;
        let dispatcher = WebhookDispatcher::new(endpoints(&[("c1", &url)]), None, fast_policy(5));
        let sent = event("c1", Uetr::new_random(), Status::Completed);
        dispatcher.enqueue(sent.clone());
        let worker = dispatcher.spawn();
        wait_until("the delivery", || finished(&dispatcher, "c1", 1)).await;

        let records = dispatcher.deliveries("c1", 10);
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(record.event_id, sent.event_id);
        assert_eq!((record.state, record.attempts), (DeliveryState::Delivered, 3));
        assert_eq!((record.last_http_status, record.last_error.as_deref()), (Some(200), None));
        assert_eq!((record.uetr, record.status), (sent.uetr, Status::Completed));
        assert!(record.updated_at_ms >= record.created_at_ms);

        let received = receiver.received();
        assert_eq!(received.len(), 3, "exactly three attempts");
        let now_s = now_ms() / 1_000;
        for attempt in &received {
            assert_eq!(attempt.event_id, sent.event_id);
            verify(SECRET, &attempt.signature, &attempt.body, now_s, 60).expect("valid signature on every attempt");
            let body: WebhookEvent = serde_json::from_slice(&attempt.body).expect("event json");
            assert_eq!(body, sent);
        }
        worker.abort();
    }

    #[tokio::test]
    async fn unreachable_endpoint_ends_failed_after_attempts_max() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        drop(listener);
        let dispatcher =
            WebhookDispatcher::new(endpoints(&[("c1", &format!("http://{addr}/hook"))]), None, fast_policy(3));
        dispatcher.enqueue(event("c1", Uetr::new_random(), Status::Returned));
        let worker = dispatcher.spawn();
        wait_until("the failure", || finished(&dispatcher, "c1", 1)).await;
        let record = &dispatcher.deliveries("c1", 1)[0];
        assert_eq!((record.state, record.attempts, record.last_http_status), (DeliveryState::Failed, 3, None));
        let error = record.last_error.as_deref().unwrap_or("");
        assert!(error.starts_with("connection failed"), "{error}");
        worker.abort();
    }

    #[tokio::test]
    async fn events_of_one_remittance_arrive_in_order() {
        let (url, receiver) = receiver(1, Duration::ZERO).await;
        let dispatcher = WebhookDispatcher::new(endpoints(&[("c1", &url)]), None, fast_policy(3));
        let uetr = Uetr::new_random();
        for status in [Status::Submitted, Status::Committed, Status::Final] {
            dispatcher.enqueue(event("c1", uetr, status));
        }
        let worker = dispatcher.spawn();
        wait_until("three deliveries", || finished(&dispatcher, "c1", 3)).await;
        let statuses: Vec<Status> = receiver
            .received()
            .iter()
            .map(|r| serde_json::from_slice::<WebhookEvent>(&r.body).expect("event json").status)
            .collect();
        assert_eq!(statuses, [Status::Submitted, Status::Submitted, Status::Committed, Status::Final]);
        assert!(dispatcher.deliveries("c1", 3).iter().all(|r| r.state == DeliveryState::Delivered));
        worker.abort();
    }

    #[tokio::test]
    async fn a_slow_endpoint_does_not_hold_up_other_clients() {
        let (slow_url, _slow) = receiver(0, Duration::from_secs(30)).await;
        let (fast_url, fast) = receiver(0, Duration::ZERO).await;
        let policy = RetryPolicy { timeout_ms: 20_000, ..fast_policy(1) };
        let dispatcher = WebhookDispatcher::new(endpoints(&[("slow", &slow_url), ("fast", &fast_url)]), None, policy);
        for _ in 0..WEBHOOK_IN_FLIGHT_PER_CLIENT_MAX + 2 {
            dispatcher.enqueue(event("slow", Uetr::new_random(), Status::Completed));
        }
        dispatcher.enqueue(event("fast", Uetr::new_random(), Status::Completed));
        let worker = dispatcher.spawn();
        wait_until("the fast delivery", || finished(&dispatcher, "fast", 1)).await;
        assert_eq!(fast.received().len(), 1);
        assert!(dispatcher.deliveries("slow", usize::MAX).iter().all(|r| r.state == DeliveryState::Pending));
        worker.abort();
    }

    #[tokio::test]
    async fn a_pending_event_is_delivered_after_a_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, receiver) = receiver(0, Duration::ZERO).await;
        let sent = event("c1", Uetr::new_random(), Status::PayoutPending);
        {
            let db = sled::open(dir.path()).expect("open sled");
            let tree = db.open_tree("webhook_pending").expect("open tree");
            let dispatcher = WebhookDispatcher::new(endpoints(&[("c1", &url)]), Some(tree.clone()), fast_policy(3));
            dispatcher.enqueue(sent.clone());
            assert_eq!(tree.len(), 1);
            // The node stops before the dispatcher ran.
            drop(dispatcher);
            db.flush().expect("flush");
        }
        // sled releases its file lock from its flusher thread shortly after
        // the last handle is dropped, so the reopen may have to wait a little.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let db = loop {
            match sled::open(dir.path()) {
                Ok(db) => break db,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "sled still locked; retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("reopen sled: {e}"),
            }
        };
        let tree = db.open_tree("webhook_pending").expect("open tree");
        let dispatcher = WebhookDispatcher::new(endpoints(&[("c1", &url)]), Some(tree.clone()), fast_policy(3));
        let records = dispatcher.deliveries("c1", 10);
        assert_eq!(records.len(), 1);
        assert_eq!((records[0].event_id.as_str(), records[0].state), (sent.event_id.as_str(), DeliveryState::Pending));

        let later = event("c1", Uetr::new_random(), Status::Completed);
        dispatcher.enqueue(later.clone());
        let worker = dispatcher.spawn();
        wait_until("both deliveries", || finished(&dispatcher, "c1", 2)).await;
        wait_until("the tree to empty", || tree.is_empty()).await;
        let ids: HashSet<String> = receiver.received().iter().map(|r| r.event_id.clone()).collect();
        assert_eq!(ids, HashSet::from([sent.event_id.clone(), later.event_id.clone()]));
        assert!(dispatcher.deliveries("c1", 10).iter().all(|r| r.state == DeliveryState::Delivered));
        worker.abort();
    }

    #[tokio::test]
    async fn pending_events_of_unknown_clients_are_dropped_on_restore() {
        let db = sled::Config::new().temporary(true).open().expect("temporary sled");
        let tree = db.open_tree("webhook_pending").expect("open tree");
        let first = WebhookDispatcher::new(
            endpoints(&[("gone", "http://127.0.0.1:9/hook")]),
            Some(tree.clone()),
            fast_policy(1),
        );
        first.enqueue(event("gone", Uetr::new_random(), Status::Completed));
        drop(first);
        assert_eq!(tree.len(), 1);
        let second =
            WebhookDispatcher::new(endpoints(&[("c1", "http://127.0.0.1:9/hook")]), Some(tree.clone()), fast_policy(1));
        assert!(tree.is_empty());
        assert!(second.deliveries("gone", 10).is_empty());
    }
}
