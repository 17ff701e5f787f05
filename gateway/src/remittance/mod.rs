//! Remittance pricing: corridors, FX mid rates and single-use quotes.
//!
//! Pure library code: nothing here reads the clock (time is passed in as
//! Unix milliseconds) and the only IO is [`fx::FileRateSource`] re-reading its
//! rates file.
//!
//! - [`corridor`]: which country/currency pairs a gateway serves, with limits
//!   on the send amount and a fee schedule (fixed fee, percent fee, FX margin).
//! - [`fx`]: mid rates behind the [`fx::RateSource`] trait, with inverse and
//!   cross rates through a pivot currency.
//! - [`quote`]: the arithmetic of a quote and the [`quote::QuoteBook`] that
//!   hands out quote ids and lets each quote be taken exactly once.
//!
//! # Rounding
//!
//! All amount arithmetic is done on integer minor units (`i128`), so every
//! rounding step is explicit and exact. With `p` the percent fee and `m` the
//! FX margin as fractions, and the *principal* the part of the send amount
//! that is converted at the mid rate:
//!
//! 1. Variable fees: `ceil(principal × (p + m))`, rounded **up** to the send
//!    currency's minor unit (in the gateway's favour). The FX margin is
//!    `ceil(principal × m)`; the percent fee is the rest of the variable fees.
//!    Rounding the sum once keeps the total within one minor unit of exact.
//! 2. Send amount: `principal + fixed fee + variable fees`, exact.
//! 3. Receive amount: `floor(principal × mid)`, rounded **down** to the
//!    destination currency's minor unit (in the gateway's favour).
//! 4. Send-fixed quotes take the largest principal whose send amount does not
//!    exceed the amount given; the remainder (at most one minor unit) is added
//!    to the percent fee so that `send = principal + fees` holds exactly.
//! 5. Receive-fixed quotes take the smallest principal whose receive amount
//!    reaches the amount given (`ceil(receive / mid)`, i.e. rounded **up**),
//!    and the receive amount is exactly the amount given.
//! 6. Settlement amount: `ceil(principal × mid(send → settlement))`, rounded
//!    **up** to the settlement currency's minor unit, so the destination
//!    gateway that pays out is never short. It equals the principal when the
//!    settlement currency is the send currency, and the receive amount when
//!    it is the destination currency.
//! 7. Derived rates (inverse and cross through the pivot) are rounded to
//!    [`RATE_DECIMALS_MAX`] decimal places, half to even. The customer rate
//!    shown, `mid / (1 + m)`, is rounded down to the same number of places;
//!    it is for display: the amounts come from the rules above.
//!
//! **Invariant:** `send_amount = principal + fixed + percent + fx_margin`,
//! exactly, in minor units, for every quote.

pub mod archive;
#[cfg(test)]
mod archive_tests;
pub mod checkpoint;
pub mod corridor;
mod destination;
pub mod engine;
pub mod errors;
pub mod fx;
pub mod journal;
pub mod lifecycle;
mod lookup;
pub mod messages;
mod origin;
pub mod party;
pub mod payouts;
pub mod ports;
pub mod quote;
pub mod recent;
pub mod record;
mod reporting;
pub mod reports;
#[cfg(test)]
mod restart_tests;
mod scanner;
pub(crate) mod state;
pub mod sweep;
#[cfg(test)]
mod testkit;
pub mod validate;
#[cfg(test)]
mod workflow_tests;

use iso_currency::Currency;
use remit_settlement::MoneyError;
use rust_decimal::Decimal;

pub use corridor::{Corridor, CorridorConfig, CorridorKey, Corridors, FeeSchedule};
pub use fx::{FileRateSource, RateSource, RateTable, StaticRates};
pub use quote::{Fees, FixedAmount, Quote, QuoteBook, QuoteId, QuoteRequest, QuoteTerms};

/// Longest time a quote may stay valid: ten minutes.
pub const QUOTE_TTL_MS_MAX: u64 = 10 * 60 * 1_000;
/// Quotes held by one [`QuoteBook`] (issued and not yet purged after expiry).
pub const QUOTES_OPEN_MAX: usize = 100_000;
/// Quotes one client may hold open at once, so that no client can fill the
/// book for the others.
pub const QUOTES_OPEN_PER_CLIENT_MAX: usize = 10_000;
const _: () = assert!(QUOTES_OPEN_PER_CLIENT_MAX <= QUOTES_OPEN_MAX);
/// Decimal places of a mid rate; derived rates are rounded to this.
pub const RATE_DECIMALS_MAX: u32 = 10;
/// Largest mid rate accepted, in units of quote currency per unit of base.
pub const RATE_MAX: i64 = 10_000_000;
/// Largest percent fee or FX margin, in percent.
pub const FEE_PERCENT_MAX: i64 = 50;
/// Corridors one gateway may configure.
pub const CORRIDORS_MAX: usize = 1_024;

// The quote arithmetic multiplies minor units (at most 1e12 major units × 1e4)
// by a rate mantissa (at most RATE_MAX × 1e10) and powers of ten of at most
// 1e14: about 1e34, below i128::MAX (1.7e38). Every step is checked anyway.
const _: () = assert!(remit_settlement::constants::AMOUNT_MAJOR_UNITS_MAX <= 1_000_000_000_000);
const _: () = assert!(RATE_MAX <= 10_000_000 && RATE_DECIMALS_MAX <= 10);
// Variable fees of at most 100 % make the send amount grow by at most two
// minor units per minor unit of principal, so a send-fixed remainder is at
// most one minor unit (see quote.rs).
const _: () = assert!(FEE_PERCENT_MAX * 2 <= 100);
const _: () = assert!(QUOTE_TTL_MS_MAX <= 600_000);

/// Why a rate could not be given, or a rates file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RateError {
    /// Neither a direct, an inverse nor a cross rate through the pivot exists.
    #[error("rate: no rate for {}/{} (direct, inverse or through {})", base.code(), quote.code(), pivot.code())]
    NoRate {
        /// Base currency (the one sold).
        base: Currency,
        /// Quote currency (the one bought).
        quote: Currency,
        /// The pivot tried.
        pivot: Currency,
    },
    /// A rate or a currency in a rates table is invalid.
    #[error("{field}: {reason}")]
    Invalid {
        /// The offending field, e.g. `rates."USD/PHP"`.
        field: String,
        /// Why.
        reason: String,
    },
    /// The rates file could not be read.
    #[error("rates file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The rates file is not valid TOML or JSON of the documented shape.
    #[error("rates file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said.
        message: String,
    },
}

/// A corridor configuration that cannot be used, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// The offending field, e.g. `corridor[0].send_amount_min`.
    pub field: String,
    /// Why it was refused.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

impl From<MoneyError> for ConfigError {
    fn from(err: MoneyError) -> Self {
        Self { field: err.field().to_owned(), reason: err.to_string() }
    }
}

/// Why a quote could not be made or taken. Every variant names the field.
#[derive(Debug, thiserror::Error)]
pub enum QuoteError {
    /// An amount or currency is invalid.
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// No corridor serves this pair of countries and currencies.
    #[error("{field}: no corridor {key}")]
    UnknownCorridor {
        /// The offending field.
        field: String,
        /// The corridor asked for.
        key: CorridorKey,
    },
    /// The amount is in a different currency than the corridor side it fixes.
    #[error("{field}: currency {} does not match the corridor's {}", got.code(), expected.code())]
    CurrencyMismatch {
        /// The offending field.
        field: String,
        /// The corridor's currency.
        expected: Currency,
        /// The currency given.
        got: Currency,
    },
    /// The send amount (given or solved for) is below the corridor minimum.
    #[error("{field}: send amount {send_amount} is below the corridor minimum {min}")]
    BelowMinimum {
        /// The offending field.
        field: String,
        /// The send amount.
        send_amount: Decimal,
        /// The corridor minimum.
        min: Decimal,
    },
    /// The send amount (given or solved for) is above the corridor maximum.
    #[error("{field}: send amount {send_amount} is above the corridor maximum {max}")]
    AboveMaximum {
        /// The offending field.
        field: String,
        /// The send amount.
        send_amount: Decimal,
        /// The corridor maximum.
        max: Decimal,
    },
    /// The amount is too small to leave a principal after fees, or to deliver
    /// at least one minor unit.
    #[error("{field}: amount {amount} is too small to deliver any money after fees")]
    TooSmall {
        /// The offending field.
        field: String,
        /// The amount given.
        amount: Decimal,
    },
    /// Intermediate arithmetic left the supported range.
    #[error("{field}: amount out of range")]
    OutOfRange {
        /// The offending field.
        field: String,
    },
    /// No FX rate for the pair.
    #[error(transparent)]
    Rate(#[from] RateError),
    /// The quote lifetime is zero or above [`QUOTE_TTL_MS_MAX`].
    #[error("{field}: quote lifetime {ttl_ms} ms is outside 1..={max_ms} ms")]
    InvalidTtl {
        /// The offending field.
        field: String,
        /// The lifetime given.
        ttl_ms: u64,
        /// The bound.
        max_ms: u64,
    },
    /// No quote with this id was issued (or it expired and was purged).
    #[error("quote_id: unknown quote {id}")]
    UnknownQuote {
        /// The id given.
        id: QuoteId,
    },
    /// The quote expired before it was taken.
    #[error("quote_id: quote {id} expired at {expires_at_unix_ms} (now {now_unix_ms})")]
    QuoteExpired {
        /// The id given.
        id: QuoteId,
        /// When it expired.
        expires_at_unix_ms: u64,
        /// When it was presented.
        now_unix_ms: u64,
    },
    /// The quote was already taken.
    #[error("quote_id: quote {id} was already used")]
    QuoteAlreadyUsed {
        /// The id given.
        id: QuoteId,
    },
    /// The quote book holds [`QUOTES_OPEN_MAX`] live quotes.
    #[error("quote_id: {max} quotes are open; try again later")]
    BookFull {
        /// The bound.
        max: usize,
    },
    /// This client holds [`QUOTES_OPEN_PER_CLIENT_MAX`] live quotes.
    #[error("quote_id: this client holds {max} open quotes; use or let some expire, then retry")]
    ClientQuotesFull {
        /// The bound.
        max: usize,
    },
}

impl QuoteError {
    /// The field the error is about.
    pub fn field(&self) -> &str {
        match self {
            QuoteError::Money(err) => err.field(),
            QuoteError::UnknownCorridor { field, .. }
            | QuoteError::CurrencyMismatch { field, .. }
            | QuoteError::BelowMinimum { field, .. }
            | QuoteError::AboveMaximum { field, .. }
            | QuoteError::TooSmall { field, .. }
            | QuoteError::OutOfRange { field }
            | QuoteError::InvalidTtl { field, .. } => field,
            QuoteError::Rate(_) => "rate",
            QuoteError::UnknownQuote { .. }
            | QuoteError::QuoteExpired { .. }
            | QuoteError::QuoteAlreadyUsed { .. }
            | QuoteError::BookFull { .. }
            | QuoteError::ClientQuotesFull { .. } => "quote_id",
        }
    }

    /// The ISO 20022 status reason code (ExternalStatusReason1Code) where one
    /// fits; `None` for faults and configuration errors that have none.
    pub fn reason_code(&self) -> Option<&'static str> {
        match self {
            QuoteError::Money(err) => Some(err.reason_code()),
            // AG03: transaction type not supported.
            QuoteError::UnknownCorridor { .. } => Some("AG03"),
            // AM03: not allowed currency.
            QuoteError::CurrencyMismatch { .. } => Some("AM03"),
            // AM12: invalid amount; AM02: amount greater than allowed maximum.
            QuoteError::BelowMinimum { .. } | QuoteError::TooSmall { .. } => Some("AM12"),
            QuoteError::AboveMaximum { .. } | QuoteError::OutOfRange { .. } => Some("AM02"),
            // TM01: received after the cut-off time.
            QuoteError::QuoteExpired { .. } => Some("TM01"),
            // DUPL: duplicate payment.
            QuoteError::QuoteAlreadyUsed { .. } => Some("DUPL"),
            QuoteError::Rate(_)
            | QuoteError::InvalidTtl { .. }
            | QuoteError::UnknownQuote { .. }
            | QuoteError::BookFull { .. }
            | QuoteError::ClientQuotesFull { .. } => None,
        }
    }
}

/// Parses a plain decimal (digits and at most one point, no sign, exponent or
/// separators), naming `field` in the error. Configuration and rates files
/// carry numbers as strings so that no value ever passes through a float.
pub(crate) fn parse_plain_decimal(text: &str, field: &str) -> Result<Decimal, ConfigError> {
    let valid = text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && text.bytes().filter(|&b| b == b'.').count() <= 1
        && text.bytes().any(|b| b.is_ascii_digit());
    let malformed =
        || ConfigError::new(field, format!("{text:?} is not a plain non-negative decimal such as \"1.25\""));
    if !valid {
        return Err(malformed());
    }
    text.parse::<Decimal>().map_err(|_| malformed())
}
