#![recursion_limit = "512"]
//! The remit gateway: the node binary `remitd` (from the validator network
//! issue on) and the operator CLI `remit`. Only `gateway` and `proto` know
//! protobuf; everything else works on domain types.

/// Initialises tracing for a command-line tool: human-readable logs on
/// stderr, filtered by `RUST_LOG` (default `warn`).
pub fn init_cli_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

pub mod api;
pub mod config;
pub mod constants;
pub mod devnet;
pub mod metrics;
pub mod node;
mod outbound;
pub mod payout;
pub mod reject;
pub mod remittance;
pub mod tls;
pub mod webhook;

/// Initialises tracing for a node: JSON (default) or text lines on stdout,
/// filtered by `log.level` (overridden by `RUST_LOG`).
pub fn init_node_tracing(log: &config::LogSection) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout);
    let _ = if log.format == "json" { builder.json().try_init() } else { builder.try_init() };
}
