//! A damaged gateway journal, with real `remitd` processes.
//!
//! gw-us (node 0) sends three remittances to gw-ph, each to completion (and
//! paid exactly once at the destination), so its
//! journal holds many acknowledged frames; it is then stopped and:
//! - one byte in the payload of a frame in the middle of its journal is
//!   flipped: restarted, `remitd` exits non-zero by itself and its log names
//!   the journal file and the bad frame's byte offset; the file is left as
//!   it was (nothing acknowledged is cut off);
//! - the journal is restored and given a torn tail instead (the header and
//!   first bytes of a frame that a crash cut short, never acknowledged):
//!   restarted, the node starts, cuts the tail off and still serves the
//!   three remittances as completed.
//!
//! Then every node is stopped and every data directory verifies, with the
//! three remittances as the chain's transfers exactly once.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context};
use remit_proto::v1 as pb;
use remit_tests::net::{stop_and_verify, Acknowledged, Network, NetworkOptions};
use remit_tests::wallet::send_and_complete;

const ORIGIN: usize = 0;
const REMITTANCES: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes before the first frame (the file's magic).
const MAGIC_BYTES: usize = 8;

fn journal_path(net: &Network) -> PathBuf {
    net.node(ORIGIN).data_dir.join("gateway").join("journal.log")
}

/// Byte offsets of the frames of a whole journal.
fn frame_offsets(bytes: &[u8]) -> anyhow::Result<Vec<usize>> {
    let mut offsets = Vec::new();
    let mut at = MAGIC_BYTES;
    while at < bytes.len() {
        offsets.push(at);
        let size = u32::from_le_bytes(bytes[at..at + 4].try_into()?) as usize;
        at += 8 + size;
    }
    ensure!(at == bytes.len(), "the journal does not end on a frame boundary");
    Ok(offsets)
}

async fn scenario(net: &mut Network) -> anyhow::Result<()> {
    net.wait_ready().await?;
    let mut acks = Acknowledged::default();
    let mut uetrs = Vec::new();
    for i in 0..REMITTANCES {
        let amount = format!("{}.00", 60 + i);
        let done =
            send_and_complete(net, ORIGIN, 1, ("US", "USD", "PH", "PHP"), &amount, &format!("journal-{i}")).await?;
        acks.accepted.insert(done.uetr.parse()?);
        uetrs.push(done.uetr);
    }
    net.stop(ORIGIN)?;

    let path = journal_path(net);
    let good = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let offsets = frame_offsets(&good)?;
    ensure!(offsets.len() >= 4, "only {} frames in the journal", offsets.len());
    let bad = offsets[offsets.len() / 2];
    let mut damaged = good.clone();
    damaged[bad + 8 + 2] ^= 0x20;
    std::fs::write(&path, &damaged)?;
    net.restart(ORIGIN)?;
    let status = net.wait_exit(ORIGIN, TIMEOUT).context("remitd should refuse the damaged journal")?;
    ensure!(!status.success(), "remitd exited {status} on a damaged journal");
    let log = net.log(ORIGIN)?;
    let named = format!("{}: frame at byte {bad}", path.display());
    ensure!(log.contains(&named), "the log does not say `{named}`:\n{}", &log[log.len().saturating_sub(2_000)..]);
    ensure!(std::fs::read(&path)? == damaged, "the damaged journal was changed");

    // A torn tail: a frame header claiming 200 bytes, and 17 of them.
    let mut torn = good.clone();
    torn.extend_from_slice(&200u32.to_le_bytes());
    torn.extend_from_slice(&0x1234_5678u32.to_le_bytes());
    torn.extend_from_slice(&[b'['; 17]);
    std::fs::write(&path, &torn)?;
    net.restart(ORIGIN)?;
    net.wait_ready().await?;
    // Cut exactly there: the file is the good journal, then whole frames
    // the node appended since (none of them the torn one).
    let now = std::fs::read(&path)?;
    ensure!(now.starts_with(&good), "the acknowledged frames changed");
    let appended = frame_offsets(&now)?.into_iter().filter(|&at| at >= good.len()).collect::<Vec<_>>();
    ensure!(
        appended.iter().all(|&at| now[at..at + 8] != torn[good.len()..good.len() + 8]),
        "the torn frame is still there"
    );
    let mut wallet = net.wallet(ORIGIN).await?;
    for uetr in &uetrs {
        let remittance = wallet.get_remittance(pb::GetRemittanceRequest { uetr: uetr.clone() }).await?.into_inner();
        ensure!(remittance.status == "completed", "{uetr} is {} after the restart", remittance.status);
    }

    let everything: Vec<usize> = (0..net.len()).collect();
    let (height, _) = net.wait_settled(&everything, TIMEOUT).await?;
    stop_and_verify(net, height, &acks)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_journal_stops_the_node_and_a_torn_tail_is_recovered() {
    let mut net = Network::start(NetworkOptions::default()).await.expect("the network starts");
    let result = scenario(&mut net).await;
    net.finish(result);
}
