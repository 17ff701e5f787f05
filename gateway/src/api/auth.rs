//! API keys and per-client rate limits for the wallet API. Keys are random
//! 256-bit secrets; the node stores only their SHA-256, so a stolen config
//! does not reveal them (a slow password hash buys nothing for keys of
//! this entropy). A request names its key as `authorization: Bearer <key>`
//! or `x-api-key: <key>`, over gRPC metadata or HTTP headers alike.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::remittance::engine::{ErrorKind, RequestError};

/// Prefix of generated keys, so they are recognisable in secret scanners.
pub const API_KEY_PREFIX: &str = "rk_";

/// One `[[api.clients]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiClientConfig {
    /// Client id (a wallet app), e.g. `wallet-us`.
    pub id: String,
    /// Hex SHA-256 of the client's API key (`remit apikey` prints both).
    pub key_sha256: String,
    /// Sustained requests per second.
    #[serde(default = "default_rate")]
    pub rate_per_second: u32,
    /// Requests allowed in a burst above the rate.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Webhook URL for status changes of this client's remittances.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// File holding the webhook signing secret.
    #[serde(default)]
    pub webhook_secret_file: Option<PathBuf>,
}

fn default_rate() -> u32 {
    1_000
}
fn default_burst() -> u32 {
    2_000
}

/// A new random API key.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{API_KEY_PREFIX}{}", hex::encode(bytes))
}

/// The stored form of a key: hex SHA-256.
pub fn hash_key(key: &str) -> String {
    hex::encode(key_digest(key))
}

/// The SHA-256 of a presented key or token, as stored keys are looked up.
pub fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The credential of an `authorization: Bearer <credential>` header value,
/// trimmed; `None` when it is not one or is empty.
pub fn bearer(authorization: &str) -> Option<&str> {
    authorization
        .strip_prefix("Bearer ")
        .or_else(|| authorization.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|credential| !credential.is_empty())
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

#[derive(Debug)]
struct Client {
    id: String,
    rate: f64,
    burst: f64,
    bucket: Mutex<Bucket>,
}

/// Checks keys and rate limits.
#[derive(Clone, Debug, Default)]
pub struct Authenticator {
    by_hash: Arc<HashMap<[u8; 32], Arc<Client>>>,
}

/// The authenticated client, put in request extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientId(pub String);

/// The authenticated client's rate limit, put in request extensions beside
/// [`ClientId`]: a call pays for one request when it is authenticated, and a
/// batch or stream pays for each further remittance it carries.
#[derive(Clone, Debug)]
pub struct RateLimit(Arc<Client>);

impl RateLimit {
    /// Takes `count` more requests from the client's allowance; refuses
    /// (and takes nothing) when fewer are left.
    pub fn charge(&self, count: usize) -> Result<(), RequestError> {
        if count == 0 {
            return Ok(());
        }
        self.0.take(count as f64)
    }
}

impl Client {
    /// Refills the bucket for the time since its last refill, then takes
    /// `count` tokens if it holds that many.
    fn take(&self, count: f64) -> Result<(), RequestError> {
        let mut bucket = self.bucket.lock().expect("the bucket lock is never held across a panic");
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.refilled = now;
        if count > self.burst {
            return Err(RequestError::new(
                ErrorKind::ResourceExhausted,
                None,
                None,
                format!(
                    "{count} remittances in one call exceed client {}'s burst of {}; send smaller batches",
                    self.id, self.burst
                ),
            ));
        }
        if bucket.tokens < count {
            return Err(RequestError::new(
                ErrorKind::ResourceExhausted,
                None,
                None,
                format!("rate limit of {} requests/s exceeded for client {}; retry later", self.rate, self.id),
            ));
        }
        bucket.tokens -= count;
        Ok(())
    }
}

impl Authenticator {
    /// Builds from configuration; errors name the key.
    pub fn new(clients: &[ApiClientConfig]) -> Result<Self, String> {
        let mut by_hash = HashMap::new();
        let mut ids = std::collections::HashSet::new();
        for (i, client) in clients.iter().enumerate() {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&client.key_sha256, &mut hash)
                .map_err(|_| format!("api.clients[{i}].key_sha256: expected 64 hex digits"))?;
            if client.id.is_empty() || !client.id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                return Err(format!("api.clients[{i}].id: letters, digits, '-', '_', '.'"));
            }
            if !ids.insert(client.id.clone()) {
                return Err(format!("api.clients[{i}].id: {} listed twice", client.id));
            }
            if client.rate_per_second == 0 {
                return Err(format!("api.clients[{i}].rate_per_second: must be positive"));
            }
            let burst = f64::from(client.burst.max(client.rate_per_second));
            by_hash.insert(
                hash,
                Arc::new(Client {
                    id: client.id.clone(),
                    rate: f64::from(client.rate_per_second),
                    burst,
                    bucket: Mutex::new(Bucket { tokens: burst, refilled: Instant::now() }),
                }),
            );
        }
        Ok(Self { by_hash: Arc::new(by_hash) })
    }

    /// The client a presented key belongs to, charging one request to its
    /// rate limit. `authorization` and `x_api_key` are the raw header values.
    pub fn authenticate(&self, authorization: Option<&str>, x_api_key: Option<&str>) -> Result<ClientId, RequestError> {
        self.authenticate_limited(authorization, x_api_key).map(|(client, _)| client)
    }

    /// [`Authenticator::authenticate`], also returning the client's rate
    /// limit for charging the further remittances of a batch or stream.
    pub fn authenticate_limited(
        &self,
        authorization: Option<&str>,
        x_api_key: Option<&str>,
    ) -> Result<(ClientId, RateLimit), RequestError> {
        let refuse = |message: &str| RequestError::new(ErrorKind::Unauthenticated, None, None, message);
        // Every credential presented must hold: a bad one beside a good one
        // is refused, not skipped.
        let bearer_key = match authorization {
            None => None,
            Some(value) => Some(bearer(value).ok_or_else(|| refuse("authorization: expected `Bearer <key>`"))?),
        };
        let header_key = match x_api_key.map(str::trim) {
            None => None,
            Some("") => return Err(refuse("x-api-key: empty")),
            Some(key) => Some(key),
        };
        let key = match (bearer_key, header_key) {
            (Some(a), Some(b)) if a != b => return Err(refuse("authorization and x-api-key carry different keys")),
            (Some(key), _) | (None, Some(key)) => key,
            (None, None) => {
                return Err(refuse("missing API key: send `authorization: Bearer <key>` or `x-api-key: <key>`"))
            }
        };
        let hash = key_digest(key);
        let client = self
            .by_hash
            .get(&hash)
            .ok_or_else(|| RequestError::new(ErrorKind::Unauthenticated, None, None, "unknown or revoked API key"))?;
        client.take(1.0)?;
        Ok((ClientId(client.id.clone()), RateLimit(client.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(key: &str, rate: u32) -> ApiClientConfig {
        ApiClientConfig {
            id: "wallet-a".into(),
            key_sha256: hash_key(key),
            rate_per_second: rate,
            burst: rate,
            webhook_url: None,
            webhook_secret_file: None,
        }
    }

    #[test]
    fn keys_are_checked_by_hash_and_rate_limited() {
        let key = generate_key();
        assert!(key.starts_with(API_KEY_PREFIX) && key.len() == 67);
        let auth = Authenticator::new(&[config(&key, 3)]).expect("valid");
        let bearer = format!("Bearer {key}");
        assert_eq!(auth.authenticate(Some(&bearer), None).expect("ok"), ClientId("wallet-a".into()));
        assert_eq!(auth.authenticate(None, Some(&key)).expect("ok").0, "wallet-a");
        assert_eq!(auth.authenticate(None, Some(&key)).expect("ok").0, "wallet-a");
        let limited = auth.authenticate(None, Some(&key)).expect_err("over the burst");
        assert_eq!(limited.kind, ErrorKind::ResourceExhausted);
        let unknown = auth.authenticate(Some("Bearer rk_nope"), None).expect_err("unknown");
        assert_eq!(unknown.kind, ErrorKind::Unauthenticated);
        let missing = auth.authenticate(None, None).expect_err("missing");
        assert_eq!(missing.kind, ErrorKind::Unauthenticated);
        assert!(missing.message.contains("authorization"));
    }

    #[test]
    fn a_batch_pays_for_each_remittance_it_carries() {
        let key = generate_key();
        let auth = Authenticator::new(&[config(&key, 10)]).expect("valid");
        // The call pays one; a batch of 6 pays 5 more: 4 of the 10 are left.
        let (client, limit) = auth.authenticate_limited(None, Some(&key)).expect("authenticated");
        assert_eq!(client.0, "wallet-a");
        limit.charge(5).expect("within the allowance");
        let refused = limit.charge(5).expect_err("only 4 left");
        assert_eq!(refused.kind, ErrorKind::ResourceExhausted);
        limit.charge(4).expect("a refused charge takes nothing");
        assert!(auth.authenticate(None, Some(&key)).is_err(), "the batch used the allowance up");
        let too_big = limit.charge(11).expect_err("above the burst");
        assert_eq!(too_big.kind, ErrorKind::ResourceExhausted);
        assert!(too_big.message.contains("burst of 10"), "{}", too_big.message);
        limit.charge(0).expect("nothing to pay");
    }

    #[test]
    fn a_bad_credential_beside_a_good_one_is_refused() {
        let key = generate_key();
        let auth = Authenticator::new(&[config(&key, 100)]).expect("valid");
        let bearer = format!("Bearer {key}");
        for (authorization, x_api_key) in [
            (Some("Basic dXNlcjpwYXNz"), Some(key.as_str())),
            (Some("Bearer rk_other"), Some(key.as_str())),
            (Some(bearer.as_str()), Some("rk_other")),
            (Some(bearer.as_str()), Some("  ")),
            (Some("Bearer "), None),
        ] {
            let error = auth.authenticate(authorization, x_api_key).expect_err("refused");
            assert_eq!(error.kind, ErrorKind::Unauthenticated, "{authorization:?} {x_api_key:?}");
        }
        assert_eq!(auth.authenticate(Some(&bearer), Some(&key)).expect("the same key twice").0, "wallet-a");
    }

    #[test]
    fn bad_config_names_the_key() {
        let mut bad = config("k", 1);
        bad.key_sha256 = "xyz".into();
        let error = Authenticator::new(&[bad]).expect_err("bad hash");
        assert!(error.contains("api.clients[0].key_sha256"), "{error}");
    }
}
