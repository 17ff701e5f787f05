//! A remittance as a gateway keeps it: its status with ISO 20022 codes, its
//! history, the quote it was priced with, and the payment message that
//! travels to the destination gateway under a salted hash commitment.

use remit_settlement::hash::{hash_with_domain, Digest32};
use remit_settlement::ids::{Height, ParticipantId, Uetr};
use remit_settlement::money::Money;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::party::Party;
use super::quote::QuoteTerms;

/// Domain tag of the commitment to a payment message.
pub const PAYMENT_MESSAGE_COMMITMENT_TAG: &[u8] = b"REMIT_PAYMENT_MESSAGE_V1";

/// Where a remittance stands. The order is the normal life cycle; `rejected`,
/// `returned`, `expired` and `cancelled` are the other terminal states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted by the origin gateway and durable there.
    Received,
    /// Held for a compliance officer.
    ComplianceHold,
    /// Refused (screening, the ledger, or validation at the destination).
    Rejected,
    /// Sent to the settlement ledger.
    Submitted,
    /// In a block durable on a quorum of validators.
    Committed,
    /// Its block is certified by the validators' threshold signature.
    Final,
    /// The destination gateway holds the payment message and is paying out.
    PayoutPending,
    /// The beneficiary was paid.
    Completed,
    /// The destination could not pay; the obligation was reversed.
    Returned,
    /// Not submitted in time.
    Expired,
    /// Cancelled by the client before submission.
    Cancelled,
}

impl Status {
    /// Every status, in life-cycle order.
    pub const ALL: [Status; 11] = [
        Status::Received,
        Status::ComplianceHold,
        Status::Rejected,
        Status::Submitted,
        Status::Committed,
        Status::Final,
        Status::PayoutPending,
        Status::Completed,
        Status::Returned,
        Status::Expired,
        Status::Cancelled,
    ];

    /// The snake_case name used in JSON and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Received => "received",
            Status::ComplianceHold => "compliance_hold",
            Status::Rejected => "rejected",
            Status::Submitted => "submitted",
            Status::Committed => "committed",
            Status::Final => "final",
            Status::PayoutPending => "payout_pending",
            Status::Completed => "completed",
            Status::Returned => "returned",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses a snake_case name.
    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The ISO 20022 transaction status (ExternalPaymentTransactionStatus1Code).
    pub fn iso_status(self) -> &'static str {
        match self {
            Status::Received => "RCVD",
            Status::ComplianceHold => "PDNG",
            Status::Submitted => "ACTC",
            Status::Committed | Status::Final | Status::PayoutPending => "ACSP",
            Status::Completed => "ACCC",
            Status::Rejected | Status::Returned | Status::Expired | Status::Cancelled => "RJCT",
        }
    }

    /// No further change can follow.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Rejected | Status::Completed | Status::Returned | Status::Expired | Status::Cancelled)
    }

    /// Position in the normal life cycle, for ordering (which status may
    /// follow which is [`super::lifecycle::may_follow`]).
    pub fn rank(self) -> u8 {
        match self {
            Status::Received => 0,
            Status::ComplianceHold => 1,
            Status::Submitted => 2,
            Status::Committed => 3,
            Status::Final => 4,
            Status::PayoutPending => 5,
            Status::Rejected | Status::Completed | Status::Returned | Status::Expired | Status::Cancelled => 6,
        }
    }
}

/// One status change, kept in the remittance's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    /// The new status.
    pub status: Status,
    /// Its ISO 20022 status code.
    pub iso_status: String,
    /// ISO 20022 status reason code (e.g. `AM04`, `AC04`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// Human-readable reason or detail.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When it happened, milliseconds since the Unix epoch.
    pub at_ms: u64,
}

impl StatusChange {
    /// A change to `status` at `at_ms`.
    pub fn new(status: Status, at_ms: u64, reason_code: Option<&str>, reason: impl Into<String>) -> Self {
        Self {
            status,
            iso_status: status.iso_status().to_owned(),
            reason_code: reason_code.map(str::to_owned),
            reason: reason.into(),
            at_ms,
        }
    }
}

/// Which side of the remittance this gateway is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The gateway the wallet client sent it through.
    Origin,
    /// The gateway that pays the beneficiary.
    Destination,
}

/// The payment message: everything the destination needs to pay out. It
/// never goes on the ledger; the ledger holds
/// `SHA-256(tag || salt || message_bytes)` and the destination checks the
/// bytes it receives against that before paying.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentMessage {
    /// End-to-end reference; equals the ledger transfer's.
    pub uetr: Uetr,
    /// Originating participant.
    pub origin: ParticipantId,
    /// Paying participant.
    pub destination: ParticipantId,
    /// Who sends.
    pub originator: Party,
    /// Who receives.
    pub beneficiary: Party,
    /// ISO 20022 purpose code (ExternalPurpose1Code), e.g. `FAMI`.
    pub purpose: String,
    /// Unstructured remittance information for the beneficiary.
    #[serde(default)]
    pub remittance_information: String,
    /// What the originator pays, fees included.
    pub send_amount: Money,
    /// What the beneficiary receives.
    pub receive_amount: Money,
    /// What settles between the gateways (the ledger transfer's amount).
    pub settlement_amount: Money,
    /// When the origin accepted it.
    pub created_at_ms: u64,
}

impl PaymentMessage {
    /// The exact bytes the commitment covers (JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a payment message always serialises")
    }

    /// Parses bytes received from a peer.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The salted commitment to message bytes.
pub fn commitment(salt: &[u8; 32], message_bytes: &[u8]) -> Digest32 {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(message_bytes);
    let inner: [u8; 32] = hasher.finalize().into();
    hash_with_domain(PAYMENT_MESSAGE_COMMITMENT_TAG, &inner)
}

/// Where a remittance's ledger transfer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerPosition {
    /// Block height.
    pub height: Height,
    /// Block hash.
    pub block_hash: Digest32,
}

/// A remittance held by a gateway (origin or destination side).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remittance {
    /// End-to-end reference.
    pub uetr: Uetr,
    /// This gateway's side.
    pub role: Role,
    /// Wallet client that created it (origin side; empty at the destination).
    pub client_id: String,
    /// The client's idempotency key (origin side).
    pub idempotency_key: String,
    /// Hash of the create request, to tell a retry from a different request
    /// reusing the idempotency key (origin side).
    #[serde(default)]
    pub request_fingerprint: String,
    /// The quote it was priced with (origin side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote_id: Option<String>,
    /// The priced terms (origin side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms: Option<QuoteTerms>,
    /// The payment message.
    pub message: PaymentMessage,
    /// Salt of the commitment.
    #[serde(with = "hex_salt")]
    pub salt: [u8; 32],
    /// The commitment on the ledger.
    pub commitment: Digest32,
    /// The current status (last of `history`).
    pub status: Status,
    /// Every status change, oldest first.
    pub history: Vec<StatusChange>,
    /// Ledger block of the transfer, once committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<LedgerPosition>,
    /// Payout reference from the paying institution, once paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payout_reference: Option<String>,
    /// Whether the destination acknowledged the payment message (origin side).
    #[serde(default)]
    pub message_delivered: bool,
}

impl Remittance {
    /// The latest status change.
    pub fn last_change(&self) -> &StatusChange {
        self.history.last().expect("a remittance always has at least its first status")
    }

    /// Applies a status change if the life cycle allows it after the
    /// current status ([`super::lifecycle::may_follow`]); returns whether it
    /// applied. A late, repeated or contradictory change is ignored.
    pub fn advance(&mut self, change: StatusChange) -> bool {
        if !super::lifecycle::may_follow(self.status, change.status) {
            return false;
        }
        self.status = change.status;
        self.history.push(change);
        true
    }

    /// When it was created.
    pub fn created_at_ms(&self) -> u64 {
        self.history.first().map_or(0, |c| c.at_ms)
    }
}

mod hex_salt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(salt: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(salt))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut salt = [0u8; 32];
        hex::decode_to_slice(&text, &mut salt).map_err(|_| serde::de::Error::custom("salt: expected 64 hex digits"))?;
        Ok(salt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_map_to_iso() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
            let json = serde_json::to_string(&status).expect("json");
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        assert_eq!(Status::Completed.iso_status(), "ACCC");
        assert_eq!(Status::ComplianceHold.iso_status(), "PDNG");
        assert_eq!(Status::Returned.iso_status(), "RJCT");
        assert_eq!(Status::parse("done"), None);
    }

    #[test]
    fn commitment_depends_on_salt_and_bytes() {
        let a = commitment(&[1; 32], b"message");
        assert_eq!(a, commitment(&[1; 32], b"message"));
        assert_ne!(a, commitment(&[2; 32], b"message"));
        assert_ne!(a, commitment(&[1; 32], b"messagf"));
    }
}
