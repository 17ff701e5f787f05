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

use remit_settlement::Uetr;

pub use crate::remittance::ports::{PayoutAdapter, PayoutInstruction, PayoutResult, PayoutStatus};

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

/// A boxed future an adapter answers with.
pub type AdapterFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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

    use remit_settlement::{Money, ParticipantId};

    use super::*;
    use crate::remittance::party::{Account, AccountScheme, NaturalPersonName, Party, Person};

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
