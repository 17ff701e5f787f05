//! Who is calling the peer service: the caller's [`ParticipantId`] for a
//! request, established by the transport, never by a field the caller
//! writes.
//!
//! Two ways, tried in this order:
//!
//! 1. **TLS.** Every node certificate issued by [`crate::tls::generate_tls`]
//!    carries its participant id as a URI subject alternative name,
//!    `remit:participant:<id>` ([`PARTICIPANT_URI_PREFIX`]). The handshake
//!    has already verified the chain to the network CA; the id is read from
//!    the verified leaf certificate (`Request::peer_certs`). A certificate
//!    without such a name (one issued before this scheme) identifies nobody
//!    and the request falls through to a signature.
//! 2. **Signature** (a loopback devnet without TLS). The caller signs, with
//!    its ed25519 identity key (the participant's key registered on the
//!    ledger, the one that signs its transfer batches),
//!    [`signed_message`]: the namespace [`PEER_REQUEST_NAMESPACE`], the
//!    chain id, the full gRPC method name, the participant id, a timestamp
//!    (ms), a random 16-byte nonce and the SHA-256 of the request body (the
//!    message's protobuf encoding). It sends them as gRPC metadata:
//!    [`HEADER_PARTICIPANT`], [`HEADER_TIMESTAMP_MS`], [`HEADER_NONCE`] (32
//!    hex digits) and [`HEADER_SIGNATURE`] (128 hex digits). The server takes
//!    the key from its own certified ledger state, refuses a timestamp more
//!    than [`SIGNATURE_WINDOW_MS`] from its clock, and remembers every nonce
//!    it accepted long enough that a replay inside the window is refused.
//!
//! Every refusal is `UNAUTHENTICATED` with the reason; nothing is read or
//! stored for such a request.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use prost::Message;
use remit_settlement::ids::ChainId;
use remit_settlement::replica::state_machine::lock;
use remit_settlement::replica::SharedChain;
use remit_settlement::ParticipantId;
use sha2::{Digest, Sha256};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Status};

pub use crate::tls::PARTICIPANT_URI_PREFIX;
/// Domain separation of a signed peer request.
pub const PEER_REQUEST_NAMESPACE: &[u8] = b"REMIT_PEER_REQUEST_V1";
/// Metadata: the signing participant's id.
pub const HEADER_PARTICIPANT: &str = "x-remit-participant";
/// Metadata: when the request was signed, ms since the Unix epoch.
pub const HEADER_TIMESTAMP_MS: &str = "x-remit-timestamp-ms";
/// Metadata: 16 random bytes, hex.
pub const HEADER_NONCE: &str = "x-remit-nonce";
/// Metadata: the ed25519 signature over [`signed_message`], hex.
pub const HEADER_SIGNATURE: &str = "x-remit-signature";
/// Largest distance between a signed request's timestamp and the server's clock.
pub const SIGNATURE_WINDOW_MS: u64 = 30_000;
/// Nonces remembered at once; past it, signed requests are refused until
/// older nonces leave the window (a bound on memory, far above what the
/// deliver and fetch paths send in a window).
pub const NONCES_REMEMBERED_MAX: usize = 1 << 20;

/// Full gRPC method names that are signed.
pub mod method {
    /// `DeliverPaymentMessages`.
    pub const DELIVER_PAYMENT_MESSAGES: &str = "/remit.v1.Peer/DeliverPaymentMessages";
    /// `FetchPaymentMessages`.
    pub const FETCH_PAYMENT_MESSAGES: &str = "/remit.v1.Peer/FetchPaymentMessages";
}

const NONCE_LEN: usize = 16;

/// The bytes a caller signs for one request.
pub fn signed_message(
    chain_id: &ChainId,
    method: &str,
    participant: &ParticipantId,
    timestamp_ms: u64,
    nonce: &[u8; NONCE_LEN],
    body_sha256: &[u8; 32],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(PEER_REQUEST_NAMESPACE.len() + 160);
    out.extend_from_slice(PEER_REQUEST_NAMESPACE);
    for field in [chain_id.as_str(), method, participant.as_str()] {
        let len = u32::try_from(field.len()).expect("chain ids, method names and participant ids are short");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(body_sha256);
    out
}

/// SHA-256 of a message's protobuf encoding (prost encodes fields in tag
/// order, so both ends get the same bytes from the same message).
pub fn body_sha256<T: Message>(body: &T) -> [u8; 32] {
    Sha256::digest(body.encode_to_vec()).into()
}

fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Signs this node's payment-message requests with its identity key.
#[derive(Clone)]
pub struct RequestSigner {
    chain_id: ChainId,
    participant: ParticipantId,
    key: Arc<SigningKey>,
}

impl std::fmt::Debug for RequestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestSigner({}, key redacted)", self.participant)
    }
}

impl RequestSigner {
    /// A signer for `participant` with its identity key.
    pub fn new(chain_id: ChainId, participant: ParticipantId, key: SigningKey) -> Self {
        Self { chain_id, participant, key: Arc::new(key) }
    }

    /// The participant it signs as.
    pub fn participant(&self) -> &ParticipantId {
        &self.participant
    }

    /// `body` as a request to `method`, signed now with a fresh nonce.
    pub fn request<T: Message>(&self, method: &str, body: T) -> Request<T> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        self.request_at(method, body, now_ms(), nonce)
    }

    /// `body` as a request signed at `timestamp_ms` with `nonce` (tests
    /// build stale and replayed requests with it).
    pub fn request_at<T: Message>(
        &self,
        method: &str,
        body: T,
        timestamp_ms: u64,
        nonce: [u8; NONCE_LEN],
    ) -> Request<T> {
        let digest = body_sha256(&body);
        let message = signed_message(&self.chain_id, method, &self.participant, timestamp_ms, &nonce, &digest);
        let signature = self.key.sign(&message);
        let mut request = Request::new(body);
        let metadata = request.metadata_mut();
        let ascii = |text: String| MetadataValue::try_from(text).expect("ids, digits and hex are ASCII");
        metadata.insert(HEADER_PARTICIPANT, ascii(self.participant.to_string()));
        metadata.insert(HEADER_TIMESTAMP_MS, ascii(timestamp_ms.to_string()));
        metadata.insert(HEADER_NONCE, ascii(hex::encode(nonce)));
        metadata.insert(HEADER_SIGNATURE, ascii(hex::encode(signature.to_bytes())));
        request
    }
}

/// Nonces of accepted signed requests, each kept until its request can no
/// longer be inside the window.
#[derive(Debug, Default)]
pub struct NonceCache {
    seen: HashSet<(ParticipantId, [u8; NONCE_LEN])>,
    by_expiry: VecDeque<(u64, ParticipantId, [u8; NONCE_LEN])>,
}

impl NonceCache {
    /// Records `nonce` of `participant` at `now_ms`; `Err` with the reason
    /// when it was seen in the window or the cache is full.
    pub fn admit(&mut self, participant: &ParticipantId, nonce: [u8; NONCE_LEN], now_ms: u64) -> Result<(), Status> {
        while self.by_expiry.front().is_some_and(|(expiry, _, _)| *expiry <= now_ms) {
            if let Some((_, id, old)) = self.by_expiry.pop_front() {
                self.seen.remove(&(id, old));
            }
        }
        let key = (participant.clone(), nonce);
        if self.seen.contains(&key) {
            return Err(Status::unauthenticated(format!("{HEADER_NONCE}: already used (a replayed request)")));
        }
        if self.seen.len() >= NONCES_REMEMBERED_MAX {
            return Err(Status::unavailable("too many signed requests in the window; retry later"));
        }
        // A request signed at t is accepted until t + window, and t is at
        // most now + window: remembering it for two windows covers that.
        self.by_expiry.push_back((now_ms.saturating_add(2 * SIGNATURE_WINDOW_MS), key.0.clone(), nonce));
        self.seen.insert(key);
        Ok(())
    }

    /// Nonces remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

fn header<'a>(metadata: &'a MetadataMap, name: &'static str) -> Result<&'a str, Status> {
    let value = metadata.get(name).ok_or_else(|| Status::unauthenticated(format!("{name}: missing")))?;
    value.to_str().map_err(|_| Status::unauthenticated(format!("{name}: not ASCII")))
}

fn hex_header<const N: usize>(metadata: &MetadataMap, name: &'static str) -> Result<[u8; N], Status> {
    let mut out = [0u8; N];
    hex::decode_to_slice(header(metadata, name)?, &mut out)
        .map_err(|_| Status::unauthenticated(format!("{name}: expected {} hex digits", 2 * N)))?;
    Ok(out)
}

/// Checks a signed request: the participant's key from `key_of` (the
/// certified ledger), the window around `now_ms`, the signature, then the
/// nonce (recorded only once all else holds). Pure apart from `nonces`.
pub fn verify_signed(
    chain_id: &ChainId,
    method: &str,
    metadata: &MetadataMap,
    body_sha256: &[u8; 32],
    now_ms: u64,
    key_of: impl FnOnce(&ParticipantId) -> Option<VerifyingKey>,
    nonces: &Mutex<NonceCache>,
) -> Result<ParticipantId, Status> {
    let participant = ParticipantId::new(header(metadata, HEADER_PARTICIPANT)?)
        .map_err(|e| Status::unauthenticated(format!("{HEADER_PARTICIPANT}: {e}")))?;
    let timestamp_ms: u64 = header(metadata, HEADER_TIMESTAMP_MS)?.parse().map_err(|_| {
        Status::unauthenticated(format!("{HEADER_TIMESTAMP_MS}: expected milliseconds since the epoch"))
    })?;
    if timestamp_ms.abs_diff(now_ms) > SIGNATURE_WINDOW_MS {
        return Err(Status::unauthenticated(format!(
            "{HEADER_TIMESTAMP_MS}: {timestamp_ms} is more than {SIGNATURE_WINDOW_MS} ms from this node's clock ({now_ms})"
        )));
    }
    let nonce: [u8; NONCE_LEN] = hex_header(metadata, HEADER_NONCE)?;
    let signature = Signature::from_bytes(&hex_header::<64>(metadata, HEADER_SIGNATURE)?);
    let key = key_of(&participant).ok_or_else(|| {
        Status::unauthenticated(format!("{HEADER_PARTICIPANT}: {participant} is not a participant on the ledger"))
    })?;
    let message = signed_message(chain_id, method, &participant, timestamp_ms, &nonce, body_sha256);
    key.verify(&message, &signature).map_err(|_| {
        Status::unauthenticated(format!("{HEADER_SIGNATURE}: does not verify under {participant}'s identity key"))
    })?;
    nonces.lock().unwrap_or_else(std::sync::PoisonError::into_inner).admit(&participant, nonce, now_ms)?;
    Ok(participant)
}

/// The participant named by a certificate's `remit:participant:<id>` URI
/// SAN; `Ok(None)` when it has none, `Err` when it cannot be parsed or
/// names two participants.
pub fn participant_in_certificate(der: &[u8]) -> Result<Option<ParticipantId>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("certificate: {e}"))?;
    let Some(san) = cert.subject_alternative_name().map_err(|e| format!("subject alternative name: {e}"))? else {
        return Ok(None);
    };
    let mut found = None;
    for name in &san.value.general_names {
        let GeneralName::URI(uri) = name else { continue };
        let Some(id) = uri.strip_prefix(PARTICIPANT_URI_PREFIX) else { continue };
        let id = ParticipantId::new(id).map_err(|e| format!("subject alternative name {uri}: {e}"))?;
        if found.as_ref().is_some_and(|other| *other != id) {
            return Err("subject alternative name: names more than one participant".into());
        }
        found = Some(id);
    }
    Ok(found)
}

/// The certificate's participant from a TLS request (`None` without TLS
/// or without a participant name in the certificate).
pub fn certificate_identity<T>(request: &Request<T>) -> Result<Option<ParticipantId>, Status> {
    let Some(certs) = request.peer_certs() else { return Ok(None) };
    let Some(leaf) = certs.first() else { return Ok(None) };
    participant_in_certificate(leaf.as_ref()).map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))
}

/// The server side: who is calling, from the certificate or the signature.
#[derive(Clone)]
pub struct PeerAuthenticator {
    chain: SharedChain,
    chain_id: ChainId,
    nonces: Arc<Mutex<NonceCache>>,
}

impl std::fmt::Debug for PeerAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerAuthenticator({})", self.chain_id.as_str())
    }
}

impl PeerAuthenticator {
    /// Keys are looked up in `chain`'s ledger state.
    pub fn new(chain: SharedChain, chain_id: ChainId) -> Self {
        Self { chain, chain_id, nonces: Arc::default() }
    }

    /// The authenticated caller of `request` to `method`: `UNAUTHENTICATED`
    /// without a participant certificate or a valid signature, or when the
    /// participant is not on the ledger.
    pub fn authenticate<T: Message>(&self, method: &str, request: &Request<T>) -> Result<ParticipantId, Status> {
        if let Some(participant) = certificate_identity(request)? {
            if let Some(claimed) = request.metadata().get(HEADER_PARTICIPANT).and_then(|v| v.to_str().ok()) {
                if claimed != participant.as_str() {
                    return Err(Status::unauthenticated(format!(
                        "{HEADER_PARTICIPANT}: {claimed} differs from the certificate's participant {participant}"
                    )));
                }
            }
            if lock(&self.chain).state().participant(&participant).is_none() {
                return Err(Status::unauthenticated(format!("{participant} is not a participant on the ledger")));
            }
            return Ok(participant);
        }
        if request.metadata().get(HEADER_SIGNATURE).is_none() {
            return Err(Status::unauthenticated(format!(
                "no participant certificate and no {HEADER_SIGNATURE}: the caller is unknown"
            )));
        }
        let digest = body_sha256(request.get_ref());
        let key_of =
            |id: &ParticipantId| lock(&self.chain).state().participant(id).map(|p| *p.origin_key.verifying_key());
        verify_signed(&self.chain_id, method, request.metadata(), &digest, now_ms(), key_of, &self.nonces)
    }

    /// The caller of a Raft RPC must be a validator when its certificate
    /// names it: `PERMISSION_DENIED` for a participant that is not one.
    /// Without a participant certificate nothing is known and nothing is
    /// refused here (plaintext loopback devnets; Raft messages are not
    /// signed, their cost would fall on every append).
    pub fn require_validator_if_known<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(participant) = certificate_identity(request)? else { return Ok(()) };
        let chain = lock(&self.chain);
        match chain.state().participant(&participant) {
            Some(p) if p.validator_index.is_some() => Ok(()),
            _ => Err(Status::permission_denied(format!("{participant} is not a validator: no Raft messages"))),
        }
    }
}

#[cfg(test)]
#[path = "peer_identity_tests.rs"]
mod tests;
