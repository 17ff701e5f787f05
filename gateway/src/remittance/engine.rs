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
//! against the ledger commitment, paid through the [`PayoutAdapter`], and the
//! outcome reported on the ledger in a batch signed by this gateway.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use rand::RngCore;
use remit_compliance::{ScreenedParty, Screening, ScreeningDecision, ScreeningSubject};
use remit_proto::v1::{PaymentMessageEnvelope, SubmitBatchRequest};
use remit_settlement::block::{Block, Entry, EntryResult, TransferOutcome};
use remit_settlement::codec::Writer;
use remit_settlement::hash::Digest32;
use remit_settlement::ids::{ChainId, Height, ParticipantId, Uetr};
use remit_settlement::replica::state_machine::lock as lock_chain;
use remit_settlement::replica::SharedChain;
use remit_settlement::store::LedgerStore;
use remit_settlement::{Transfer, TransferBatch, UetrMap};
use sha2::{Digest as _, Sha256};
use tokio::sync::{broadcast, mpsc, Notify, Semaphore};
use tonic::Status as GrpcStatus;
use tracing::{debug, info, info_span, warn, Instrument};
use uuid::Uuid;

use super::corridor::Corridors;
use super::fx::RateSource;
use super::journal::{InboxMessage, IncomingTransfer, Journal, JournalError, JournalEvent};
use super::party::Party;
use super::payouts::{payout_step, settle, PayoutQueue, PayoutStep, RetryPolicy};
use super::quote::{self, Quote, QuoteBook, QuoteId, QuoteRequest};
use super::record::{commitment, LedgerPosition, PaymentMessage, Remittance, Role, Status, StatusChange};
use super::QuoteError;
use crate::node::peers::Peers;
use crate::node::proposer::reason_name;
use crate::payout::{PayoutAdapter, PayoutInstruction, PayoutResult};
use crate::webhook::{WebhookDispatcher, WebhookEvent};

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
/// Longest idempotency key.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 64;
/// Longest unstructured remittance information.
pub const REMITTANCE_INFORMATION_LEN_MAX: usize = 140;
/// Largest payment message accepted from a peer.
pub const PAYMENT_MESSAGE_BYTES_MAX: usize = 64 * 1024;
/// Attempts to fetch a missing or bad payment message before returning the
/// transfer (about a minute with backoff).
pub const MESSAGE_FETCH_ATTEMPTS_MAX: u32 = 12;
/// A transfer whose message is still missing this long after it was first
/// seen is returned, whatever the number of attempts.
const MESSAGE_FETCH_GIVE_UP: Duration = Duration::from_secs(75);
/// Wait before the first look for a missing message (the push may be late).
const MESSAGE_FETCH_FIRST_WAIT: Duration = Duration::from_millis(200);
/// Longest wait between two fetches of a missing message; also the wait
/// after an origin said it holds no remittance for the transfer at all.
const MESSAGE_FETCH_WAIT_MAX: Duration = Duration::from_secs(10);
/// Fetches are due on a grid of this step, so that one round (one call per
/// origin) serves every transfer due in the step.
const MESSAGE_FETCH_TICK: Duration = Duration::from_millis(50);
/// Most messages asked of an origin in one FetchPaymentMessages call.
pub const FETCH_MESSAGES_MAX: usize = 1_000;

/// A certified incoming transfer whose message is being fetched.
struct Awaited {
    incoming: IncomingTransfer,
    attempts: u32,
    backoff: Duration,
    /// When the transfer was first seen without its message.
    since: Instant,
}
/// When each awaited transfer's next fetch is due, on a grid of
/// [`MESSAGE_FETCH_TICK`] steps, so that a round serves a whole step.
struct FetchSchedule {
    start: Instant,
    due: BTreeSet<(Instant, Uetr)>,
}

impl FetchSchedule {
    fn new(start: Instant) -> Self {
        Self { start, due: BTreeSet::new() }
    }

    /// Schedules `uetr` at the first grid step at or after `at`.
    fn insert(&mut self, at: Instant, uetr: Uetr) {
        let tick = MESSAGE_FETCH_TICK.as_nanos();
        let offset = at.saturating_duration_since(self.start).as_nanos();
        let steps = u32::try_from(offset.div_ceil(tick)).unwrap_or(u32::MAX);
        self.due.insert((self.start + MESSAGE_FETCH_TICK * steps, uetr));
    }

    /// The next due time, if any.
    fn first(&self) -> Option<Instant> {
        self.due.first().map(|(at, _)| *at)
    }

    /// Takes every transfer due at or before `now`.
    fn take_due(&mut self, now: Instant) -> Vec<Uetr> {
        let mut ready = Vec::new();
        while let Some(&(at, uetr)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.pop_first();
            ready.push(uetr);
        }
        ready
    }
}

/// Status updates buffered for slow watchers.
const UPDATES_CAPACITY: usize = 65_536;
/// Most remittances paid out in one batch.
const PAYOUT_BATCH_MAX: usize = 1_024;
/// Payout batches in flight at once.
const PAYOUT_BATCHES_IN_FLIGHT_MAX: usize = 8;

/// The kind of a request error; maps to gRPC codes and HTTP statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input (400 / INVALID_ARGUMENT).
    InvalidArgument,
    /// No such thing (404 / NOT_FOUND).
    NotFound,
    /// Not possible in the current state (409 / FAILED_PRECONDITION).
    FailedPrecondition,
    /// Conflicts with an earlier request (409 / ALREADY_EXISTS).
    AlreadyExists,
    /// No or bad credentials (401 / UNAUTHENTICATED).
    Unauthenticated,
    /// Not this client's (403 / PERMISSION_DENIED).
    PermissionDenied,
    /// Rate limit or capacity (429 / RESOURCE_EXHAUSTED).
    ResourceExhausted,
    /// Temporarily unable; retry (503 / UNAVAILABLE).
    Unavailable,
    /// A fault on our side (500 / INTERNAL).
    Internal,
}

impl ErrorKind {
    /// The gRPC code name, e.g. `INVALID_ARGUMENT`.
    pub fn code_name(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "INVALID_ARGUMENT",
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::FailedPrecondition => "FAILED_PRECONDITION",
            ErrorKind::AlreadyExists => "ALREADY_EXISTS",
            ErrorKind::Unauthenticated => "UNAUTHENTICATED",
            ErrorKind::PermissionDenied => "PERMISSION_DENIED",
            ErrorKind::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorKind::Unavailable => "UNAVAILABLE",
            ErrorKind::Internal => "INTERNAL",
        }
    }
}

/// A refused request: what kind, which field, the ISO 20022 reason code
/// where one fits, and a message. Nothing was recorded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// The kind.
    pub kind: ErrorKind,
    /// The offending field, e.g. `beneficiary.account.value`.
    pub field: Option<String>,
    /// ISO 20022 status reason code, e.g. `AM12`.
    pub reason_code: Option<String>,
    /// Human-readable message, starting with the field when there is one.
    pub message: String,
}

impl RequestError {
    /// An error of `kind` about `field`.
    pub fn new(kind: ErrorKind, field: Option<&str>, reason_code: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            kind,
            field: field.map(str::to_owned),
            reason_code: reason_code.map(str::to_owned),
            message: message.into(),
        }
    }

    /// Bad input in `field`.
    pub fn invalid(field: &str, reason_code: Option<&str>, reason: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::InvalidArgument, Some(field), reason_code, format!("{field}: {reason}"))
    }

    fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::Internal, None, None, message.to_string())
    }
}

impl From<QuoteError> for RequestError {
    fn from(error: QuoteError) -> Self {
        let kind = match &error {
            QuoteError::UnknownQuote { .. } => ErrorKind::NotFound,
            QuoteError::QuoteExpired { .. } | QuoteError::QuoteAlreadyUsed { .. } => ErrorKind::FailedPrecondition,
            QuoteError::BookFull { .. } | QuoteError::ClientQuotesFull { .. } => ErrorKind::ResourceExhausted,
            QuoteError::Rate(_) => ErrorKind::FailedPrecondition,
            _ => ErrorKind::InvalidArgument,
        };
        let message = error.to_string();
        Self::new(kind, Some(error.field()), error.reason_code(), message)
    }
}

impl From<JournalError> for RequestError {
    fn from(error: JournalError) -> Self {
        Self::internal(format!("not recorded, retry: {error}"))
    }
}

/// A create request, already parsed from the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateInput {
    /// The quote to take; empty when `price` is given.
    pub quote_id: String,
    /// Price at the current rates instead of taking a quote.
    pub price: Option<QuoteRequest>,
    /// Who sends.
    pub originator: Party,
    /// Who receives.
    pub beneficiary: Party,
    /// ISO 20022 purpose code.
    pub purpose: String,
    /// Client-chosen key; retries with it return the same remittance.
    pub idempotency_key: String,
    /// Unstructured information for the beneficiary.
    pub remittance_information: String,
}

/// A list filter.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only these statuses (empty: all).
    pub statuses: Vec<Status>,
    /// Created at or after (ms).
    pub created_from_ms: Option<u64>,
    /// Created before (ms).
    pub created_to_ms: Option<u64>,
    /// Page size (1 to 500).
    pub page_size: usize,
    /// Continue after this position (from the previous page).
    pub page_token: Option<String>,
}

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
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EngineConfig({})", self.me)
    }
}

#[derive(Default)]
struct State {
    // Boxed: growing the map moves pointers, not whole records.
    remittances: UetrMap<Box<Remittance>>,
    idempotency: HashMap<(String, String), Uetr>,
    by_client: HashMap<String, BTreeSet<(u64, Uetr)>>,
    inbox: UetrMap<InboxMessage>,
    incoming: UetrMap<IncomingTransfer>,
    /// Destination records already built (and their messages checked) for
    /// `accepted` events about to be applied, so the message is not parsed
    /// twice; empty outside [`Engine::commit_accepting`].
    prepared: UetrMap<Box<Remittance>>,
    /// Payment message bytes of origin remittances created since start and
    /// not yet taken by the submitter, so the message is serialised once.
    message_bytes: UetrMap<Vec<u8>>,
    /// Return reports journalled (`ReturnDue`: code, reason) whose report is
    /// not yet seen certified.
    returns_due: UetrMap<(String, String)>,
    cursor: u64,
}

impl State {
    /// Applies one event; returns the uetr of a remittance that changed
    /// (for `Statuses`, pushes each changed one to `changed` instead).
    fn apply_into(&mut self, event: JournalEvent, changed: &mut Vec<Uetr>) {
        if let JournalEvent::PayoutStarted { uetrs, at_ms } = event {
            let change = StatusChange::new(Status::PayoutPending, at_ms, None, "");
            for uetr in uetrs {
                let Some(record) = self.remittances.get_mut(&uetr) else { continue };
                if record.role == Role::Destination && record.advance(change.clone()) {
                    changed.push(uetr);
                }
            }
        } else if let JournalEvent::Statuses { uetrs, change, ledger } = event {
            for uetr in uetrs {
                let Some(record) = self.remittances.get_mut(&uetr) else { continue };
                let mut moved = false;
                if ledger.is_some() && record.ledger.is_none() {
                    record.ledger = ledger;
                    moved = true;
                }
                if record.advance(change.clone()) || moved {
                    changed.push(uetr);
                }
            }
        } else if let Some(uetr) = self.apply(event) {
            changed.push(uetr);
        }
    }

    /// Applies one event; returns the uetr of a remittance that changed.
    fn apply(&mut self, event: JournalEvent) -> Option<Uetr> {
        match event {
            JournalEvent::Statuses { .. } | JournalEvent::PayoutStarted { .. } => {
                let mut changed = Vec::new();
                self.apply_into(event, &mut changed);
                changed.pop()
            }
            JournalEvent::Accepted { uetr, ledger, at_ms } => {
                if self.remittances.contains_key(&uetr) {
                    return None;
                }
                let record = match self.prepared.remove(&uetr) {
                    Some(record) => record,
                    None => {
                        let Some(record) = self.inbox.get(&uetr).and_then(|m| destination_record(m, ledger, at_ms))
                        else {
                            warn!(%uetr, "journal: accepted transfer without a readable payment message; skipped");
                            return None;
                        };
                        Box::new(record)
                    }
                };
                self.incoming.remove(&uetr);
                self.inbox.remove(&uetr);
                self.remittances.insert(uetr, record);
                Some(uetr)
            }
            JournalEvent::Created { remittance } => {
                let uetr = remittance.uetr;
                if self.remittances.contains_key(&uetr) {
                    return None;
                }
                if remittance.role == Role::Origin {
                    self.idempotency.insert((remittance.client_id.clone(), remittance.idempotency_key.clone()), uetr);
                    self.by_client
                        .entry(remittance.client_id.clone())
                        .or_default()
                        .insert((remittance.created_at_ms(), uetr));
                } else {
                    self.incoming.remove(&uetr);
                    self.inbox.remove(&uetr);
                }
                self.remittances.insert(uetr, remittance);
                Some(uetr)
            }
            JournalEvent::Status { uetr, change, ledger, payout_reference } => {
                if ledger.is_some() && matches!(change.status, Status::Completed | Status::Returned) {
                    self.returns_due.remove(&uetr);
                }
                let record = self.remittances.get_mut(&uetr)?;
                let mut changed = false;
                if ledger.is_some() && record.ledger.is_none() {
                    record.ledger = ledger;
                    changed = true;
                }
                if payout_reference.is_some() && record.payout_reference.is_none() {
                    record.payout_reference = payout_reference;
                    changed = true;
                }
                (record.advance(change) || changed).then_some(uetr)
            }
            JournalEvent::PaidOut { uetr, reference } => {
                let record = self.remittances.get_mut(&uetr)?;
                if record.payout_reference.is_some() {
                    return None;
                }
                record.payout_reference = Some(reference);
                Some(uetr)
            }
            JournalEvent::ReturnDue { uetr, reason_code, reason } => {
                // Returned: a message arriving later must not make it payable.
                self.incoming.remove(&uetr);
                self.inbox.remove(&uetr);
                self.returns_due.insert(uetr, (reason_code, reason));
                None
            }
            JournalEvent::MessageDelivered { uetr } => {
                let record = self.remittances.get_mut(&uetr)?;
                record.message_delivered = true;
                None
            }
            JournalEvent::Inbox { message } => {
                if !self.remittances.contains_key(&message.uetr) {
                    self.inbox.insert(message.uetr, message);
                }
                None
            }
            JournalEvent::Incoming { transfer } => {
                if !self.remittances.contains_key(&transfer.uetr) {
                    self.incoming.insert(transfer.uetr, transfer);
                }
                None
            }
            JournalEvent::Cursor { height } => {
                self.cursor = self.cursor.max(height);
                None
            }
        }
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
}

/// Where the engine submits to and reads from: the local node.
#[derive(Clone)]
pub struct LedgerAccess {
    /// Where batches and reports go: the local proposer (validator) or the
    /// validators (gateway).
    pub intake: Arc<dyn crate::node::intake::LedgerIntake>,
    /// The local chain.
    pub chain: SharedChain,
    /// Clients to the other gateways.
    pub peers: Peers,
    /// Blocks the local node applied recently.
    pub recent_blocks: super::recent::RecentBlocks,
}

impl std::fmt::Debug for LedgerAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LedgerAccess")
    }
}

struct Inner {
    config: EngineConfig,
    quotes: QuoteBook,
    screening: Arc<dyn Screening>,
    payout: Arc<dyn PayoutAdapter>,
    webhooks: Option<WebhookDispatcher>,
    /// Status changes already announced to webhooks, per origin remittance
    /// (how long a prefix of its history).
    announced: Mutex<UetrMap<usize>>,
    ledger: LedgerAccess,
    state: Mutex<State>,
    journal: Journal,
    updates: broadcast::Sender<Arc<Remittance>>,
    created: Notify,
    submit_tx: mpsc::UnboundedSender<Uetr>,
    payout_tx: mpsc::UnboundedSender<Uetr>,
    /// UETRs queued for payout or being paid (each once).
    payout_queue: PayoutQueue,
    fetch_tx: mpsc::UnboundedSender<(Uetr, IncomingTransfer)>,
    report_tx: mpsc::UnboundedSender<super::reports::PendingReport>,
}

/// The remittance engine (cheap to clone).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Engine({})", self.inner.config.me)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn fingerprint(input: &CreateInput) -> String {
    let mut hasher = Sha256::new();
    for part in [
        input.quote_id.as_bytes(),
        format!("{:?}", input.price).as_bytes(),
        &serde_json::to_vec(&input.originator).unwrap_or_default(),
        &serde_json::to_vec(&input.beneficiary).unwrap_or_default(),
        input.purpose.as_bytes(),
        input.remittance_information.as_bytes(),
    ] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

fn validate_input(input: &CreateInput) -> Result<Option<QuoteId>, RequestError> {
    let key = &input.idempotency_key;
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RequestError::invalid(
            "idempotency_key",
            None,
            format!("must be 1 to {IDEMPOTENCY_KEY_LEN_MAX} printable ASCII characters without spaces"),
        ));
    }
    let quote_id = match (&input.price, input.quote_id.is_empty()) {
        (Some(_), true) => None,
        (Some(_), false) => return Err(RequestError::invalid("quote", None, "give quote_id or quote, not both")),
        (None, _) => Some(
            Uuid::parse_str(&input.quote_id)
                .map(QuoteId::from_uuid)
                .map_err(|_| RequestError::invalid("quote_id", None, "not a quote id (UUID)"))?,
        ),
    };
    input
        .originator
        .validate("originator")
        .map_err(|e| RequestError::invalid(&e.field, Some(e.reason_code()), &e.reason))?;
    input
        .beneficiary
        .validate("beneficiary")
        .map_err(|e| RequestError::invalid(&e.field, Some(e.reason_code()), &e.reason))?;
    let purpose = &input.purpose;
    if purpose.len() != 4 || !purpose.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
        return Err(RequestError::invalid(
            "purpose",
            Some("RR12"),
            "must be an ISO 20022 purpose code of 4 uppercase letters or digits, e.g. FAMI",
        ));
    }
    let info = &input.remittance_information;
    if info.chars().count() > REMITTANCE_INFORMATION_LEN_MAX || info.chars().any(char::is_control) {
        return Err(RequestError::invalid(
            "remittance_information",
            None,
            format!("at most {REMITTANCE_INFORMATION_LEN_MAX} characters, no control characters"),
        ));
    }
    Ok(quote_id)
}

fn screened(party: &Party) -> ScreenedParty {
    ScreenedParty { name: party.full_name(), country: party.country.clone(), account: party.account.value.clone() }
}

enum Prepared {
    /// A new remittance and its payment message bytes (as committed to).
    New(Box<Remittance>, Vec<u8>),
    Existing(Uetr, String),
}

impl Engine {
    /// Opens the engine on the node's database and starts its tasks.
    pub fn start(
        config: EngineConfig,
        journal_path: &std::path::Path,
        ledger: LedgerAccess,
        screening: Arc<dyn Screening>,
        payout: Arc<dyn PayoutAdapter>,
        webhooks: Option<WebhookDispatcher>,
    ) -> Result<Self, EngineStartError> {
        let (journal, events) = Journal::open(journal_path)?;
        let mut state = State::default();
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
            screening,
            payout,
            webhooks,
            announced: Mutex::new(announced),
            ledger,
            state: Mutex::new(state),
            journal,
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
        info!(events = replayed, resumed, cursor = engine.state().cursor, "remittance engine started");
        tokio::spawn(engine.clone().run_submitter(submit_rx));
        tokio::spawn(engine.clone().run_follower());
        tokio::spawn(engine.clone().run_payouts(payout_rx));
        tokio::spawn(engine.clone().run_fetcher(fetch_rx));
        tokio::spawn(super::reports::run_reporter(engine.clone(), report_rx));
        let purger = engine.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                purger.inner.quotes.purge_expired(now_ms());
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
                        super::reports::queue_completed(self, record.uetr);
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
            super::reports::queue_returned(self, *uetr, reason_code, reason);
            resumed += 1;
        }
        for (uetr, incoming) in state.incoming.iter() {
            if self.inner.fetch_tx.send((*uetr, incoming.clone())).is_ok() {
                resumed += 1;
            }
        }
        resumed
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().expect("the engine state lock is never held across a panic")
    }

    /// This gateway's participant id.
    pub fn me(&self) -> &ParticipantId {
        &self.inner.config.me
    }

    /// The webhook dispatcher, when webhooks are configured.
    pub fn webhooks(&self) -> Option<&WebhookDispatcher> {
        self.inner.webhooks.as_ref()
    }

    /// Prices a quote and issues it.
    pub fn create_quote(
        &self,
        client: &str,
        request: &QuoteRequest,
    ) -> Result<(Quote, Option<ParticipantId>), RequestError> {
        let terms = quote::quote(&self.inner.config.corridors, self.inner.config.rates.as_ref(), request)?;
        let destination = self
            .inner
            .config
            .corridors
            .get(&request.corridor, "corridor")
            .ok()
            .and_then(|c| c.destination_participant().cloned());
        let quote = self.inner.quotes.issue(client, terms, now_ms())?;
        Ok((quote, destination))
    }

    /// Creates one remittance (see [`Engine::create_many`]).
    pub async fn create(&self, client: &str, input: CreateInput) -> Result<Remittance, RequestError> {
        self.create_or_repeat(client, input).await.map(|(remittance, _)| remittance)
    }

    /// [`Engine::create`], also saying whether the call was a repeat: `true`
    /// when the idempotency key had already created the remittance.
    pub async fn create_or_repeat(&self, client: &str, input: CreateInput) -> Result<(Remittance, bool), RequestError> {
        self.create_many_flagged(client, vec![input])
            .await
            .pop()
            .unwrap_or_else(|| Err(RequestError::internal("no result")))
    }

    /// Creates remittances, each judged on its own; answered once every new
    /// one is durable. A repeated idempotency key returns the remittance it
    /// created (waiting for it to be durable if it is in flight).
    pub async fn create_many(&self, client: &str, inputs: Vec<CreateInput>) -> Vec<Result<Remittance, RequestError>> {
        let results = self.create_many_flagged(client, inputs).await;
        results.into_iter().map(|result| result.map(|(remittance, _)| remittance)).collect()
    }

    /// [`Engine::create_many`], each result flagged `true` for a repeat.
    async fn create_many_flagged(
        &self,
        client: &str,
        inputs: Vec<CreateInput>,
    ) -> Vec<Result<(Remittance, bool), RequestError>> {
        let now = now_ms();
        let span = info_span!("remit.remittance.create", client, count = inputs.len());
        let mut results: Vec<Option<Result<Remittance, RequestError>>> = vec![None; inputs.len()];
        let mut fresh: Vec<(usize, Box<Remittance>, Vec<u8>)> = Vec::new();
        let mut existing: Vec<(usize, Uetr, String, String)> = Vec::new();
        for (index, input) in inputs.into_iter().enumerate() {
            let key = input.idempotency_key.clone();
            match self.prepare(client, input, now) {
                Ok(Prepared::New(record, message_bytes)) => fresh.push((index, record, message_bytes)),
                Ok(Prepared::Existing(uetr, fingerprint)) => existing.push((index, uetr, fingerprint, key)),
                Err(error) => results[index] = Some(Err(error)),
            }
        }
        if !fresh.is_empty() {
            let mut slots = Vec::with_capacity(fresh.len());
            let mut events = Vec::with_capacity(fresh.len());
            for (index, remittance, message_bytes) in fresh {
                slots.push((index, message_bytes));
                events.push(JournalEvent::Created { remittance });
            }
            let durable = self.inner.journal.append(&events).instrument(span.clone()).await;
            let mut state = self.state();
            for ((index, message_bytes), event) in slots.into_iter().zip(events) {
                let JournalEvent::Created { remittance: record } = event else { unreachable!("built as created") };
                let uetr = record.uetr;
                match &durable {
                    Ok(()) => {
                        let submit = record.status == Status::Received;
                        results[index] = Some(Ok((*record).clone()));
                        state.apply(JournalEvent::Created { remittance: record });
                        if submit {
                            // Kept for the submitter, which pushes the message.
                            state.message_bytes.insert(uetr, message_bytes);
                            let _ = self.inner.submit_tx.send(uetr);
                        }
                    }
                    Err(error) => {
                        state.idempotency.retain(|_, reserved| *reserved != uetr);
                        results[index] = Some(Err(RequestError::internal(format!("not recorded, retry: {error}"))));
                    }
                }
            }
            drop(state);
            self.inner.created.notify_waiters();
            if self.has_listeners(client) {
                for result in results.iter().flatten().flatten() {
                    self.publish(result.clone());
                }
            }
        }
        let mut repeats = vec![false; results.len()];
        for (index, uetr, fingerprint, key) in existing {
            results[index] = Some(self.wait_created(client, uetr, &fingerprint, &key).await);
            repeats[index] = true;
        }
        results
            .into_iter()
            .zip(repeats)
            .map(|(result, repeat)| {
                result
                    .unwrap_or_else(|| Err(RequestError::internal("no result")))
                    .map(|remittance| (remittance, repeat))
            })
            .collect()
    }

    fn prepare(&self, client: &str, input: CreateInput, now: u64) -> Result<Prepared, RequestError> {
        let quote_id = validate_input(&input)?;
        let fingerprint = fingerprint(&input);
        let uetr = Uetr::new_random();
        {
            let mut state = self.state();
            let slot = (client.to_owned(), input.idempotency_key.clone());
            if let Some(existing) = state.idempotency.get(&slot) {
                return Ok(Prepared::Existing(*existing, fingerprint));
            }
            state.idempotency.insert(slot, uetr);
        }
        let release = |engine: &Engine| {
            engine.state().idempotency.remove(&(client.to_owned(), input.idempotency_key.clone()));
            engine.inner.created.notify_waiters();
        };
        match self.build(client, &input, quote_id, uetr, fingerprint, now) {
            Ok((record, message_bytes)) => Ok(Prepared::New(Box::new(record), message_bytes)),
            Err(error) => {
                release(self);
                Err(error)
            }
        }
    }

    fn build(
        &self,
        client: &str,
        input: &CreateInput,
        quote_id: Option<QuoteId>,
        uetr: Uetr,
        fingerprint: String,
        now: u64,
    ) -> Result<(Remittance, Vec<u8>), RequestError> {
        let config = &self.inner.config;
        // Check the corridor before consuming the quote.
        let quote = match (quote_id, &input.price) {
            (Some(id), _) => self.inner.quotes.peek(client, id, now)?,
            (None, Some(request)) => {
                let terms = quote::quote(&config.corridors, config.rates.as_ref(), request).map_err(|e| {
                    let mut error = RequestError::from(e);
                    if let Some(field) = &error.field {
                        error.field = Some(format!("quote.{field}"));
                        error.message = format!("quote.{}", error.message);
                    }
                    error
                })?;
                Quote { id: QuoteId::from_uuid(Uuid::new_v4()), terms, issued_at_unix_ms: now, expires_at_unix_ms: now }
            }
            (None, None) => return Err(RequestError::invalid("quote_id", None, "is required")),
        };
        let corridor = config.corridors.get(&quote.terms.corridor, "quote_id")?;
        let destination = corridor.destination_participant().cloned().ok_or_else(|| {
            RequestError::new(
                ErrorKind::FailedPrecondition,
                Some("quote_id"),
                Some("AG03"),
                format!("quote_id: corridor {} has no paying gateway configured", quote.terms.corridor),
            )
        })?;
        if destination == config.me {
            return Err(RequestError::new(
                ErrorKind::FailedPrecondition,
                Some("quote_id"),
                Some("AG03"),
                "quote_id: this gateway pays out the corridor itself; on-us payments are not remittances",
            ));
        }
        let quote = match quote_id {
            Some(id) => self.inner.quotes.take(client, id, now)?,
            None => quote,
        };
        let terms = quote.terms;
        let message = PaymentMessage {
            uetr,
            origin: config.me.clone(),
            destination,
            originator: input.originator.clone(),
            beneficiary: input.beneficiary.clone(),
            purpose: input.purpose.clone(),
            remittance_information: input.remittance_information.clone(),
            send_amount: terms.send_amount,
            receive_amount: terms.receive_amount,
            settlement_amount: terms.settlement_amount,
            created_at_ms: now,
        };
        let mut salt = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut salt);
        let message_bytes = message.to_bytes();
        let commitment = commitment(&salt, &message_bytes);
        let subject = ScreeningSubject {
            uetr: uetr.to_string(),
            originator: screened(&input.originator),
            beneficiary: screened(&input.beneficiary),
            amount: terms.send_amount.amount().to_string(),
            currency: terms.send_amount.currency().code().to_owned(),
            purpose: input.purpose.clone(),
        };
        let mut history = vec![StatusChange::new(Status::Received, now, None, "")];
        match self.inner.screening.screen(&subject) {
            ScreeningDecision::Pass => {}
            ScreeningDecision::Hold(reasons) => {
                history.push(StatusChange::new(Status::ComplianceHold, now, Some("NARR"), reasons.join("; ")));
            }
            ScreeningDecision::Reject { reason_code, reason } => {
                history.push(StatusChange::new(Status::Rejected, now, Some(&reason_code), reason));
            }
        }
        let status = history.last().map_or(Status::Received, |c| c.status);
        let record = Remittance {
            uetr,
            role: Role::Origin,
            client_id: client.to_owned(),
            idempotency_key: input.idempotency_key.clone(),
            request_fingerprint: fingerprint,
            quote_id: Some(quote.id.to_string()),
            terms: Some(terms),
            message,
            salt,
            commitment,
            status,
            history,
            ledger: None,
            payout_reference: None,
            message_delivered: false,
        };
        Ok((record, message_bytes))
    }

    async fn wait_created(
        &self,
        client: &str,
        uetr: Uetr,
        fingerprint: &str,
        key: &str,
    ) -> Result<Remittance, RequestError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let notified = self.inner.created.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.state();
                if let Some(record) = state.remittances.get(&uetr) {
                    if record.request_fingerprint != fingerprint {
                        return Err(RequestError::new(
                            ErrorKind::AlreadyExists,
                            Some("idempotency_key"),
                            Some("DUPL"),
                            format!("idempotency_key: {key:?} was already used for a different request"),
                        ));
                    }
                    return Ok((**record).clone());
                }
                if state.idempotency.get(&(client.to_owned(), key.to_owned())) != Some(&uetr) {
                    return Err(RequestError::new(
                        ErrorKind::Unavailable,
                        None,
                        None,
                        "the first request with this idempotency key failed; retry",
                    ));
                }
            }
            if tokio::time::timeout_at(deadline.into(), notified).await.is_err() {
                return Err(RequestError::new(ErrorKind::Unavailable, None, None, "still being recorded; retry"));
            }
        }
    }

    /// A client's remittance.
    pub fn get(&self, client: &str, uetr: &str) -> Result<Remittance, RequestError> {
        let uetr: Uetr =
            uetr.parse().map_err(|_| RequestError::invalid("uetr", None, "not a UETR (UUID version 4)"))?;
        let state = self.state();
        let record = state.remittances.get(&uetr).ok_or_else(|| {
            RequestError::new(ErrorKind::NotFound, Some("uetr"), None, format!("no remittance {uetr}"))
        })?;
        if record.role != Role::Origin || record.client_id != client {
            return Err(RequestError::new(
                ErrorKind::PermissionDenied,
                Some("uetr"),
                None,
                format!("remittance {uetr} belongs to another client"),
            ));
        }
        Ok((**record).clone())
    }

    /// A page of a client's remittances, oldest first.
    pub fn list(&self, client: &str, filter: &ListFilter) -> Result<(Vec<Remittance>, Option<String>), RequestError> {
        let after = match &filter.page_token {
            Some(token) if !token.is_empty() => {
                let parsed = token
                    .split_once('_')
                    .and_then(|(at, uetr)| Some((at.parse::<u64>().ok()?, uetr.parse::<Uetr>().ok()?)));
                Some(
                    parsed
                        .ok_or_else(|| RequestError::invalid("page_token", None, "not a token from a previous page"))?,
                )
            }
            _ => None,
        };
        let size = filter.page_size.clamp(1, 500);
        let state = self.state();
        let Some(index) = state.by_client.get(client) else { return Ok((Vec::new(), None)) };
        // Start at the page token or at `created_from_ms`, whichever is later.
        let from = filter.created_from_ms.map(|from| (from, Uetr::RANGE_MIN));
        let start = match (after, from) {
            (Some(after), Some(from)) if from > after => std::ops::Bound::Included(from),
            (Some(after), _) => std::ops::Bound::Excluded(after),
            (None, Some(from)) => std::ops::Bound::Included(from),
            (None, None) => std::ops::Bound::Unbounded,
        };
        let mut page = Vec::new();
        let mut last = None;
        for (at, uetr) in index.range((start, std::ops::Bound::Unbounded)) {
            if filter.created_to_ms.is_some_and(|to| *at >= to) {
                break;
            }
            last = Some((*at, *uetr));
            if filter.created_from_ms.is_some_and(|from| *at < from) {
                continue;
            }
            let Some(record) = state.remittances.get(uetr) else { continue };
            if !filter.statuses.is_empty() && !filter.statuses.contains(&record.status) {
                continue;
            }
            page.push((**record).clone());
            if page.len() == size {
                break;
            }
        }
        let more = page.len() == size
            && last.is_some_and(|key| {
                index.range((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded)).next().is_some()
            });
        let token = if more { last.map(|(at, uetr)| format!("{at}_{uetr}")) } else { None };
        Ok((page, token))
    }

    /// The current state and a receiver of later changes (filter by uetr).
    pub fn watch(
        &self,
        client: &str,
        uetr: &str,
    ) -> Result<(Remittance, broadcast::Receiver<Arc<Remittance>>), RequestError> {
        let receiver = self.inner.updates.subscribe();
        let record = self.get(client, uetr)?;
        Ok((record, receiver))
    }

    /// Cancels a remittance that has not been submitted.
    pub async fn cancel(&self, client: &str, uetr: &str, reason: &str) -> Result<Remittance, RequestError> {
        let record = self.get(client, uetr)?;
        let change = StatusChange::new(
            Status::Cancelled,
            now_ms(),
            Some("DS02"),
            if reason.is_empty() { "cancelled by the client".to_owned() } else { reason.chars().take(140).collect() },
        );
        let event = JournalEvent::Status { uetr: record.uetr, change, ledger: None, payout_reference: None };
        {
            let mut state = self.state();
            let current = state.remittances.get(&record.uetr).map(|r| r.status);
            if !matches!(current, Some(Status::Received | Status::ComplianceHold)) {
                return Err(RequestError::new(
                    ErrorKind::FailedPrecondition,
                    Some("uetr"),
                    None,
                    format!(
                        "remittance {} is {}; only received or held remittances can be cancelled",
                        record.uetr,
                        current.map_or("unknown", Status::as_str)
                    ),
                ));
            }
            // Applied under the lock so the submitter cannot take it meanwhile.
            state.apply(event.clone());
            state.message_bytes.remove(&record.uetr);
        }
        self.inner.journal.append(std::slice::from_ref(&event)).await?;
        let record = self.get(client, uetr)?;
        self.publish(record.clone());
        Ok(record)
    }

    /// Whether anyone would receive a change to one of `client`'s
    /// remittances (a watcher, or the client's webhook); when nobody would,
    /// records are not copied for publishing.
    fn has_listeners(&self, client: &str) -> bool {
        self.inner.updates.receiver_count() > 0
            || self.inner.webhooks.as_ref().is_some_and(|webhooks| webhooks.has_endpoint(client))
    }

    /// Sends a changed record to watchers, and to webhooks one event per
    /// status change not announced yet, each carrying that status and the
    /// time of the change (a record can pass several statuses between two
    /// publications, and can be published twice for one change).
    fn publish(&self, record: Remittance) {
        if let (Some(webhooks), Role::Origin) = (&self.inner.webhooks, record.role) {
            if webhooks.has_endpoint(&record.client_id) {
                let from = {
                    let mut announced =
                        self.inner.announced.lock().expect("the announced lock is never held across a panic");
                    let from = announced.get(&record.uetr).copied().unwrap_or(0);
                    announced.insert(record.uetr, record.history.len());
                    from
                };
                if from < record.history.len() {
                    let data = serde_json::to_value(crate::api::convert::remittance_json(&record)).unwrap_or_default();
                    for change in &record.history[from..] {
                        webhooks.enqueue(WebhookEvent {
                            event_id: Uuid::new_v4().to_string(),
                            client_id: record.client_id.clone(),
                            uetr: record.uetr,
                            status: change.status,
                            created_at_ms: change.at_ms,
                            data: data.clone(),
                        });
                    }
                }
            }
        }
        let _ = self.inner.updates.send(Arc::new(record));
    }

    /// Journals events, applies them, and publishes what changed.
    async fn commit(&self, events: Vec<JournalEvent>) -> Result<(), JournalError> {
        self.commit_accepting(events, Vec::new()).await
    }

    /// [`Engine::commit`], with the destination records that its `accepted`
    /// events stand for, already built from their checked messages.
    async fn commit_accepting(&self, events: Vec<JournalEvent>, prepared: Vec<Remittance>) -> Result<(), JournalError> {
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

    async fn commit_or_log(&self, events: Vec<JournalEvent>) {
        if let Err(error) = self.commit(events).await {
            warn!(%error, "journal append failed; the ledger follower will re-derive ledger states");
        }
    }

    // ---- origin: submission ----

    async fn run_submitter(self, mut rx: mpsc::UnboundedReceiver<Uetr>) {
        let in_flight = Arc::new(Semaphore::new(SUBMITS_IN_FLIGHT_MAX));
        loop {
            let Some(first) = rx.recv().await else { return };
            let mut uetrs = vec![first];
            let deadline = tokio::time::Instant::now() + Duration::from_millis(SUBMIT_BATCH_AGE_MS);
            while uetrs.len() < SUBMIT_BATCH_MAX {
                tokio::select! {
                    next = rx.recv() => match next { Some(uetr) => uetrs.push(uetr), None => break },
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
            let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
            let engine = self.clone();
            tokio::spawn(async move {
                engine.submit(uetrs).await;
                drop(permit);
            });
        }
    }

    async fn submit(&self, uetrs: Vec<Uetr>) {
        let now = now_ms();
        let mut transfers = Vec::with_capacity(uetrs.len());
        let mut envelopes: HashMap<ParticipantId, Vec<PaymentMessageEnvelope>> = HashMap::new();
        let mut submitted = Vec::new();
        {
            let mut state = self.state();
            for uetr in uetrs {
                // Serialised once, at creation (after a restart: again here).
                let cached_bytes = state.message_bytes.remove(&uetr);
                let Some(record) = state.remittances.get(&uetr) else { continue };
                if !matches!(record.status, Status::Received | Status::Submitted) || record.role != Role::Origin {
                    continue;
                }
                transfers.push(Transfer {
                    uetr,
                    origin: record.message.origin.clone(),
                    destination: record.message.destination.clone(),
                    amount: record.message.settlement_amount,
                    payload_commitment: record.commitment,
                    created_at_ms: record.message.created_at_ms,
                });
                if !record.message_delivered && self.inner.config.push_messages {
                    envelopes.entry(record.message.destination.clone()).or_default().push(PaymentMessageEnvelope {
                        uetr: uetr.as_bytes().to_vec(),
                        origin: record.message.origin.to_string(),
                        salt: record.salt.to_vec(),
                        message: cached_bytes.unwrap_or_else(|| record.message.to_bytes()),
                    });
                }
                let event = JournalEvent::Status {
                    uetr,
                    change: StatusChange::new(Status::Submitted, now, None, ""),
                    ledger: None,
                    payout_reference: None,
                };
                // In memory first, under the lock: a cancel can no longer win.
                state.apply(event.clone());
                submitted.push(event);
            }
        }
        if transfers.is_empty() {
            return;
        }
        let span = info_span!("remit.remittance.submit", transfers = transfers.len());
        let uetrs: Vec<Uetr> = transfers.iter().map(|t| t.uetr).collect();
        let journal = self.clone();
        tokio::spawn(async move { journal.commit_or_log(submitted).await });
        for (destination, batch) in envelopes {
            let engine = self.clone();
            tokio::spawn(async move { engine.deliver_messages(destination, batch).await });
        }
        let config = &self.inner.config;
        let batch = TransferBatch::sign(&config.chain_id, config.me.clone(), transfers, &config.signing_key);
        let mut w = Writer::with_capacity(64 + batch.transfers.len() * 100);
        batch.encode(&mut w);
        let bytes = w.into_bytes();
        let events = self.submit_with_retry(bytes, &uetrs).instrument(span).await;
        self.commit_or_log(events).await;
    }

    async fn submit_with_retry(&self, bytes: Vec<u8>, uetrs: &[Uetr]) -> Vec<JournalEvent> {
        let mut backoff = Duration::from_millis(50);
        loop {
            let request = SubmitBatchRequest { batch: bytes.clone(), forwarded: false };
            match self.inner.ledger.intake.submit(request).await {
                Ok(reply) => return self.outcome_events(&reply, uetrs),
                Err(status) if retryable(&status) => {
                    debug!(code = ?status.code(), message = status.message(), "batch submit failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(status) => {
                    warn!(code = ?status.code(), message = status.message(), "batch refused");
                    let now = now_ms();
                    return uetrs
                        .iter()
                        .map(|uetr| JournalEvent::Status {
                            uetr: *uetr,
                            change: StatusChange::new(Status::Rejected, now, Some("NARR"), status.message()),
                            ledger: None,
                            payout_reference: None,
                        })
                        .collect();
                }
            }
        }
    }

    fn outcome_events(&self, reply: &remit_proto::v1::SubmitBatchReply, uetrs: &[Uetr]) -> Vec<JournalEvent> {
        let now = now_ms();
        let position = Digest32::from_hex(&hex::encode(&reply.block_hash))
            .ok()
            .map(|block_hash| LedgerPosition { height: Height(reply.height), block_hash });
        let status_event = |uetr: Uetr, change: StatusChange, ledger: Option<LedgerPosition>| JournalEvent::Status {
            uetr,
            change,
            ledger,
            payout_reference: None,
        };
        if reply.batch_rejected {
            return uetrs
                .iter()
                .map(|uetr| {
                    let code = non_empty(&reply.batch_iso_code).unwrap_or("NARR");
                    status_event(*uetr, StatusChange::new(Status::Rejected, now, Some(code), &reply.batch_reason), None)
                })
                .collect();
        }
        let mut events = Vec::with_capacity(uetrs.len());
        for (uetr, result) in uetrs.iter().zip(&reply.results) {
            if result.accepted {
                events.push(status_event(*uetr, StatusChange::new(Status::Committed, now, None, ""), position));
            } else if result.reason == reason_name(remit_settlement::RejectReason::DuplicateUetr) {
                // An earlier attempt landed: the follower sets the position.
                events.push(status_event(*uetr, StatusChange::new(Status::Committed, now, None, ""), None));
            } else {
                let code = non_empty(&result.iso_code).unwrap_or("NARR");
                let change = StatusChange::new(Status::Rejected, now, Some(code), format!("ledger: {}", result.reason));
                events.push(status_event(*uetr, change, position));
            }
        }
        events
    }

    async fn deliver_messages(&self, destination: ParticipantId, envelopes: Vec<PaymentMessageEnvelope>) {
        let peers = &self.inner.ledger.peers;
        if peers.participant(&destination).is_none() {
            warn!(%destination, "no address for the destination gateway; it will have to fetch the messages");
            return;
        }
        let uetrs: Vec<Uetr> = envelopes.iter().filter_map(|e| uetr_from_bytes(&e.uetr)).collect();
        let mut backoff = Duration::from_millis(100);
        for _ in 0..8 {
            match peers.deliver_payment_messages(&destination, &envelopes).await {
                Ok(_) => {
                    let now = now_ms();
                    let mut events: Vec<JournalEvent> =
                        uetrs.iter().map(|uetr| JournalEvent::MessageDelivered { uetr: *uetr }).collect();
                    // A remittance already final moves on to payout_pending.
                    {
                        let state = self.state();
                        for uetr in &uetrs {
                            if state.remittances.get(uetr).is_some_and(|r| r.status == Status::Final) {
                                events.push(payout_pending(*uetr, now));
                            }
                        }
                    }
                    self.commit_or_log(events).await;
                    return;
                }
                Err(status) => {
                    debug!(%destination, code = ?status.code(), "payment message delivery failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        warn!(%destination, count = uetrs.len(), "payment messages not delivered; the destination will fetch them");
    }

    // ---- peer side: messages ----

    /// Stores payment messages pushed by the origin gateway `caller` (the
    /// authenticated caller; an envelope naming another origin refuses the
    /// whole call), durable before the reply, and pays out any certified
    /// transfer that was waiting.
    pub async fn receive_messages(
        &self,
        caller: &ParticipantId,
        envelopes: Vec<PaymentMessageEnvelope>,
    ) -> Result<usize, GrpcStatus> {
        let mut messages = Vec::with_capacity(envelopes.len());
        for (i, envelope) in envelopes.into_iter().enumerate() {
            if envelope.origin != caller.as_str() {
                return Err(GrpcStatus::permission_denied(format!("messages[{i}].origin: not the caller {caller}")));
            }
            messages
                .push(inbox_message(envelope).map_err(|e| GrpcStatus::invalid_argument(format!("messages[{i}].{e}")))?);
        }
        let count = messages.len();
        let events: Vec<JournalEvent> =
            messages.iter().cloned().map(|message| JournalEvent::Inbox { message }).collect();
        self.commit(events).await.map_err(|e| GrpcStatus::unavailable(e.to_string()))?;
        // Transfers certified before their message arrived.
        let waiting: Vec<(InboxMessage, IncomingTransfer)> = {
            let state = self.state();
            messages.into_iter().filter_map(|m| state.incoming.get(&m.uetr).cloned().map(|t| (m, t))).collect()
        };
        let accepted = waiting
            .into_iter()
            .filter_map(|(message, incoming)| self.verify_message(&incoming, &message).map(|record| (record, None)))
            .collect();
        self.accept_incoming(accepted).await;
        Ok(count)
    }

    /// The payment messages of this gateway's remittances among `uetrs`
    /// that go to `caller` (the authenticated caller, already checked to be
    /// the certified destination of each); the others are left out.
    pub fn messages_for(
        &self,
        uetrs: &[Vec<u8>],
        caller: &ParticipantId,
    ) -> Result<(Vec<PaymentMessageEnvelope>, Vec<Vec<u8>>), GrpcStatus> {
        if uetrs.len() > FETCH_MESSAGES_MAX {
            return Err(GrpcStatus::invalid_argument(format!("uetrs: at most {FETCH_MESSAGES_MAX}")));
        }
        let mut parsed = Vec::with_capacity(uetrs.len());
        for (i, bytes) in uetrs.iter().enumerate() {
            parsed.push(
                uetr_from_bytes(bytes)
                    .ok_or_else(|| GrpcStatus::invalid_argument(format!("uetrs[{i}]: expected a 16-byte UUID v4")))?,
            );
        }
        let state = self.state();
        let mut messages = Vec::new();
        let mut unknown = Vec::new();
        for uetr in parsed {
            match state.remittances.get(&uetr) {
                Some(record) if record.role == Role::Origin && record.message.destination == *caller => {
                    messages.push(PaymentMessageEnvelope {
                        uetr: uetr.as_bytes().to_vec(),
                        origin: record.message.origin.to_string(),
                        salt: record.salt.to_vec(),
                        message: record.message.to_bytes(),
                    });
                }
                _ => unknown.push(uetr.as_bytes().to_vec()),
            }
        }
        Ok((messages, unknown))
    }

    // ---- both sides: the ledger follower ----

    async fn run_follower(self) {
        loop {
            let (cursor, certified) = {
                let cursor = self.state().cursor;
                let certified = lock_chain(&self.inner.ledger.chain).certified_height().map_or(0, |h| h.0);
                (cursor, certified)
            };
            if certified <= cursor {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            // Every certified block available, recorded in one journal append.
            let mut events = Vec::new();
            let mut waiting = Vec::new();
            let mut payable = Vec::new();
            let mut prepared = Vec::new();
            let mut reached = cursor;
            for height in cursor + 1..=certified.min(cursor + 64) {
                let block = match self.inner.ledger.recent_blocks.take(height) {
                    Some(block) => block,
                    None => {
                        let chain = self.inner.ledger.chain.clone();
                        let bytes = tokio::task::spawn_blocking(move || {
                            lock_chain(&chain).store().block_bytes(Height(height)).ok().flatten()
                        })
                        .await
                        .ok()
                        .flatten();
                        // A block still missing after a snapshot install: wait for backfill.
                        let Some(block) = bytes.and_then(|b| Block::decode(&b).ok()) else { break };
                        Arc::new(block)
                    }
                };
                let (block_events, block_waiting, block_prepared, block_payable) = self.scan_block(&block);
                prepared.extend(block_prepared);
                events.extend(block_events);
                waiting.extend(block_waiting);
                payable.extend(block_payable);
                reached = height;
            }
            if reached == cursor {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            events.push(JournalEvent::Cursor { height: reached });
            let span = info_span!("remit.remittance.follow", from = cursor + 1, to = reached);
            if let Err(error) = self.commit_accepting(events, prepared).instrument(span).await {
                warn!(%error, reached, "cannot record ledger progress; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            for uetr in payable {
                let _ = self.inner.payout_tx.send(uetr);
            }
            for waiting in waiting {
                let _ = self.inner.fetch_tx.send(waiting);
            }
        }
    }

    /// Events for one certified block, incoming transfers that still need
    /// their message, the destination records its `accepted` events stand
    /// for, and incoming transfers ready to pay once the events are recorded.
    #[allow(clippy::type_complexity)]
    fn scan_block(
        &self,
        block: &Block,
    ) -> (Vec<JournalEvent>, Vec<(Uetr, IncomingTransfer)>, Vec<Remittance>, Vec<Uetr>) {
        let me = &self.inner.config.me;
        let now = now_ms();
        let position = LedgerPosition { height: block.height(), block_hash: block.hash() };
        let mut events = Vec::new();
        let mut waiting = Vec::new();
        let mut accepted_incoming = Vec::new();
        // Grouped by kind so that the journal stores one event per kind.
        let (mut finals, mut pending) = (Vec::new(), Vec::new());
        let state = self.state();
        for (entry, result) in block.entries.iter().zip(&block.results) {
            let EntryResult::Batch { outcomes } = result else { continue };
            match entry {
                Entry::TransferBatch { batch } => {
                    for (transfer, outcome) in batch.transfers.iter().zip(outcomes) {
                        if *outcome != TransferOutcome::Accepted {
                            continue;
                        }
                        if &transfer.origin == me {
                            if let Some(record) = state.remittances.get(&transfer.uetr) {
                                finals.push(transfer.uetr);
                                if record.message_delivered {
                                    pending.push(transfer.uetr);
                                }
                            }
                        } else if &transfer.destination == me && !state.remittances.contains_key(&transfer.uetr) {
                            let incoming = IncomingTransfer {
                                uetr: transfer.uetr,
                                origin: transfer.origin.clone(),
                                amount: transfer.amount,
                                commitment: transfer.payload_commitment,
                                ledger: position,
                            };
                            match state.inbox.get(&transfer.uetr).and_then(|m| self.verify_message(&incoming, m)) {
                                Some(record) => accepted_incoming.push(record),
                                None => {
                                    events.push(JournalEvent::Incoming { transfer: incoming.clone() });
                                    waiting.push((transfer.uetr, incoming));
                                }
                            }
                        }
                    }
                }
                other => {
                    let role_of = |uetr: &Uetr| state.remittances.get(uetr).map(|r| r.role);
                    super::reports::scan_reports(other, outcomes, me, &role_of, now, position, &mut events);
                }
            }
        }
        drop(state);
        if !finals.is_empty() {
            let change = StatusChange::new(Status::Final, now, None, "");
            events.push(JournalEvent::Statuses { uetrs: finals, change, ledger: Some(position) });
        }
        if !pending.is_empty() {
            let change = StatusChange::new(Status::PayoutPending, now, None, "");
            events.push(JournalEvent::Statuses { uetrs: pending, change, ledger: None });
        }
        let mut payable = Vec::with_capacity(accepted_incoming.len());
        for record in &accepted_incoming {
            payable.push(record.uetr);
            events.push(accepted_event(record));
        }
        (events, waiting, accepted_incoming, payable)
    }

    /// The destination record for an incoming transfer if `message` is its
    /// payment message (commitment, uetr, parties and amount all match).
    fn verify_message(&self, incoming: &IncomingTransfer, message: &InboxMessage) -> Option<Remittance> {
        let salt: [u8; 32] = message.salt.as_slice().try_into().ok()?;
        if commitment(&salt, &message.message) != incoming.commitment {
            warn!(uetr = %incoming.uetr, "payment message does not match the ledger commitment");
            return None;
        }
        let parsed = PaymentMessage::from_bytes(&message.message).ok()?;
        let matches = parsed.uetr == incoming.uetr
            && parsed.origin == incoming.origin
            && parsed.destination == self.inner.config.me
            && parsed.settlement_amount == incoming.amount;
        if !matches {
            warn!(uetr = %incoming.uetr, "payment message contradicts its ledger transfer");
            return None;
        }
        Some(build_destination_record(parsed, salt, incoming.commitment, incoming.ledger, now_ms()))
    }

    /// Records incoming transfers whose messages checked out (journalling
    /// a message first when it was fetched rather than pushed) and queues
    /// their payouts.
    async fn accept_incoming(&self, accepted: Vec<(Remittance, Option<InboxMessage>)>) {
        if accepted.is_empty() {
            return;
        }
        let mut events = Vec::with_capacity(accepted.len() * 2);
        let mut records = Vec::with_capacity(accepted.len());
        for (record, fetched) in accepted {
            if let Some(message) = fetched {
                events.push(JournalEvent::Inbox { message });
            }
            events.push(accepted_event(&record));
            records.push(record);
        }
        let uetrs: Vec<Uetr> = records.iter().map(|record| record.uetr).collect();
        if let Err(error) = self.commit_accepting(events, records).await {
            warn!(%error, count = uetrs.len(), "journal append failed; the transfers will be accepted again on restart");
            return;
        }
        for uetr in uetrs {
            let _ = self.inner.payout_tx.send(uetr);
        }
    }

    /// Obtains the payment messages of certified transfers that arrived
    /// without one: checks the inbox (the push may come late), then asks
    /// each origin for all of its missing messages in one call, retrying
    /// with backoff; after [`MESSAGE_FETCH_ATTEMPTS_MAX`] rounds without a
    /// valid message a transfer is returned (MS03).
    async fn run_fetcher(self, mut rx: mpsc::UnboundedReceiver<(Uetr, IncomingTransfer)>) {
        let mut awaited: UetrMap<Awaited> = UetrMap::new();
        let mut due = FetchSchedule::new(Instant::now());
        loop {
            let next = due.first();
            tokio::select! {
                arrived = rx.recv() => {
                    let Some(first) = arrived else { return };
                    // Everything waiting at once: one wake (and one timer)
                    // per burst, not per transfer.
                    let now = Instant::now();
                    let mut next = Some(first);
                    while let Some((uetr, incoming)) = next {
                        if !awaited.contains_key(&uetr) {
                            due.insert(now + MESSAGE_FETCH_FIRST_WAIT, uetr);
                            awaited.insert(uetr, Awaited { incoming, attempts: 0, backoff: MESSAGE_FETCH_FIRST_WAIT, since: now });
                        }
                        next = rx.try_recv().ok();
                    }
                    continue;
                }
                () = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            let ready = due.take_due(Instant::now());
            self.fetch_round(ready, &mut awaited, &mut due).await;
        }
    }

    async fn fetch_round(&self, ready: Vec<Uetr>, awaited: &mut UetrMap<Awaited>, due: &mut FetchSchedule) {
        let mut accepted = Vec::new();
        let mut by_origin: HashMap<ParticipantId, Vec<Uetr>> = HashMap::new();
        {
            let state = self.state();
            for uetr in ready {
                let Some(entry) = awaited.get(&uetr) else { continue };
                if state.remittances.contains_key(&uetr) {
                    awaited.remove(&uetr);
                    continue;
                }
                match state.inbox.get(&uetr).and_then(|m| self.verify_message(&entry.incoming, m)) {
                    Some(record) => {
                        accepted.push((record, None));
                        awaited.remove(&uetr);
                    }
                    None => by_origin.entry(entry.incoming.origin.clone()).or_default().push(uetr),
                }
            }
        }
        for (origin, uetrs) in by_origin {
            let peers = &self.inner.ledger.peers;
            for chunk in uetrs.chunks(FETCH_MESSAGES_MAX) {
                let mut found: HashMap<Uetr, InboxMessage> = HashMap::new();
                let mut unknown: HashSet<Uetr> = HashSet::new();
                if peers.participant(&origin).is_some() {
                    let request = remit_proto::v1::FetchPaymentMessagesRequest {
                        uetrs: chunk.iter().map(|uetr| uetr.as_bytes().to_vec()).collect(),
                        destination: self.inner.config.me.to_string(),
                    };
                    let span = info_span!("remit.remittance.fetch_messages", %origin, count = chunk.len());
                    if let Ok(reply) = peers.fetch_payment_messages(&origin, request).instrument(span).await {
                        unknown.extend(reply.unknown.iter().filter_map(|bytes| uetr_from_bytes(bytes)));
                        for envelope in reply.messages {
                            if let Ok(message) = inbox_message(envelope) {
                                found.insert(message.uetr, message);
                            }
                        }
                    }
                }
                let now = Instant::now();
                let mut returned = Vec::new();
                for uetr in chunk {
                    let Some(entry) = awaited.get_mut(uetr) else { continue };
                    let checked = found
                        .remove(uetr)
                        .and_then(|message| self.verify_message(&entry.incoming, &message).map(|r| (r, message)));
                    if let Some((record, message)) = checked {
                        accepted.push((record, Some(message)));
                        awaited.remove(uetr);
                        continue;
                    }
                    entry.attempts += 1;
                    if entry.attempts >= MESSAGE_FETCH_ATTEMPTS_MAX || now >= entry.since + MESSAGE_FETCH_GIVE_UP {
                        awaited.remove(uetr);
                        returned.push(*uetr);
                    } else {
                        // An origin that holds no remittance for it will not
                        // have one in a moment either: ask again only slowly.
                        entry.backoff = if unknown.contains(uetr) {
                            MESSAGE_FETCH_WAIT_MAX
                        } else {
                            (entry.backoff * 2).min(MESSAGE_FETCH_WAIT_MAX)
                        };
                        due.insert(now + entry.backoff, *uetr);
                    }
                }
                if let Some(first) = returned.first() {
                    warn!(%origin, count = returned.len(), first = %first, "no valid payment message; returning the transfers");
                    // Journalled before the reports are sent.
                    let (events, reports): (Vec<_>, Vec<_>) =
                        returned.iter().map(|uetr| super::reports::return_without_message(*uetr)).unzip();
                    if let Err(error) = self.commit(events).await {
                        warn!(%error, "cannot journal the returns; they are fetched again after a restart");
                    } else {
                        reports.into_iter().for_each(|report| super::reports::queue(self, report));
                    }
                }
            }
        }
        self.accept_incoming(accepted).await;
    }

    // ---- destination: payout ----

    /// Pays out in batches: one journal append marks a batch in flight
    /// (`PayoutStarted`, durable before the bank is called), the payouts run
    /// concurrently, and one append records their outcomes before the
    /// reports are queued. A UETR already queued or being paid is dropped
    /// here, whoever handed it in again (push, fetch, follower, resume).
    async fn run_payouts(self, mut rx: mpsc::UnboundedReceiver<Uetr>) {
        let limit = Arc::new(Semaphore::new(PAYOUT_BATCHES_IN_FLIGHT_MAX));
        let queue = self.inner.payout_queue.clone();
        loop {
            let Some(first) = rx.recv().await else { return };
            let mut uetrs = Vec::new();
            let mut next = Some(first);
            while let Some(uetr) = next.take() {
                if queue.admit(uetr) {
                    uetrs.push(uetr);
                }
                if uetrs.len() < PAYOUT_BATCH_MAX {
                    next = rx.try_recv().ok();
                }
            }
            if uetrs.is_empty() {
                continue;
            }
            let Ok(permit) = limit.clone().acquire_owned().await else { return };
            let engine = self.clone();
            let queue = queue.clone();
            tokio::spawn(async move {
                engine.pay_out(&uetrs).await;
                queue.release(&uetrs);
                drop(permit);
            });
        }
    }

    async fn pay_out(&self, uetrs: &[Uetr]) {
        // Destination remittances that are due, with whether the bank may
        // already hold them (then it is asked before it is paid).
        let mut due: Vec<(PayoutInstruction, bool)> = Vec::with_capacity(uetrs.len());
        {
            let state = self.state();
            for uetr in uetrs {
                let Some(record) = state.remittances.get(uetr) else { continue };
                let ask_first = match payout_step(record, state.returns_due.contains_key(uetr)) {
                    PayoutStep::Pay => false,
                    PayoutStep::AskBank => true,
                    PayoutStep::Nothing | PayoutStep::ReportCompleted | PayoutStep::ReportReturned => continue,
                };
                let instruction = PayoutInstruction {
                    uetr: *uetr,
                    origin: record.message.origin.clone(),
                    beneficiary: record.message.beneficiary.clone(),
                    amount: record.message.receive_amount,
                    purpose: record.message.purpose.clone(),
                    remittance_information: record.message.remittance_information.clone(),
                };
                due.push((instruction, ask_first));
            }
        }
        {
            let chain = lock_chain(&self.inner.ledger.chain);
            due.retain(|(instruction, _)| {
                chain
                    .state()
                    .applied_transfer(&instruction.uetr)
                    .is_none_or(|t| t.payout == remit_settlement::PayoutState::Open)
            });
        }
        let starting: Vec<Uetr> = due.iter().filter(|(_, ask_first)| !ask_first).map(|(i, _)| i.uetr).collect();
        if !starting.is_empty() {
            // No bank call before this is durable: a payout the journal does
            // not show in flight is never asked for after a restart.
            let event = JournalEvent::PayoutStarted { uetrs: starting, at_ms: now_ms() };
            if let Err(error) = self.commit(vec![event]).await {
                warn!(%error, "cannot journal payouts as started; not paying them");
                due.retain(|(_, ask_first)| *ask_first);
            }
        }
        let mut payouts = tokio::task::JoinSet::new();
        for (instruction, ask_first) in due {
            let adapter = self.inner.payout.clone();
            payouts.spawn(async move {
                let outcome = settle(adapter.as_ref(), &instruction, ask_first, RetryPolicy::DEFAULT).await;
                (instruction.uetr, outcome)
            });
        }
        let (mut events, mut reports) = (Vec::new(), Vec::new());
        while let Some(joined) = payouts.join_next().await {
            let Ok((uetr, outcome)) = joined else { continue };
            match outcome {
                PayoutResult::Paid { reference } => {
                    events.push(JournalEvent::PaidOut { uetr, reference });
                    reports.push(super::reports::completed(uetr));
                }
                PayoutResult::Refused { reason_code, reason } => {
                    info!(%uetr, %reason_code, "payout refused; returning");
                    let (event, report) = super::reports::return_due(uetr, &reason_code, &reason);
                    events.push(event);
                    reports.push(report);
                }
                PayoutResult::Failed { .. } => {}
            }
        }
        if events.is_empty() {
            return;
        }
        // The reports are sent only once the outcomes are durable; if the
        // append fails, a restart asks the bank again.
        if let Err(error) = self.commit(events).await {
            warn!(%error, "cannot journal payout outcomes; the bank is asked for them after a restart");
            return;
        }
        for report in reports {
            super::reports::queue(self, report);
        }
    }

    pub(crate) fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub(crate) fn ledger(&self) -> &LedgerAccess {
        &self.inner.ledger
    }

    pub(crate) fn report_sender(&self) -> &mpsc::UnboundedSender<super::reports::PendingReport> {
        &self.inner.report_tx
    }

    /// Any remittance this gateway holds, origin or destination side.
    pub fn record(&self, uetr: &Uetr) -> Option<Remittance> {
        self.state().remittances.get(uetr).map(|record| (**record).clone())
    }
}

/// The destination's record of a remittance: the payment message as
/// received, final on the ledger at `at_ms`.
fn build_destination_record(
    message: PaymentMessage,
    salt: [u8; 32],
    commitment: Digest32,
    ledger: LedgerPosition,
    at_ms: u64,
) -> Remittance {
    Remittance {
        uetr: message.uetr,
        role: Role::Destination,
        client_id: String::new(),
        idempotency_key: String::new(),
        request_fingerprint: String::new(),
        quote_id: None,
        terms: None,
        message,
        salt,
        commitment,
        status: Status::Final,
        history: vec![StatusChange::new(Status::Final, at_ms, None, "")],
        ledger: Some(ledger),
        payout_reference: None,
        message_delivered: true,
    }
}

/// Rebuilds a destination record on replay from its journalled message
/// (checked against the ledger before the `accepted` event was written).
fn destination_record(message: &InboxMessage, ledger: LedgerPosition, at_ms: u64) -> Option<Remittance> {
    let salt: [u8; 32] = message.salt.as_slice().try_into().ok()?;
    let parsed = PaymentMessage::from_bytes(&message.message).ok()?;
    let commitment = commitment(&salt, &message.message);
    Some(build_destination_record(parsed, salt, commitment, ledger, at_ms))
}

/// The journal event for a destination record built by `verify_message`.
fn accepted_event(record: &Remittance) -> JournalEvent {
    JournalEvent::Accepted {
        uetr: record.uetr,
        ledger: record.ledger.expect("destination records are built with their ledger position"),
        at_ms: record.created_at_ms(),
    }
}

fn payout_pending(uetr: Uetr, now: u64) -> JournalEvent {
    JournalEvent::Status {
        uetr,
        change: StatusChange::new(Status::PayoutPending, now, None, ""),
        ledger: None,
        payout_reference: None,
    }
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// Whether a failed submit may be retried with the same batch.
pub fn retryable(status: &GrpcStatus) -> bool {
    !matches!(status.code(), tonic::Code::InvalidArgument | tonic::Code::PermissionDenied)
}

fn uetr_from_bytes(bytes: &[u8]) -> Option<Uetr> {
    Uetr::from_bytes(bytes.try_into().ok()?).ok()
}

fn inbox_message(envelope: PaymentMessageEnvelope) -> Result<InboxMessage, String> {
    let uetr = uetr_from_bytes(&envelope.uetr).ok_or("uetr: expected a 16-byte UUID v4")?;
    let origin = ParticipantId::new(envelope.origin).map_err(|e| format!("origin: {e}"))?;
    if envelope.salt.len() != 32 {
        return Err("salt: expected 32 bytes".into());
    }
    if envelope.message.is_empty() || envelope.message.len() > PAYMENT_MESSAGE_BYTES_MAX {
        return Err(format!("message: 1 to {PAYMENT_MESSAGE_BYTES_MAX} bytes"));
    }
    if std::str::from_utf8(&envelope.message).is_err() {
        return Err("message: must be UTF-8 JSON".into());
    }
    Ok(InboxMessage { uetr, origin, salt: envelope.salt, message: envelope.message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remittance::party::{Account, AccountScheme, NaturalPersonName, Person};
    use remit_settlement::money::Money;

    fn party(primary: &str, account: &str) -> Party {
        Party {
            person: Person::NaturalPerson(NaturalPersonName {
                primary_name: primary.into(),
                secondary_name: "Ana".into(),
            }),
            account: Account { scheme: AccountScheme::Iban, value: account.into() },
            country: "PH".into(),
            address: None,
            date_of_birth: None,
            national_id: None,
        }
    }

    fn incoming_message(uetr: Uetr) -> (InboxMessage, PaymentMessage) {
        let usd = |amount: &str| Money::parse_parts(amount, "USD", "amount").expect("money");
        let message = PaymentMessage {
            uetr,
            origin: ParticipantId::new("gw-us").expect("id"),
            destination: ParticipantId::new("gw-ph").expect("id"),
            originator: party("Reyes", "US000111"),
            beneficiary: party("Santos", "PH000222"),
            purpose: "FAMI".into(),
            remittance_information: String::new(),
            send_amount: usd("102.00"),
            receive_amount: Money::parse_parts("5600.00", "PHP", "amount").expect("money"),
            settlement_amount: usd("100.00"),
            created_at_ms: 1_000,
        };
        let inbox =
            InboxMessage { uetr, origin: message.origin.clone(), salt: vec![9; 32], message: message.to_bytes() };
        (inbox, message)
    }

    #[test]
    fn replay_rebuilds_a_destination_record_from_its_journalled_message() {
        let uetr = Uetr::new_random();
        let (inbox, message) = incoming_message(uetr);
        let ledger = LedgerPosition { height: Height(7), block_hash: Digest32([3; 32]) };
        let expected = build_destination_record(message, [9; 32], commitment(&[9; 32], &inbox.message), ledger, 2_000);
        let mut state = State::default();
        let mut changed = Vec::new();
        state.apply_into(JournalEvent::Inbox { message: inbox }, &mut changed);
        state.apply_into(JournalEvent::Accepted { uetr, ledger, at_ms: 2_000 }, &mut changed);
        assert_eq!(changed, vec![uetr]);
        let record = state.remittances.get(&uetr).expect("rebuilt");
        assert_eq!(**record, expected);
        assert!(state.inbox.is_empty(), "the message moved into the record");
        // A second accepted event for the same transfer changes nothing.
        state.apply_into(JournalEvent::Accepted { uetr, ledger, at_ms: 9_000 }, &mut changed);
        assert_eq!(changed, vec![uetr]);
        assert_eq!(state.remittances[&uetr].history[0].at_ms, 2_000);
    }

    #[test]
    fn an_accepted_event_without_its_message_is_skipped() {
        let uetr = Uetr::new_random();
        let ledger = LedgerPosition { height: Height(7), block_hash: Digest32([3; 32]) };
        let mut state = State::default();
        let mut changed = Vec::new();
        state.apply_into(JournalEvent::Accepted { uetr, ledger, at_ms: 2_000 }, &mut changed);
        assert!(changed.is_empty());
        assert!(state.remittances.is_empty());
    }

    #[test]
    fn a_grouped_status_advances_each_remittance_once() {
        let (a, b) = (Uetr::new_random(), Uetr::new_random());
        let ledger = LedgerPosition { height: Height(7), block_hash: Digest32([3; 32]) };
        let mut state = State::default();
        let mut changed = Vec::new();
        for uetr in [a, b] {
            let (inbox, _) = incoming_message(uetr);
            state.apply_into(JournalEvent::Inbox { message: inbox }, &mut changed);
            state.apply_into(JournalEvent::Accepted { uetr, ledger, at_ms: 2_000 }, &mut changed);
        }
        changed.clear();
        let change = StatusChange::new(Status::PayoutPending, 3_000, None, "");
        let unknown = Uetr::new_random();
        let event = JournalEvent::Statuses { uetrs: vec![a, unknown, b], change: change.clone(), ledger: None };
        state.apply_into(event.clone(), &mut changed);
        assert_eq!(changed, vec![a, b]);
        changed.clear();
        state.apply_into(event, &mut changed);
        assert!(changed.is_empty(), "a repeated change is ignored");
        for uetr in [a, b] {
            let record = &state.remittances[&uetr];
            assert_eq!(record.status, Status::PayoutPending);
            assert_eq!(record.history.last(), Some(&change));
        }
    }

    /// Replays `events` after a destination record was accepted; returns the
    /// payout step a restart takes for it.
    fn step_after(events: Vec<JournalEvent>) -> (PayoutStep, Status) {
        let uetr = Uetr::new_random();
        let ledger = LedgerPosition { height: Height(7), block_hash: Digest32([3; 32]) };
        let (inbox, _) = incoming_message(uetr);
        let mut state = State::default();
        let mut changed = Vec::new();
        state.apply_into(JournalEvent::Inbox { message: inbox }, &mut changed);
        state.apply_into(JournalEvent::Accepted { uetr, ledger, at_ms: 2_000 }, &mut changed);
        for event in events {
            state.apply_into(with_uetr(event, uetr), &mut changed);
        }
        let record = &state.remittances[&uetr];
        (payout_step(record, state.returns_due.contains_key(&uetr)), record.status)
    }

    /// `event` with its UETR(s) replaced by `uetr`.
    fn with_uetr(event: JournalEvent, uetr: Uetr) -> JournalEvent {
        match event {
            JournalEvent::PayoutStarted { at_ms, .. } => JournalEvent::PayoutStarted { uetrs: vec![uetr], at_ms },
            JournalEvent::Statuses { change, ledger, .. } => {
                JournalEvent::Statuses { uetrs: vec![uetr], change, ledger }
            }
            JournalEvent::Status { change, ledger, payout_reference, .. } => {
                JournalEvent::Status { uetr, change, ledger, payout_reference }
            }
            JournalEvent::PaidOut { reference, .. } => JournalEvent::PaidOut { uetr, reference },
            JournalEvent::ReturnDue { reason_code, reason, .. } => {
                JournalEvent::ReturnDue { uetr, reason_code, reason }
            }
            other => other,
        }
    }

    #[test]
    fn a_restart_takes_the_payout_step_its_journal_shows() {
        let any = Uetr::new_random();
        let ledger = Some(LedgerPosition { height: Height(9), block_hash: Digest32([4; 32]) });
        let started = || JournalEvent::PayoutStarted { uetrs: vec![any], at_ms: 3_000 };
        let old_pending = || JournalEvent::Statuses {
            uetrs: vec![any],
            change: StatusChange::new(Status::PayoutPending, 3_000, None, ""),
            ledger: None,
        };
        let paid = || JournalEvent::PaidOut { uetr: any, reference: "SIM-1".into() };
        let returned = || JournalEvent::ReturnDue { uetr: any, reason_code: "AC04".into(), reason: "closed".into() };
        let certified = |status: Status| JournalEvent::Status {
            uetr: any,
            change: StatusChange::new(status, 4_000, None, ""),
            ledger,
            payout_reference: None,
        };
        let cases: Vec<(&str, Vec<JournalEvent>, (PayoutStep, Status))> = vec![
            ("final: never sent to the bank", vec![], (PayoutStep::Pay, Status::Final)),
            ("in flight", vec![started()], (PayoutStep::AskBank, Status::PayoutPending)),
            (
                "payout_pending from an older journal (also written before the bank call)",
                vec![old_pending()],
                (PayoutStep::AskBank, Status::PayoutPending),
            ),
            (
                "paid, report not certified",
                vec![started(), paid()],
                (PayoutStep::ReportCompleted, Status::PayoutPending),
            ),
            (
                "refused, return not certified",
                vec![started(), returned()],
                (PayoutStep::ReportReturned, Status::PayoutPending),
            ),
            (
                "completion certified",
                vec![started(), paid(), certified(Status::Completed)],
                (PayoutStep::Nothing, Status::Completed),
            ),
            (
                "return certified",
                vec![started(), returned(), certified(Status::Returned)],
                (PayoutStep::Nothing, Status::Returned),
            ),
        ];
        for (name, events, expected) in cases {
            assert_eq!(step_after(events), expected, "{name}");
        }
    }

    #[test]
    fn a_journalled_return_without_a_record_stops_the_fetch_and_clears_when_certified() {
        let uetr = Uetr::new_random();
        let (inbox, _) = incoming_message(uetr);
        let ledger = LedgerPosition { height: Height(7), block_hash: Digest32([3; 32]) };
        let incoming = IncomingTransfer {
            uetr,
            origin: inbox.origin.clone(),
            amount: Money::parse_parts("100.00", "USD", "amount").expect("money"),
            commitment: Digest32([1; 32]),
            ledger,
        };
        let mut state = State::default();
        let mut changed = Vec::new();
        state.apply_into(JournalEvent::Incoming { transfer: incoming }, &mut changed);
        state.apply_into(JournalEvent::Inbox { message: inbox }, &mut changed);
        let (event, _) = super::super::reports::return_without_message(uetr);
        state.apply_into(event, &mut changed);
        assert!(state.incoming.is_empty() && state.inbox.is_empty(), "nothing left to fetch or accept");
        assert_eq!(state.returns_due.get(&uetr).map(|(code, _)| code.as_str()), Some("MS03"));
        let change = StatusChange::new(Status::Returned, 5_000, Some("MS03"), "");
        state.apply_into(
            JournalEvent::Status { uetr, change, ledger: Some(ledger), payout_reference: None },
            &mut changed,
        );
        assert!(state.returns_due.is_empty(), "a certified return is no longer due");
    }
}
