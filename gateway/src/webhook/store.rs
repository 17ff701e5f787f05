//! The stored form of a pending event in the sled tree (see the module docs
//! of [`super`]).

use serde::{Deserialize, Serialize};

use super::{WebhookEvent, PENDING_ENCODING_V1};

#[derive(Serialize, Deserialize)]
/// A pending event as stored: when it was enqueued, and the event.
pub(super) struct StoredPending {
    pub(super) enqueued_at_ms: u64,
    pub(super) event: WebhookEvent,
}

/// The stored form of a pending event (see the module docs).
pub(super) fn encode_pending(enqueued_at_ms: u64, event: &WebhookEvent) -> Result<Vec<u8>, serde_json::Error> {
    let mut bytes = vec![PENDING_ENCODING_V1];
    serde_json::to_writer(&mut bytes, &StoredPending { enqueued_at_ms, event: event.clone() })?;
    Ok(bytes)
}

/// Reads a stored pending event.
pub(super) fn decode_pending(bytes: &[u8]) -> Result<StoredPending, String> {
    match bytes.split_first() {
        Some((&PENDING_ENCODING_V1, json)) => serde_json::from_slice(json).map_err(|e| e.to_string()),
        Some((version, _)) => Err(format!("unknown encoding version {version}")),
        None => Err("empty value".to_owned()),
    }
}
