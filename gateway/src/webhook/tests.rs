//! Tests of the webhook dispatcher and signatures.

use std::sync::atomic::AtomicUsize;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::Mac as _;

use super::dispatcher::{now_ms, with_jitter};
use super::signing::HmacSha256;
use super::store::{decode_pending, encode_pending};
use super::*;

const SECRET: &[u8] = b"whsec-test-0123456789abcdef";

fn fast_policy(attempts_max: u32) -> RetryPolicy {
    RetryPolicy { attempts_max, backoff_initial_ms: 20, backoff_max_ms: 50, timeout_ms: 2_000 }
}

fn event(client_id: &str, uetr: Uetr, status: Status) -> WebhookEvent {
    WebhookEvent::new(client_id, uetr, status, 1_700_000_000_000, serde_json::json!({"uetr": uetr, "status": status}))
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
    let state = Arc::new(Receiver { fail_first, delay, count: AtomicUsize::new(0), received: Mutex::new(Vec::new()) });
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
    check(SECRET, &format!("t=99999999999999999999,v1={}", "00".repeat(32)), body, Err(malformed("t is out of range")));
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
    let clamped = RetryPolicy { attempts_max: 0, backoff_initial_ms: 0, backoff_max_ms: 0, timeout_ms: 0 }.clamped();
    assert_eq!(clamped, RetryPolicy { attempts_max: 1, backoff_initial_ms: 1, backoff_max_ms: 1, timeout_ms: 1 });
}

#[test]
fn secrets_and_personal_data_stay_out_of_debug() {
    let endpoint = WebhookEndpoint::new("https://hooks.example.com/in?token=abc123", SECRET).expect("valid");
    let shown = format!("{endpoint:?}");
    assert!(shown.contains("https://hooks.example.com"), "{shown}");
    assert!(!shown.contains("whsec") && !shown.contains("abc123"), "{shown}");
    let dispatcher = WebhookDispatcher::new(HashMap::from([("c1".to_owned(), endpoint)]), None, RetryPolicy::default());
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
    let dispatcher = WebhookDispatcher::new(endpoints(&[("c1", &format!("http://{addr}/hook"))]), None, fast_policy(3));
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
    let first =
        WebhookDispatcher::new(endpoints(&[("gone", "http://127.0.0.1:9/hook")]), Some(tree.clone()), fast_policy(1));
    first.enqueue(event("gone", Uetr::new_random(), Status::Completed));
    drop(first);
    assert_eq!(tree.len(), 1);
    let second =
        WebhookDispatcher::new(endpoints(&[("c1", "http://127.0.0.1:9/hook")]), Some(tree.clone()), fast_policy(1));
    assert!(tree.is_empty());
    assert!(second.deliveries("gone", 10).is_empty());
}
