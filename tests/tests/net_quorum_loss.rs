//! Two of four validators down: nothing is committed or certified; one back:
//! certification resumes and the batches submitted meanwhile are committed.
//!
//! With n = 4, both Raft (3 of 4) and certification (2f + 1 = 3 shares) need
//! three validators. Two followers are killed with SIGKILL; a round of
//! batches submitted to the remaining two times out (the leader queues and
//! proposes them, but cannot commit). Checked:
//! - no block is certified (nor applied) while two are down: the live
//!   nodes' tips stay where they were over the whole submission window;
//! - once one follower restarts, certification resumes past that height,
//!   and the batches pending at the leader are committed: resubmitting each
//!   one answers `duplicate_uetr` for every transfer (already applied);
//! - with every node back and stopped: every final block certified on every
//!   data directory (`remit ledger verify --dir` and the in-process audit),
//!   one chain on all nodes, no acknowledged transfer lost or duplicated
//!   (the pending batches' transfers are in the chain exactly once), value
//!   conserved per currency.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use remit_tests::net::{
    stop_and_verify, traffic_batches, Acknowledged, Load, LoadOptions, Network, NetworkOptions, SubmitPolicy, Submitted,
};

/// Transfers per batch.
const BATCH_TRANSFERS: usize = 64;
/// How long each batch is tried while two validators are down; also the
/// window over which the tips must not move.
const OUTAGE_WINDOW: Duration = Duration::from_secs(3);
/// Bound on each wait for certification.
const CERTIFY_TIMEOUT: Duration = Duration::from_secs(30);

async fn scenario(net: &mut Network) -> anyhow::Result<()> {
    let leader = net.wait_ready().await?;
    let all: Vec<usize> = (0..net.len()).collect();
    let mut traffic = net.traffic(3)?;
    let submitter = net.submitter(SubmitPolicy::default());
    let mut acks = Acknowledged::default();
    for (i, batch) in traffic_batches(&mut traffic, 1, BATCH_TRANSFERS * net.len()).iter().enumerate() {
        acks.record(batch, &submitter.submit(batch, i).await?)?;
    }
    ensure!(acks.accepted.len() == BATCH_TRANSFERS * net.len(), "warm-up not acknowledged: {acks:?}");
    let (before, before_hash) = net.wait_settled(&all, CERTIFY_TIMEOUT).await?;

    let down: Vec<usize> = all.iter().copied().filter(|&i| i != leader).take(2).collect();
    for &i in &down {
        net.kill(i)?;
    }
    let live: Vec<usize> = all.iter().copied().filter(|i| !down.contains(i)).collect();
    println!("killed {down:?}; leader {leader}, live {live:?}, certified tip {before}");

    // Each batch is tried (moving between nodes) for the whole window.
    let stuck = traffic_batches(&mut traffic, 1, BATCH_TRANSFERS * net.len());
    let policy = SubmitPolicy { attempt_timeout: OUTAGE_WINDOW, deadline: OUTAGE_WINDOW, ..SubmitPolicy::default() };
    let load = Load::spawn(
        net.submitter(policy),
        stuck.clone(),
        LoadOptions { concurrency: stuck.len(), pause: Duration::ZERO },
    );
    let outage = load.join(OUTAGE_WINDOW * 3).await?;
    ensure!(
        outage.accepted.is_empty() && outage.unknown.len() == BATCH_TRANSFERS * net.len(),
        "with two of four validators down, submissions must time out: {outage:?}"
    );
    for &i in &live {
        let tip = net.tip(i).await?;
        ensure!(
            tip.certified_height == Some(before) && tip.height == Some(before) && tip.block_hash == before_hash,
            "node {i} moved while two validators were down: height {:?} certified {:?} (was {before})",
            tip.height,
            tip.certified_height
        );
    }

    let started = Instant::now();
    net.restart(down[0])?;
    let quorum: Vec<usize> = live.iter().copied().chain([down[0]]).collect();
    net.wait_certified(&quorum, before + 1, CERTIFY_TIMEOUT).await?;
    println!("certification resumed {:?} after node {} returned", started.elapsed(), down[0]);

    // The pending batches were committed: resubmitted, they are duplicates.
    for (i, batch) in stuck.iter().enumerate() {
        let Submitted::Replied { reply, .. } = submitter.submit(batch, quorum[i % quorum.len()]).await? else {
            bail!("resubmitting pending batch {i} got no reply");
        };
        ensure!(!reply.batch_rejected, "pending batch {i} rejected: {}", reply.batch_reason);
        ensure!(
            reply.results.iter().all(|r| !r.accepted && r.reason == "duplicate_uetr"),
            "pending batch {i} was not committed before its resubmission: {:?}",
            reply.results.first()
        );
        acks.accepted.extend(batch.transfers.iter().map(|t| t.uetr));
    }

    net.restart(down[1])?;
    let (height, _) = net.wait_settled(&all, CERTIFY_TIMEOUT).await?;
    stop_and_verify(net, height, &acks)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_four_down_certify_nothing_until_one_returns() {
    let mut net = Network::start(NetworkOptions::default()).await.expect("the network starts");
    let result = scenario(&mut net).await;
    net.finish(result);
}
