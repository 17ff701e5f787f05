//! Mutual TLS between validators and their trusted clients.
//!
//! A devnet prepared with `tls = true` (a network CA, one certificate per
//! node) runs four validators. Checked:
//! - the network certifies blocks over mTLS: batches submitted by a client
//!   presenting a certificate from the network's CA are acknowledged and
//!   every node reaches the same certified tip;
//! - a client presenting a certificate from another CA (made with
//!   `generate_tls` in another directory) is refused: GetTip and SubmitBatch
//!   fail, whether it trusts the network's CA or its own; a plaintext client
//!   is refused too; a fresh client with the network's certificate succeeds;
//! - the refused batch never reaches the ledger, and with every node
//!   stopped: every final block certified on every data directory, one
//!   chain, no acknowledged transfer lost or duplicated (nothing in the chain
//!   that was not acknowledged), value conserved per currency.

use std::time::Duration;

use anyhow::{ensure, Context};
use remit_gateway::node::peers::Client;
use remit_gateway::tls::{generate_tls, NodeTls, CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE};
use remit_proto::v1::{GetTipRequest, SubmitBatchRequest};
use remit_tests::net::{
    encode_batch, stop_and_verify, traffic_batches, Load, LoadOptions, Network, NetworkOptions, SubmitPolicy,
};

/// Rounds of traffic (one batch per participant each).
const ROUNDS: usize = 3;
/// Transfers per batch.
const BATCH_TRANSFERS: usize = 64;
/// Bound on one call of a client that should be refused.
const REFUSED_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on each wait for certification.
const CERTIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// Calls GetTip and SubmitBatch with `client`; both must fail.
async fn expect_refused(mut client: Client, who: &str, batch: Vec<u8>) -> anyhow::Result<()> {
    let tip = tokio::time::timeout(REFUSED_CALL_TIMEOUT, client.get_tip(GetTipRequest {})).await;
    ensure!(!matches!(tip, Ok(Ok(_))), "{who}: GetTip succeeded");
    let submit =
        tokio::time::timeout(REFUSED_CALL_TIMEOUT, client.submit_batch(SubmitBatchRequest { batch, forwarded: false }))
            .await;
    ensure!(!matches!(submit, Ok(Ok(_))), "{who}: SubmitBatch succeeded");
    let describe = |r: Result<String, tokio::time::error::Elapsed>| r.unwrap_or_else(|_| "timed out".into());
    println!(
        "{who}: refused (GetTip: {}; SubmitBatch: {})",
        describe(tip.map(|r| r.err().map(|s| format!("{:?} {}", s.code(), s.message())).unwrap_or_default())),
        describe(submit.map(|r| r.err().map(|s| format!("{:?} {}", s.code(), s.message())).unwrap_or_default()))
    );
    Ok(())
}

async fn scenario(net: &mut Network) -> anyhow::Result<()> {
    net.wait_ready().await?;
    let all: Vec<usize> = (0..net.len()).collect();
    let mut traffic = net.traffic(5)?;
    let load = Load::spawn(
        net.submitter(SubmitPolicy::default()),
        traffic_batches(&mut traffic, ROUNDS, BATCH_TRANSFERS * net.len()),
        LoadOptions { concurrency: 4, pause: Duration::ZERO },
    );
    let acks = load.join(Duration::from_secs(60)).await?;
    ensure!(acks.rejected.is_empty() && acks.unknown.is_empty(), "load over mTLS not acknowledged: {acks:?}");
    let (certified, _) = net.wait_settled(&all, CERTIFY_TIMEOUT).await?;
    ensure!(certified >= 1, "no block certified over mTLS");

    // Another CA's certificate, under the same participant name.
    let foreign = tempfile::tempdir()?;
    let name = net.node(0).name.clone();
    generate_tls(foreign.path(), std::slice::from_ref(&name)).context("generating a foreign CA")?;
    let (foreign_cert, foreign_key) =
        (foreign.path().join(&name).join(NODE_CERT_FILE), foreign.path().join(&name).join(NODE_KEY_FILE));
    let network_ca = net.keys_dir.join(CA_CERT_FILE);
    let trusting_network = NodeTls::load(&network_ca, &foreign_cert, &foreign_key)?;
    let trusting_own = NodeTls::load(&foreign.path().join(CA_CERT_FILE), &foreign_cert, &foreign_key)?;
    let refused_batch = traffic_batches(&mut traffic, 1, BATCH_TRANSFERS).remove(0);
    for target in [0, net.len() - 1] {
        let bytes = encode_batch(&refused_batch);
        expect_refused(
            net.client_with(target, Some(&trusting_network))?,
            &format!("foreign cert -> node {target}"),
            bytes.clone(),
        )
        .await?;
        expect_refused(
            net.client_with(target, Some(&trusting_own))?,
            &format!("foreign CA -> node {target}"),
            bytes.clone(),
        )
        .await?;
        expect_refused(net.client_with(target, None)?, &format!("plaintext -> node {target}"), bytes).await?;
        let mut good = net.client_with(target, net.tls())?;
        let tip = tokio::time::timeout(REFUSED_CALL_TIMEOUT, good.get_tip(GetTipRequest {})).await;
        let tip = tip.context("GetTip with the network's certificate timed out")??.into_inner();
        ensure!(tip.certified_height >= Some(certified), "node {target} reports certified {:?}", tip.certified_height);
    }

    let (height, _) = net.wait_settled(&all, CERTIFY_TIMEOUT).await?;
    stop_and_verify(net, height, &acks)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_certifies_and_refuses_foreign_certificates() {
    let options = NetworkOptions { tls: true, ..NetworkOptions::default() };
    let mut net = Network::start(options).await.expect("the network starts");
    let result = scenario(&mut net).await;
    net.finish(result);
}
