//! Prometheus metrics of a node, named `remit_*` with units in the name.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, Registry, TextEncoder};

/// All metrics of one node.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Highest applied (committed) height.
    pub height: IntGauge,
    /// Highest certified height.
    pub certified_height: IntGauge,
    /// Raft leader's validator index, -1 when unknown.
    pub leader: IntGauge,
    /// 1 when this node is the leader.
    pub is_leader: IntGauge,
    /// Block proposals made by this node as leader.
    pub proposals: IntCounter,
    /// Transfers per submitted batch.
    pub batch_transfers: Histogram,
    /// Transfers per applied block.
    pub block_transfers: Histogram,
    /// From a block being applied here to its certificate being stored here.
    pub certify_latency: Histogram,
    /// Signature shares received that failed verification or named another block.
    pub shares_rejected: IntCounter,
    /// Blocks from peers refused (catch-up or following): a body that does
    /// not match its header, a certificate that does not verify.
    pub blocks_refused: IntCounter,
    /// Size of the ledger's duplicate index (transfers remembered).
    pub index_transfers: IntGauge,
    /// Time a Raft append took to handle here (decode, log append and flush).
    pub raft_append_latency: Histogram,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).expect("metric names are valid");
    registry.register(Box::new(gauge.clone())).expect("metrics are registered once");
    gauge
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::new(name, help).expect("metric names are valid");
    registry.register(Box::new(counter.clone())).expect("metrics are registered once");
    counter
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let histogram =
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("metric names are valid");
    registry.register(Box::new(histogram.clone())).expect("metrics are registered once");
    histogram
}

impl Metrics {
    /// A fresh registry with every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let sizes = vec![1.0, 10.0, 100.0, 1_000.0, 4_096.0, 8_192.0, 16_384.0, 65_536.0];
        Self {
            height: gauge(&registry, "remit_height", "Highest applied block height"),
            certified_height: gauge(&registry, "remit_certified_height", "Highest certified block height"),
            leader: gauge(&registry, "remit_leader", "Validator index of the Raft leader (-1 unknown)"),
            is_leader: gauge(&registry, "remit_is_leader", "1 when this node leads"),
            proposals: counter(&registry, "remit_proposals_total", "Block proposals made as leader"),
            batch_transfers: histogram(
                &registry,
                "remit_batch_transfers",
                "Transfers per submitted batch",
                sizes.clone(),
            ),
            block_transfers: histogram(&registry, "remit_block_transfers", "Transfers per applied block", sizes),
            certify_latency: histogram(
                &registry,
                "remit_certify_latency_seconds",
                "Time from applying a block to storing its certificate",
                vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            ),
            shares_rejected: counter(&registry, "remit_shares_rejected_total", "Signature shares rejected"),
            blocks_refused: counter(
                &registry,
                "remit_blocks_refused_total",
                "Blocks from peers refused because they do not verify",
            ),
            index_transfers: gauge(
                &registry,
                "remit_index_transfers",
                "Transfers remembered by the ledger's duplicate index",
            ),
            raft_append_latency: histogram(
                &registry,
                "remit_raft_append_seconds",
                "Time to handle a Raft append from the leader (decode, log append, flush)",
                vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0],
            ),
            registry,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer).expect("text encoding does not fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
