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
//!
//! # Layout
//!
//! `signing` holds the `Remit-Signature` scheme, `dispatcher` the queues and
//! the delivery workers, `store` the encoding of pending events in sled.

use std::fmt;

use remit_settlement::Uetr;
use serde::{Deserialize, Serialize};

use crate::remittance::record::Status;

mod dispatcher;
mod signing;
mod store;

pub use dispatcher::WebhookDispatcher;
pub use signing::{sign, verify, WebhookVerifyError};

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

#[cfg(test)]
mod tests;
