//! Member gateways that are not validators, on a 6-node network of real
//! `remitd` processes: 4 validators (gw-us, gw-ph, gw-mx, gw-ke) and 2
//! gateways (gw-in, gw-gb) that follow the certified chain from the
//! validators and submit through them.
//!
//! Checked:
//! - the gateways report themselves as gateways (`/readyz`), know the
//!   validators' leader, and are not leaders (`remit_is_leader` 0);
//! - validator gw-us lies to followers (`REMIT__TESTING__SERVE_ALTERED_BLOCKS`:
//!   blocks with a transfer's commitment changed under the certified
//!   header); a gateway restarted while every validator is up asks it first,
//!   refuses what it serves (`remit_blocks_refused_total`) and follows an
//!   honest validator instead;
//! - remittances complete from a gateway to a validator (gw-in -> gw-ph),
//!   from a validator to a gateway (gw-us -> gw-gb) and between gateways
//!   (gw-in -> gw-gb), each paid by its destination with exactly the quoted
//!   receive amount;
//! - a gateway killed with SIGKILL while others transact restarts on its
//!   data directory, catches up from the validators and receives again;
//! - stopped, every data directory, the gateways' included, passes
//!   `remit ledger verify --dir` to the same certified tip, with every
//!   acknowledged transfer exactly once and value conserved per currency.

use std::time::Duration;

use anyhow::{ensure, Context};
use remit_tests::net::{http_get, parse_metric, stop_and_verify, Acknowledged, Network, NetworkOptions};
use remit_tests::wallet::send_and_complete;

/// Node indexes: validators 0-3, then the gateways.
const GW_US: usize = 0;
const GW_PH: usize = 1;
const GW_IN: usize = 4;
const GW_GB: usize = 5;

async fn scenario(net: &mut Network) -> anyhow::Result<()> {
    let leader = net.wait_ready().await?;
    for gateway in [GW_IN, GW_GB] {
        let ready = http_get(&net.node(gateway).ops_url, "/readyz")?;
        ensure!(ready.starts_with("ready: gateway,"), "node {gateway} /readyz: {ready}");
        ensure!(ready.contains(&format!("leader {leader}")), "node {gateway} /readyz: {ready}");
        let metrics = http_get(&net.node(gateway).ops_url, "/metrics")?;
        ensure!(parse_metric(&metrics, "remit_is_leader") == Some(0.0), "gateway {gateway} claims to lead");
    }
    let mut acks = Acknowledged::default();
    let mut record = |remittance: &remit_proto::v1::Remittance| -> anyhow::Result<()> {
        acks.accepted.insert(remittance.uetr.parse().context("a UETR")?);
        Ok(())
    };
    let to_validator = send_and_complete(net, GW_IN, GW_PH, ("IN", "INR", "PH", "PHP"), "25000.00", "gw-1").await?;
    record(&to_validator)?;
    let to_gateway = send_and_complete(net, GW_US, GW_GB, ("US", "USD", "GB", "GBP"), "310.00", "gw-2").await?;
    record(&to_gateway)?;
    let between = send_and_complete(net, GW_IN, GW_GB, ("IN", "INR", "GB", "GBP"), "18000.00", "gw-3").await?;
    record(&between)?;

    // A gateway killed while the others transact catches up on restart.
    net.kill(GW_GB)?;
    for i in 0..3 {
        let done = send_and_complete(
            net,
            GW_US,
            GW_PH,
            ("US", "USD", "PH", "PHP"),
            &format!("{}.00", 50 + i),
            &format!("gw-4-{i}"),
        )
        .await?;
        record(&done)?;
    }
    net.restart(GW_GB)?;
    let again = send_and_complete(net, GW_IN, GW_GB, ("IN", "INR", "GB", "GBP"), "9000.00", "gw-5").await?;
    record(&again)?;

    let refused = net.metric(GW_GB, "remit_blocks_refused_total")?;
    ensure!(refused >= 1.0, "the restarted gateway took the lying validator's blocks (refused {refused})");
    let everything: Vec<usize> = (0..net.len()).collect();
    let (height, _) = net.wait_settled(&everything, Duration::from_secs(60)).await?;
    let ledgers = stop_and_verify(net, height, &acks)?;
    ensure!(ledgers.len() == 6, "six data directories verified");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_that_are_not_validators_send_receive_and_verify() {
    let options = NetworkOptions {
        gateways: 2,
        node_env: vec![(GW_US, "REMIT__TESTING__SERVE_ALTERED_BLOCKS".into(), "true".into())],
        ..NetworkOptions::default()
    };
    let mut net = Network::start(options).await.expect("the network starts");
    let result = scenario(&mut net).await;
    net.finish(result);
}
