//! A validator far behind catches up from a Raft snapshot.
//!
//! Nodes snapshot every 4 log entries and keep only 2 entries before the
//! snapshot, so a node that misses a dozen blocks cannot be sent the log and
//! must install a snapshot (state, applied-UETR index, tip block), then
//! backfill the blocks below it from its peers. Checked:
//! - the lagging node reaches the same certified tip as the others;
//! - it keeps applying and certifying new blocks after the install (its
//!   duplicate index came with the snapshot: re-submitted transfers are
//!   still rejected as duplicates);
//! - node 0 lies (`REMIT__TESTING__SERVE_ALTERED_BLOCKS=true`: every block
//!   it serves has a transfer's commitment changed under the original
//!   header); the lagging node asks it first, refuses what it serves (the
//!   entries root no longer matches the header: `remit_blocks_refused_total`
//!   counts it) and backfills from the honest peers;
//! - once stopped, its data directory passes `remit ledger verify --dir`
//!   like every other node's: the backfilled history is complete, linked
//!   and certified, and every acknowledged transfer is in it exactly once.

use std::time::Duration;

use anyhow::{ensure, Context};
use remit_tests::net::{stop_and_verify, traffic_batches, Load, LoadOptions, Network, NetworkOptions, SubmitPolicy};

const LAGGARD: usize = 3;
/// Serves altered blocks; the first peer the laggard asks for history.
const LIAR: usize = 0;
const ROUNDS_WHILE_DOWN: usize = 12;
const ROUNDS_AFTER: usize = 3;
const BATCH_TRANSFERS: usize = 32;
const TIMEOUT: Duration = Duration::from_secs(60);

async fn scenario(net: &mut Network) -> anyhow::Result<()> {
    net.wait_ready().await?;
    net.kill(LAGGARD)?;
    let up: Vec<usize> = (0..net.len()).filter(|&i| i != LAGGARD).collect();
    let mut traffic = net.traffic(11)?;
    let policy = SubmitPolicy { deadline: Duration::from_secs(40), ..SubmitPolicy::default() };
    // One round at a time, paced, so each round lands in its own block.
    let batches = traffic_batches(&mut traffic, ROUNDS_WHILE_DOWN, BATCH_TRANSFERS * net.len());
    let load =
        Load::spawn(net.submitter(policy), batches, LoadOptions { concurrency: 1, pause: Duration::from_millis(60) });
    let mut acks = load.join(TIMEOUT).await?;
    let tips = net.wait_certified(&up, 10, TIMEOUT).await?;
    let height_while_down = tips.iter().filter_map(|t| t.certified_height).min().unwrap_or_default();
    println!("certified {height_while_down} blocks while node {LAGGARD} was down");

    net.restart(LAGGARD)?;
    let all: Vec<usize> = (0..net.len()).collect();
    net.wait_certified(&all, height_while_down, TIMEOUT).await?;
    let batches = traffic_batches(&mut traffic, ROUNDS_AFTER, BATCH_TRANSFERS * net.len());
    let load =
        Load::spawn(net.submitter(policy), batches, LoadOptions { concurrency: 1, pause: Duration::from_millis(60) });
    acks.merge(load.join(TIMEOUT).await?);
    ensure!(acks.rejected.is_empty(), "transfers rejected: {:?}", &acks.rejected[..acks.rejected.len().min(5)]);
    let (height, _) = net.wait_settled(&all, TIMEOUT).await?;
    ensure!(height > height_while_down, "no block certified after the laggard returned");
    // Backfill runs in the background; give it a moment to finish the history.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused = net.metric(LAGGARD, "remit_blocks_refused_total").context("the laggard's metrics")?;
    ensure!(refused >= 1.0, "the laggard took the liar's blocks (refused {refused})");

    stop_and_verify(net, height, &acks)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_behind_validator_catches_up_from_a_snapshot() {
    let mut node_env: Vec<_> =
        (0..4).map(|i| (i, "REMIT__RAFT__SNAPSHOT_EVERY_BLOCKS".to_owned(), "4".to_owned())).collect();
    node_env.push((LIAR, "REMIT__TESTING__SERVE_ALTERED_BLOCKS".to_owned(), "true".to_owned()));
    let mut net =
        Network::start(NetworkOptions { node_env, ..NetworkOptions::default() }).await.expect("the network starts");
    let result = scenario(&mut net).await;
    net.finish(result);
}
