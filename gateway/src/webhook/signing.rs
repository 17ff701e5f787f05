//! The `Remit-Signature` header: HMAC-SHA256 over the timestamp and the body.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::SIGNATURE_HEADER_PARTS_MAX;

pub(super) type HmacSha256 = Hmac<Sha256>;

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
