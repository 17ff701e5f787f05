//! Errors of the remittance domain: what kind of refusal, which field, the
//! ISO 20022 reason code where one fits. They name no transport: the API
//! adapters map an [`ErrorKind`] to a gRPC code or an HTTP status.

use super::journal::JournalError;
use super::QuoteError;

/// The kind of a request error (the API adapters map it to gRPC codes and
/// HTTP statuses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input (400 / INVALID_ARGUMENT).
    InvalidArgument,
    /// No such thing (404 / NOT_FOUND).
    NotFound,
    /// Not possible in the current state (409 / FAILED_PRECONDITION).
    FailedPrecondition,
    /// Conflicts with an earlier request (409 / ALREADY_EXISTS).
    AlreadyExists,
    /// No or bad credentials (401 / UNAUTHENTICATED).
    Unauthenticated,
    /// Not this client's (403 / PERMISSION_DENIED).
    PermissionDenied,
    /// Rate limit or capacity (429 / RESOURCE_EXHAUSTED).
    ResourceExhausted,
    /// Temporarily unable; retry (503 / UNAVAILABLE).
    Unavailable,
    /// A fault on our side (500 / INTERNAL).
    Internal,
}

impl ErrorKind {
    /// The gRPC code name, e.g. `INVALID_ARGUMENT`.
    pub fn code_name(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "INVALID_ARGUMENT",
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::FailedPrecondition => "FAILED_PRECONDITION",
            ErrorKind::AlreadyExists => "ALREADY_EXISTS",
            ErrorKind::Unauthenticated => "UNAUTHENTICATED",
            ErrorKind::PermissionDenied => "PERMISSION_DENIED",
            ErrorKind::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorKind::Unavailable => "UNAVAILABLE",
            ErrorKind::Internal => "INTERNAL",
        }
    }
}

/// A refused request: what kind, which field, the ISO 20022 reason code
/// where one fits, and a message. Nothing was recorded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// The kind.
    pub kind: ErrorKind,
    /// The offending field, e.g. `beneficiary.account.value`.
    pub field: Option<String>,
    /// ISO 20022 status reason code, e.g. `AM12`.
    pub reason_code: Option<String>,
    /// Human-readable message, starting with the field when there is one.
    pub message: String,
}

impl RequestError {
    /// An error of `kind` about `field`.
    pub fn new(kind: ErrorKind, field: Option<&str>, reason_code: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            kind,
            field: field.map(str::to_owned),
            reason_code: reason_code.map(str::to_owned),
            message: message.into(),
        }
    }

    /// Bad input in `field`.
    pub fn invalid(field: &str, reason_code: Option<&str>, reason: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::InvalidArgument, Some(field), reason_code, format!("{field}: {reason}"))
    }

    /// An idempotency key repeated with a request that differs from the one
    /// it was first used for (DUPL).
    pub(crate) fn idempotency_key_reused(key: &str) -> Self {
        Self::new(
            ErrorKind::AlreadyExists,
            Some("idempotency_key"),
            Some("DUPL"),
            format!("idempotency_key: {key:?} was already used for a different request"),
        )
    }

    /// A fault on our side.
    pub(crate) fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::Internal, None, None, message.to_string())
    }
}

impl From<QuoteError> for RequestError {
    fn from(error: QuoteError) -> Self {
        let kind = match &error {
            QuoteError::UnknownQuote { .. } => ErrorKind::NotFound,
            QuoteError::QuoteExpired { .. } | QuoteError::QuoteAlreadyUsed { .. } => ErrorKind::FailedPrecondition,
            QuoteError::BookFull { .. } | QuoteError::ClientQuotesFull { .. } => ErrorKind::ResourceExhausted,
            QuoteError::Rate(_) => ErrorKind::FailedPrecondition,
            _ => ErrorKind::InvalidArgument,
        };
        let message = error.to_string();
        Self::new(kind, Some(error.field()), error.reason_code(), message)
    }
}

impl From<JournalError> for RequestError {
    fn from(error: JournalError) -> Self {
        Self::internal(format!("not recorded, retry: {error}"))
    }
}
