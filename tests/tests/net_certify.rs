//! Four `remitd` validators certify blocks under a stream of batches.
//!
//! [`BATCHES`] signed batches of [`BATCH_TRANSFERS`] transfers, from every
//! participant in turn, are submitted [`CONCURRENCY`] at a time to all four
//! nodes (followers forward to the leader). Once every node has certified the
//! same tip, all nodes are stopped with SIGTERM and their data directories are
//! checked for:
//! - every final block certified: `remit ledger verify --dir` (the real CLI)
//!   exits 0 on every node and reports every stored block as certified, and
//!   the in-process audit agrees (hash links, Merkle roots, certificates
//!   against the group key, replay from genesis);
//! - one chain: every node stores the same blocks and the same certified tip;
//! - no acknowledged transfer lost or duplicated: every transfer a reply
//!   accepted is in the chain exactly once, and nothing else is;
//! - value conserved per currency: positions sum to zero and equal the
//!   positions recomputed from the accepted transfers.

use std::time::{Duration, Instant};

use anyhow::ensure;
use remit_tests::net::{stop_and_verify, traffic_batches, Load, LoadOptions, Network, NetworkOptions, SubmitPolicy};

/// Batches submitted (a multiple of the four senders).
const BATCHES: usize = 48;
/// Transfers per batch.
const BATCH_TRANSFERS: usize = 128;
/// Batches in flight at once.
const CONCURRENCY: usize = 4;
/// Bound on the whole load.
const LOAD_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on every node reaching the same certified tip after the load.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

async fn scenario(net: &mut Network) -> anyhow::Result<()> {
    net.wait_ready().await?;
    let mut traffic = net.traffic(1)?;
    let batches = traffic_batches(&mut traffic, BATCHES / net.len(), BATCH_TRANSFERS * net.len());
    ensure!(batches.len() == BATCHES, "generated {} batches", batches.len());

    let started = Instant::now();
    let load = Load::spawn(
        net.submitter(SubmitPolicy::default()),
        batches,
        LoadOptions { concurrency: CONCURRENCY, pause: Duration::ZERO },
    );
    let acks = load.join(LOAD_TIMEOUT).await?;
    println!("load: {BATCHES} batches in {:?}: {acks:?}", started.elapsed());
    ensure!(acks.rejected.is_empty(), "transfers rejected: {:?}", &acks.rejected[..acks.rejected.len().min(5)]);
    ensure!(acks.unknown.is_empty(), "{} transfers never acknowledged", acks.unknown.len());
    ensure!(acks.accepted.len() == BATCHES * BATCH_TRANSFERS, "{} transfers acknowledged", acks.accepted.len());

    let all: Vec<usize> = (0..net.len()).collect();
    let (height, _) = net.wait_settled(&all, SETTLE_TIMEOUT).await?;
    ensure!(height >= 2, "only {height} blocks after genesis for {BATCHES} batches");

    stop_and_verify(net, height, &acks)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_certify_a_stream_of_batches() {
    let mut net = Network::start(NetworkOptions::default()).await.expect("the network starts");
    let result = scenario(&mut net).await;
    net.finish(result);
}
