//! Unit tests of caller identity: signed requests and certificate names.

use super::*;
use remit_proto::v1::FetchPaymentMessagesRequest;

const NOW_MS: u64 = 1_800_000_000_000;

fn chain_id() -> ChainId {
    ChainId::new("remit-test").expect("valid chain id")
}

fn id(name: &str) -> ParticipantId {
    ParticipantId::new(name).expect("valid participant id")
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn body() -> FetchPaymentMessagesRequest {
    FetchPaymentMessagesRequest { uetrs: vec![vec![7; 16]], destination: "gw-ph".into() }
}

/// The ledger of these tests: gw-ph holds key 1, gw-mx key 2.
fn ledger_key(participant: &ParticipantId) -> Option<VerifyingKey> {
    match participant.as_str() {
        "gw-ph" => Some(key(1).verifying_key()),
        "gw-mx" => Some(key(2).verifying_key()),
        _ => None,
    }
}

fn signed(signer: &RequestSigner, timestamp_ms: u64, nonce: [u8; 16]) -> Request<FetchPaymentMessagesRequest> {
    signer.request_at(method::FETCH_PAYMENT_MESSAGES, body(), timestamp_ms, nonce)
}

/// Verifies `request` as the server would at `now_ms`.
fn check<T: Message>(request: &Request<T>, now_ms: u64, nonces: &Mutex<NonceCache>) -> Result<ParticipantId, Status> {
    let digest = body_sha256(request.get_ref());
    verify_signed(&chain_id(), method::FETCH_PAYMENT_MESSAGES, request.metadata(), &digest, now_ms, ledger_key, nonces)
}

fn refused(result: Result<ParticipantId, Status>, reason: &str) {
    let status = result.expect_err("the request must be refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{}", status.message());
    assert!(status.message().contains(reason), "expected {reason:?} in {:?}", status.message());
}

#[test]
fn a_valid_signature_names_the_signer() {
    let nonces = Mutex::default();
    let signer = RequestSigner::new(chain_id(), id("gw-ph"), key(1));
    assert_eq!(check(&signed(&signer, NOW_MS, [1; 16]), NOW_MS, &nonces).expect("valid"), id("gw-ph"));
    // Inside the window on both sides.
    let early = signed(&signer, NOW_MS - SIGNATURE_WINDOW_MS, [2; 16]);
    assert_eq!(check(&early, NOW_MS, &nonces).expect("valid"), id("gw-ph"));
    let late = signed(&signer, NOW_MS + SIGNATURE_WINDOW_MS, [3; 16]);
    assert_eq!(check(&late, NOW_MS, &nonces).expect("valid"), id("gw-ph"));
    assert_eq!(nonces.lock().expect("not poisoned").len(), 3);
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let nonces = Mutex::default();
    // gw-mx's key, claiming to be gw-ph.
    let impostor = RequestSigner::new(chain_id(), id("gw-ph"), key(2));
    refused(check(&signed(&impostor, NOW_MS, [1; 16]), NOW_MS, &nonces), "does not verify under gw-ph");
    assert!(nonces.lock().expect("not poisoned").is_empty(), "a refused request leaves no nonce behind");
}

#[test]
fn an_altered_body_method_or_chain_is_refused() {
    let nonces = Mutex::default();
    let signer = RequestSigner::new(chain_id(), id("gw-ph"), key(1));
    let mut request = signed(&signer, NOW_MS, [1; 16]);
    request.get_mut().uetrs.push(vec![8; 16]);
    refused(check(&request, NOW_MS, &nonces), "does not verify");
    let request = signed(&signer, NOW_MS, [2; 16]);
    let digest = body_sha256(request.get_ref());
    let other_method = verify_signed(
        &chain_id(),
        method::DELIVER_PAYMENT_MESSAGES,
        request.metadata(),
        &digest,
        NOW_MS,
        ledger_key,
        &nonces,
    );
    refused(other_method, "does not verify");
    let other_chain = RequestSigner::new(ChainId::new("remit-other").expect("valid"), id("gw-ph"), key(1));
    refused(check(&signed(&other_chain, NOW_MS, [3; 16]), NOW_MS, &nonces), "does not verify");
    // The participant header changed to one with another key.
    let mut request = signed(&signer, NOW_MS, [4; 16]);
    request.metadata_mut().insert(HEADER_PARTICIPANT, MetadataValue::from_static("gw-mx"));
    refused(check(&request, NOW_MS, &nonces), "does not verify under gw-mx");
}

#[test]
fn a_stale_or_future_timestamp_is_refused() {
    let nonces = Mutex::default();
    let signer = RequestSigner::new(chain_id(), id("gw-ph"), key(1));
    let stale = signed(&signer, NOW_MS - SIGNATURE_WINDOW_MS - 1, [1; 16]);
    refused(check(&stale, NOW_MS, &nonces), "more than 30000 ms from this node's clock");
    let future = signed(&signer, NOW_MS + SIGNATURE_WINDOW_MS + 1, [2; 16]);
    refused(check(&future, NOW_MS, &nonces), "more than 30000 ms");
}

#[test]
fn a_replayed_nonce_is_refused_for_the_whole_window() {
    let nonces = Mutex::default();
    let signer = RequestSigner::new(chain_id(), id("gw-ph"), key(1));
    let request = signed(&signer, NOW_MS, [9; 16]);
    check(&request, NOW_MS, &nonces).expect("first use");
    refused(check(&request, NOW_MS, &nonces), "already used");
    // Still refused at the last moment the timestamp is inside the window.
    refused(check(&request, NOW_MS + SIGNATURE_WINDOW_MS, &nonces), "already used");
    // The same nonce from another participant is its own.
    let other = RequestSigner::new(chain_id(), id("gw-mx"), key(2));
    check(&signed(&other, NOW_MS, [9; 16]), NOW_MS, &nonces).expect("another participant's nonce");
    // A request signed at the edge of the window (t = now + W) is kept for
    // as long as it can be presented (until t + W).
    let edge = signed(&signer, NOW_MS + SIGNATURE_WINDOW_MS, [10; 16]);
    check(&edge, NOW_MS, &nonces).expect("inside the window");
    refused(check(&edge, NOW_MS + 2 * SIGNATURE_WINDOW_MS - 1, &nonces), "already used");
}

#[test]
fn an_unknown_participant_or_missing_header_is_refused() {
    let nonces = Mutex::default();
    let stranger = RequestSigner::new(chain_id(), id("gw-zz"), key(3));
    refused(check(&signed(&stranger, NOW_MS, [1; 16]), NOW_MS, &nonces), "gw-zz is not a participant");
    let signer = RequestSigner::new(chain_id(), id("gw-ph"), key(1));
    for header in [HEADER_PARTICIPANT, HEADER_TIMESTAMP_MS, HEADER_NONCE, HEADER_SIGNATURE] {
        let mut request = signed(&signer, NOW_MS, [2; 16]);
        request.metadata_mut().remove(header);
        refused(check(&request, NOW_MS, &nonces), &format!("{header}: missing"));
    }
    let mut request = signed(&signer, NOW_MS, [3; 16]);
    request.metadata_mut().insert(HEADER_NONCE, MetadataValue::from_static("abcd"));
    refused(check(&request, NOW_MS, &nonces), "x-remit-nonce: expected 32 hex digits");
    let mut request = signed(&signer, NOW_MS, [4; 16]);
    request.metadata_mut().insert(HEADER_TIMESTAMP_MS, MetadataValue::from_static("soon"));
    refused(check(&request, NOW_MS, &nonces), "x-remit-timestamp-ms: expected milliseconds");
    assert!(nonces.lock().expect("not poisoned").is_empty());
}

#[test]
fn the_nonce_cache_forgets_after_two_windows_and_is_bounded() {
    let mut cache = NonceCache::default();
    let ph = id("gw-ph");
    cache.admit(&ph, [1; 16], NOW_MS).expect("first");
    assert_eq!(cache.admit(&ph, [1; 16], NOW_MS + 1).expect_err("replay").code(), tonic::Code::Unauthenticated);
    cache.admit(&ph, [2; 16], NOW_MS + 2 * SIGNATURE_WINDOW_MS).expect("another nonce, later");
    assert_eq!(cache.len(), 1, "the first nonce left after two windows");
    let mut full = NonceCache::default();
    for i in 0..NONCES_REMEMBERED_MAX {
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
        full.admit(&ph, nonce, NOW_MS).expect("room");
    }
    assert_eq!(full.admit(&ph, [0xff; 16], NOW_MS).expect_err("full").code(), tonic::Code::Unavailable);
    full.admit(&ph, [0xff; 16], NOW_MS + 2 * SIGNATURE_WINDOW_MS).expect("room again once the window passed");
    assert_eq!(full.len(), 1);
}

fn certificate(sans: Vec<rcgen::SanType>) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["remit-node".to_owned()]).expect("params");
    params.subject_alt_names.extend(sans);
    params.self_signed(&key).expect("certificate").der().to_vec()
}

fn uri(text: &str) -> rcgen::SanType {
    rcgen::SanType::URI(text.try_into().expect("ASCII"))
}

#[test]
fn the_participant_is_read_from_the_uri_san() {
    let der = certificate(vec![uri("remit:participant:gw-ph")]);
    assert_eq!(participant_in_certificate(&der).expect("parses"), Some(id("gw-ph")));
    // The same name twice is one participant.
    let twice = certificate(vec![uri("remit:participant:gw-ph"), uri("remit:participant:gw-ph")]);
    assert_eq!(participant_in_certificate(&twice).expect("parses"), Some(id("gw-ph")));
    // A DNS name equal to an id (as in certificates before this scheme) names nobody.
    let legacy = certificate(vec![rcgen::SanType::DnsName("gw-ph".try_into().expect("ASCII"))]);
    assert_eq!(participant_in_certificate(&legacy).expect("parses"), None);
    let other_uri = certificate(vec![uri("https://gw-ph.example")]);
    assert_eq!(participant_in_certificate(&other_uri).expect("parses"), None);
    let two = certificate(vec![uri("remit:participant:gw-ph"), uri("remit:participant:gw-mx")]);
    assert!(participant_in_certificate(&two).expect_err("ambiguous").contains("more than one participant"));
    let bad = certificate(vec![uri("remit:participant:-bad id")]);
    assert!(participant_in_certificate(&bad).expect_err("invalid id").contains("participant id"));
    assert!(participant_in_certificate(b"not a certificate").is_err());
}

#[test]
fn generated_node_certificates_name_their_participant() {
    let dir = tempfile::tempdir().expect("temp dir");
    let names = vec!["gw-us".to_owned(), "gw-ph".to_owned()];
    crate::tls::generate_tls(dir.path(), &names).expect("generated");
    for name in &names {
        let pem = std::fs::read(dir.path().join(name).join(crate::tls::NODE_CERT_FILE)).expect("certificate file");
        let (_, parsed) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM");
        assert_eq!(participant_in_certificate(&parsed.contents).expect("parses"), Some(id(name)));
    }
}

#[test]
fn the_signed_encoding_is_pinned() {
    let message = signed_message(&chain_id(), method::FETCH_PAYMENT_MESSAGES, &id("gw-ph"), NOW_MS, &[1; 16], &[2; 32]);
    assert_eq!(
        hex::encode(Sha256::digest(&message)),
        "483f195549f1598f2626313aff7a9c4cc1c8af3aff4ba9d529dbde60c00e7ab6",
        "changing the signed encoding of peer requests is a deliberate act"
    );
}
