//! A bounded journal with real `remitd` processes: terminal remittances
//! leave memory for the archive, sealed segments fold into a snapshot, and
//! a restart still answers for every remittance.
//!
//! gw-us (node 0) and gw-ph (node 1) run with
//! `REMIT__REMITTANCE__JOURNAL_CHECKPOINT_BYTES=4096` and
//! `REMIT__REMITTANCE__TERMINAL_RETENTION_S=1`. gw-us sends a first round of
//! remittances to completion, waits until its sweep archived them, sends a
//! second round (so segments holding the `archived` event are sealed and
//! checkpointed), then waits for a snapshot. It is SIGKILLed and restarted:
//! - GET and watch of every first-round remittance (archived) answer
//!   `completed`; a retry of a first-round create with the same key and
//!   request returns the same UETR (no second remittance);
//! - the list of the client's remittances holds each UETR exactly once;
//! - the journal directory holds a snapshot, no `journal.log` (segment 0 was
//!   folded into it), and fewer bytes than the sealed segments written.
//!
//! Then every node is stopped and verified, each remittance on the chain
//! exactly once.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context};
use remit_proto::v1 as pb;
use remit_tests::net::{stop_and_verify, Acknowledged, Network, NetworkOptions};
use remit_tests::wallet::{remittance_request, send_and_complete, watch_to_end};

const ORIGIN: usize = 0;
const ROUND: usize = 6;
const CHECKPOINT_BYTES: u64 = 4_096;
const TIMEOUT: Duration = Duration::from_secs(60);
const CORRIDOR: (&str, &str, &str, &str) = ("US", "USD", "PH", "PHP");

fn request(key: &str, amount: &str) -> pb::CreateRemittanceRequest {
    let quote = pb::CreateQuoteRequest::sending("US", "USD", "PH", "PHP", amount);
    remittance_request(key, quote, "US", "PH")
}

/// (sequence numbers of segments, of snapshots, bytes of both) in `dir`.
fn journal_files(dir: &Path) -> anyhow::Result<(Vec<u64>, Vec<u64>, u64)> {
    let (mut segments, mut snapshots, mut bytes) = (Vec::new(), Vec::new(), 0);
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let seq = if name == "journal.log" {
            segments.push(0);
            true
        } else if let Some(seq) = name.strip_prefix("journal-").and_then(|s| s.strip_suffix(".log")) {
            segments.push(seq.parse()?);
            true
        } else if let Some(seq) = name.strip_prefix("snapshot-").and_then(|s| s.strip_suffix(".snap")) {
            snapshots.push(seq.parse()?);
            true
        } else {
            false
        };
        if seq {
            bytes += entry.metadata()?.len();
        }
    }
    segments.sort_unstable();
    snapshots.sort_unstable();
    Ok((segments, snapshots, bytes))
}

async fn send_round(
    net: &Network,
    round: usize,
    acks: &mut Acknowledged,
) -> anyhow::Result<Vec<(String, String, String)>> {
    let mut sent = Vec::new();
    for i in 0..ROUND {
        let key = format!("archive-{round}-{i}");
        let amount = format!("{}.00", 50 + i);
        let done = send_and_complete(net, ORIGIN, 1, CORRIDOR, &amount, &key).await?;
        acks.accepted.insert(done.uetr.parse()?);
        sent.push((done.uetr, key, amount));
    }
    Ok(sent)
}

async fn wait_for(what: &str, mut check: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !check()? {
        ensure!(tokio::time::Instant::now() < deadline, "{what} did not happen within {TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn scenario(net: &mut Network) -> anyhow::Result<()> {
    net.wait_ready().await?;
    let dir = net.node(ORIGIN).data_dir.join("gateway");
    let mut acks = Acknowledged::default();
    let first = send_round(net, 0, &mut acks).await?;
    wait_for("the sweep archiving the first round", || {
        let log = net.log(ORIGIN)?;
        Ok(log.lines().filter(|line| line.contains("sweep") && line.contains("archived")).count() > 0)
    })
    .await?;
    let second = send_round(net, 1, &mut acks).await?;
    wait_for("a checkpoint folding segment 0", || {
        let (segments, snapshots, _) = journal_files(&dir)?;
        Ok(!snapshots.is_empty() && segments.first().is_some_and(|&first| first > 0))
    })
    .await?;
    net.kill(ORIGIN)?;
    let (segments, snapshots, bytes) = journal_files(&dir)?;
    let newest = *segments.last().context("no segment")?;
    // Every segment before the newest was sealed past CHECKPOINT_BYTES.
    let written = newest * CHECKPOINT_BYTES;
    ensure!(bytes < written, "{bytes} bytes on disk for more than {written} written ({segments:?}, {snapshots:?})");
    ensure!(dir.join("archive").is_dir(), "no archive directory");

    net.restart(ORIGIN)?;
    net.wait_ready().await?;
    let mut wallet = net.wallet(ORIGIN).await?;
    for (uetr, key, amount) in &first {
        let got = wallet.get_remittance(pb::GetRemittanceRequest { uetr: uetr.clone() }).await?.into_inner();
        ensure!(got.status == "completed", "archived {uetr} is {} after the restart", got.status);
        let watched = watch_to_end(&mut wallet, uetr, Duration::from_secs(10)).await?;
        ensure!(watched.status == "completed", "watch of archived {uetr}: {}", watched.status);
        let again = wallet.create_remittance(request(key, amount)).await?.into_inner();
        ensure!(again.uetr == *uetr, "a retry of {key} made {} instead of returning {uetr}", again.uetr);
    }
    let listed = wallet
        .list_remittances(pb::ListRemittancesRequest { page_size: 100, ..Default::default() })
        .await?
        .into_inner();
    let mut uetrs: Vec<&str> = listed.remittances.iter().map(|r| r.uetr.as_str()).collect();
    uetrs.sort_unstable();
    let mut expected: Vec<&str> = first.iter().chain(&second).map(|(uetr, _, _)| uetr.as_str()).collect();
    expected.sort_unstable();
    ensure!(uetrs == expected, "listed {uetrs:?}, sent {expected:?}");
    let (_, snapshots, _) = journal_files(&dir)?;
    ensure!(!snapshots.is_empty(), "no snapshot after the restart");

    let everything: Vec<usize> = (0..net.len()).collect();
    let (height, _) = net.wait_settled(&everything, TIMEOUT).await?;
    stop_and_verify(net, height, &acks)?;
    net.no_node_panicked()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_remittances_and_a_checkpointed_journal_survive_a_restart() {
    let mut node_env = Vec::new();
    for node in [ORIGIN, 1] {
        node_env.push((node, "REMIT__REMITTANCE__JOURNAL_CHECKPOINT_BYTES".into(), CHECKPOINT_BYTES.to_string()));
        node_env.push((node, "REMIT__REMITTANCE__TERMINAL_RETENTION_S".into(), "1".into()));
    }
    let options = NetworkOptions { node_env, ..NetworkOptions::default() };
    let mut net = Network::start(options).await.expect("the network starts");
    let result = scenario(&mut net).await;
    net.finish(result);
}
