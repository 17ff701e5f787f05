//! A Byzantine validator that signs forged BLS shares changes nothing.
//!
//! Node [`FORGER`] runs with `REMIT__TESTING__FORGE_SHARES=true`: it takes
//! part in Raft normally but gossips shares made with a random key. Checked:
//! - certification proceeds with the three honest validators under load,
//!   and every node (the forger too, from gossiped certificates) reaches the
//!   same certified tip;
//! - the forger's shares are rejected: the honest nodes'
//!   `remit_shares_rejected_total` (from `GET /metrics`) is above zero;
//! - with one honest validator killed, two honest ones and the forger still
//!   commit blocks (Raft needs only 3 of 4) but certify none: the forger
//!   cannot make up the third share, and both live honest nodes keep
//!   rejecting its shares;
//! - when the honest validator returns, those blocks are certified;
//! - with every node stopped: every certificate verifies against the group
//!   key and every final block is certified on every data directory (the
//!   forger's included: `remit ledger verify --dir` and the in-process
//!   audit), one chain on all nodes, no acknowledged transfer lost or
//!   duplicated, value conserved per currency.

use std::time::Duration;

use anyhow::ensure;
use remit_tests::net::{
    stop_and_verify, traffic_batches, Acknowledged, Load, LoadOptions, Network, NetworkOptions, SubmitPolicy,
};

/// The validator that forges its shares.
const FORGER: usize = 1;
/// The metric counting rejected shares.
const SHARES_REJECTED: &str = "remit_shares_rejected_total";
/// Rounds of traffic with four honest-or-forging validators up (one batch per participant each).
const ROUNDS: usize = 6;
/// Transfers per batch.
const BATCH_TRANSFERS: usize = 64;
/// How long the tips are watched with two honest validators and the forger:
/// several certificate catch-up rounds (500 ms each).
const NO_CERTIFICATE_WINDOW: Duration = Duration::from_secs(3);
/// Bound on each wait for certification.
const CERTIFY_TIMEOUT: Duration = Duration::from_secs(30);

async fn scenario(net: &mut Network) -> anyhow::Result<()> {
    let leader = net.wait_ready().await?;
    let all: Vec<usize> = (0..net.len()).collect();
    let honest: Vec<usize> = all.iter().copied().filter(|&i| i != FORGER).collect();
    let mut traffic = net.traffic(4)?;
    let load = Load::spawn(
        net.submitter(SubmitPolicy::default()),
        traffic_batches(&mut traffic, ROUNDS, BATCH_TRANSFERS * net.len()),
        LoadOptions { concurrency: 4, pause: Duration::ZERO },
    );
    let mut acks = load.join(Duration::from_secs(60)).await?;
    ensure!(acks.rejected.is_empty() && acks.unknown.is_empty(), "load not fully acknowledged: {acks:?}");
    let (certified, _) = net.wait_settled(&all, CERTIFY_TIMEOUT).await?;
    ensure!(certified >= 2, "only {certified} blocks certified under load");
    let mut rejected = Vec::new();
    for &i in &honest {
        rejected.push(net.metric(i, SHARES_REJECTED)?);
    }
    println!("certified tip {certified}; {SHARES_REJECTED} on honest nodes {honest:?}: {rejected:?}");
    ensure!(rejected.iter().sum::<f64>() > 0.0, "no honest node rejected a forged share: {rejected:?}");

    // Two honest validators and the forger: a Raft quorum, not a certifying one.
    let victim = *honest.iter().find(|&&i| i != leader).expect("three honest nodes, one leader");
    net.kill(victim)?;
    let live: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
    let live_honest: Vec<usize> = live.iter().copied().filter(|&i| i != FORGER).collect();
    let before: Vec<f64> =
        live_honest.iter().map(|&i| net.metric(i, SHARES_REJECTED)).collect::<anyhow::Result<_>>()?;
    let submitter = net.submitter(SubmitPolicy::default());
    let mut uncertified = Acknowledged::default();
    for (i, batch) in traffic_batches(&mut traffic, 1, BATCH_TRANSFERS * net.len()).iter().enumerate() {
        uncertified.record(batch, &submitter.submit(batch, live[i % live.len()]).await?)?;
    }
    ensure!(
        uncertified.rejected.is_empty() && uncertified.unknown.is_empty(),
        "with 3 of 4 up, batches must still commit: {uncertified:?}"
    );
    tokio::time::sleep(NO_CERTIFICATE_WINDOW).await;
    let mut applied = 0;
    for &i in &live {
        let tip = net.tip(i).await?;
        ensure!(
            tip.certified_height == Some(certified),
            "node {i} certified {:?} with only two honest validators up (was {certified})",
            tip.certified_height
        );
        applied = applied.max(tip.height.unwrap_or_default());
    }
    ensure!(applied > certified, "no block committed with 3 of 4 validators up (tip {applied})");
    for (k, &i) in live_honest.iter().enumerate() {
        let after = net.metric(i, SHARES_REJECTED)?;
        ensure!(after > before[k], "node {i} rejected no forged share while certification stalled ({after})");
    }
    println!("blocks {}..={applied} committed but not certified without a third honest share", certified + 1);
    acks.merge(uncertified);

    net.restart(victim)?;
    let (height, _) = net.wait_settled(&all, CERTIFY_TIMEOUT).await?;
    ensure!(height >= applied, "settled at {height}, below the committed {applied}");
    stop_and_verify(net, height, &acks)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_shares_neither_certify_nor_block_certification() {
    let options = NetworkOptions {
        node_env: vec![(FORGER, "REMIT__TESTING__FORGE_SHARES".into(), "true".into())],
        ..NetworkOptions::default()
    };
    let mut net = Network::start(options).await.expect("the network starts");
    let result = scenario(&mut net).await;
    net.finish(result);
}
