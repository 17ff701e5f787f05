//! Payout reports: after paying (or failing to pay) the beneficiary, a
//! transfer's destination records on the ledger that the payout completed, or
//! that it was returned with an ISO 20022 return reason. A return reverses the
//! transfer's obligation in the open window (see `ledger`).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{DecodeError, Reader, Writer};
use crate::constants::{BATCH_TRANSFERS_MAX, PARTICIPANT_ID_LEN_MAX};
use crate::hash::{hash_with_domain, Digest32};
use crate::ids::{ChainId, IdError, ParticipantId, Uetr};
use crate::participant::OriginKey;
use crate::transfer::BatchSignature;

/// Domain tag of the message a destination signs for a report batch.
pub const PAYOUT_REPORTS_SIGNATURE_TAG: &[u8] = b"REMIT_PAYOUT_REPORTS_V1";

/// Canonical code of a completed payout (in reports and payout states).
const OUTCOME_COMPLETED: u8 = 1;
/// Canonical code of a returned payout, followed by the 4 reason bytes.
const OUTCOME_RETURNED: u8 = 2;

/// An ISO 20022 ExternalReturnReason1Code: exactly 4 ASCII uppercase letters or digits, e.g. "AC04".
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReturnReason([u8; 4]);

impl ReturnReason {
    /// Validates a return reason code such as `AC04` (closed account) or `MS03`.
    pub fn new(code: &str) -> Result<Self, IdError> {
        let bytes: [u8; 4] = code.as_bytes().try_into().map_err(|_| Self::error(code))?;
        Self::from_bytes(bytes).ok_or_else(|| Self::error(code))
    }

    /// Wraps 4 bytes, which must be ASCII uppercase letters or digits.
    pub fn from_bytes(bytes: [u8; 4]) -> Option<Self> {
        bytes.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()).then_some(Self(bytes))
    }

    fn error(code: &str) -> IdError {
        IdError {
            kind: "return reason",
            value: code.to_owned(),
            reason: "must be 4 ASCII upper-case letters or digits (ISO 20022 ExternalReturnReason1Code)",
        }
    }

    /// The code as a string.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("validated as ASCII on construction")
    }

    /// The 4 ASCII bytes.
    pub fn as_bytes(&self) -> [u8; 4] {
        self.0
    }
}

impl fmt::Display for ReturnReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ReturnReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReturnReason({})", self.as_str())
    }
}

impl FromStr for ReturnReason {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for ReturnReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ReturnReason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Self::new(&value).map_err(serde::de::Error::custom)
    }
}

/// What the destination reports about one payout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PayoutOutcome {
    /// The beneficiary was paid; no money moves on the ledger.
    Completed,
    /// The payout failed and the funds go back: the obligation is reversed.
    Returned {
        /// Why (ISO 20022 ExternalReturnReason1Code).
        reason: ReturnReason,
    },
}

impl PayoutOutcome {
    /// Canonical encoding: a code byte, and for a return the 4 reason bytes.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            PayoutOutcome::Completed => w.u8(OUTCOME_COMPLETED),
            PayoutOutcome::Returned { reason } => {
                w.u8(OUTCOME_RETURNED);
                w.raw(&reason.0);
            }
        }
    }

    /// Decodes an outcome written by [`PayoutOutcome::encode`].
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let code = r.u8()?;
        Self::decode_after_code(code, r)
    }

    fn decode_after_code(code: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match code {
            OUTCOME_COMPLETED => Ok(PayoutOutcome::Completed),
            OUTCOME_RETURNED => {
                let bytes = r.array()?;
                let reason = ReturnReason::from_bytes(bytes)
                    .ok_or_else(|| r.error(format!("return reason {bytes:?} is not 4 upper-case letters or digits")))?;
                Ok(PayoutOutcome::Returned { reason })
            }
            other => Err(r.error(format!("unknown payout outcome {other}"))),
        }
    }

    /// The payout state a transfer is in once this outcome is accepted.
    pub fn state(&self) -> PayoutState {
        match self {
            PayoutOutcome::Completed => PayoutState::Completed,
            PayoutOutcome::Returned { reason } => PayoutState::Returned(*reason),
        }
    }
}

/// The destination's report on one transfer it received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutReport {
    /// The transfer reported on.
    pub uetr: Uetr,
    /// What happened to its payout.
    #[serde(flatten)]
    pub outcome: PayoutOutcome,
}

impl PayoutReport {
    /// Canonical encoding.
    pub fn encode(&self, w: &mut Writer) {
        w.raw(self.uetr.as_bytes());
        self.outcome.encode(w);
    }

    /// Decodes and validates a report.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let uetr = Uetr::from_bytes(r.array()?).map_err(|e| r.error(e))?;
        Ok(Self { uetr, outcome: PayoutOutcome::decode(r)? })
    }
}

/// Reports from one destination, signed once with its ed25519 key (the participant's `origin_key`, the same key it signs transfer batches with).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutReportBatch {
    /// The reporting participant: the destination of every reported transfer.
    pub reporter: ParticipantId,
    /// The reports, applied in order.
    pub reports: Vec<PayoutReport>,
    /// The reporter's signature over [`PayoutReportBatch::signing_digest`].
    pub signature: BatchSignature,
}

impl PayoutReportBatch {
    /// Builds and signs a report batch.
    pub fn sign(chain_id: &ChainId, reporter: ParticipantId, reports: Vec<PayoutReport>, key: &SigningKey) -> Self {
        let digest = Self::digest_of(chain_id, &reporter, &reports);
        let signature = BatchSignature(key.sign(&digest.0).to_bytes());
        Self { reporter, reports, signature }
    }

    /// The digest the reporter signs: domain tag, chain id, reporter and reports.
    pub fn signing_digest(&self, chain_id: &ChainId) -> Digest32 {
        Self::digest_of(chain_id, &self.reporter, &self.reports)
    }

    fn digest_of(chain_id: &ChainId, reporter: &ParticipantId, reports: &[PayoutReport]) -> Digest32 {
        let mut w = Writer::with_capacity(64 + reports.len() * 24);
        w.str(chain_id.as_str());
        encode_body(&mut w, reporter, reports);
        hash_with_domain(PAYOUT_REPORTS_SIGNATURE_TAG, w.as_bytes())
    }

    /// Whether the signature is `key`'s over this batch on this chain.
    pub fn verify_signature(&self, chain_id: &ChainId, key: &OriginKey) -> bool {
        let digest = self.signing_digest(chain_id);
        let signature = Signature::from_bytes(&self.signature.0);
        key.verifying_key().verify(&digest.0, &signature).is_ok()
    }

    /// Canonical encoding (body then signature).
    pub fn encode(&self, w: &mut Writer) {
        encode_body(w, &self.reporter, &self.reports);
        w.raw(&self.signature.0);
    }

    /// Decodes a batch written by [`PayoutReportBatch::encode`], with at most
    /// `BATCH_TRANSFERS_MAX` reports.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let reporter = ParticipantId::new(r.str(PARTICIPANT_ID_LEN_MAX)?).map_err(|e| r.error(e))?;
        let count = r.len(BATCH_TRANSFERS_MAX)?;
        let mut reports = Vec::with_capacity(count);
        for _ in 0..count {
            reports.push(PayoutReport::decode(r)?);
        }
        Ok(Self { reporter, reports, signature: BatchSignature(r.array()?) })
    }
}

fn encode_body(w: &mut Writer, reporter: &ParticipantId, reports: &[PayoutReport]) {
    w.str(reporter.as_str());
    w.len(reports.len());
    for report in reports {
        report.encode(w);
    }
}

/// Where a transfer's payout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutState {
    /// Accepted on the ledger, not yet reported by its destination.
    Open,
    /// The destination reported the beneficiary paid.
    Completed,
    /// The destination returned it; the obligation was reversed.
    Returned(ReturnReason),
}

impl PayoutState {
    /// Canonical encoding: `0` for open, otherwise as [`PayoutOutcome::encode`].
    pub fn encode(&self, w: &mut Writer) {
        match self {
            PayoutState::Open => w.u8(0),
            PayoutState::Completed => PayoutOutcome::Completed.encode(w),
            PayoutState::Returned(reason) => PayoutOutcome::Returned { reason: *reason }.encode(w),
        }
    }

    /// Decodes a state written by [`PayoutState::encode`].
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(PayoutState::Open),
            code => Ok(PayoutOutcome::decode_after_code(code, r)?.state()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_reasons() {
        for good in ["AC04", "AM09", "MS03", "NARR", "RR01"] {
            let reason = ReturnReason::new(good).expect(good);
            assert_eq!(reason.as_str(), good);
            assert_eq!(reason.to_string(), good);
            assert_eq!(good.parse::<ReturnReason>().expect(good), reason);
        }
        for bad in ["", "AC0", "AC045", "ac04", "AC-4", "AC 4", "ÄC04", "AC0\u{0}"] {
            let err = ReturnReason::new(bad).expect_err(bad);
            assert_eq!(err.kind, "return reason", "{bad:?}");
        }
        assert_eq!(ReturnReason::from_bytes(*b"ac04"), None);
    }

    #[test]
    fn outcomes_serialize_flat() {
        let uetr: Uetr = "eb6305c9-1f7f-49de-aed0-16487c27b42d".parse().expect("v4");
        let returned = PayoutReport {
            uetr,
            outcome: PayoutOutcome::Returned { reason: ReturnReason::new("AC04").expect("valid") },
        };
        let json = serde_json::to_string(&returned).expect("serializes");
        assert_eq!(json, r#"{"uetr":"eb6305c9-1f7f-49de-aed0-16487c27b42d","outcome":"returned","reason":"AC04"}"#);
        assert_eq!(serde_json::from_str::<PayoutReport>(&json).expect("parses"), returned);
        let completed = PayoutReport { uetr, outcome: PayoutOutcome::Completed };
        let json = serde_json::to_string(&completed).expect("serializes");
        assert_eq!(json, r#"{"uetr":"eb6305c9-1f7f-49de-aed0-16487c27b42d","outcome":"completed"}"#);
        assert_eq!(serde_json::from_str::<PayoutReport>(&json).expect("parses"), completed);
        let bad = r#"{"uetr":"eb6305c9-1f7f-49de-aed0-16487c27b42d","outcome":"returned","reason":"ac04"}"#;
        assert!(serde_json::from_str::<PayoutReport>(bad).is_err());
    }

    #[test]
    fn states_round_trip() {
        let reason = ReturnReason::new("AC04").expect("valid");
        for state in [PayoutState::Open, PayoutState::Completed, PayoutState::Returned(reason)] {
            let mut w = Writer::default();
            state.encode(&mut w);
            let mut r = Reader::new(w.as_bytes(), "state");
            assert_eq!(PayoutState::decode(&mut r).expect("decodes"), state);
            r.finish().expect("no trailing bytes");
        }
        let json = serde_json::to_string(&PayoutState::Returned(reason)).expect("serializes");
        assert_eq!(json, r#"{"returned":"AC04"}"#);
    }
}
