//! Fail-stop on a failed durable write, with real `remitd` processes.
//!
//! Node 2 runs with `REMIT__TESTING__FAIL_LEDGER_WRITES_FROM_HEIGHT=6`: from
//! height 6 on, every ledger write fails there (as a full or failing disk
//! would). Checked:
//! - node 2 exits on its own with status 74 and logs the failed write
//!   ("stopping: a durable write failed"); its data directory then passes
//!   `remit ledger verify --dir` with a tip below 6 (nothing past the failed
//!   write, nothing half-written);
//! - the other three keep certifying (a quorum of 3 of 4);
//! - restarted without the fault, node 2 reopens its store (memory was never
//!   ahead of the disk), catches up and certifies with the others;
//! - stopped, every data directory verifies to one certified tip, with every
//!   acknowledged transfer exactly once.

use std::time::Duration;

use anyhow::{ensure, Context};
use remit_tests::net::{
    run_verify_cli, stop_and_verify, traffic_batches, Load, LoadOptions, Network, NetworkOptions, SubmitPolicy,
};

const FAULTY: usize = 2;
const FAIL_FROM_HEIGHT: u64 = 6;
const TIMEOUT: Duration = Duration::from_secs(60);
/// The exit status of `remitd` after a failed durable write (EX_IOERR).
const EXIT_DURABLE_WRITE_FAILED: i32 = 74;

async fn scenario(net: &mut Network) -> anyhow::Result<()> {
    net.wait_ready().await?;
    let mut traffic = net.traffic(5)?;
    let policy = SubmitPolicy { deadline: Duration::from_secs(40), ..SubmitPolicy::default() };
    let batches = traffic_batches(&mut traffic, 12, 64);
    let load =
        Load::spawn(net.submitter(policy), batches, LoadOptions { concurrency: 1, pause: Duration::from_millis(60) });
    let mut acks = load.join(TIMEOUT).await?;

    let status = net.wait_exit(FAULTY, TIMEOUT).context("the faulty node should stop on its own")?;
    ensure!(status.code() == Some(EXIT_DURABLE_WRITE_FAILED), "node {FAULTY} exited with {status}");
    let log = net.log(FAULTY)?;
    ensure!(log.contains("stopping: a durable write failed"), "no fail-stop line in node {FAULTY}'s log");
    let stored = run_verify_cli(&net.node(FAULTY).data_dir)?;
    ensure!(stored.tip_height < FAIL_FROM_HEIGHT, "node {FAULTY} stored {stored:?} past the failing height");

    let others: Vec<usize> = (0..net.len()).filter(|&i| i != FAULTY).collect();
    let tips = net.wait_certified(&others, FAIL_FROM_HEIGHT + 2, TIMEOUT).await?;
    let certified = tips.iter().filter_map(|t| t.certified_height).min().unwrap_or_default();
    println!("the others certified up to {certified} without node {FAULTY}");

    net.clear_env(FAULTY);
    net.restart(FAULTY)?;
    let batches = traffic_batches(&mut traffic, 3, 64);
    let load =
        Load::spawn(net.submitter(policy), batches, LoadOptions { concurrency: 1, pause: Duration::from_millis(60) });
    acks.merge(load.join(TIMEOUT).await?);
    ensure!(acks.rejected.is_empty(), "transfers rejected: {:?}", &acks.rejected[..acks.rejected.len().min(5)]);
    let all: Vec<usize> = (0..net.len()).collect();
    let (height, _) = net.wait_settled(&all, TIMEOUT).await?;
    ensure!(height > certified, "nothing certified after the restart");
    stop_and_verify(net, height, &acks)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_durable_write_stops_the_node_and_it_recovers() {
    let node_env =
        vec![(FAULTY, "REMIT__TESTING__FAIL_LEDGER_WRITES_FROM_HEIGHT".to_owned(), FAIL_FROM_HEIGHT.to_string())];
    let mut net =
        Network::start(NetworkOptions { node_env, ..NetworkOptions::default() }).await.expect("the network starts");
    let result = scenario(&mut net).await;
    net.finish(result);
}
