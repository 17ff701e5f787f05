//! Corridors: the country/currency pairs a gateway serves, each with limits on
//! the send amount and a fee schedule.
//!
//! Configured in TOML (all numbers as strings, so none passes through a float):
//!
//! ```toml
//! [[corridor]]
//! source_country = "US"
//! source_currency = "USD"
//! destination_country = "PH"
//! destination_currency = "PHP"
//! settlement_currency = "USD"   # what moves on the ledger between gateways
//! send_amount_min = "10.00"     # inclusive, in the source currency
//! send_amount_max = "5000.00"   # inclusive, in the source currency
//! fixed_fee = "2.99"            # in the source currency; "0" for none
//! fee_percent = "1.0"           # percent of the principal
//! fx_margin_percent = "0.5"     # percent of the principal
//! ```

use std::collections::BTreeMap;
use std::fmt;

use iso_currency::Currency;
use remit_settlement::money::{decimal_to_minor_units, parse_currency};
use remit_settlement::{CountryCode, Money, ParticipantId};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::{parse_plain_decimal, ConfigError, QuoteError, CORRIDORS_MAX, FEE_PERCENT_MAX};

/// Decimal places allowed in a percent fee or margin (1.2345 %).
const PERCENT_DECIMALS_MAX: u32 = 4;

/// Identifies a corridor: source country and currency to destination country
/// and currency.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize)]
pub struct CorridorKey {
    /// Where the sender is.
    pub source_country: CountryCode,
    /// What the sender pays in.
    pub source_currency: Currency,
    /// Where the recipient is.
    pub destination_country: CountryCode,
    /// What the recipient is paid in.
    pub destination_currency: Currency,
}

impl fmt::Display for CorridorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} -> {}/{}",
            self.source_country,
            self.source_currency.code(),
            self.destination_country,
            self.destination_currency.code()
        )
    }
}

/// Fees charged on a corridor, all in the source currency.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FeeSchedule {
    /// Fixed fee per transfer, exact to the source currency's minor unit
    /// (zero allowed).
    pub fixed_fee: Decimal,
    /// Percent fee on the principal, in percent (`1.5` is 1.5 %).
    pub fee_percent: Decimal,
    /// FX margin on the principal, in percent; shown as an amount on quotes.
    pub fx_margin_percent: Decimal,
}

/// A validated corridor.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Corridor {
    key: CorridorKey,
    settlement_currency: Currency,
    send_amount_min: Money,
    send_amount_max: Money,
    fees: FeeSchedule,
    destination_participant: Option<ParticipantId>,
}

/// One `[[corridor]]` table as written in the configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorridorConfig {
    /// ISO 3166-1 alpha-2 code of the sender's country.
    pub source_country: String,
    /// ISO 4217 code of the send currency.
    pub source_currency: String,
    /// ISO 3166-1 alpha-2 code of the recipient's country.
    pub destination_country: String,
    /// ISO 4217 code of the receive currency.
    pub destination_currency: String,
    /// ISO 4217 code of the currency the gateways settle in on the ledger.
    pub settlement_currency: String,
    /// Smallest send amount accepted (inclusive), in the send currency.
    pub send_amount_min: String,
    /// Largest send amount accepted (inclusive), in the send currency.
    pub send_amount_max: String,
    /// Fixed fee per transfer, in the send currency.
    pub fixed_fee: String,
    /// Percent fee on the principal, in percent.
    pub fee_percent: String,
    /// FX margin on the principal, in percent.
    pub fx_margin_percent: String,
    /// Participant (gateway) that pays out on this corridor. Required to
    /// send remittances; a corridor without one can only be quoted.
    #[serde(default)]
    pub destination_participant: Option<String>,
}

/// The corridors section of a configuration file: `[[corridor]]` tables.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorridorsConfig {
    /// The corridors, in file order.
    #[serde(default)]
    pub corridor: Vec<CorridorConfig>,
}

impl Corridor {
    /// Validates one corridor's configuration; errors name `{prefix}.{field}`.
    pub fn from_config(config: &CorridorConfig, prefix: &str) -> Result<Self, ConfigError> {
        let field = |name: &str| format!("{prefix}.{name}");
        let country = |text: &str, name: &str| {
            CountryCode::new(text).map_err(|err| ConfigError::new(field(name), err.to_string()))
        };
        let key = CorridorKey {
            source_country: country(&config.source_country, "source_country")?,
            source_currency: parse_currency(&config.source_currency, &field("source_currency"))?,
            destination_country: country(&config.destination_country, "destination_country")?,
            destination_currency: parse_currency(&config.destination_currency, &field("destination_currency"))?,
        };
        let settlement_currency = parse_currency(&config.settlement_currency, &field("settlement_currency"))?;
        let currency = key.source_currency;
        let send_amount_min = Money::parse_parts(&config.send_amount_min, currency.code(), &field("send_amount_min"))?;
        let send_amount_max = Money::parse_parts(&config.send_amount_max, currency.code(), &field("send_amount_max"))?;
        if send_amount_min.amount() > send_amount_max.amount() {
            return Err(ConfigError::new(field("send_amount_min"), "must not exceed send_amount_max"));
        }
        let fixed_fee = parse_plain_decimal(&config.fixed_fee, &field("fixed_fee"))?;
        let fixed_fee_minor = decimal_to_minor_units(fixed_fee, currency).ok_or_else(|| {
            ConfigError::new(field("fixed_fee"), format!("more decimal places than {} allows", currency.code()))
        })?;
        // The smallest send amount must leave a principal of at least one
        // minor unit: variable fees on one minor unit round up to at most one.
        if i128::from(send_amount_min.minor_units()) < fixed_fee_minor + 2 {
            return Err(ConfigError::new(
                field("send_amount_min"),
                "must exceed fixed_fee by at least two minor units (one for the principal, one for variable fees)",
            ));
        }
        let fees = FeeSchedule {
            fixed_fee: currency_scaled(fixed_fee, currency),
            fee_percent: parse_percent(&config.fee_percent, &field("fee_percent"))?,
            fx_margin_percent: parse_percent(&config.fx_margin_percent, &field("fx_margin_percent"))?,
        };
        let destination_participant = config
            .destination_participant
            .as_deref()
            .map(ParticipantId::new)
            .transpose()
            .map_err(|err| ConfigError::new(field("destination_participant"), err.to_string()))?;
        Ok(Self { key, settlement_currency, send_amount_min, send_amount_max, fees, destination_participant })
    }

    /// The participant that pays out on this corridor, if configured.
    pub fn destination_participant(&self) -> Option<&ParticipantId> {
        self.destination_participant.as_ref()
    }

    /// The corridor's key.
    pub fn key(&self) -> CorridorKey {
        self.key
    }

    /// The currency the gateways settle this corridor's transfers in.
    pub fn settlement_currency(&self) -> Currency {
        self.settlement_currency
    }

    /// Smallest send amount accepted (inclusive).
    pub fn send_amount_min(&self) -> Money {
        self.send_amount_min
    }

    /// Largest send amount accepted (inclusive).
    pub fn send_amount_max(&self) -> Money {
        self.send_amount_max
    }

    /// The fee schedule.
    pub fn fees(&self) -> FeeSchedule {
        self.fees
    }
}

/// Gives an amount exactly the currency's number of decimal places (the
/// caller has checked it has no more).
fn currency_scaled(amount: Decimal, currency: Currency) -> Decimal {
    let mut scaled = amount.normalize();
    scaled.rescale(u32::from(currency.exponent().unwrap_or(0)));
    scaled
}

fn parse_percent(text: &str, field: &str) -> Result<Decimal, ConfigError> {
    let percent = parse_plain_decimal(text, field)?.normalize();
    if percent > Decimal::from(FEE_PERCENT_MAX) {
        return Err(ConfigError::new(field, format!("{percent} % is above the maximum of {FEE_PERCENT_MAX} %")));
    }
    if percent.scale() > PERCENT_DECIMALS_MAX {
        return Err(ConfigError::new(field, format!("at most {PERCENT_DECIMALS_MAX} decimal places")));
    }
    Ok(percent)
}

/// The corridors a gateway serves, looked up by key.
#[derive(Clone, Debug, Default)]
pub struct Corridors {
    by_key: BTreeMap<CorridorKey, Corridor>,
}

impl Corridors {
    /// Validates a configuration section; errors name `corridor[i].field`.
    pub fn from_config(config: &CorridorsConfig) -> Result<Self, ConfigError> {
        if config.corridor.len() > CORRIDORS_MAX {
            return Err(ConfigError::new("corridor", format!("at most {CORRIDORS_MAX} corridors")));
        }
        let mut by_key = BTreeMap::new();
        for (index, corridor_config) in config.corridor.iter().enumerate() {
            let prefix = format!("corridor[{index}]");
            let corridor = Corridor::from_config(corridor_config, &prefix)?;
            let key = corridor.key();
            if by_key.insert(key, corridor).is_some() {
                return Err(ConfigError::new(prefix, format!("corridor {key} is declared twice")));
            }
        }
        Ok(Self { by_key })
    }

    /// Parses and validates a TOML document of `[[corridor]]` tables.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: CorridorsConfig =
            toml::from_str(text).map_err(|err| ConfigError::new("corridor", err.message().to_owned()))?;
        Self::from_config(&config)
    }

    /// The corridor for `key`; `field` is named in the error.
    pub fn get(&self, key: &CorridorKey, field: &str) -> Result<&Corridor, QuoteError> {
        self.by_key.get(key).ok_or_else(|| QuoteError::UnknownCorridor { field: field.to_owned(), key: *key })
    }

    /// All corridors, ordered by key.
    pub fn iter(&self) -> impl Iterator<Item = &Corridor> {
        self.by_key.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [[corridor]]
        source_country = "US"
        source_currency = "USD"
        destination_country = "PH"
        destination_currency = "PHP"
        settlement_currency = "USD"
        send_amount_min = "10"
        send_amount_max = "5000.00"
        fixed_fee = "2.99"
        fee_percent = "1.0"
        fx_margin_percent = "0.5"
    "#;

    /// Replaces `name = "..."` in the base corridor and checks the outcome:
    /// `Ok(())` or `Err(field)`.
    fn check(name: &str, value: &str, expected: Result<(), &str>) {
        let text: String = BASE
            .lines()
            .map(|line| {
                if line.trim_start().starts_with(&format!("{name} =")) {
                    format!("{name} = {value}")
                } else {
                    line.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        match (Corridors::from_toml(&text), expected) {
            (Ok(_), Ok(())) => {}
            (Err(err), Err(field)) => {
                assert_eq!(err.field, field, "{name} = {value}: {err}");
                assert!(err.to_string().starts_with(field), "{err}");
            }
            (got, want) => panic!("{name} = {value}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn config_validation() {
        check("fixed_fee", r#""2.99""#, Ok(()));
        check("fixed_fee", r#""0""#, Ok(()));
        check("fixed_fee", r#""2.999""#, Err("corridor[0].fixed_fee"));
        check("fixed_fee", r#""-1""#, Err("corridor[0].fixed_fee"));
        check("fixed_fee", r#""9.99""#, Err("corridor[0].send_amount_min"));
        check("fixed_fee", r#""9.98""#, Ok(()));
        check("fixed_fee", "2.99", Err("corridor"));
        check("fee_percent", r#""50""#, Ok(()));
        check("fee_percent", r#""50.0001""#, Err("corridor[0].fee_percent"));
        check("fee_percent", r#""0.12345""#, Err("corridor[0].fee_percent"));
        check("fee_percent", r#""1e2""#, Err("corridor[0].fee_percent"));
        check("fx_margin_percent", r#""0""#, Ok(()));
        check("source_country", r#""XX""#, Err("corridor[0].source_country"));
        check("destination_country", r#""ph""#, Err("corridor[0].destination_country"));
        check("source_currency", r#""XYZ""#, Err("corridor[0].source_currency"));
        check("settlement_currency", r#""XAU""#, Err("corridor[0].settlement_currency"));
        check("send_amount_min", r#""10.001""#, Err("corridor[0].send_amount_min"));
        check("send_amount_min", r#""5000.01""#, Err("corridor[0].send_amount_min"));
        check("send_amount_max", r#""0""#, Err("corridor[0].send_amount_max"));
    }

    #[test]
    fn duplicate_and_lookup() {
        let twice = format!("{BASE}\n{BASE}");
        let err = Corridors::from_toml(&twice).expect_err("duplicate");
        assert_eq!(err.field, "corridor[1]");
        let corridors = Corridors::from_toml(BASE).expect("valid");
        let corridor = corridors.iter().next().expect("one corridor");
        assert_eq!(corridor.fees().fixed_fee.to_string(), "2.99");
        assert_eq!(corridor.send_amount_min().to_string(), "10.00 USD");
        assert_eq!(corridor.key().to_string(), "US/USD -> PH/PHP");
        let mut other = corridor.key();
        other.destination_currency = Currency::USD;
        let err = corridors.get(&other, "corridor").expect_err("unknown");
        assert_eq!(err.reason_code(), Some("AG03"));
        assert_eq!(err.field(), "corridor");
    }
}
