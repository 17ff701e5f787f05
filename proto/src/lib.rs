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
