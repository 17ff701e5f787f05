//! Tests of the quote book (`quote.rs`).

use std::sync::{Arc, Barrier};

use proptest::prelude::*;

use super::*;
use crate::remittance::corridor::CorridorConfig;
use crate::remittance::fx::StaticRates;

const CORRIDORS: &str = r#"
    [[corridor]]
    source_country = "US"
    source_currency = "USD"
    destination_country = "PH"
    destination_currency = "PHP"
    settlement_currency = "USD"
    send_amount_min = "10.00"
    send_amount_max = "5000.00"
    fixed_fee = "2.99"
    fee_percent = "1.0"
    fx_margin_percent = "0.5"

    [[corridor]]
    source_country = "US"
    source_currency = "USD"
    destination_country = "JP"
    destination_currency = "JPY"
    settlement_currency = "JPY"
    send_amount_min = "1.00"
    send_amount_max = "10000.00"
    fixed_fee = "0"
    fee_percent = "0.5"
    fx_margin_percent = "1.0"

    [[corridor]]
    source_country = "KW"
    source_currency = "KWD"
    destination_country = "PH"
    destination_currency = "PHP"
    settlement_currency = "USD"
    send_amount_min = "5.000"
    send_amount_max = "3000.000"
    fixed_fee = "0.500"
    fee_percent = "0.75"
    fx_margin_percent = "0.25"
"#;

fn corridors() -> Corridors {
    Corridors::from_toml(CORRIDORS).expect("valid corridors")
}

fn rates() -> StaticRates {
    StaticRates::from_pairs(
        Currency::USD,
        &[("USD", "PHP", "56.25"), ("USD", "JPY", "150.125"), ("KWD", "USD", "3.25")],
    )
    .expect("valid rates")
}

fn key(name: &str) -> CorridorKey {
    let (source, destination) = match name {
        "USD->PHP" => (("US", Currency::USD), ("PH", Currency::PHP)),
        "USD->JPY" => (("US", Currency::USD), ("JP", Currency::JPY)),
        "KWD->PHP" => (("KW", Currency::KWD), ("PH", Currency::PHP)),
        "USD->GB" => (("US", Currency::USD), ("GB", Currency::GBP)),
        other => panic!("unknown test corridor {other}"),
    };
    CorridorKey {
        source_country: remit_settlement::CountryCode::new(source.0).expect("country"),
        source_currency: source.1,
        destination_country: remit_settlement::CountryCode::new(destination.0).expect("country"),
        destination_currency: destination.1,
    }
}

/// `"send 100.00 USD"` or `"receive 5000.00 PHP"`.
fn amount(text: &str) -> FixedAmount {
    let (side, money) = text.split_once(' ').expect("side and amount");
    let money = Money::parse(money, "amount").expect("valid amount");
    if side == "send" {
        FixedAmount::Send(money)
    } else {
        FixedAmount::Receive(money)
    }
}

fn summary(terms: &QuoteTerms) -> String {
    format!(
        "send {} = {} + {} + {} + {}; receive {}; settle {}",
        terms.send_amount,
        terms.principal.amount(),
        terms.fees.fixed,
        terms.fees.percent,
        terms.fees.fx_margin,
        terms.receive_amount,
        terms.settlement_amount
    )
}

/// Quotes `amount` on `corridor`; expects a summary, or `(field, ISO code)`.
fn check(corridor: &str, amount_text: &str, expected: Result<&str, (&str, &str)>) {
    let request = QuoteRequest { corridor: key(corridor), amount: amount(amount_text) };
    match (quote(&corridors(), &rates(), &request), expected) {
        (Ok(terms), Ok(want)) => {
            assert_eq!(summary(&terms), want, "{corridor} {amount_text}");
            assert_exact(&terms);
        }
        (Err(err), Err((field, code))) => {
            assert_eq!((err.field(), err.reason_code()), (field, Some(code)), "{corridor} {amount_text}: {err}");
            assert!(err.to_string().starts_with(field), "{err}");
        }
        (got, want) => panic!("{corridor} {amount_text}: got {got:?}, want {want:?}"),
    }
}

/// Every amount has exactly its currency's decimal places and the
/// customer pays exactly the principal plus the fees.
fn assert_exact(terms: &QuoteTerms) {
    let exponent = |currency: Currency| u32::from(currency.exponent().expect("settleable"));
    let send_exponent = exponent(terms.send_amount.currency());
    for (name, value) in
        [("fixed", terms.fees.fixed), ("percent", terms.fees.percent), ("margin", terms.fees.fx_margin)]
    {
        assert_eq!(value.scale(), send_exponent, "{name} {value}");
        assert!(value >= Decimal::ZERO, "{name} {value}");
    }
    for money in [terms.send_amount, terms.principal, terms.receive_amount, terms.settlement_amount] {
        assert_eq!(money.amount().scale(), exponent(money.currency()), "{money}");
    }
    let fees_minor = remit_settlement::money::decimal_to_minor_units(terms.fees.total(), terms.fees.currency)
        .expect("fees are whole minor units");
    assert_eq!(terms.send_amount.minor_units() as i128, terms.principal.minor_units() as i128 + fees_minor);
}

#[test]
fn usd_to_php() {
    check(
        "USD->PHP",
        "send 100.00 USD",
        Ok("send 100.00 USD = 95.57 + 2.99 + 0.96 + 0.48; receive 5375.81 PHP; settle 95.57 USD"),
    );
    check(
        "USD->PHP",
        "send 123.45 USD",
        Ok("send 123.45 USD = 118.67 + 2.99 + 1.19 + 0.60; receive 6675.18 PHP; settle 118.67 USD"),
    );
    check(
        "USD->PHP",
        "send 3333.33 USD",
        Ok("send 3333.33 USD = 3281.12 + 2.99 + 32.81 + 16.41; receive 184563.00 PHP; settle 3281.12 USD"),
    );
    // 10.43 and 10.44 buy the same principal; the extra cent is the
    // rounding remainder, added to the percent fee.
    check(
        "USD->PHP",
        "send 10.43 USD",
        Ok("send 10.43 USD = 7.33 + 2.99 + 0.07 + 0.04; receive 412.31 PHP; settle 7.33 USD"),
    );
    check(
        "USD->PHP",
        "send 10.44 USD",
        Ok("send 10.44 USD = 7.33 + 2.99 + 0.08 + 0.04; receive 412.31 PHP; settle 7.33 USD"),
    );
    check(
        "USD->PHP",
        "receive 5000.00 PHP",
        Ok("send 93.22 USD = 88.89 + 2.99 + 0.89 + 0.45; receive 5000.00 PHP; settle 88.89 USD"),
    );
    check(
        "USD->PHP",
        "receive 123456.78 PHP",
        Ok("send 2230.71 USD = 2194.79 + 2.99 + 21.95 + 10.98; receive 123456.78 PHP; settle 2194.79 USD"),
    );
    check("USD->PHP", "receive 0.01 PHP", Err(("receive_amount", "AM12")));
    check("USD->PHP", "receive 280000.00 PHP", Err(("receive_amount", "AM02")));
}

#[test]
fn usd_to_jpy_zero_decimals() {
    check(
        "USD->JPY",
        "send 100.00 USD",
        Ok("send 100.00 USD = 98.52 + 0.00 + 0.49 + 0.99; receive 14790 JPY; settle 14790 JPY"),
    );
    check(
        "USD->JPY",
        "send 45.67 USD",
        Ok("send 45.67 USD = 44.99 + 0.00 + 0.23 + 0.45; receive 6754 JPY; settle 6754 JPY"),
    );
    check(
        "USD->JPY",
        "send 1.36 USD",
        Ok("send 1.36 USD = 1.33 + 0.00 + 0.01 + 0.02; receive 199 JPY; settle 199 JPY"),
    );
    check(
        "USD->JPY",
        "receive 15000 JPY",
        Ok("send 101.42 USD = 99.92 + 0.00 + 0.50 + 1.00; receive 15000 JPY; settle 15000 JPY"),
    );
    check(
        "USD->JPY",
        "receive 151 JPY",
        Ok("send 1.03 USD = 1.01 + 0.00 + 0.00 + 0.02; receive 151 JPY; settle 151 JPY"),
    );
    check(
        "USD->JPY",
        "receive 1000 JPY",
        Ok("send 6.78 USD = 6.67 + 0.00 + 0.04 + 0.07; receive 1000 JPY; settle 1000 JPY"),
    );
    check("USD->JPY", "receive 1 JPY", Err(("receive_amount", "AM12")));
}

#[test]
fn kwd_three_decimals() {
    check(
        "KWD->PHP",
        "send 100.000 KWD",
        Ok("send 100.000 KWD = 98.514 + 0.500 + 0.739 + 0.247; receive 18009.59 PHP; settle 320.18 USD"),
    );
    check(
        "KWD->PHP",
        "send 123.457 KWD",
        Ok("send 123.457 KWD = 121.739 + 0.500 + 0.913 + 0.305; receive 22255.41 PHP; settle 395.66 USD"),
    );
    check(
        "KWD->PHP",
        "send 5.046 KWD",
        Ok("send 5.046 KWD = 4.500 + 0.500 + 0.034 + 0.012; receive 822.65 PHP; settle 14.63 USD"),
    );
    check(
        "KWD->PHP",
        "receive 10000.00 PHP",
        Ok("send 55.749 KWD = 54.701 + 0.500 + 0.411 + 0.137; receive 10000.00 PHP; settle 177.78 USD"),
    );
    check("KWD->PHP", "receive 123.45 PHP", Err(("receive_amount", "AM12")));
}

#[test]
fn limits_at_the_boundary() {
    check(
        "USD->PHP",
        "send 10.00 USD",
        Ok("send 10.00 USD = 6.90 + 2.99 + 0.07 + 0.04; receive 388.12 PHP; settle 6.90 USD"),
    );
    check("USD->PHP", "send 9.99 USD", Err(("send_amount", "AM12")));
    check(
        "USD->PHP",
        "send 5000.00 USD",
        Ok("send 5000.00 USD = 4923.16 + 2.99 + 49.23 + 24.62; receive 276927.75 PHP; settle 4923.16 USD"),
    );
    check("USD->PHP", "send 5000.01 USD", Err(("send_amount", "AM02")));
    check(
        "USD->JPY",
        "send 1.00 USD",
        Ok("send 1.00 USD = 0.98 + 0.00 + 0.01 + 0.01; receive 147 JPY; settle 147 JPY"),
    );
    check("USD->JPY", "send 0.99 USD", Err(("send_amount", "AM12")));
    check(
        "USD->JPY",
        "send 10000.00 USD",
        Ok("send 10000.00 USD = 9852.21 + 0.00 + 49.26 + 98.53; receive 1479063 JPY; settle 1479063 JPY"),
    );
    check("USD->JPY", "send 10000.01 USD", Err(("send_amount", "AM02")));
    check(
        "KWD->PHP",
        "send 5.000 KWD",
        Ok("send 5.000 KWD = 4.455 + 0.500 + 0.033 + 0.012; receive 814.42 PHP; settle 14.48 USD"),
    );
    check("KWD->PHP", "send 4.999 KWD", Err(("send_amount", "AM12")));
    check(
        "KWD->PHP",
        "send 3000.000 KWD",
        Ok("send 3000.000 KWD = 2969.801 + 0.500 + 22.274 + 7.425; receive 542916.74 PHP; settle 9651.86 USD"),
    );
    check("KWD->PHP", "send 3000.001 KWD", Err(("send_amount", "AM02")));
}

#[test]
fn bad_requests() {
    check("USD->PHP", "send 100.00 EUR", Err(("send_amount", "AM03")));
    check("USD->PHP", "receive 100.00 USD", Err(("receive_amount", "AM03")));
    check("USD->GB", "send 100.00 USD", Err(("corridor", "AG03")));
}

/// Re-quotes the receive amount of a send-fixed quote: the same receive
/// amount, for a send amount at most one minor unit lower (never higher).
fn check_round_trip(corridor: &Corridor, rates: &dyn RateSource, send: Money) -> Result<(), TestCaseError> {
    let Ok(forward) = price(corridor, rates, FixedAmount::Send(send)) else { return Ok(()) };
    let back = price(corridor, rates, FixedAmount::Receive(forward.receive_amount))
        .map_err(|err| TestCaseError::fail(format!("{send}: {err}")))?;
    prop_assert_eq!(back.receive_amount, forward.receive_amount);
    let (there, again) = (forward.send_amount.minor_units(), back.send_amount.minor_units());
    prop_assert!(again <= there && there - again <= 1, "{} -> {}", forward.send_amount, back.send_amount);
    Ok(())
}

#[test]
fn receive_fixed_round_trips() {
    let (corridors, rates) = (corridors(), rates());
    for corridor in corridors.iter() {
        let currency = corridor.key().source_currency;
        let (min, max) = (corridor.send_amount_min().minor_units(), corridor.send_amount_max().minor_units());
        for minor in (min..min + 500).chain((min..=max).step_by(997)).chain(max - 50..=max) {
            let send = Money::from_minor_units(minor, currency, "send").expect("valid");
            check_round_trip(corridor, &rates, send).expect("round trip");
        }
    }
}

fn terms() -> QuoteTerms {
    let request = QuoteRequest { corridor: key("USD->PHP"), amount: amount("send 100.00 USD") };
    quote(&corridors(), &rates(), &request).expect("quote")
}

#[test]
fn ttl_is_bounded() {
    assert!(QuoteBook::new(QUOTE_TTL_MS_MAX).is_ok());
    assert!(QuoteBook::new(1).is_ok());
    for bad in [0, QUOTE_TTL_MS_MAX + 1] {
        let err = QuoteBook::new(bad).expect_err("out of bounds");
        assert_eq!(err.field(), "quote_ttl_ms");
    }
}

#[test]
fn a_quote_is_its_clients_alone_and_each_client_has_a_share_of_the_book() {
    let book = QuoteBook::new(600_000).expect("valid ttl");
    let quote = book.issue("wallet-a", terms(), 0).expect("issue");
    assert!(matches!(book.peek("wallet-b", quote.id, 1), Err(QuoteError::UnknownQuote { .. })));
    assert!(matches!(book.take("wallet-b", quote.id, 1), Err(QuoteError::UnknownQuote { .. })));
    assert_eq!(book.take("wallet-a", quote.id, 1).expect("its own client takes it").id, quote.id);
    for _ in 1..QUOTES_OPEN_PER_CLIENT_MAX {
        book.issue("wallet-a", terms(), 10).expect("within the client's share");
    }
    let full = book.issue("wallet-a", terms(), 10).expect_err("the client's share is used up");
    assert!(matches!(full, QuoteError::ClientQuotesFull { max: QUOTES_OPEN_PER_CLIENT_MAX }));
    book.issue("wallet-b", terms(), 10).expect("another client still gets quotes");
    // Once they expire the client's share is free again.
    book.issue("wallet-a", terms(), 600_011).expect("expired quotes purged");
    assert_eq!(book.purge_expired(600_011), 0, "already purged");
}

#[test]
fn expiry_exactly_at_the_bound() {
    let book = QuoteBook::new(QUOTE_TTL_MS_MAX).expect("book");
    let now = 1_700_000_000_000;
    let first = book.issue("wallet-a", terms(), now).expect("issue");
    assert_eq!(first.expires_at_unix_ms, now + 600_000);
    let err = book.take("wallet-a", first.id, now + 600_000).expect_err("expired at the bound");
    assert_eq!((err.field(), err.reason_code()), ("quote_id", Some("TM01")));
    let second = book.issue("wallet-a", terms(), now).expect("issue");
    assert_eq!(book.take("wallet-a", second.id, now + 599_999).expect("valid until the bound").terms, terms());
    let err = book.take("wallet-a", second.id, now + 1).expect_err("single use");
    assert_eq!(err.reason_code(), Some("DUPL"));
    let unknown = QuoteId::from_uuid(Uuid::new_v4());
    assert!(matches!(book.take("wallet-a", unknown, now), Err(QuoteError::UnknownQuote { .. })));
    assert_eq!(book.purge_expired(now + 600_000), 2);
    assert!(matches!(book.take("wallet-a", first.id, now), Err(QuoteError::UnknownQuote { .. })));
}

#[test]
fn single_use_under_concurrent_take() {
    let book = Arc::new(QuoteBook::new(60_000).expect("book"));
    let quote = book.issue("wallet-a", terms(), 0).expect("issue");
    let barrier = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (book, barrier) = (Arc::clone(&book), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                book.take("wallet-a", quote.id, 1)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|thread| thread.join().expect("thread")).collect();
    assert_eq!(results.iter().filter(|result| result.is_ok()).count(), 1);
    assert!(results.iter().filter_map(|result| result.as_ref().err()).all(|err| err.reason_code() == Some("DUPL")));
}

fn corridor_config(
    currencies: (Currency, Currency),
    fixed_fee_minor: u64,
    fee_percent_bp: u32,
    margin_bp: u32,
) -> CorridorConfig {
    let minor = |units: u64, currency: Currency| {
        minor_units_to_decimal(i128::from(units), currency).expect("in range").to_string()
    };
    CorridorConfig {
        source_country: "US".to_owned(),
        source_currency: currencies.0.code().to_owned(),
        destination_country: "PH".to_owned(),
        destination_currency: currencies.1.code().to_owned(),
        settlement_currency: "USD".to_owned(),
        send_amount_min: minor(fixed_fee_minor + 2, currencies.0),
        send_amount_max: minor(1_000_000_000_000, currencies.0),
        fixed_fee: minor(fixed_fee_minor, currencies.0),
        fee_percent: Decimal::new(i64::from(fee_percent_bp), 2).to_string(),
        fx_margin_percent: Decimal::new(i64::from(margin_bp), 2).to_string(),
        destination_participant: None,
    }
}

proptest! {
    #[test]
    fn send_is_principal_plus_fees_exactly(
        currencies in prop::sample::select(vec![
            (Currency::USD, Currency::PHP), (Currency::USD, Currency::JPY), (Currency::KWD, Currency::PHP),
            (Currency::JPY, Currency::USD), (Currency::KWD, Currency::JPY), (Currency::EUR, Currency::KWD),
        ]),
        rate_mantissa in 1i64..=100_000_000_000,
        rate_scale in 4u32..=10,
        fixed_fee_minor in 0u64..10_000,
        fee_percent_bp in 0u32..=5_000,
        margin_bp in 0u32..=5_000,
        send_minor in 1u64..1_000_000_000_000,
        fixed_side_receive in any::<bool>(),
    ) {
        let rate = Decimal::new(rate_mantissa, rate_scale);
        // At most RATE_MAX (1e11 / 1e4) and at least 1e-10.
        let config = corridor_config(currencies, fixed_fee_minor, fee_percent_bp, margin_bp);
        let corridor = Corridor::from_config(&config, "corridor").expect("valid corridor");
        let mut table = crate::remittance::RateTable::new(Currency::USD);
        table.insert(currencies.0, currencies.1, rate, "rate").expect("valid rate");
        if currencies.0 != Currency::USD && currencies.1 != Currency::USD {
            // The settlement currency (USD) is neither side: settle through this rate.
            table.insert(currencies.0, Currency::USD, Decimal::new(13, 1), "rate").expect("valid rate");
        }
        let rates = StaticRates::new(table);
        let amount = if fixed_side_receive {
            FixedAmount::Receive(Money::from_minor_units(send_minor, currencies.1, "receive").expect("valid"))
        } else {
            FixedAmount::Send(Money::from_minor_units(send_minor, currencies.0, "send").expect("valid"))
        };
        match price(&corridor, &rates, amount) {
            Ok(terms) => {
                assert_exact(&terms);
                if let FixedAmount::Send(send) = amount {
                    prop_assert_eq!(terms.send_amount, send);
                    // One send minor unit buys at least one receive minor
                    // unit: the receive-fixed re-quote is within a unit.
                    let exponent = |c: Currency| i64::from(c.exponent().expect("settleable"));
                    let unit = Ratio::scaled(rate, exponent(currencies.1) - exponent(currencies.0)).expect("ratio");
                    if unit.numerator >= unit.denominator {
                        check_round_trip(&corridor, &rates, send)?;
                    }
                } else {
                    prop_assert_eq!(FixedAmount::Receive(terms.receive_amount), amount);
                }
            }
            Err(err) => prop_assert!(err.reason_code().is_some(), "{err}"),
        }
    }
}
