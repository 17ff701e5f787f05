//! The HTTP bank protocol: the destination gateway pays through its bank's
//! HTTP endpoint and, after a restart, asks it for the outcome of a payout by
//! UETR.
//!
//! **Pay:** `POST <url>` with a JSON body `{"uetr", "amount" (decimal
//! string), "currency", "purpose", "remittance_information", "origin",
//! "beneficiary" (the party)}`, the header `Idempotency-Key: <uetr>` and, when
//! configured, `Authorization: Bearer <token>`. The bank must answer a
//! repeated key with the first outcome and never credit twice.
//!
//! **Status:** `GET <url>/<uetr>` (the payout URL with the UETR, lowercase
//! hyphenated, as one more path segment: `https://bank.example/payouts` asks
//! `https://bank.example/payouts/<uetr>`), with the same `Idempotency-Key`
//! and `Authorization` headers. The bank answers `200` with
//! `{"status":"paid","reference":"..."}` or
//! `{"status":"refused","reason_code":"AC04","reason":"..."}` for a payout it
//! holds, and `404` with `{"status":"unknown"}` for a UETR it never received;
//! anything else (a plain 404 included: it may be a wrong URL) means "cannot
//! tell" and the gateway asks again later. Only after `unknown` does the
//! gateway pay, under the same idempotency key.
//!
//! Redirects are not followed. See [`HttpPayoutAdapter`] for how pay answers
//! map to results.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use remit_settlement::Uetr;

use super::{
    is_reason_code, traced_pay, traced_status, PayoutAdapter, PayoutConfigError, PayoutInstruction, PayoutResult,
    PayoutStatus, PAYOUT_REASON_LEN_MAX, PAYOUT_REFERENCE_LEN_MAX, PAYOUT_RESPONSE_BYTES_MAX, PAYOUT_TIMEOUT_MS_MAX,
    REASON_CODE_NARRATIVE,
};
use crate::outbound::{describe_transport_error, truncate_chars};
use crate::remittance::party::Party;

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

    /// `<url>/<uetr>`: the payout URL with the UETR as one more path segment.
    fn status_url(&self, uetr: Uetr) -> reqwest::Url {
        let mut url = self.url.clone();
        let path = format!("{}/{uetr}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url
    }

    async fn status_http(&self, uetr: Uetr) -> PayoutStatus {
        let mut request = self.client.get(self.status_url(uetr)).header("Idempotency-Key", uetr.to_string());
        if let Some(token) = &self.token {
            request = request.bearer_auth(&token.0);
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => return PayoutStatus::Failed { reason: describe_transport_error(&e, PAYOUT_REASON_LEN_MAX) },
        };
        let status = response.status();
        let bytes = match read_bounded(&mut response, PAYOUT_RESPONSE_BYTES_MAX).await {
            Ok(bytes) => bytes,
            Err(reason) => return PayoutStatus::Failed { reason: format!("HTTP {}: {reason}", status.as_u16()) },
        };
        interpret_status_answer(status, &bytes)
    }
}

#[async_trait::async_trait]
impl PayoutAdapter for HttpPayoutAdapter {
    async fn pay(&self, instruction: &PayoutInstruction) -> PayoutResult {
        traced_pay(self.name(), instruction, self.pay_http(instruction)).await
    }

    async fn status(&self, uetr: Uetr) -> PayoutStatus {
        traced_status(self.name(), uetr, self.status_http(uetr)).await
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

/// Maps the bank's answer to a status query (see the module doc).
fn interpret_status_answer(status: reqwest::StatusCode, body: &[u8]) -> PayoutStatus {
    let code = status.as_u16();
    let answer: Option<BankAnswer> = serde_json::from_slice(body).ok();
    match (code, answer) {
        (404 | 200, Some(answer)) if answer.status == "unknown" => PayoutStatus::Unknown,
        (200, Some(answer)) if answer.status == "paid" || answer.status == "refused" => {
            // The same checks as a pay answer; a refusal's status code is 200 here.
            interpret_answer(status, body).into()
        }
        (200, Some(answer)) => PayoutStatus::Failed {
            reason: format!(
                "HTTP 200: unexpected status {:?}",
                truncate_chars(&answer.status, PAYOUT_REFERENCE_LEN_MAX)
            ),
        },
        (200, None) => PayoutStatus::Failed { reason: "HTTP 200: body is not a payout status".to_owned() },
        _ => PayoutStatus::Failed { reason: status_text(status) },
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
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path as UrlPath, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    use axum::{Json, Router};

    use super::super::test_support::*;
    use super::super::{build_adapter, PayoutAdapterKind, PayoutSection};
    use super::*;

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
        // The data directory is used by the simulated book only.
        build_adapter(&section, std::path::Path::new(".")).expect("valid http section")
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

    /// A bank whose status route knows one paid and one refused UETR and
    /// answers `unknown` for any other; it records the headers it saw.
    async fn status_bank(paid: Uetr, refused: Uetr) -> (String, Arc<Seen>) {
        type Shared = State<(Arc<Seen>, Uetr, Uetr)>;
        async fn lookup(
            State((seen, paid, refused)): Shared,
            UrlPath(uetr): UrlPath<String>,
            headers: HeaderMap,
        ) -> (StatusCode, String) {
            record(&seen, &headers, serde_json::Value::String(uetr.clone())).await;
            if uetr == "broken" {
                return (StatusCode::SERVICE_UNAVAILABLE, String::new());
            }
            if uetr == paid.to_string() {
                (StatusCode::OK, r#"{"status":"paid","reference":"BK-7"}"#.to_owned())
            } else if uetr == refused.to_string() {
                (StatusCode::OK, r#"{"status":"refused","reason_code":"AC04","reason":"closed"}"#.to_owned())
            } else {
                (StatusCode::NOT_FOUND, r#"{"status":"unknown"}"#.to_owned())
            }
        }
        let seen = Arc::new(Seen::default());
        let app = Router::new().route("/bank/payouts/{uetr}", get(lookup)).with_state((seen.clone(), paid, refused));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}"), seen)
    }

    #[tokio::test]
    async fn http_adapter_asks_the_bank_for_the_outcome_by_uetr() {
        let (paid, refused_uetr, never) = (Uetr::new_random(), Uetr::new_random(), Uetr::new_random());
        let (base, seen) = status_bank(paid, refused_uetr).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let token_file = dir.path().join("bank.token");
        std::fs::write(&token_file, "s3cr3t-token\n").expect("write token");
        // A trailing slash on the payout URL changes nothing.
        for path in ["/bank/payouts", "/bank/payouts/"] {
            let adapter = http_adapter(&base, path, Some(token_file.clone()), 2_000);
            assert_eq!(adapter.status(paid).await, PayoutStatus::Paid { reference: "BK-7".to_owned() }, "{path}");
            assert_eq!(
                adapter.status(refused_uetr).await,
                PayoutStatus::Refused { reason_code: "AC04".to_owned(), reason: "closed".to_owned() },
                "{path}"
            );
            assert_eq!(adapter.status(never).await, PayoutStatus::Unknown, "{path}");
        }
        let keys = seen.idempotency_keys.lock().expect("lock").clone();
        assert_eq!(keys[..3], [paid.to_string(), refused_uetr.to_string(), never.to_string()]);
        let bodies = seen.bodies.lock().expect("lock").clone();
        assert_eq!(bodies[2], serde_json::Value::String(never.to_string()), "the UETR is the last path segment");
        assert!(seen.authorizations.lock().expect("lock").iter().all(|a| a == "Bearer s3cr3t-token"));

        // A 404 without the unknown body may be a wrong URL: cannot tell.
        let wrong = http_adapter(&base, "/elsewhere", None, 2_000);
        assert_eq!(wrong.status(never).await, PayoutStatus::Failed { reason: "HTTP 404 Not Found".to_owned() });
    }

    #[test]
    fn bank_status_answers_map_to_statuses() {
        fn check(status: u16, body: &str, expected: PayoutStatus) {
            let status = reqwest::StatusCode::from_u16(status).expect("valid status");
            assert_eq!(interpret_status_answer(status, body.as_bytes()), expected, "{status} {body}");
        }
        let failed = |reason: &str| PayoutStatus::Failed { reason: reason.to_owned() };
        check(200, r#"{"status":"paid","reference":"BK-1"}"#, PayoutStatus::Paid { reference: "BK-1".to_owned() });
        check(
            200,
            r#"{"status":"refused","reason_code":"AC06","reason":"blocked"}"#,
            PayoutStatus::Refused { reason_code: "AC06".to_owned(), reason: "blocked".to_owned() },
        );
        check(404, r#"{"status":"unknown"}"#, PayoutStatus::Unknown);
        check(200, r#"{"status":"unknown"}"#, PayoutStatus::Unknown);
        check(404, "", failed("HTTP 404 Not Found"));
        check(404, r#"{"status":"paid","reference":"BK-1"}"#, failed("HTTP 404 Not Found"));
        check(200, r#"{"status":"pending"}"#, failed("HTTP 200: unexpected status \"pending\""));
        check(200, r#"{"status":"paid"}"#, failed("HTTP 200: unexpected status \"paid\""));
        check(200, r#"{"status":"refused","reason":"x"}"#, failed("HTTP 200: refusal without a reason code"));
        check(200, "<html>", failed("HTTP 200: body is not a payout status"));
        check(500, r#"{"status":"unknown"}"#, failed("HTTP 500 Internal Server Error"));
        check(503, "", failed("HTTP 503 Service Unavailable"));
    }
}
