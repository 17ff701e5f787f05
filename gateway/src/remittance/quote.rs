//! Quotes: the arithmetic (see the rounding rules in the [module
//! docs](super)) and the [`QuoteBook`] of single-use quotes.
//!
//! [`price`] is a pure function of a corridor, the mid rates and the amount;
//! [`QuoteBook::issue`] gives it an id and an expiry from the time passed in,
//! and [`QuoteBook::take`] consumes it exactly once.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use iso_currency::Currency;
use remit_settlement::money::minor_units_to_decimal;
use remit_settlement::Money;
use rust_decimal::{Decimal, RoundingStrategy};
use uuid::Uuid;

use super::corridor::{Corridor, CorridorKey, Corridors, FeeSchedule};
use super::fx::RateSource;
use super::{QuoteError, QUOTES_OPEN_MAX, QUOTES_OPEN_PER_CLIENT_MAX, QUOTE_TTL_MS_MAX, RATE_DECIMALS_MAX};

/// The amount a customer fixes: what they pay, or what the recipient gets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FixedAmount {
    /// The send amount, fees included, in the source currency.
    Send(Money),
    /// The receive amount, in the destination currency.
    Receive(Money),
}

/// A request for a quote on a corridor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct QuoteRequest {
    /// The corridor.
    pub corridor: CorridorKey,
    /// The fixed side and its amount.
    pub amount: FixedAmount,
}

/// The fees of a quote, itemised, each exact to the send currency's minor
/// unit (and possibly zero).
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct Fees {
    /// The send currency.
    pub currency: Currency,
    /// The corridor's fixed fee.
    pub fixed: Decimal,
    /// The percent fee (including the rounding remainder of a send-fixed quote).
    pub percent: Decimal,
    /// The FX margin as an amount.
    pub fx_margin: Decimal,
}

impl Fees {
    /// The sum of the three fees.
    pub fn total(&self) -> Decimal {
        self.fixed + self.percent + self.fx_margin
    }
}

/// Which side of a quote the customer fixed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FixedSide {
    /// The send amount was given; the receive amount was computed.
    Send,
    /// The receive amount was given; the send amount was solved for.
    Receive,
}

/// The priced terms of a quote, before it is given an id and an expiry.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct QuoteTerms {
    /// The corridor.
    pub corridor: CorridorKey,
    /// Which side the customer fixed.
    pub fixed_side: FixedSide,
    /// What the customer pays: `principal + fees.total()`, exactly.
    pub send_amount: Money,
    /// The part of the send amount converted at the mid rate.
    pub principal: Money,
    /// The fees, itemised.
    pub fees: Fees,
    /// The mid rate, destination currency per unit of source currency.
    pub mid_rate: Decimal,
    /// The rate shown to the customer: `mid / (1 + margin)`, rounded down.
    pub customer_rate: Decimal,
    /// What the recipient gets: `floor(principal × mid)`.
    pub receive_amount: Money,
    /// What moves on the ledger between the gateways, in the corridor's
    /// settlement currency.
    pub settlement_amount: Money,
}

/// Identifies an issued quote.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct QuoteId(Uuid);

impl QuoteId {
    /// Wraps a UUID (for parsing ids presented by clients).
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for QuoteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An issued quote: terms, id and validity.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Quote {
    /// The id to present when taking the quote.
    pub id: QuoteId,
    /// The priced terms.
    pub terms: QuoteTerms,
    /// When it was issued (Unix milliseconds, passed in by the caller).
    pub issued_at_unix_ms: u64,
    /// First instant at which it is no longer valid (Unix milliseconds).
    pub expires_at_unix_ms: u64,
}

/// Prices a request: finds the corridor, checks the currency of the fixed
/// amount and the corridor limits, and computes the terms.
pub fn quote(corridors: &Corridors, rates: &dyn RateSource, request: &QuoteRequest) -> Result<QuoteTerms, QuoteError> {
    let corridor = corridors.get(&request.corridor, "corridor")?;
    price(corridor, rates, request.amount)
}

/// Computes the terms of a quote on `corridor` (see the module docs for the
/// rounding rules). Pure apart from asking `rates` for mid rates.
pub fn price(corridor: &Corridor, rates: &dyn RateSource, amount: FixedAmount) -> Result<QuoteTerms, QuoteError> {
    let key = corridor.key();
    let (field, given, expected) = match amount {
        FixedAmount::Send(money) => ("send_amount", money, key.source_currency),
        FixedAmount::Receive(money) => ("receive_amount", money, key.destination_currency),
    };
    if given.currency() != expected {
        return Err(QuoteError::CurrencyMismatch { field: field.to_owned(), expected, got: given.currency() });
    }
    let mid_rate = rates.mid_rate(key.source_currency, key.destination_currency)?;
    let pricing = Pricing::new(corridor.fees(), mid_rate, key, field)?;
    let given_minor = i128::from(given.minor_units());
    let (principal, send, receive) = match amount {
        FixedAmount::Send(_) => {
            check_limits(corridor, given_minor, field)?;
            let principal = pricing.principal_for_send(given_minor)?;
            let receive = pricing.receive_for(principal)?;
            (principal, given_minor, receive)
        }
        FixedAmount::Receive(_) => {
            let principal = pricing.principal_for_receive(given_minor)?;
            let send = pricing.send_for(principal)?;
            check_limits(corridor, send, field)?;
            (principal, send, given_minor)
        }
    };
    if principal < 1 || receive < 1 {
        return Err(QuoteError::TooSmall { field: field.to_owned(), amount: given.amount() });
    }
    let fees = pricing.fees(principal, send)?;
    let send_currency = key.source_currency;
    let settlement_amount = settlement(corridor, rates, principal, receive, &pricing)?;
    let terms = QuoteTerms {
        corridor: key,
        fixed_side: match amount {
            FixedAmount::Send(_) => FixedSide::Send,
            FixedAmount::Receive(_) => FixedSide::Receive,
        },
        send_amount: money(send, send_currency, "send_amount")?,
        principal: money(principal, send_currency, "principal")?,
        fees,
        mid_rate,
        customer_rate: customer_rate(mid_rate, corridor.fees().fx_margin_percent),
        receive_amount: money(receive, key.destination_currency, "receive_amount")?,
        settlement_amount,
    };
    // Conservation, in minor units: the customer's money is the principal
    // plus the fees, to the last minor unit.
    assert_eq!(terms.send_amount.amount(), terms.principal.amount() + terms.fees.total(), "send = principal + fees");
    Ok(terms)
}

fn check_limits(corridor: &Corridor, send: i128, field: &str) -> Result<(), QuoteError> {
    let (min, max) = (corridor.send_amount_min(), corridor.send_amount_max());
    let send_amount = || decimal(send, min.currency(), field);
    if send < i128::from(min.minor_units()) {
        return Err(QuoteError::BelowMinimum {
            field: field.to_owned(),
            send_amount: send_amount()?,
            min: min.amount(),
        });
    }
    if send > i128::from(max.minor_units()) {
        return Err(QuoteError::AboveMaximum {
            field: field.to_owned(),
            send_amount: send_amount()?,
            max: max.amount(),
        });
    }
    Ok(())
}

/// A positive rational `numerator / denominator` of integers.
#[derive(Clone, Copy, Debug)]
struct Ratio {
    numerator: i128,
    denominator: i128,
}

impl Ratio {
    /// `value` (a non-negative decimal) times `10^shift`, as an exact ratio.
    fn scaled(value: Decimal, shift: i64) -> Option<Self> {
        let exponent = shift - i64::from(value.scale());
        let power = pow10(exponent.unsigned_abs())?;
        let (numerator, denominator) =
            if exponent >= 0 { (value.mantissa().checked_mul(power)?, 1) } else { (value.mantissa(), power) };
        Some(Self { numerator, denominator })
    }

    /// `floor(amount × self)`.
    fn floor_mul(self, amount: i128) -> Option<i128> {
        Some(amount.checked_mul(self.numerator)?.div_euclid(self.denominator))
    }

    /// `ceil(amount × self)`.
    fn ceil_mul(self, amount: i128) -> Option<i128> {
        let product = amount.checked_mul(self.numerator)?;
        Some(-(-product).div_euclid(self.denominator))
    }

    /// `ceil(amount / self)`.
    fn ceil_div(self, amount: i128) -> Option<i128> {
        let product = amount.checked_mul(self.denominator)?;
        (self.numerator > 0).then(|| -(-product).div_euclid(self.numerator))
    }
}

fn pow10(exponent: u64) -> Option<i128> {
    10i128.checked_pow(u32::try_from(exponent).ok()?)
}

/// The corridor's fee schedule and mid rate as exact integer ratios on minor
/// units.
#[derive(Debug)]
struct Pricing {
    field: &'static str,
    fixed_fee: i128,
    /// Percent fee plus FX margin, as a fraction.
    variable: Ratio,
    /// FX margin, as a fraction.
    margin: Ratio,
    /// Source minor units to destination minor units at the mid rate.
    convert: Ratio,
    source_currency: Currency,
}

impl Pricing {
    fn new(fees: FeeSchedule, mid_rate: Decimal, key: CorridorKey, field: &'static str) -> Result<Self, QuoteError> {
        let out_of_range = || QuoteError::OutOfRange { field: field.to_owned() };
        let exponent = |currency: Currency| i64::from(currency.exponent().unwrap_or(0));
        let shift = exponent(key.destination_currency) - exponent(key.source_currency);
        let fixed_fee = Ratio::scaled(fees.fixed_fee, exponent(key.source_currency)).ok_or_else(out_of_range)?;
        Ok(Self {
            field,
            // The fixed fee is exact to the minor unit (checked in corridor config).
            fixed_fee: fixed_fee.numerator / fixed_fee.denominator,
            variable: Ratio::scaled(fees.fee_percent + fees.fx_margin_percent, -2).ok_or_else(out_of_range)?,
            margin: Ratio::scaled(fees.fx_margin_percent, -2).ok_or_else(out_of_range)?,
            convert: Ratio::scaled(mid_rate, shift).ok_or_else(out_of_range)?,
            source_currency: key.source_currency,
        })
    }

    fn out_of_range(&self) -> QuoteError {
        QuoteError::OutOfRange { field: self.field.to_owned() }
    }

    /// The send amount for a principal: `principal + fixed + ceil(principal × (p + m))`.
    fn send_for(&self, principal: i128) -> Result<i128, QuoteError> {
        let variable = self.variable.ceil_mul(principal).ok_or_else(|| self.out_of_range())?;
        principal
            .checked_add(self.fixed_fee)
            .and_then(|sum| sum.checked_add(variable))
            .ok_or_else(|| self.out_of_range())
    }

    /// The largest principal whose send amount does not exceed `send`:
    /// exactly `floor((send − fixed) / (1 + p + m))`, because
    /// `x ≤ ceil(x) < x + 1`.
    fn principal_for_send(&self, send: i128) -> Result<i128, QuoteError> {
        let available = send - self.fixed_fee;
        let one_plus = Ratio {
            numerator: self
                .variable
                .denominator
                .checked_add(self.variable.numerator)
                .ok_or_else(|| self.out_of_range())?,
            denominator: self.variable.denominator,
        };
        let principal = available
            .checked_mul(one_plus.denominator)
            .map(|scaled| scaled.div_euclid(one_plus.numerator))
            .ok_or_else(|| self.out_of_range())?;
        if principal >= 1 {
            assert!(self.send_for(principal)? <= send, "principal fits the send amount");
            assert!(self.send_for(principal + 1)? > send, "principal is the largest that fits");
        }
        Ok(principal)
    }

    /// The smallest principal whose receive amount reaches `receive`.
    fn principal_for_receive(&self, receive: i128) -> Result<i128, QuoteError> {
        self.convert.ceil_div(receive).ok_or_else(|| self.out_of_range())
    }

    /// `floor(principal × mid)`, in destination minor units.
    fn receive_for(&self, principal: i128) -> Result<i128, QuoteError> {
        self.convert.floor_mul(principal).ok_or_else(|| self.out_of_range())
    }

    /// Splits `send − principal` into the itemised fees.
    fn fees(&self, principal: i128, send: i128) -> Result<Fees, QuoteError> {
        let variable = self.variable.ceil_mul(principal).ok_or_else(|| self.out_of_range())?;
        let fx_margin = self.margin.ceil_mul(principal).ok_or_else(|| self.out_of_range())?;
        // The remainder of a send-fixed quote (at most one minor unit) goes to
        // the percent fee, so the three fees add up to send − principal.
        let remainder = send - self.send_for(principal)?;
        assert!((0..=1).contains(&remainder), "remainder {remainder} is at most one minor unit");
        assert!(fx_margin <= variable, "the margin is part of the variable fees");
        let currency = self.source_currency;
        Ok(Fees {
            currency,
            fixed: decimal(self.fixed_fee, currency, "fees.fixed")?,
            percent: decimal(variable - fx_margin + remainder, currency, "fees.percent")?,
            fx_margin: decimal(fx_margin, currency, "fees.fx_margin")?,
        })
    }
}

/// The settlement amount: the principal in the settlement currency, rounded
/// up; exactly the principal or the receive amount when the settlement
/// currency is the source or destination currency.
fn settlement(
    corridor: &Corridor,
    rates: &dyn RateSource,
    principal: i128,
    receive: i128,
    pricing: &Pricing,
) -> Result<Money, QuoteError> {
    let key = corridor.key();
    let currency = corridor.settlement_currency();
    if currency == key.source_currency {
        return money(principal, currency, "settlement_amount");
    }
    if currency == key.destination_currency {
        return money(receive, currency, "settlement_amount");
    }
    let rate = rates.mid_rate(key.source_currency, currency)?;
    let exponent = |currency: Currency| i64::from(currency.exponent().unwrap_or(0));
    let shift = exponent(currency) - exponent(key.source_currency);
    let amount =
        Ratio::scaled(rate, shift).and_then(|ratio| ratio.ceil_mul(principal)).ok_or_else(|| pricing.out_of_range())?;
    money(amount, currency, "settlement_amount")
}

/// `mid / (1 + margin)`, rounded down to [`RATE_DECIMALS_MAX`] places.
fn customer_rate(mid_rate: Decimal, fx_margin_percent: Decimal) -> Decimal {
    let factor = Decimal::ONE + fx_margin_percent / Decimal::ONE_HUNDRED;
    mid_rate
        .checked_div(factor)
        .map(|rate| rate.round_dp_with_strategy(RATE_DECIMALS_MAX, RoundingStrategy::ToZero).normalize())
        .unwrap_or(mid_rate)
}

fn decimal(minor_units: i128, currency: Currency, field: &str) -> Result<Decimal, QuoteError> {
    minor_units_to_decimal(minor_units, currency).ok_or_else(|| QuoteError::OutOfRange { field: field.to_owned() })
}

fn money(minor_units: i128, currency: Currency, field: &str) -> Result<Money, QuoteError> {
    let minor_units = u64::try_from(minor_units).map_err(|_| QuoteError::OutOfRange { field: field.to_owned() })?;
    Ok(Money::from_minor_units(minor_units, currency, field)?)
}

#[derive(Debug)]
struct BookEntry {
    quote: Quote,
    /// The client the quote was issued to: only it can use the quote.
    client: String,
    used: bool,
}

impl BookEntry {
    /// Unused and not expired at `now_unix_ms`.
    fn check_usable(&self, id: QuoteId, now_unix_ms: u64) -> Result<(), QuoteError> {
        if self.used {
            return Err(QuoteError::QuoteAlreadyUsed { id });
        }
        if now_unix_ms >= self.quote.expires_at_unix_ms {
            return Err(QuoteError::QuoteExpired {
                id,
                expires_at_unix_ms: self.quote.expires_at_unix_ms,
                now_unix_ms,
            });
        }
        Ok(())
    }
}

/// Issued quotes, each of which its client can take exactly once before it
/// expires. Another client's quote is unknown to a caller.
#[derive(Debug)]
pub struct QuoteBook {
    ttl_ms: u64,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    by_id: HashMap<QuoteId, BookEntry>,
    /// Quotes held per client (the entries of `by_id`, counted).
    per_client: HashMap<String, usize>,
}

impl Entries {
    fn purge_expired(&mut self, now_unix_ms: u64) -> usize {
        let before = self.by_id.len();
        let per_client = &mut self.per_client;
        self.by_id.retain(|_, entry| {
            let keep = entry.quote.expires_at_unix_ms > now_unix_ms;
            if !keep {
                if let Some(count) = per_client.get_mut(&entry.client) {
                    *count -= 1;
                }
            }
            keep
        });
        per_client.retain(|_, count| *count > 0);
        before - self.by_id.len()
    }

    fn held_by(&self, client: &str) -> usize {
        self.per_client.get(client).copied().unwrap_or(0)
    }

    /// The entry of `id` if `client` holds it.
    fn of_client(&mut self, client: &str, id: QuoteId) -> Result<&mut BookEntry, QuoteError> {
        self.by_id.get_mut(&id).filter(|entry| entry.client == client).ok_or(QuoteError::UnknownQuote { id })
    }
}

impl QuoteBook {
    /// A book whose quotes live `ttl_ms` (1 ms to [`QUOTE_TTL_MS_MAX`]).
    pub fn new(ttl_ms: u64) -> Result<Self, QuoteError> {
        if ttl_ms == 0 || ttl_ms > QUOTE_TTL_MS_MAX {
            return Err(QuoteError::InvalidTtl { field: "quote_ttl_ms".to_owned(), ttl_ms, max_ms: QUOTE_TTL_MS_MAX });
        }
        Ok(Self { ttl_ms, entries: Mutex::new(Entries::default()) })
    }

    /// How long quotes live, in milliseconds.
    pub fn ttl_ms(&self) -> u64 {
        self.ttl_ms
    }

    /// Gives `terms` a fresh id for `client`, valid from `now_unix_ms` for
    /// the book's lifetime. Expired quotes are purged when the book, or the
    /// client's share of it, is full.
    pub fn issue(&self, client: &str, terms: QuoteTerms, now_unix_ms: u64) -> Result<Quote, QuoteError> {
        let quote = Quote {
            id: QuoteId(Uuid::new_v4()),
            terms,
            issued_at_unix_ms: now_unix_ms,
            expires_at_unix_ms: now_unix_ms.saturating_add(self.ttl_ms),
        };
        let mut entries = self.lock();
        if entries.by_id.len() >= QUOTES_OPEN_MAX || entries.held_by(client) >= QUOTES_OPEN_PER_CLIENT_MAX {
            entries.purge_expired(now_unix_ms);
        }
        if entries.held_by(client) >= QUOTES_OPEN_PER_CLIENT_MAX {
            return Err(QuoteError::ClientQuotesFull { max: QUOTES_OPEN_PER_CLIENT_MAX });
        }
        if entries.by_id.len() >= QUOTES_OPEN_MAX {
            return Err(QuoteError::BookFull { max: QUOTES_OPEN_MAX });
        }
        entries.by_id.insert(quote.id, BookEntry { quote, client: client.to_owned(), used: false });
        *entries.per_client.entry(client.to_owned()).or_default() += 1;
        Ok(quote)
    }

    /// Consumes `client`'s quote: succeeds once, for the first call before
    /// expiry (`now_unix_ms < expires_at_unix_ms`); every later call fails.
    pub fn take(&self, client: &str, id: QuoteId, now_unix_ms: u64) -> Result<Quote, QuoteError> {
        let mut entries = self.lock();
        let entry = entries.of_client(client, id)?;
        entry.check_usable(id, now_unix_ms)?;
        entry.used = true;
        Ok(entry.quote)
    }

    /// Checks that `client` could take the quote now, without taking it.
    pub fn peek(&self, client: &str, id: QuoteId, now_unix_ms: u64) -> Result<Quote, QuoteError> {
        let mut entries = self.lock();
        let entry = entries.of_client(client, id)?;
        entry.check_usable(id, now_unix_ms)?;
        Ok(entry.quote)
    }

    /// Forgets quotes that expired at or before `now_unix_ms`; returns how many.
    pub fn purge_expired(&self, now_unix_ms: u64) -> usize {
        self.lock().purge_expired(now_unix_ms)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // Every update is a single insert, flag set or retain: a panic in
        // another thread cannot leave an entry half-written.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
#[path = "quote_tests.rs"]
mod tests;
