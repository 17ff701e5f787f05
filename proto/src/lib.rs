//! `remit.v1` protobuf messages and gRPC services, generated at build time by
//! protox and tonic-prost-build. Only `gateway` and `proto` know protobuf:
//! other crates work on domain types.

#![allow(missing_docs, missing_debug_implementations, clippy::all)]

/// The `remit.v1` package.
pub mod v1 {
    tonic::include_proto!("remit.v1");
}

impl v1::Party {
    /// A natural person holding an account number: the party that the CLI
    /// (`remit send`, the load generator) and the tests send between.
    pub fn person_with_account(primary_name: &str, secondary_name: &str, account_number: &str, country: &str) -> Self {
        Self {
            natural_person: Some(v1::NaturalPersonName {
                primary_name: primary_name.into(),
                secondary_name: secondary_name.into(),
            }),
            account: Some(v1::Account { scheme: "account_number".into(), value: account_number.into() }),
            country: country.into(),
            ..Default::default()
        }
    }
}

impl v1::CreateQuoteRequest {
    /// A quote request that fixes the amount sent (`send_amount`, in the
    /// source currency).
    pub fn sending(
        source_country: &str,
        source_currency: &str,
        destination_country: &str,
        destination_currency: &str,
        send_amount: &str,
    ) -> Self {
        Self {
            source_country: source_country.into(),
            source_currency: source_currency.into(),
            destination_country: destination_country.into(),
            destination_currency: destination_currency.into(),
            send_amount: Some(v1::Amount { value: send_amount.into(), currency: source_currency.into() }),
            receive_amount: None,
        }
    }
}
