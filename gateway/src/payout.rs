//! Paying the beneficiary: the destination gateway hands a [`PayoutInstruction`]
//! to a [`PayoutAdapter`], which credits the beneficiary's account at the
//! paying bank and answers with a [`PayoutResult`].
//!
//! Two adapters exist: [`SimulatedBook`], an in-memory account book for
//! devnets and tests, and [`HttpPayoutAdapter`], which POSTs JSON to a bank's
//! payout endpoint. The node picks one from the `[payout]` section of
//! `node.toml` with [`build_adapter`].
//!
//! **Invariant:** paying is idempotent per UETR. The simulated book remembers
//! every outcome; the HTTP adapter sends the UETR as `Idempotency-Key`, and the
//! bank must answer a repeated key with the first outcome without paying again.
//!
//! **Invariant:** the bearer token never reaches a log or a `Debug` rendering,
//! and no personal data is written to a span (the beneficiary travels only in
//! the request body).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use iso_currency::Currency;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

use remit_settlement::{Money, ParticipantId, Uetr};

use crate::outbound::{describe_transport_error, truncate_chars};
use crate::remittance::party::Party;

/// Default timeout of one HTTP payout request.
pub const PAYOUT_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Largest accepted `payout.timeout_ms`.
pub const PAYOUT_TIMEOUT_MS_MAX: u64 = 120_000;
/// Largest bank response body read; anything longer is treated as malformed.
pub const PAYOUT_RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// Longest bank payment reference accepted in a `paid` answer.
pub const PAYOUT_REFERENCE_LEN_MAX: usize = 64;
/// Longest reason text kept from a bank answer (longer text is cut).
pub const PAYOUT_REASON_LEN_MAX: usize = 140;
/// Reason code given to a 4xx refusal that carries no code of its own
/// (ISO 20022 `NARR`: the reason is in the narrative).
pub const REASON_CODE_NARRATIVE: &str = "NARR";

const _: () = assert!(PAYOUT_TIMEOUT_MS_DEFAULT <= PAYOUT_TIMEOUT_MS_MAX);

/// What the destination gateway asks its bank to pay.
#[derive(Clone, Debug)]
pub struct PayoutInstruction {
    /// The remittance's UETR; also the idempotency key of the payout.
    pub uetr: Uetr,
    /// The origin gateway.
    pub origin: ParticipantId,
    /// Who is credited, and to which account.
    pub beneficiary: Party,
    /// The amount credited, in the payout currency.
    pub amount: Money,
    /// ISO 20022 purpose code, e.g. `FAMI` (family maintenance).
    pub purpose: String,
    /// Unstructured remittance information for the beneficiary.
    pub remittance_information: String,
}

/// The outcome of a payout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayoutResult {
    /// The beneficiary was credited.
    Paid {
        /// The bank's reference of the credit.
        reference: String,
    },
    /// The bank refused for good; `reason_code` is an ISO 20022
    /// ExternalReturnReason1Code (4 chars, e.g. "AC04" closed account, "AC01"
    /// incorrect account number, "AC06" blocked account, "AM09"), `reason`
    /// human text.
    Refused {
        /// ISO 20022 return reason code, 4 uppercase letters or digits.
        reason_code: String,
        /// Human-readable reason.
        reason: String,
    },
    /// Could not tell (timeout, 5xx, connection refused): try again later with
    /// the same uetr.
    Failed {
        /// What went wrong.
        reason: String,
    },
}

impl PayoutResult {
    /// `paid`, `refused` or `failed`, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PayoutResult::Paid { .. } => "paid",
            PayoutResult::Refused { .. } => "refused",
            PayoutResult::Failed { .. } => "failed",
        }
    }

    fn refused(reason_code: &str, reason: &str) -> Self {
        PayoutResult::Refused { reason_code: reason_code.to_owned(), reason: reason.to_owned() }
    }

    fn failed(reason: impl Into<String>) -> Self {
        PayoutResult::Failed { reason: reason.into() }
    }
}

/// Pays beneficiaries at the destination.
pub trait PayoutAdapter: Send + Sync + 'static {
    /// Pays (idempotent per `uetr`: paying the same uetr again must not credit
    /// twice and returns the first outcome).
    fn pay<'a>(&'a self, instruction: &'a PayoutInstruction)
        -> Pin<Box<dyn Future<Output = PayoutResult> + Send + 'a>>;
    /// Short name for logs and metrics ("simulated", "http").
    fn name(&self) -> &'static str;
}

/// True for an ISO 20022 reason code: exactly 4 ASCII uppercase letters or digits.
pub fn is_reason_code(code: &str) -> bool {
    code.len() == 4 && code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn pay_span(adapter: &'static str, instruction: &PayoutInstruction) -> tracing::Span {
    tracing::info_span!(
        "gateway.payout.pay",
        adapter,
        uetr = %instruction.uetr,
        origin = %instruction.origin,
        currency = instruction.amount.currency().code()
    )
}

fn log_outcome(result: &PayoutResult) {
    match result {
        PayoutResult::Paid { reference } => tracing::debug!(outcome = "paid", reference = %reference, "payout done"),
        PayoutResult::Refused { reason_code, reason } => {
            tracing::info!(outcome = "refused", reason_code = %reason_code, reason = %reason, "payout refused")
        }
        PayoutResult::Failed { reason } => tracing::warn!(outcome = "failed", reason = %reason, "payout failed"),
    }
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// Which payout adapter a node uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutAdapterKind {
    /// The in-memory [`SimulatedBook`].
    #[default]
    Simulated,
    /// The [`HttpPayoutAdapter`].
    Http,
}

impl PayoutAdapterKind {
    /// The name used in `node.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            PayoutAdapterKind::Simulated => "simulated",
            PayoutAdapterKind::Http => "http",
        }
    }
}

/// The `[payout]` section of `node.toml`. Its `Debug` is safe to log: it holds
/// the path of the token file, never the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutSection {
    /// `"simulated"` (default) or `"http"`.
    #[serde(default)]
    pub adapter: PayoutAdapterKind,
    /// Simulated only: accounts refused with `AC04` (closed).
    #[serde(default)]
    pub closed_accounts: Vec<String>,
    /// Simulated only: accounts refused with `AC06` (blocked).
    #[serde(default)]
    pub blocked_accounts: Vec<String>,
    /// Simulated only: refuse accounts the book does not know with `AC01`
    /// instead of opening them on first credit.
    #[serde(default)]
    pub refuse_unknown: bool,
    /// HTTP only (required there): the bank's payout endpoint, `http://` or `https://`.
    #[serde(default)]
    pub url: Option<String>,
    /// HTTP only: a file holding the bearer token sent as `Authorization`.
    #[serde(default)]
    pub auth_token_file: Option<PathBuf>,
    /// HTTP only: timeout of one payout request, 1..=120000 ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    PAYOUT_TIMEOUT_MS_DEFAULT
}

impl Default for PayoutSection {
    fn default() -> Self {
        Self {
            adapter: PayoutAdapterKind::default(),
            closed_accounts: Vec::new(),
            blocked_accounts: Vec::new(),
            refuse_unknown: false,
            url: None,
            auth_token_file: None,
            timeout_ms: PAYOUT_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// A `[payout]` setting that cannot be used, naming its key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct PayoutConfigError {
    /// The dotted key, e.g. `payout.url`.
    pub key: &'static str,
    /// Why it was refused.
    pub reason: String,
}

impl PayoutConfigError {
    fn new(key: &'static str, reason: impl Into<String>) -> Self {
        Self { key, reason: reason.into() }
    }
}

/// Builds the adapter the `[payout]` section asks for, checking that only the
/// keys of that adapter are set and reading the token file.
pub fn build_adapter(section: &PayoutSection) -> Result<Arc<dyn PayoutAdapter>, PayoutConfigError> {
    match section.adapter {
        PayoutAdapterKind::Simulated => {
            let only_http = "only used when payout.adapter = \"http\"";
            if section.url.is_some() {
                return Err(PayoutConfigError::new("payout.url", only_http));
            }
            if section.auth_token_file.is_some() {
                return Err(PayoutConfigError::new("payout.auth_token_file", only_http));
            }
            Ok(Arc::new(SimulatedBook::new(&SimulatedPolicy::from_section(section)?)))
        }
        PayoutAdapterKind::Http => {
            let only_simulated = "only used when payout.adapter = \"simulated\"";
            if !section.closed_accounts.is_empty() {
                return Err(PayoutConfigError::new("payout.closed_accounts", only_simulated));
            }
            if !section.blocked_accounts.is_empty() {
                return Err(PayoutConfigError::new("payout.blocked_accounts", only_simulated));
            }
            if section.refuse_unknown {
                return Err(PayoutConfigError::new("payout.refuse_unknown", only_simulated));
            }
            let url = section
                .url
                .clone()
                .ok_or_else(|| PayoutConfigError::new("payout.url", "required when payout.adapter = \"http\""))?;
            let token = section.auth_token_file.as_ref().map(read_token_file).transpose()?;
            let adapter =
                HttpPayoutAdapter::new(HttpPayoutConfig { url, bearer_token: token, timeout_ms: section.timeout_ms })?;
            Ok(Arc::new(adapter))
        }
    }
}

fn read_token_file(path: &PathBuf) -> Result<String, PayoutConfigError> {
    let key = "payout.auth_token_file";
    let text = std::fs::read_to_string(path)
        .map_err(|e| PayoutConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(PayoutConfigError::new(key, format!("{} is empty", path.display())));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(PayoutConfigError::new(
            key,
            format!("{} holds characters a bearer token cannot have", path.display()),
        ));
    }
    Ok(token.to_owned())
}

// ---------------------------------------------------------------------------
// Simulated book
// ---------------------------------------------------------------------------

/// How a [`SimulatedBook`] treats accounts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimulatedPolicy {
    /// Accounts refused with `AC04`.
    pub closed_accounts: Vec<String>,
    /// Accounts refused with `AC06`.
    pub blocked_accounts: Vec<String>,
    /// Refuse unknown accounts with `AC01` instead of opening them.
    pub refuse_unknown: bool,
}

impl SimulatedPolicy {
    /// The simulated-book keys of a `[payout]` section; an account listed as
    /// both closed and blocked is refused.
    pub fn from_section(section: &PayoutSection) -> Result<Self, PayoutConfigError> {
        let closed: HashSet<&String> = section.closed_accounts.iter().collect();
        if let Some(both) = section.blocked_accounts.iter().find(|a| closed.contains(a)) {
            return Err(PayoutConfigError::new(
                "payout.blocked_accounts",
                format!("account {} is also in payout.closed_accounts", crate::remittance::party::mask_account(both)),
            ));
        }
        Ok(Self {
            closed_accounts: section.closed_accounts.clone(),
            blocked_accounts: section.blocked_accounts.clone(),
            refuse_unknown: section.refuse_unknown,
        })
    }
}

/// The standing of an account in a [`SimulatedBook`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountState {
    /// Credits are accepted.
    Open,
    /// Refused with `AC04`.
    Closed,
    /// Refused with `AC06`.
    Blocked,
}

#[derive(Debug)]
struct BookAccount {
    state: AccountState,
    balances: HashMap<Currency, Decimal>,
}

#[derive(Debug, Default)]
struct Book {
    accounts: HashMap<String, BookAccount>,
    /// The first outcome of every UETR paid or refused. Unbounded: the
    /// simulated book lives for a devnet or a test, not for production.
    outcomes: HashMap<Uetr, PayoutResult>,
    paid: usize,
}

/// An in-memory account book that pays by crediting balances. Accounts are
/// keyed by the beneficiary's account identifier (`beneficiary.account.value`).
pub struct SimulatedBook {
    refuse_unknown: bool,
    book: Mutex<Book>,
}

impl fmt::Debug for SimulatedBook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let book = self.lock();
        f.debug_struct("SimulatedBook")
            .field("refuse_unknown", &self.refuse_unknown)
            .field("accounts", &book.accounts.len())
            .field("payouts", &book.paid)
            .finish()
    }
}

impl SimulatedBook {
    /// A book holding the closed and blocked accounts of `policy`.
    pub fn new(policy: &SimulatedPolicy) -> Self {
        let mut book = Book::default();
        let lists =
            [(&policy.closed_accounts, AccountState::Closed), (&policy.blocked_accounts, AccountState::Blocked)];
        for (accounts, state) in lists {
            for account in accounts {
                book.accounts.insert(account.clone(), BookAccount { state, balances: HashMap::new() });
            }
        }
        Self { refuse_unknown: policy.refuse_unknown, book: Mutex::new(book) }
    }

    /// Opens `account` (no effect if it exists), so that it is paid even when
    /// unknown accounts are refused.
    pub fn open_account(&self, account: &str) {
        self.lock()
            .accounts
            .entry(account.to_owned())
            .or_insert_with(|| BookAccount { state: AccountState::Open, balances: HashMap::new() });
    }

    /// The standing of `account`, `None` if the book does not know it.
    pub fn account_state(&self, account: &str) -> Option<AccountState> {
        self.lock().accounts.get(account).map(|a| a.state)
    }

    /// The balance of `account` in `currency` (zero if unknown).
    pub fn balance(&self, account: &str, currency: Currency) -> Decimal {
        self.lock().accounts.get(account).and_then(|a| a.balances.get(&currency).copied()).unwrap_or(Decimal::ZERO)
    }

    /// The number of credits made (distinct UETRs paid).
    pub fn payouts(&self) -> usize {
        self.lock().paid
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        // A panic while holding the lock cannot leave the book half-updated:
        // every update below is a single insert after all checks.
        self.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn pay_now(&self, instruction: &PayoutInstruction) -> PayoutResult {
        let mut guard = self.lock();
        let book = &mut *guard;
        if let Some(first) = book.outcomes.get(&instruction.uetr) {
            tracing::debug!("uetr already handled; returning the first outcome");
            return first.clone();
        }
        let account = instruction.beneficiary.account.value.as_str();
        let state = book.accounts.get(account).map(|a| a.state);
        let result = match state {
            Some(AccountState::Closed) => PayoutResult::refused("AC04", "account closed"),
            Some(AccountState::Blocked) => PayoutResult::refused("AC06", "account blocked"),
            None if self.refuse_unknown => PayoutResult::refused("AC01", "incorrect account number"),
            Some(AccountState::Open) | None => {
                let entry = book
                    .accounts
                    .entry(account.to_owned())
                    .or_insert_with(|| BookAccount { state: AccountState::Open, balances: HashMap::new() });
                let balance = entry.balances.entry(instruction.amount.currency()).or_insert(Decimal::ZERO);
                match balance.checked_add(instruction.amount.amount()) {
                    Some(sum) => {
                        *balance = sum;
                        book.paid += 1;
                        PayoutResult::Paid { reference: simulated_reference(instruction.uetr) }
                    }
                    None => PayoutResult::refused("AM09", "balance would overflow"),
                }
            }
        };
        book.outcomes.insert(instruction.uetr, result.clone());
        result
    }
}

/// `SIM-` and the first 8 hex digits of the UETR.
fn simulated_reference(uetr: Uetr) -> String {
    format!("SIM-{}", hex::encode(&uetr.as_bytes()[..4]))
}

impl PayoutAdapter for SimulatedBook {
    fn pay<'a>(
        &'a self,
        instruction: &'a PayoutInstruction,
    ) -> Pin<Box<dyn Future<Output = PayoutResult> + Send + 'a>> {
        let span = pay_span(self.name(), instruction);
        Box::pin(
            async move {
                let result = self.pay_now(instruction);
                log_outcome(&result);
                result
            }
            .instrument(span),
        )
    }

    fn name(&self) -> &'static str {
        "simulated"
    }
}

// ---------------------------------------------------------------------------
// HTTP adapter
// ---------------------------------------------------------------------------

/// A bearer token; its `Debug` hides it.
#[derive(Clone)]
struct BearerToken(String);

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(***)")
    }
}

/// Settings of an [`HttpPayoutAdapter`].
#[derive(Clone)]
pub struct HttpPayoutConfig {
    /// The bank's payout endpoint: `https://`, or `http://` to a loopback host.
    pub url: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub bearer_token: Option<String>,
    /// Timeout of one request, 1..=[`PAYOUT_TIMEOUT_MS_MAX`] ms.
    pub timeout_ms: u64,
}

impl fmt::Debug for HttpPayoutConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPayoutConfig")
            .field("url", &self.url)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "***"))
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// Pays through a bank's HTTP endpoint.
///
/// Request: `POST <url>` with a JSON body
/// `{"uetr", "amount" (decimal string), "currency", "purpose",
/// "remittance_information", "origin", "beneficiary" (the party)}`, the header
/// `Idempotency-Key: <uetr>` and, when configured, `Authorization: Bearer <token>`.
/// Redirects are not followed.
///
/// Answer mapping:
///
/// | answer | result |
/// | --- | --- |
/// | 2xx `{"status":"paid","reference":"..."}` | `Paid` |
/// | 2xx or 4xx `{"status":"refused","reason_code":"AC04","reason":"..."}` | `Refused` (a code that is not 4 uppercase letters or digits gives `Failed`) |
/// | 400, 410, 413, 415, 422 and other 4xx without such a body | `Refused` with code `NARR` and the HTTP status as reason: the bank understood and declined the request, and sending it again cannot succeed |
/// | 401, 403, 404, 405, 407, 408, 409, 421, 423, 425, 429 without such a body | `Failed`: our credentials or URL are wrong, or the bank is busy or still working on the key; an operator or time can fix it, so the payout is retried rather than returned |
/// | 1xx, 3xx, 5xx, any other 2xx body, a timeout, a connection error, a body over 64 KiB | `Failed` |
pub struct HttpPayoutAdapter {
    client: reqwest::Client,
    url: reqwest::Url,
    token: Option<BearerToken>,
}

impl fmt::Debug for HttpPayoutAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPayoutAdapter")
            .field("url", &self.url.as_str())
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct BankPayoutRequest<'a> {
    uetr: Uetr,
    amount: String,
    currency: &'static str,
    purpose: &'a str,
    remittance_information: &'a str,
    origin: &'a str,
    beneficiary: &'a Party,
}

#[derive(Deserialize)]
struct BankAnswer {
    status: String,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    reason_code: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

impl HttpPayoutAdapter {
    /// Checks the settings and builds the HTTP client.
    pub fn new(config: HttpPayoutConfig) -> Result<Self, PayoutConfigError> {
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| PayoutConfigError::new("payout.url", format!("not a URL: {e}")))?;
        if let Some(reason) = crate::outbound::refuse_insecure_url(&url) {
            return Err(PayoutConfigError::new("payout.url", reason));
        }
        if !(1..=PAYOUT_TIMEOUT_MS_MAX).contains(&config.timeout_ms) {
            return Err(PayoutConfigError::new(
                "payout.timeout_ms",
                format!("{} is outside 1..={PAYOUT_TIMEOUT_MS_MAX}", config.timeout_ms),
            ));
        }
        let timeout = Duration::from_millis(config.timeout_ms);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| PayoutConfigError::new("payout", format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { client, url, token: config.bearer_token.map(BearerToken) })
    }

    async fn pay_http(&self, instruction: &PayoutInstruction) -> PayoutResult {
        let body = BankPayoutRequest {
            uetr: instruction.uetr,
            amount: instruction.amount.amount().to_string(),
            currency: instruction.amount.currency().code(),
            purpose: &instruction.purpose,
            remittance_information: &instruction.remittance_information,
            origin: instruction.origin.as_str(),
            beneficiary: &instruction.beneficiary,
        };
        let mut request =
            self.client.post(self.url.clone()).header("Idempotency-Key", instruction.uetr.to_string()).json(&body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(&token.0);
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => return PayoutResult::failed(describe_transport_error(&e, PAYOUT_REASON_LEN_MAX)),
        };
        let status = response.status();
        let bytes = match read_bounded(&mut response, PAYOUT_RESPONSE_BYTES_MAX).await {
            Ok(bytes) => bytes,
            Err(reason) => return PayoutResult::failed(format!("HTTP {}: {reason}", status.as_u16())),
        };
        interpret_answer(status, &bytes)
    }
}

impl PayoutAdapter for HttpPayoutAdapter {
    fn pay<'a>(
        &'a self,
        instruction: &'a PayoutInstruction,
    ) -> Pin<Box<dyn Future<Output = PayoutResult> + Send + 'a>> {
        let span = pay_span(self.name(), instruction);
        Box::pin(
            async move {
                let result = self.pay_http(instruction).await;
                log_outcome(&result);
                result
            }
            .instrument(span),
        )
    }

    fn name(&self) -> &'static str {
        "http"
    }
}

/// Reads at most `limit` bytes of the body; a longer body is an error.
async fn read_bounded(response: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if bytes.len() + chunk.len() > limit {
                    return Err(format!("body longer than {limit} bytes"));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(bytes),
            Err(e) => return Err(describe_transport_error(&e, PAYOUT_REASON_LEN_MAX)),
        }
    }
}

/// 4xx statuses that an operator or time can fix: the payout is retried.
fn client_error_is_retryable(status: u16) -> bool {
    matches!(status, 401 | 403 | 404 | 405 | 407 | 408 | 409 | 421 | 423 | 425 | 429)
}

/// Maps the bank's answer to a result (see [`HttpPayoutAdapter`]).
fn interpret_answer(status: reqwest::StatusCode, body: &[u8]) -> PayoutResult {
    let code = status.as_u16();
    let answer: Option<BankAnswer> = serde_json::from_slice(body).ok();
    if status.is_success() || status.is_client_error() {
        if let Some(answer) = answer.as_ref().filter(|a| a.status == "refused") {
            return refusal(code, answer);
        }
    }
    if status.is_success() {
        return match answer {
            Some(BankAnswer { status, reference: Some(reference), .. }) if status == "paid" => {
                if reference.is_empty()
                    || reference.chars().count() > PAYOUT_REFERENCE_LEN_MAX
                    || reference.chars().any(char::is_control)
                {
                    PayoutResult::failed(format!("HTTP {code}: paid without a usable reference"))
                } else {
                    PayoutResult::Paid { reference }
                }
            }
            Some(answer) => PayoutResult::failed(format!(
                "HTTP {code}: unexpected status {:?}",
                truncate_chars(&answer.status, PAYOUT_REFERENCE_LEN_MAX)
            )),
            None => PayoutResult::failed(format!("HTTP {code}: body is not a payout answer")),
        };
    }
    if status.is_client_error() && !client_error_is_retryable(code) {
        return PayoutResult::Refused { reason_code: REASON_CODE_NARRATIVE.to_owned(), reason: status_text(status) };
    }
    PayoutResult::failed(status_text(status))
}

fn refusal(code: u16, answer: &BankAnswer) -> PayoutResult {
    match answer.reason_code.as_deref() {
        Some(reason_code) if is_reason_code(reason_code) => PayoutResult::Refused {
            reason_code: reason_code.to_owned(),
            reason: truncate_chars(answer.reason.as_deref().unwrap_or(""), PAYOUT_REASON_LEN_MAX),
        },
        Some(other) => PayoutResult::failed(format!(
            "HTTP {code}: refusal with an invalid reason code {:?}",
            truncate_chars(other, 8)
        )),
        None => PayoutResult::failed(format!("HTTP {code}: refusal without a reason code")),
    }
}

fn status_text(status: reqwest::StatusCode) -> String {
    match status.canonical_reason() {
        Some(text) => format!("HTTP {} {text}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use axum::{Json, Router};
    use rust_decimal::Decimal;

    use super::*;
    use crate::remittance::party::{Account, AccountScheme, NaturalPersonName, Person};

    fn party(account: &str) -> Party {
        Party {
            person: Person::NaturalPerson(NaturalPersonName {
                primary_name: "Santos".to_owned(),
                secondary_name: "Maria".to_owned(),
            }),
            account: Account { scheme: AccountScheme::AccountNumber, value: account.to_owned() },
            country: "PH".to_owned(),
            address: None,
            date_of_birth: None,
            national_id: None,
        }
    }

    fn instruction(account: &str, amount: &str) -> PayoutInstruction {
        PayoutInstruction {
            uetr: Uetr::new_random(),
            origin: ParticipantId::new("gw-us").expect("valid id"),
            beneficiary: party(account),
            amount: Money::parse(amount, "amount").expect("valid amount"),
            purpose: "FAMI".to_owned(),
            remittance_information: "school fees".to_owned(),
        }
    }

    fn dec(text: &str) -> Decimal {
        text.parse().expect("decimal literal")
    }

    fn php() -> Currency {
        Currency::from_code("PHP").expect("PHP is ISO 4217")
    }

    fn policy() -> SimulatedPolicy {
        SimulatedPolicy {
            closed_accounts: vec!["CLOSED-1".to_owned()],
            blocked_accounts: vec!["BLOCKED-1".to_owned()],
            refuse_unknown: false,
        }
    }

    fn refused(code: &str, reason: &str) -> PayoutResult {
        PayoutResult::Refused { reason_code: code.to_owned(), reason: reason.to_owned() }
    }

    #[tokio::test]
    async fn simulated_book_applies_its_policy() {
        let open_book = SimulatedBook::new(&policy());
        let strict_book = SimulatedBook::new(&SimulatedPolicy { refuse_unknown: true, ..policy() });
        strict_book.open_account("KNOWN-1");
        let cases: [(&SimulatedBook, &str, Option<PayoutResult>); 6] = [
            (&open_book, "CLOSED-1", Some(refused("AC04", "account closed"))),
            (&open_book, "BLOCKED-1", Some(refused("AC06", "account blocked"))),
            (&open_book, "NEW-1", None),
            (&strict_book, "NEW-1", Some(refused("AC01", "incorrect account number"))),
            (&strict_book, "KNOWN-1", None),
            (&strict_book, "CLOSED-1", Some(refused("AC04", "account closed"))),
        ];
        for (book, account, expected) in cases {
            let order = instruction(account, "100.00 PHP");
            let result = book.pay(&order).await;
            match expected {
                Some(expected) => {
                    assert_eq!(result, expected, "{account}");
                    assert_eq!(book.balance(account, php()), Decimal::ZERO, "{account}");
                }
                None => {
                    let reference = format!("SIM-{}", &order.uetr.to_string()[..8]);
                    assert_eq!(result, PayoutResult::Paid { reference }, "{account}");
                    assert_eq!(book.balance(account, php()), dec("100.00"), "{account}");
                    assert_eq!(book.account_state(account), Some(AccountState::Open));
                }
            }
        }
        assert_eq!(open_book.payouts(), 1);
        assert_eq!(strict_book.payouts(), 1);
        assert_eq!(strict_book.account_state("NEW-1"), None, "a refused unknown account is not opened");
    }

    #[tokio::test]
    async fn simulated_book_pays_each_uetr_once() {
        let book = SimulatedBook::new(&policy());
        let order = instruction("PH-ACC-1", "5432.10 PHP");
        let first = book.pay(&order).await;
        let second = book.pay(&order).await;
        assert!(matches!(first, PayoutResult::Paid { .. }));
        assert_eq!(first, second);
        assert_eq!(book.balance("PH-ACC-1", php()), dec("5432.10"));
        assert_eq!(book.payouts(), 1);

        let other = instruction("PH-ACC-1", "5432.10 PHP");
        assert!(matches!(book.pay(&other).await, PayoutResult::Paid { .. }));
        assert_eq!(book.balance("PH-ACC-1", php()), dec("10864.20"));
        let usd = Currency::from_code("USD").expect("USD is ISO 4217");
        assert_eq!(book.balance("PH-ACC-1", usd), Decimal::ZERO);
        assert_eq!(book.payouts(), 2);

        let refused_order = instruction("CLOSED-1", "1.00 PHP");
        let first = book.pay(&refused_order).await;
        assert_eq!(book.pay(&refused_order).await, first);
        assert_eq!(book.payouts(), 2);
    }

    #[test]
    fn payout_section_parses_with_defaults() {
        let section: PayoutSection = toml::from_str("").expect("empty section");
        assert_eq!(section, PayoutSection::default());
        assert_eq!(section.adapter, PayoutAdapterKind::Simulated);
        assert_eq!(section.timeout_ms, PAYOUT_TIMEOUT_MS_DEFAULT);

        let text = "adapter = \"http\"\nurl = \"https://bank.example/payouts\"\nauth_token_file = \"/etc/remit/bank.token\"\ntimeout_ms = 2500\n";
        let section: PayoutSection = toml::from_str(text).expect("http section");
        assert_eq!(section.adapter, PayoutAdapterKind::Http);
        assert_eq!(section.url.as_deref(), Some("https://bank.example/payouts"));
        assert_eq!(section.timeout_ms, 2500);

        let err = toml::from_str::<PayoutSection>("adaptor = \"http\"").expect_err("unknown key");
        assert!(err.to_string().contains("adaptor"), "{err}");
        let err = toml::from_str::<PayoutSection>("adapter = \"ftp\"").expect_err("unknown adapter");
        assert!(err.to_string().contains("ftp"), "{err}");
    }

    #[test]
    fn build_adapter_names_the_bad_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty_token = dir.path().join("empty.token");
        std::fs::write(&empty_token, "  \n").expect("write token");
        let http = PayoutSection {
            adapter: PayoutAdapterKind::Http,
            url: Some("http://127.0.0.1:9/pay".to_owned()),
            ..PayoutSection::default()
        };
        let cases: Vec<(PayoutSection, Result<&str, &str>)> = vec![
            (PayoutSection::default(), Ok("simulated")),
            (http.clone(), Ok("http")),
            (PayoutSection { url: Some("http://x".to_owned()), ..PayoutSection::default() }, Err("payout.url")),
            (
                PayoutSection { auth_token_file: Some(empty_token.clone()), ..PayoutSection::default() },
                Err("payout.auth_token_file"),
            ),
            (
                PayoutSection {
                    closed_accounts: vec!["A".to_owned()],
                    blocked_accounts: vec!["A".to_owned()],
                    ..PayoutSection::default()
                },
                Err("payout.blocked_accounts"),
            ),
            (PayoutSection { url: None, ..http.clone() }, Err("payout.url")),
            (PayoutSection { url: Some("ftp://bank/pay".to_owned()), ..http.clone() }, Err("payout.url")),
            (PayoutSection { url: Some("not a url".to_owned()), ..http.clone() }, Err("payout.url")),
            (PayoutSection { timeout_ms: 0, ..http.clone() }, Err("payout.timeout_ms")),
            (PayoutSection { timeout_ms: PAYOUT_TIMEOUT_MS_MAX + 1, ..http.clone() }, Err("payout.timeout_ms")),
            (PayoutSection { auth_token_file: Some(empty_token), ..http.clone() }, Err("payout.auth_token_file")),
            (
                PayoutSection { auth_token_file: Some(dir.path().join("missing")), ..http.clone() },
                Err("payout.auth_token_file"),
            ),
            (PayoutSection { refuse_unknown: true, ..http.clone() }, Err("payout.refuse_unknown")),
            (PayoutSection { closed_accounts: vec!["A".to_owned()], ..http }, Err("payout.closed_accounts")),
        ];
        for (section, expected) in cases {
            match (build_adapter(&section), expected) {
                (Ok(adapter), Ok(name)) => assert_eq!(adapter.name(), name, "{section:?}"),
                (Err(err), Err(key)) => {
                    assert_eq!(err.key, key, "{section:?}: {err}");
                    assert!(err.to_string().starts_with(key), "{err}");
                }
                (Ok(adapter), Err(key)) => panic!("{section:?}: expected an error on {key}, got {}", adapter.name()),
                (Err(err), Ok(name)) => panic!("{section:?}: expected {name}, got {err}"),
            }
        }
    }

    #[test]
    fn reason_codes_are_four_uppercase_alphanumerics() {
        for good in ["AC04", "AM09", "NARR", "MS03"] {
            assert!(is_reason_code(good), "{good}");
        }
        for bad in ["", "ac04", "AC4", "AC041", "AC-4", "ÄC04"] {
            assert!(!is_reason_code(bad), "{bad}");
        }
    }

    #[test]
    fn bank_answers_map_to_results() {
        fn check(status: u16, body: &str, expected: PayoutResult) {
            let status = reqwest::StatusCode::from_u16(status).expect("valid status");
            assert_eq!(interpret_answer(status, body.as_bytes()), expected, "{status} {body}");
        }
        let failed = |reason: &str| PayoutResult::Failed { reason: reason.to_owned() };
        let paid = PayoutResult::Paid { reference: "BK-1".to_owned() };
        check(200, r#"{"status":"paid","reference":"BK-1"}"#, paid.clone());
        check(201, r#"{"status":"paid","reference":"BK-1","extra":1}"#, paid);
        check(200, r#"{"status":"refused","reason_code":"AC04","reason":"closed"}"#, refused("AC04", "closed"));
        check(
            422,
            r#"{"status":"refused","reason_code":"AC01","reason":"no such account"}"#,
            refused("AC01", "no such account"),
        );
        check(
            200,
            r#"{"status":"refused","reason_code":"ac04","reason":"x"}"#,
            failed("HTTP 200: refusal with an invalid reason code \"ac04\""),
        );
        check(200, r#"{"status":"refused","reason":"x"}"#, failed("HTTP 200: refusal without a reason code"));
        check(200, r#"{"status":"paid"}"#, failed("HTTP 200: unexpected status \"paid\""));
        check(200, r#"{"status":"paid","reference":""}"#, failed("HTTP 200: paid without a usable reference"));
        check(200, r#"{"status":"pending"}"#, failed("HTTP 200: unexpected status \"pending\""));
        check(200, "<html>", failed("HTTP 200: body is not a payout answer"));
        check(400, "", refused("NARR", "HTTP 400 Bad Request"));
        check(422, "oops", refused("NARR", "HTTP 422 Unprocessable Entity"));
        check(401, "", failed("HTTP 401 Unauthorized"));
        check(404, "", failed("HTTP 404 Not Found"));
        check(429, "", failed("HTTP 429 Too Many Requests"));
        check(302, "", failed("HTTP 302 Found"));
        check(
            500,
            r#"{"status":"refused","reason_code":"AC04","reason":"x"}"#,
            failed("HTTP 500 Internal Server Error"),
        );
        check(503, "", failed("HTTP 503 Service Unavailable"));
    }

    /// What the test bank saw.
    #[derive(Default)]
    struct Seen {
        requests: AtomicUsize,
        idempotency_keys: Mutex<Vec<String>>,
        authorizations: Mutex<Vec<String>>,
        bodies: Mutex<Vec<serde_json::Value>>,
    }

    fn header(headers: &HeaderMap, name: &str) -> String {
        headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
    }

    async fn record(seen: &Seen, headers: &HeaderMap, body: serde_json::Value) {
        seen.requests.fetch_add(1, Ordering::SeqCst);
        seen.idempotency_keys.lock().expect("lock").push(header(headers, "idempotency-key"));
        seen.authorizations.lock().expect("lock").push(header(headers, "authorization"));
        seen.bodies.lock().expect("lock").push(body);
    }

    /// A bank on 127.0.0.1 whose routes answer paid, refused, 500 and slowly.
    async fn test_bank() -> (String, Arc<Seen>) {
        type Shared = State<Arc<Seen>>;
        async fn paid(
            State(seen): Shared,
            headers: HeaderMap,
            Json(body): Json<serde_json::Value>,
        ) -> Json<serde_json::Value> {
            let reference = format!("BK-{}", body["uetr"].as_str().unwrap_or("")[..8].to_owned());
            record(&seen, &headers, body).await;
            Json(serde_json::json!({"status": "paid", "reference": reference}))
        }
        async fn refused(
            State(seen): Shared,
            headers: HeaderMap,
            Json(body): Json<serde_json::Value>,
        ) -> (StatusCode, Json<serde_json::Value>) {
            record(&seen, &headers, body).await;
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(serde_json::json!({"status": "refused", "reason_code": "AC04", "reason": "account closed"})),
            )
        }
        async fn broken(State(seen): Shared, headers: HeaderMap, Json(body): Json<serde_json::Value>) -> StatusCode {
            record(&seen, &headers, body).await;
            StatusCode::INTERNAL_SERVER_ERROR
        }
        async fn slow(State(seen): Shared, headers: HeaderMap, Json(body): Json<serde_json::Value>) -> StatusCode {
            record(&seen, &headers, body).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK
        }
        let seen = Arc::new(Seen::default());
        let app = Router::new()
            .route("/paid", post(paid))
            .route("/refused", post(refused))
            .route("/broken", post(broken))
            .route("/slow", post(slow))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}"), seen)
    }

    fn http_adapter(base: &str, path: &str, token_file: Option<PathBuf>, timeout_ms: u64) -> Arc<dyn PayoutAdapter> {
        let section = PayoutSection {
            adapter: PayoutAdapterKind::Http,
            url: Some(format!("{base}{path}")),
            auth_token_file: token_file,
            timeout_ms,
            ..PayoutSection::default()
        };
        build_adapter(&section).expect("valid http section")
    }

    #[tokio::test]
    async fn http_adapter_pays_with_idempotency_key_and_bearer_token() {
        let (base, seen) = test_bank().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let token_file = dir.path().join("bank.token");
        std::fs::write(&token_file, "s3cr3t-token\n").expect("write token");
        let adapter = http_adapter(&base, "/paid", Some(token_file), 2_000);
        let order = instruction("PH-ACC-1", "5432.10 PHP");

        let result = adapter.pay(&order).await;
        let reference = format!("BK-{}", &order.uetr.to_string()[..8]);
        assert_eq!(result, PayoutResult::Paid { reference });
        assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
        assert_eq!(*seen.idempotency_keys.lock().expect("lock"), vec![order.uetr.to_string()]);
        assert_eq!(*seen.authorizations.lock().expect("lock"), vec!["Bearer s3cr3t-token".to_owned()]);
        let body = seen.bodies.lock().expect("lock")[0].clone();
        assert_eq!(body["uetr"], order.uetr.to_string());
        assert_eq!(body["amount"], "5432.10");
        assert_eq!(body["currency"], "PHP");
        assert_eq!(body["purpose"], "FAMI");
        assert_eq!(body["remittance_information"], "school fees");
        assert_eq!(body["origin"], "gw-us");
        let beneficiary: Party = serde_json::from_value(body["beneficiary"].clone()).expect("party json");
        assert_eq!(beneficiary, order.beneficiary);
        let direct = HttpPayoutAdapter::new(HttpPayoutConfig {
            url: format!("{base}/paid"),
            bearer_token: Some("s3cr3t-token".to_owned()),
            timeout_ms: 2_000,
        })
        .expect("valid config");
        let shown = format!("{direct:?}");
        assert!(!shown.contains("s3cr3t") && shown.contains("***"), "{shown}");
    }

    #[tokio::test]
    async fn http_adapter_without_token_sends_no_authorization() {
        let (base, seen) = test_bank().await;
        let adapter = http_adapter(&base, "/paid", None, 2_000);
        assert!(matches!(adapter.pay(&instruction("A-1", "1.00 USD")).await, PayoutResult::Paid { .. }));
        assert_eq!(*seen.authorizations.lock().expect("lock"), vec![String::new()]);
    }

    #[tokio::test]
    async fn http_adapter_reports_refusals_and_failures() {
        let (base, seen) = test_bank().await;
        let order = instruction("CLOSED-1", "100.00 PHP");
        let result = http_adapter(&base, "/refused", None, 2_000).pay(&order).await;
        assert_eq!(result, refused("AC04", "account closed"));

        let result = http_adapter(&base, "/broken", None, 2_000).pay(&order).await;
        assert_eq!(result, PayoutResult::Failed { reason: "HTTP 500 Internal Server Error".to_owned() });

        let started = std::time::Instant::now();
        let result = http_adapter(&base, "/slow", None, 200).pay(&order).await;
        match result {
            PayoutResult::Failed { reason } => assert!(reason.starts_with("timed out"), "{reason}"),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(4), "the timeout was not applied");
        assert_eq!(seen.requests.load(Ordering::SeqCst), 3);
        let keys = seen.idempotency_keys.lock().expect("lock").clone();
        assert!(keys.iter().all(|k| *k == order.uetr.to_string()), "{keys:?}");
    }

    #[tokio::test]
    async fn http_adapter_fails_when_the_bank_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        drop(listener);
        let adapter = http_adapter(&format!("http://{addr}"), "/pay", None, 2_000);
        match adapter.pay(&instruction("A-1", "1.00 USD")).await {
            PayoutResult::Failed { reason } => assert!(reason.starts_with("connection failed"), "{reason}"),
            other => panic!("expected a connection failure, got {other:?}"),
        }
    }
}
