//! SIGKILL of the Raft leader while batches stream in.
//!
//! Four validators take a paced load, submitted round-robin to every node
//! with retries (a batch retried after its first attempt was applied comes
//! back `duplicate_uetr` and counts as applied). Once a few blocks are
//! certified, the leader is killed with SIGKILL mid-load. Checked:
//! - a new leader takes over: the three survivors agree on another leader;
//! - certification continues: the survivors certify past the kill height;
//! - the killed node restarts on its data directory and catches up: every
//!   node reaches the same certified tip, and GetBlocks returns the same
//!   certified block hash from every node at the kill height and at the tip;
//! - no acknowledged transfer lost or duplicated: with every node stopped,
//!   every acknowledged transfer is in each node's chain exactly once and
//!   the chain holds nothing that was not submitted;
//! - every final block certified and the chain intact on every node
//!   (`remit ledger verify --dir` exits 0, the in-process audit agrees, all
//!   nodes store the same chain), and value conserved per currency.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::ensure;
use remit_tests::net::{stop_and_verify, traffic_batches, Load, LoadOptions, Network, NetworkOptions, SubmitPolicy};

/// Rounds of traffic; each round is one batch per participant.
const ROUNDS: usize = 15;
/// Transfers per batch.
const BATCH_TRANSFERS: usize = 64;
/// Certified height (beyond genesis) the network reaches before the kill.
const HEIGHT_BEFORE_KILL: u64 = 3;
/// Blocks the survivors must certify beyond the kill height.
const BLOCKS_AFTER_KILL: u64 = 3;
/// Bound on the survivors electing a new leader (election timeout is 0.75 to 1.5 s).
const ELECTION_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on each wait for certification.
const CERTIFY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the whole load.
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

async fn scenario(net: &mut Network) -> anyhow::Result<()> {
    let leader = net.wait_ready().await?;
    let mut traffic = net.traffic(2)?;
    let batches = traffic_batches(&mut traffic, ROUNDS, BATCH_TRANSFERS * net.len());
    let policy = SubmitPolicy { deadline: Duration::from_secs(40), ..SubmitPolicy::default() };
    // Paced so the load is still running well after the kill.
    let load =
        Load::spawn(net.submitter(policy), batches, LoadOptions { concurrency: 2, pause: Duration::from_millis(100) });

    let all: Vec<usize> = (0..net.len()).collect();
    let tips = net.wait_certified(&all, HEIGHT_BEFORE_KILL, CERTIFY_TIMEOUT).await?;
    ensure!(!load.is_finished(), "the load finished before the kill; lengthen it");
    let kill_height = tips.iter().filter_map(|t| t.certified_height).max().unwrap_or_default();
    let started = Instant::now();
    net.kill(leader)?;
    println!(
        "killed leader {leader} at certified height {kill_height} with {} of {} batches done",
        load.done.load(std::sync::atomic::Ordering::Relaxed),
        load.total
    );

    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let new_leader = net.wait_new_leader(&survivors, leader, ELECTION_TIMEOUT).await?;
    println!("node {new_leader} leads after {:?}", started.elapsed());
    net.wait_certified(&survivors, kill_height + BLOCKS_AFTER_KILL, CERTIFY_TIMEOUT).await?;
    println!("survivors certified {} blocks past the kill after {:?}", BLOCKS_AFTER_KILL, started.elapsed());

    let acks = load.join(LOAD_TIMEOUT).await?;
    println!("load: {acks:?}");
    ensure!(acks.rejected.is_empty(), "transfers rejected: {:?}", &acks.rejected[..acks.rejected.len().min(5)]);
    ensure!(acks.unknown.is_empty(), "{} transfers never acknowledged", acks.unknown.len());

    net.restart(leader)?;
    let (height, _) = net.wait_settled(&all, CERTIFY_TIMEOUT).await?;
    println!("all nodes settled on certified tip {height} after {:?}", started.elapsed());
    for probe in [kill_height, height] {
        let mut hashes = BTreeSet::new();
        for &i in &all {
            let (hash, certified) = net.block_hash_at(i, probe).await?;
            ensure!(certified, "node {i} has no certificate for block {probe}");
            hashes.insert(hash);
        }
        ensure!(hashes.len() == 1, "nodes store different blocks at height {probe}: {hashes:?}");
    }

    stop_and_verify(net, height, &acks)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill_under_load_loses_nothing() {
    let mut net = Network::start(NetworkOptions::default()).await.expect("the network starts");
    let result = scenario(&mut net).await;
    net.finish(result);
}
