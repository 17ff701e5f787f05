//! FX mid rates behind the [`RateSource`] trait.
//!
//! A rate `BASE/QUOTE = r` means one unit of `BASE` buys `r` units of `QUOTE`
//! at the mid-market rate. When a direct pair is missing, the inverse of
//! `QUOTE/BASE` is used, and failing that a cross rate through the pivot
//! currency (`BASE/PIVOT × PIVOT/QUOTE`, each leg direct or inverse). Derived
//! rates are rounded to [`RATE_DECIMALS_MAX`] places, half to even.
//!
//! # Rates file
//!
//! TOML (any extension but `.json`):
//!
//! ```toml
//! pivot = "USD"
//! [rates]
//! "USD/PHP" = "56.25"
//! "USD/JPY" = "150.125"
//! "KWD/USD" = "3.25"
//! ```
//!
//! or JSON (extension `.json`), the same shape:
//!
//! ```json
//! {"pivot": "USD", "rates": {"USD/PHP": "56.25", "KWD/USD": "3.25"}}
//! ```
//!
//! Rates are strings, never numbers, so no rate ever passes through a float;
//! each is positive, at most [`RATE_MAX`] and has at most
//! [`RATE_DECIMALS_MAX`] decimal places. [`FileRateSource`] re-reads the file
//! whenever its modification time or length changes; a file that fails to
//! load leaves the previous rates in place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use iso_currency::Currency;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;

use super::{parse_plain_decimal, RateError, RATE_DECIMALS_MAX, RATE_MAX};

/// Gives mid rates per currency pair.
pub trait RateSource: Send + Sync {
    /// The mid rate: units of `quote` per unit of `base`. One for equal currencies.
    fn mid_rate(&self, base: Currency, quote: Currency) -> Result<Decimal, RateError>;
}

/// A validated set of mid rates with a pivot currency for cross rates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateTable {
    pivot: Currency,
    rates: BTreeMap<(Currency, Currency), Decimal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RatesFile {
    pivot: String,
    #[serde(default)]
    rates: BTreeMap<String, String>,
}

impl RateTable {
    /// An empty table crossing through `pivot`.
    pub fn new(pivot: Currency) -> Self {
        Self { pivot, rates: BTreeMap::new() }
    }

    /// The pivot currency.
    pub fn pivot(&self) -> Currency {
        self.pivot
    }

    /// Adds or replaces the direct rate `base/quote`; `field` is named in errors.
    pub fn insert(&mut self, base: Currency, quote: Currency, mid: Decimal, field: &str) -> Result<(), RateError> {
        let invalid = |reason: String| RateError::Invalid { field: field.to_owned(), reason };
        if base == quote {
            return Err(invalid(format!("{}/{} is not a pair of different currencies", base.code(), quote.code())));
        }
        check_rate(mid).map_err(invalid)?;
        self.rates.insert((base, quote), mid.normalize());
        Ok(())
    }

    /// Parses the documented TOML shape; `path` is named in errors.
    pub fn from_toml(text: &str, path: &str) -> Result<Self, RateError> {
        let file: RatesFile = toml::from_str(text)
            .map_err(|err| RateError::Parse { path: path.to_owned(), message: err.message().to_owned() })?;
        Self::from_file(file)
    }

    /// Parses the documented JSON shape; `path` is named in errors.
    pub fn from_json(text: &str, path: &str) -> Result<Self, RateError> {
        let file: RatesFile = serde_json::from_str(text)
            .map_err(|err| RateError::Parse { path: path.to_owned(), message: err.to_string() })?;
        Self::from_file(file)
    }

    fn from_file(file: RatesFile) -> Result<Self, RateError> {
        let currency = |code: &str, field: &str| {
            remit_settlement::money::parse_currency(code, field)
                .map_err(|err| RateError::Invalid { field: field.to_owned(), reason: err.to_string() })
        };
        let mut table = Self::new(currency(&file.pivot, "pivot")?);
        for (pair, mid) in &file.rates {
            let field = format!("rates.{pair:?}");
            let (base, quote) = pair.split_once('/').ok_or_else(|| RateError::Invalid {
                field: field.clone(),
                reason: "expected a pair such as \"USD/PHP\"".to_owned(),
            })?;
            let mid = parse_plain_decimal(mid, &field)
                .map_err(|err| RateError::Invalid { field: err.field, reason: err.reason })?;
            table.insert(currency(base, &field)?, currency(quote, &field)?, mid, &field)?;
        }
        Ok(table)
    }

    /// The mid rate `base/quote`: direct, inverse, or cross through the pivot.
    pub fn mid_rate(&self, base: Currency, quote: Currency) -> Result<Decimal, RateError> {
        if base == quote {
            return Ok(Decimal::ONE);
        }
        let no_rate = || RateError::NoRate { base, quote, pivot: self.pivot };
        let raw = match self.leg(base, quote) {
            Some(rate) => rate,
            None if base == self.pivot || quote == self.pivot => return Err(no_rate()),
            None => {
                let (Some(first), Some(second)) = (self.leg(base, self.pivot), self.leg(self.pivot, quote)) else {
                    return Err(no_rate());
                };
                first.checked_mul(second).ok_or_else(no_rate)?
            }
        };
        // One rounding of the exact-as-possible product, not one per leg.
        let rate = round_rate(raw);
        check_rate(rate).map_err(|_| no_rate())?;
        Ok(rate)
    }

    /// The direct rate, or the unrounded inverse of the reverse pair; `None`
    /// when neither pair is present.
    fn leg(&self, base: Currency, quote: Currency) -> Option<Decimal> {
        if let Some(rate) = self.rates.get(&(base, quote)) {
            return Some(*rate);
        }
        Decimal::ONE.checked_div(*self.rates.get(&(quote, base))?)
    }
}

fn round_rate(rate: Decimal) -> Decimal {
    rate.round_dp_with_strategy(RATE_DECIMALS_MAX, RoundingStrategy::MidpointNearestEven).normalize()
}

fn check_rate(rate: Decimal) -> Result<(), String> {
    if rate <= Decimal::ZERO {
        return Err(format!("rate {rate} must be positive"));
    }
    if rate > Decimal::from(RATE_MAX) {
        return Err(format!("rate {rate} is above the maximum of {RATE_MAX}"));
    }
    if rate.normalize().scale() > RATE_DECIMALS_MAX {
        return Err(format!("rate {rate} has more than {RATE_DECIMALS_MAX} decimal places"));
    }
    Ok(())
}

/// Fixed rates held in memory, for tests and simulations.
#[derive(Clone, Debug)]
pub struct StaticRates {
    table: RateTable,
}

impl StaticRates {
    /// Wraps a table.
    pub fn new(table: RateTable) -> Self {
        Self { table }
    }

    /// Builds rates from `(base, quote, mid)` string triples, e.g.
    /// `("USD", "PHP", "56.25")`.
    pub fn from_pairs(pivot: Currency, pairs: &[(&str, &str, &str)]) -> Result<Self, RateError> {
        let rates = pairs.iter().map(|(base, quote, mid)| (format!("{base}/{quote}"), (*mid).to_owned())).collect();
        Ok(Self::new(RateTable::from_file(RatesFile { pivot: pivot.code().to_owned(), rates })?))
    }
}

impl RateSource for StaticRates {
    fn mid_rate(&self, base: Currency, quote: Currency) -> Result<Decimal, RateError> {
        self.table.mid_rate(base, quote)
    }
}

/// What identifies one version of the rates file.
type FileStamp = (Option<SystemTime>, u64);

#[derive(Debug)]
struct Loaded {
    stamp: FileStamp,
    table: Arc<RateTable>,
}

/// Rates read from a file, re-read when its modification time or length
/// changes (checked on every lookup).
#[derive(Debug)]
pub struct FileRateSource {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

impl FileRateSource {
    /// Loads the rates file; fails if it cannot be read or is invalid.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, RateError> {
        let path = path.into();
        let stamp = stamp(&path)?;
        let table = Arc::new(load(&path)?);
        Ok(Self { path, loaded: Mutex::new(Loaded { stamp, table }) })
    }

    /// Re-reads the file if it changed since the last load. Returns whether
    /// new rates were loaded; on error the previous rates stay in place.
    pub fn refresh(&self) -> Result<bool, RateError> {
        // The guarded value is replaced whole, so a panic elsewhere cannot
        // leave it half-updated: a poisoned lock is safe to reuse.
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let stamp = stamp(&self.path)?;
        if stamp == loaded.stamp {
            return Ok(false);
        }
        let table = load(&self.path)?;
        *loaded = Loaded { stamp, table: Arc::new(table) };
        tracing::info!(path = %self.path.display(), "remittance.fx.rates_reloaded");
        Ok(true)
    }

    /// The rates currently in use.
    pub fn table(&self) -> Arc<RateTable> {
        Arc::clone(&self.loaded.lock().unwrap_or_else(PoisonError::into_inner).table)
    }
}

impl RateSource for FileRateSource {
    fn mid_rate(&self, base: Currency, quote: Currency) -> Result<Decimal, RateError> {
        if let Err(err) = self.refresh() {
            tracing::warn!(path = %self.path.display(), error = %err, "remittance.fx.reload_failed; keeping previous rates");
        }
        self.table().mid_rate(base, quote)
    }
}

fn stamp(path: &Path) -> Result<FileStamp, RateError> {
    let metadata = std::fs::metadata(path).map_err(|source| io_error(path, source))?;
    Ok((metadata.modified().ok(), metadata.len()))
}

fn load(path: &Path) -> Result<RateTable, RateError> {
    let text = std::fs::read_to_string(path).map_err(|source| io_error(path, source))?;
    let name = path.display().to_string();
    if path.extension().is_some_and(|ext| ext == "json") {
        RateTable::from_json(&text, &name)
    } else {
        RateTable::from_toml(&text, &name)
    }
}

fn io_error(path: &Path, source: std::io::Error) -> RateError {
    RateError::Io { path: path.display().to_string(), source }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rates() -> StaticRates {
        StaticRates::from_pairs(
            Currency::USD,
            &[("USD", "PHP", "56.25"), ("USD", "JPY", "150.125"), ("KWD", "USD", "3.25"), ("EUR", "USD", "1.08")],
        )
        .expect("valid rates")
    }

    /// Checks the mid rate `base/quote`: `Some(text)` or no rate.
    fn check(base: Currency, quote: Currency, expected: Option<&str>) {
        let got = rates().mid_rate(base, quote);
        match (got, expected) {
            (Ok(rate), Some(want)) => assert_eq!(rate.to_string(), want, "{}/{}", base.code(), quote.code()),
            (Err(RateError::NoRate { .. }), None) => {}
            (got, want) => panic!("{}/{}: got {got:?}, want {want:?}", base.code(), quote.code()),
        }
    }

    #[test]
    fn direct_inverse_and_cross() {
        check(Currency::USD, Currency::PHP, Some("56.25"));
        check(Currency::USD, Currency::USD, Some("1"));
        check(Currency::PHP, Currency::USD, Some("0.0177777778"));
        check(Currency::JPY, Currency::USD, Some("0.0066611157"));
        check(Currency::KWD, Currency::PHP, Some("182.8125"));
        check(Currency::PHP, Currency::KWD, Some("0.0054700855"));
        check(Currency::KWD, Currency::JPY, Some("487.90625"));
        check(Currency::EUR, Currency::KWD, Some("0.3323076923"));
        check(Currency::USD, Currency::GBP, None);
        check(Currency::GBP, Currency::PHP, None);
    }

    #[test]
    fn table_validation() {
        let check_err = |pairs: &[(&str, &str, &str)], field: &str| {
            let err = StaticRates::from_pairs(Currency::USD, pairs).expect_err("invalid");
            assert!(err.to_string().starts_with(field), "{err}");
        };
        check_err(&[("USD", "PHP", "0")], "rates.\"USD/PHP\"");
        check_err(&[("USD", "PHP", "-1")], "rates.\"USD/PHP\"");
        check_err(&[("USD", "PHP", "1.00000000001")], "rates.\"USD/PHP\"");
        check_err(&[("USD", "PHP", "10000001")], "rates.\"USD/PHP\"");
        check_err(&[("USD", "USD", "1")], "rates.\"USD/USD\"");
        check_err(&[("USDPHP", "", "1")], "rates.\"USDPHP/\"");
        check_err(&[("USD", "XYZ", "1")], "rates.\"USD/XYZ\"");
        assert!(RateTable::from_toml("pivot = \"USD\"\n[rates]\n\"USD/PHP\" = 56.25\n", "f").is_err());
        assert!(RateTable::from_json(r#"{"pivot":"USD","rates":{"USD/PHP":56.25}}"#, "f").is_err());
        let json = RateTable::from_json(r#"{"pivot":"USD","rates":{"USD/PHP":"56.25"}}"#, "f").expect("valid");
        assert_eq!(json.mid_rate(Currency::USD, Currency::PHP).expect("rate").to_string(), "56.25");
    }

    fn write_rates(path: &Path, usd_php: &str, bump_mtime_s: u64) {
        std::fs::write(path, format!("pivot = \"USD\"\n[rates]\n\"USD/PHP\" = \"{usd_php}\"\n")).expect("write");
        // Filesystems with coarse timestamps could give both versions the same
        // mtime; set it explicitly so the change is always visible.
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + bump_mtime_s);
        std::fs::File::options().write(true).open(path).expect("open").set_modified(mtime).expect("set mtime");
    }

    #[test]
    fn file_reload_picks_up_changed_rate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rates.toml");
        write_rates(&path, "56.25", 0);
        let source = FileRateSource::open(&path).expect("open");
        assert_eq!(source.mid_rate(Currency::USD, Currency::PHP).expect("rate").to_string(), "56.25");
        assert!(!source.refresh().expect("unchanged"));

        write_rates(&path, "57.5", 1);
        assert_eq!(source.mid_rate(Currency::USD, Currency::PHP).expect("rate").to_string(), "57.5");

        // A broken file keeps the previous rates and reports the error.
        std::fs::write(&path, "pivot = \"USD\"\n[rates]\n\"USD/PHP\" = \"oops\"\n").expect("write");
        assert!(source.refresh().is_err());
        assert_eq!(source.mid_rate(Currency::USD, Currency::PHP).expect("rate").to_string(), "57.5");

        assert!(matches!(FileRateSource::open(dir.path().join("missing.toml")), Err(RateError::Io { .. })));
    }
}
