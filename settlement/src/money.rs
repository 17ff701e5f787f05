//! Money: a `rust_decimal::Decimal` with an ISO 4217 currency, validated against
//! the currency's minor units. Never a float.

use std::fmt;
use std::str::FromStr;

use iso_currency::Currency;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::constants::AMOUNT_MAJOR_UNITS_MAX;

/// Why an amount or currency was refused. Every variant names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The currency code is not in ISO 4217.
    #[error("{field}: unknown currency {code:?} (expected an ISO 4217 code such as USD)")]
    UnknownCurrency {
        /// The offending field.
        field: String,
        /// The code given.
        code: String,
    },
    /// The currency has no minor unit (gold, test codes, ...) and cannot settle.
    #[error("{field}: currency {} has no minor unit and cannot be settled", currency.code())]
    CurrencyNotSettleable {
        /// The offending field.
        field: String,
        /// The currency.
        currency: Currency,
    },
    /// The amount text is not a decimal number.
    #[error("{field}: {text:?} is not a decimal amount (expected e.g. \"100.25 USD\")")]
    Malformed {
        /// The offending field.
        field: String,
        /// The text given.
        text: String,
    },
    /// Zero or negative.
    #[error("{field}: amount must be positive, got {amount}")]
    NotPositive {
        /// The offending field.
        field: String,
        /// The amount given.
        amount: Decimal,
    },
    /// More decimals than the currency's minor unit allows.
    #[error("{field}: {amount} has more decimal places than {} allows ({exponent})", currency.code())]
    TooPrecise {
        /// The offending field.
        field: String,
        /// The amount given.
        amount: Decimal,
        /// The currency.
        currency: Currency,
        /// The currency's number of decimal places.
        exponent: u16,
    },
    /// Above [`AMOUNT_MAJOR_UNITS_MAX`].
    #[error("{field}: amount {amount} exceeds the maximum of {max}")]
    TooLarge {
        /// The offending field.
        field: String,
        /// The amount given.
        amount: Decimal,
        /// The bound.
        max: Decimal,
    },
    /// Two amounts in different currencies were combined.
    #[error("{field}: currency mismatch ({} vs {})", left.code(), right.code())]
    CurrencyMismatch {
        /// The offending field.
        field: String,
        /// Left operand currency.
        left: Currency,
        /// Right operand currency.
        right: Currency,
    },
}

impl MoneyError {
    /// The field the error is about.
    pub fn field(&self) -> &str {
        match self {
            MoneyError::UnknownCurrency { field, .. }
            | MoneyError::CurrencyNotSettleable { field, .. }
            | MoneyError::Malformed { field, .. }
            | MoneyError::NotPositive { field, .. }
            | MoneyError::TooPrecise { field, .. }
            | MoneyError::TooLarge { field, .. }
            | MoneyError::CurrencyMismatch { field, .. } => field,
        }
    }

    /// The ISO 20022 status reason code that fits (ExternalStatusReason1Code).
    pub fn reason_code(&self) -> &'static str {
        match self {
            MoneyError::UnknownCurrency { .. }
            | MoneyError::CurrencyNotSettleable { .. }
            | MoneyError::CurrencyMismatch { .. } => "AM03",
            MoneyError::NotPositive { amount, .. } if amount.is_zero() => "AM01",
            MoneyError::TooLarge { .. } => "AM02",
            MoneyError::Malformed { .. } | MoneyError::NotPositive { .. } | MoneyError::TooPrecise { .. } => "AM12",
        }
    }
}

/// Parses an ISO 4217 code into a currency that can settle (has a minor unit).
pub fn parse_currency(code: &str, field: &str) -> Result<Currency, MoneyError> {
    let currency = Currency::from_code(code)
        .ok_or_else(|| MoneyError::UnknownCurrency { field: field.to_owned(), code: code.to_owned() })?;
    minor_unit_exponent(currency, field)?;
    Ok(currency)
}

/// The number of decimal places of a settleable currency.
pub fn minor_unit_exponent(currency: Currency, field: &str) -> Result<u16, MoneyError> {
    currency.exponent().ok_or_else(|| MoneyError::CurrencyNotSettleable { field: field.to_owned(), currency })
}

/// A positive amount of a currency, exact to the currency's minor unit and
/// at most [`AMOUNT_MAJOR_UNITS_MAX`] major units. The decimal is stored with
/// exactly the currency's number of decimal places, so equal amounts have
/// equal representations.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// Validates an amount in `currency`, naming `field` in any error. Amounts
    /// with more decimal places than the currency allows are refused, never rounded.
    pub fn new(amount: Decimal, currency: Currency, field: &str) -> Result<Self, MoneyError> {
        let exponent = minor_unit_exponent(currency, field)?;
        if amount <= Decimal::ZERO {
            return Err(MoneyError::NotPositive { field: field.to_owned(), amount });
        }
        let normalized = amount.normalize();
        if normalized.scale() > u32::from(exponent) {
            return Err(MoneyError::TooPrecise { field: field.to_owned(), amount, currency, exponent });
        }
        let max = Decimal::from(AMOUNT_MAJOR_UNITS_MAX);
        if normalized > max {
            return Err(MoneyError::TooLarge { field: field.to_owned(), amount, max });
        }
        let mut canonical = normalized;
        canonical.rescale(u32::from(exponent));
        Ok(Self { amount: canonical, currency })
    }

    /// Parses `"<amount> <CCY>"`, e.g. `"100.25 USD"`.
    pub fn parse(text: &str, field: &str) -> Result<Self, MoneyError> {
        let malformed = || MoneyError::Malformed { field: field.to_owned(), text: text.to_owned() };
        let mut parts = text.split_whitespace();
        let (Some(amount), Some(code), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed());
        };
        let currency = parse_currency(code, field)?;
        let amount = parse_decimal(amount).ok_or_else(malformed)?;
        Self::new(amount, currency, field)
    }

    /// Parses an amount string and a currency code given separately.
    pub fn parse_parts(amount: &str, currency: &str, field: &str) -> Result<Self, MoneyError> {
        let currency = parse_currency(currency, &format!("{field}.currency"))?;
        let decimal = parse_decimal(amount)
            .ok_or_else(|| MoneyError::Malformed { field: field.to_owned(), text: amount.to_owned() })?;
        Self::new(decimal, currency, field)
    }

    /// Builds an amount from an integer count of minor units (cents for USD).
    pub fn from_minor_units(minor_units: u64, currency: Currency, field: &str) -> Result<Self, MoneyError> {
        let exponent = minor_unit_exponent(currency, field)?;
        let amount = Decimal::from_i128_with_scale(i128::from(minor_units), u32::from(exponent));
        Self::new(amount, currency, field)
    }

    /// The amount, with exactly the currency's number of decimal places.
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The amount as an integer count of minor units.
    pub fn minor_units(&self) -> u64 {
        // The mantissa at the currency's scale is exact, positive and below
        // AMOUNT_MAJOR_UNITS_MAX * 10^4, so it fits a u64 (see constants.rs).
        u64::try_from(self.amount.mantissa()).expect("validated positive and bounded on construction")
    }

    /// Adds two amounts of the same currency.
    pub fn checked_add(&self, other: &Money, field: &str) -> Result<Money, MoneyError> {
        self.same_currency(other, field)?;
        let sum = self.amount.checked_add(other.amount).ok_or_else(|| MoneyError::TooLarge {
            field: field.to_owned(),
            amount: Decimal::MAX,
            max: Decimal::from(AMOUNT_MAJOR_UNITS_MAX),
        })?;
        Money::new(sum, self.currency, field)
    }

    /// Subtracts `other`; the result must stay positive.
    pub fn checked_sub(&self, other: &Money, field: &str) -> Result<Money, MoneyError> {
        self.same_currency(other, field)?;
        Money::new(self.amount - other.amount, self.currency, field)
    }

    fn same_currency(&self, other: &Money, field: &str) -> Result<(), MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch {
                field: field.to_owned(),
                left: self.currency,
                right: other.currency,
            });
        }
        Ok(())
    }
}

/// Parses a plain decimal (digits, optional sign and point; no exponent, no
/// thousands separators).
fn parse_decimal(text: &str) -> Option<Decimal> {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let valid = !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && body.bytes().filter(|&b| b == b'.').count() <= 1
        && body.bytes().any(|b| b.is_ascii_digit());
    if !valid {
        return None;
    }
    Decimal::from_str(text).ok()
}

/// Converts a signed decimal amount of `currency` to minor units; `None` when
/// it is not a whole number of minor units.
pub fn decimal_to_minor_units(amount: Decimal, currency: Currency) -> Option<i128> {
    let exponent = u32::from(currency.exponent()?);
    let normalized = amount.normalize();
    if normalized.scale() > exponent {
        return None;
    }
    let mut scaled = normalized;
    scaled.rescale(exponent);
    Some(scaled.mantissa())
}

/// Converts minor units back to a decimal with the currency's scale; `None`
/// when the value is beyond `Decimal`'s 96-bit range.
pub fn minor_units_to_decimal(minor_units: i128, currency: Currency) -> Option<Decimal> {
    Decimal::try_from_i128_with_scale(minor_units, u32::from(currency.exponent()?)).ok()
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency.code())
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({} {})", self.amount, self.currency.code())
    }
}

#[derive(Serialize, Deserialize)]
struct MoneyJson {
    amount: String,
    currency: String,
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        MoneyJson { amount: self.amount.to_string(), currency: self.currency.code().to_owned() }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = MoneyJson::deserialize(deserializer)?;
        Money::parse_parts(&json.amount, &json.currency, "amount").map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<&str, &str>) {
        let got = Money::parse(text, "amount");
        match (got, expected) {
            (Ok(money), Ok(want)) => assert_eq!(money.to_string(), want, "{text}"),
            (Err(err), Err(code)) => {
                assert_eq!(err.reason_code(), code, "{text}: {err}");
                assert_eq!(err.field(), "amount");
                assert!(err.to_string().starts_with("amount: "), "{err}");
            }
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parsing_and_validation() {
        check("100 USD", Ok("100.00 USD"));
        check("100.1 USD", Ok("100.10 USD"));
        check("1.000 USD", Ok("1.00 USD"));
        check("1500 JPY", Ok("1500 JPY"));
        check("1.234 KWD", Ok("1.234 KWD"));
        check("0.01 USD", Ok("0.01 USD"));
        check("1000000000000 USD", Ok("1000000000000.00 USD"));
        check("1 XYZ", Err("AM03"));
        check("1 XAU", Err("AM03"));
        check("-5 USD", Err("AM12"));
        check("0 USD", Err("AM01"));
        check("1.001 USD", Err("AM12"));
        check("1.5 JPY", Err("AM12"));
        check("1.2345 KWD", Err("AM12"));
        check("1000000000000.01 USD", Err("AM02"));
        check("1e5 USD", Err("AM12"));
        check("1,000 USD", Err("AM12"));
        check("USD", Err("AM12"));
        check("", Err("AM12"));
    }

    #[test]
    fn minor_units_round_trip() {
        let money = Money::parse("12.34 USD", "amount").expect("valid");
        assert_eq!(money.minor_units(), 1234);
        assert_eq!(Money::from_minor_units(1234, Currency::USD, "amount").expect("valid"), money);
        assert_eq!(Money::from_minor_units(1234, Currency::KWD, "amount").expect("valid").to_string(), "1.234 KWD");
        assert_eq!(decimal_to_minor_units(Decimal::new(-1050, 2), Currency::USD), Some(-1050));
        assert_eq!(decimal_to_minor_units(Decimal::new(-1055, 3), Currency::USD), None);
    }

    #[test]
    fn checked_arithmetic() {
        let a = Money::parse("10.00 USD", "a").expect("valid");
        let b = Money::parse("2.50 USD", "b").expect("valid");
        assert_eq!(a.checked_add(&b, "sum").expect("ok").to_string(), "12.50 USD");
        assert_eq!(a.checked_sub(&b, "diff").expect("ok").to_string(), "7.50 USD");
        assert!(matches!(b.checked_sub(&a, "diff"), Err(MoneyError::NotPositive { .. })));
        let yen = Money::parse("10 JPY", "c").expect("valid");
        assert!(matches!(a.checked_add(&yen, "sum"), Err(MoneyError::CurrencyMismatch { .. })));
    }

    #[test]
    fn json_round_trip_validates() {
        let money = Money::parse("5.5 USD", "amount").expect("valid");
        let json = serde_json::to_string(&money).expect("serialize");
        assert_eq!(json, r#"{"amount":"5.50","currency":"USD"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).expect("parse"), money);
        assert!(serde_json::from_str::<Money>(r#"{"amount":"1.5","currency":"JPY"}"#).is_err());
    }
}
