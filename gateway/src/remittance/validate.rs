//! What a create request carries and the checks it must pass before
//! anything is reserved or recorded; list filters.

use remit_compliance::ScreenedParty;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::errors::RequestError;
use super::party::Party;
use super::quote::{QuoteId, QuoteRequest};
use super::record::Status;

/// Longest idempotency key.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 64;
/// Longest unstructured remittance information.
pub const REMITTANCE_INFORMATION_LEN_MAX: usize = 140;

/// A create request, already parsed from the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateInput {
    /// The quote to take; empty when `price` is given.
    pub quote_id: String,
    /// Price at the current rates instead of taking a quote.
    pub price: Option<QuoteRequest>,
    /// Who sends.
    pub originator: Party,
    /// Who receives.
    pub beneficiary: Party,
    /// ISO 20022 purpose code.
    pub purpose: String,
    /// Client-chosen key; retries with it return the same remittance.
    pub idempotency_key: String,
    /// Unstructured information for the beneficiary.
    pub remittance_information: String,
}

/// A list filter.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only these statuses (empty: all).
    pub statuses: Vec<Status>,
    /// Created at or after (ms).
    pub created_from_ms: Option<u64>,
    /// Created before (ms).
    pub created_to_ms: Option<u64>,
    /// Page size (1 to 500).
    pub page_size: usize,
    /// Continue after this position (from the previous page).
    pub page_token: Option<String>,
}

/// A digest of the request, to tell a retry from a different request
/// reusing an idempotency key.
pub(super) fn fingerprint(input: &CreateInput) -> String {
    let mut hasher = Sha256::new();
    for part in [
        input.quote_id.as_bytes(),
        format!("{:?}", input.price).as_bytes(),
        &serde_json::to_vec(&input.originator).unwrap_or_default(),
        &serde_json::to_vec(&input.beneficiary).unwrap_or_default(),
        input.purpose.as_bytes(),
        input.remittance_information.as_bytes(),
    ] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

/// Checks a create request; returns the quote id to take, if any.
pub(super) fn validate_input(input: &CreateInput) -> Result<Option<QuoteId>, RequestError> {
    let key = &input.idempotency_key;
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RequestError::invalid(
            "idempotency_key",
            None,
            format!("must be 1 to {IDEMPOTENCY_KEY_LEN_MAX} printable ASCII characters without spaces"),
        ));
    }
    let quote_id = match (&input.price, input.quote_id.is_empty()) {
        (Some(_), true) => None,
        (Some(_), false) => return Err(RequestError::invalid("quote", None, "give quote_id or quote, not both")),
        (None, _) => Some(
            Uuid::parse_str(&input.quote_id)
                .map(QuoteId::from_uuid)
                .map_err(|_| RequestError::invalid("quote_id", None, "not a quote id (UUID)"))?,
        ),
    };
    input
        .originator
        .validate("originator")
        .map_err(|e| RequestError::invalid(&e.field, Some(e.reason_code()), &e.reason))?;
    input
        .beneficiary
        .validate("beneficiary")
        .map_err(|e| RequestError::invalid(&e.field, Some(e.reason_code()), &e.reason))?;
    let purpose = &input.purpose;
    if purpose.len() != 4 || !purpose.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
        return Err(RequestError::invalid(
            "purpose",
            Some("RR12"),
            "must be an ISO 20022 purpose code of 4 uppercase letters or digits, e.g. FAMI",
        ));
    }
    let info = &input.remittance_information;
    if info.chars().count() > REMITTANCE_INFORMATION_LEN_MAX || info.chars().any(char::is_control) {
        return Err(RequestError::invalid(
            "remittance_information",
            None,
            format!("at most {REMITTANCE_INFORMATION_LEN_MAX} characters, no control characters"),
        ));
    }
    Ok(quote_id)
}

/// What screening sees of a party.
pub(super) fn screened(party: &Party) -> ScreenedParty {
    ScreenedParty { name: party.full_name(), country: party.country.clone(), account: party.account.value.clone() }
}
