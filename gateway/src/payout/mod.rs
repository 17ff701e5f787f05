//! Paying the beneficiary: the destination gateway hands a [`PayoutInstruction`]
//! to a [`PayoutAdapter`], which credits the beneficiary's account at the
//! paying bank and answers with a [`PayoutResult`]; after a restart the
//! gateway asks the adapter what became of a payout it had started
//! ([`PayoutAdapter::status`], answered with a [`PayoutStatus`]) instead of
//! paying it again.
//!
//! Two adapters exist: [`SimulatedBook`], an account book for devnets and
//! tests kept in `<data_dir>/simulated_bank.jsonl` (see [`simulated`]), and
//! [`HttpPayoutAdapter`], which speaks the bank protocol described in
//! [`http`] (`POST <url>` to pay, `GET <url>/<uetr>` for the outcome). The
//! node picks one from the `[payout]` section of `node.toml` with
//! [`build_adapter`].
//!
//! **Invariant:** paying is idempotent per UETR. The UETR is the bank's
//! idempotency key on every call; the simulated book keeps every outcome on
//! disk before it answers and refuses (and records) a second credit for a
//! UETR it already holds; the HTTP adapter sends the UETR as
//! `Idempotency-Key`, and the bank must answer a repeated key with the first
//! outcome without paying again.
//!
//! **Invariant:** the bearer token never reaches a log or a `Debug` rendering,
//! and no personal data is written to a span (the beneficiary travels only in
//! the request body).

use std::future::Future;
use std::pin::Pin;

use tracing::Instrument as _;

use remit_settlement::{Money, ParticipantId, Uetr};

use crate::remittance::party::Party;

pub mod config;
pub mod http;
pub mod simulated;

pub use config::{build_adapter, PayoutAdapterKind, PayoutConfigError, PayoutSection};
pub use http::{HttpPayoutAdapter, HttpPayoutConfig};
pub use simulated::{AccountState, BookEntry, SimulatedBook, SimulatedPolicy, SIMULATED_BANK_FILE};

/// Default timeout of one HTTP payout request.
pub const PAYOUT_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Largest accepted `payout.timeout_ms`.
pub const PAYOUT_TIMEOUT_MS_MAX: u64 = 120_000;
/// Largest bank response body read; anything longer is treated as malformed.
pub const PAYOUT_RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// Longest bank payment reference accepted in a `paid` answer.
pub const PAYOUT_REFERENCE_LEN_MAX: usize = 64;
/// Longest reason text kept from a bank answer (longer text is cut).
pub const PAYOUT_REASON_LEN_MAX: usize = 140;
/// Reason code given to a 4xx refusal that carries no code of its own
/// (ISO 20022 `NARR`: the reason is in the narrative).
pub const REASON_CODE_NARRATIVE: &str = "NARR";

const _: () = assert!(PAYOUT_TIMEOUT_MS_DEFAULT <= PAYOUT_TIMEOUT_MS_MAX);

/// What the destination gateway asks its bank to pay.
#[derive(Clone, Debug)]
pub struct PayoutInstruction {
    /// The remittance's UETR; also the idempotency key of the payout.
    pub uetr: Uetr,
    /// The origin gateway.
    pub origin: ParticipantId,
    /// Who is credited, and to which account.
    pub beneficiary: Party,
    /// The amount credited, in the payout currency.
    pub amount: Money,
    /// ISO 20022 purpose code, e.g. `FAMI` (family maintenance).
    pub purpose: String,
    /// Unstructured remittance information for the beneficiary.
    pub remittance_information: String,
}

/// The outcome of a payout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayoutResult {
    /// The beneficiary was credited.
    Paid {
        /// The bank's reference of the credit.
        reference: String,
    },
    /// The bank refused for good; `reason_code` is an ISO 20022
    /// ExternalReturnReason1Code (4 chars, e.g. "AC04" closed account, "AC01"
    /// incorrect account number, "AC06" blocked account, "AM09"), `reason`
    /// human text.
    Refused {
        /// ISO 20022 return reason code, 4 uppercase letters or digits.
        reason_code: String,
        /// Human-readable reason.
        reason: String,
    },
    /// Could not tell (timeout, 5xx, connection refused): try again later with
    /// the same uetr.
    Failed {
        /// What went wrong.
        reason: String,
    },
}

impl PayoutResult {
    /// `paid`, `refused` or `failed`, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PayoutResult::Paid { .. } => "paid",
            PayoutResult::Refused { .. } => "refused",
            PayoutResult::Failed { .. } => "failed",
        }
    }

    pub(crate) fn refused(reason_code: &str, reason: &str) -> Self {
        PayoutResult::Refused { reason_code: reason_code.to_owned(), reason: reason.to_owned() }
    }

    pub(crate) fn failed(reason: impl Into<String>) -> Self {
        PayoutResult::Failed { reason: reason.into() }
    }
}

/// What the bank knows of a payout, asked by UETR ([`PayoutAdapter::status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayoutStatus {
    /// The bank credited the beneficiary.
    Paid {
        /// The bank's reference of the credit.
        reference: String,
    },
    /// The bank refused the payout for good.
    Refused {
        /// ISO 20022 return reason code, 4 uppercase letters or digits.
        reason_code: String,
        /// Human-readable reason.
        reason: String,
    },
    /// The bank never received a payout with this UETR: it may be paid now
    /// (still under the same idempotency key).
    Unknown,
    /// Could not tell (timeout, 5xx, an answer that is not a status): ask
    /// again later.
    Failed {
        /// What went wrong.
        reason: String,
    },
}

impl PayoutStatus {
    /// `paid`, `refused`, `unknown` or `failed`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PayoutStatus::Paid { .. } => "paid",
            PayoutStatus::Refused { .. } => "refused",
            PayoutStatus::Unknown => "unknown",
            PayoutStatus::Failed { .. } => "failed",
        }
    }
}

impl From<PayoutResult> for PayoutStatus {
    fn from(result: PayoutResult) -> Self {
        match result {
            PayoutResult::Paid { reference } => PayoutStatus::Paid { reference },
            PayoutResult::Refused { reason_code, reason } => PayoutStatus::Refused { reason_code, reason },
            PayoutResult::Failed { reason } => PayoutStatus::Failed { reason },
        }
    }
}

/// A boxed future an adapter answers with.
pub type AdapterFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Pays beneficiaries at the destination.
pub trait PayoutAdapter: Send + Sync + 'static {
    /// Pays (idempotent per `uetr`: paying the same uetr again must not credit
    /// twice and returns the first outcome).
    fn pay<'a>(&'a self, instruction: &'a PayoutInstruction) -> AdapterFuture<'a, PayoutResult>;
    /// What the bank knows of the payout of `uetr`: its outcome, or that it
    /// never received it. Asked after a restart for every payout that was in
    /// flight, before paying it.
    fn status(&self, uetr: Uetr) -> AdapterFuture<'_, PayoutStatus>;
    /// Short name for logs and metrics ("simulated", "http").
    fn name(&self) -> &'static str;
}

/// True for an ISO 20022 reason code: exactly 4 ASCII uppercase letters or digits.
pub fn is_reason_code(code: &str) -> bool {
    code.len() == 4 && code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn pay_span(adapter: &'static str, instruction: &PayoutInstruction) -> tracing::Span {
    tracing::info_span!(
        "gateway.payout.pay",
        adapter,
        uetr = %instruction.uetr,
        origin = %instruction.origin,
        currency = instruction.amount.currency().code()
    )
}

fn log_outcome(result: &PayoutResult) {
    match result {
        PayoutResult::Paid { reference } => tracing::debug!(outcome = "paid", reference = %reference, "payout done"),
        PayoutResult::Refused { reason_code, reason } => {
            tracing::info!(outcome = "refused", reason_code = %reason_code, reason = %reason, "payout refused")
        }
        PayoutResult::Failed { reason } => tracing::warn!(outcome = "failed", reason = %reason, "payout failed"),
    }
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// `pay` run in a `gateway.payout.pay` span, its outcome logged.
pub(crate) fn traced_pay<'a>(
    adapter: &'static str,
    instruction: &PayoutInstruction,
    pay: impl Future<Output = PayoutResult> + Send + 'a,
) -> AdapterFuture<'a, PayoutResult> {
    let span = pay_span(adapter, instruction);
    Box::pin(
        async move {
            let result = pay.await;
            log_outcome(&result);
            result
        }
        .instrument(span),
    )
}

/// `status` run in a `gateway.payout.status` span, its answer logged.
pub(crate) fn traced_status<'a>(
    adapter: &'static str,
    uetr: Uetr,
    status: impl Future<Output = PayoutStatus> + Send + 'a,
) -> AdapterFuture<'a, PayoutStatus> {
    let span = tracing::info_span!("gateway.payout.status", adapter, uetr = %uetr);
    Box::pin(
        async move {
            let status = status.await;
            tracing::debug!(status = status.kind(), "payout status");
            status
        }
        .instrument(span),
    )
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Instructions and parties shared by the adapters' tests.

    use iso_currency::Currency;
    use rust_decimal::Decimal;

    use super::*;
    use crate::remittance::party::{Account, AccountScheme, NaturalPersonName, Person};

    pub(crate) fn party(account: &str) -> Party {
        Party {
            person: Person::NaturalPerson(NaturalPersonName {
                primary_name: "Santos".to_owned(),
                secondary_name: "Maria".to_owned(),
            }),
            account: Account { scheme: AccountScheme::AccountNumber, value: account.to_owned() },
            country: "PH".to_owned(),
            address: None,
            date_of_birth: None,
            national_id: None,
        }
    }

    pub(crate) fn instruction(account: &str, amount: &str) -> PayoutInstruction {
        PayoutInstruction {
            uetr: Uetr::new_random(),
            origin: ParticipantId::new("gw-us").expect("valid id"),
            beneficiary: party(account),
            amount: Money::parse(amount, "amount").expect("valid amount"),
            purpose: "FAMI".to_owned(),
            remittance_information: "school fees".to_owned(),
        }
    }

    pub(crate) fn dec(text: &str) -> Decimal {
        text.parse().expect("decimal literal")
    }

    pub(crate) fn php() -> Currency {
        Currency::from_code("PHP").expect("PHP is ISO 4217")
    }

    pub(crate) fn policy() -> SimulatedPolicy {
        SimulatedPolicy {
            closed_accounts: vec!["CLOSED-1".to_owned()],
            blocked_accounts: vec!["BLOCKED-1".to_owned()],
            refuse_unknown: false,
        }
    }

    pub(crate) fn refused(code: &str, reason: &str) -> PayoutResult {
        PayoutResult::Refused { reason_code: code.to_owned(), reason: reason.to_owned() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_four_uppercase_alphanumerics() {
        for good in ["AC04", "AM09", "NARR", "MS03"] {
            assert!(is_reason_code(good), "{good}");
        }
        for bad in ["", "ac04", "AC4", "AC041", "AC-4", "ÄC04"] {
            assert!(!is_reason_code(bad), "{bad}");
        }
    }
}
