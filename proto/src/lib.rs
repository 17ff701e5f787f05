//! `remit.v1` protobuf messages and gRPC services, generated at build time by
//! protox and tonic-prost-build. Only `gateway` and `proto` know protobuf:
//! other crates work on domain types.

#![allow(missing_docs, missing_debug_implementations, clippy::all)]

/// The `remit.v1` package.
pub mod v1 {
    tonic::include_proto!("remit.v1");
}
