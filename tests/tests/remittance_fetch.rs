//! The fetch path for payment messages, on a 4-node network of real
//! `remitd` processes. The origin gw-us runs with
//! `REMIT__TESTING__SKIP_MESSAGE_PUSH=true`: it never pushes payment
//! messages, so each destination finds a certified transfer without its
//! message and must fetch it from gw-us (`FetchPaymentMessages`, one call for
//! all the transfers it misses from that origin).
//!
//! Checked: every remittance from gw-us to two destinations completes; the
//! origin's history goes `final` -> `completed` without `payout_pending`
//! (the origin never learnt that the destination held the message); each
//! destination's operator view shows the remittance completed with a payout
//! reference and exactly the receive amount the origin quoted; a remittance
//! the other way (gw-ph to gw-us, pushed as usual) completes through
//! `payout_pending`. Then every node is stopped and verified: every final
//! block certified, each acknowledged transfer on the chain exactly once,
//! value conserved per currency.

use std::time::Duration;

use anyhow::{ensure, Context};
use remit_proto::v1 as pb;
use remit_tests::net::{stop_and_verify, Acknowledged, Network, NetworkOptions};
use remit_tests::wallet::watch_to_end;

/// Node that never pushes messages (gw-us).
const SILENT_ORIGIN: usize = 0;
/// Remittances from the silent origin.
const REMITTANCES: usize = 6;
/// Longest a remittance may take to complete.
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(60);

/// The destination's operator view once it shows `completed`.
async fn completed_at_destination(net: &Network, node: usize, uetr: &str) -> anyhow::Result<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let view: serde_json::Value = net.operator_view(node, uetr).await?.error_for_status()?.json().await?;
        if view["status"] == "completed" {
            return Ok(view);
        }
        ensure!(tokio::time::Instant::now() < deadline, "{uetr} at the destination: {}", view["status"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn request(
    key: &str,
    quote: pb::CreateQuoteRequest,
    from_country: &str,
    to_country: &str,
) -> pb::CreateRemittanceRequest {
    pb::CreateRemittanceRequest {
        quote_id: String::new(),
        quote: Some(quote),
        originator: Some(pb::Party::person_with_account("Okafor", "Ngozi", "FETCH0001", from_country)),
        beneficiary: Some(pb::Party::person_with_account("Bautista", "Lea", "FETCH0002", to_country)),
        purpose: "FAMI".into(),
        idempotency_key: key.into(),
        remittance_information: String::new(),
    }
}

fn history(remittance: &pb::Remittance) -> Vec<&str> {
    remittance.history.iter().map(|change| change.status.as_str()).collect()
}

async fn scenario(net: &mut Network) -> anyhow::Result<()> {
    net.wait_ready().await?;
    let mut acks = Acknowledged::default();
    let mut silent = net.wallet(SILENT_ORIGIN).await?;
    // Alternate between gw-ph (node 1, PHP) and gw-mx (node 2, MXN).
    let destinations = [(1usize, "PH", "PHP"), (2, "MX", "MXN")];
    let mut created = Vec::new();
    for i in 0..REMITTANCES {
        let (node, country, currency) = destinations[i % destinations.len()];
        let quote = pb::CreateQuoteRequest::sending("US", "USD", country, currency, &format!("{}.00", 40 + i));
        let remittance =
            silent.create_remittance(request(&format!("fetch-{i}"), quote, "US", country)).await?.into_inner();
        acks.accepted.insert(remittance.uetr.parse()?);
        created.push((node, remittance));
    }
    for (node, remittance) in &created {
        let done = watch_to_end(&mut silent, &remittance.uetr, COMPLETE_TIMEOUT).await?;
        ensure!(done.status == "completed", "{} ended {} ({})", done.uetr, done.status, done.reason);
        ensure!(
            history(&done) == ["received", "submitted", "committed", "final", "completed"],
            "origin history {:?}",
            history(&done)
        );
        let paid = completed_at_destination(net, *node, &remittance.uetr).await?;
        let receive = done.receive_amount.as_ref().context("receive amount")?;
        ensure!(paid["receive_amount"]["value"] == receive.value.as_str(), "paid {}", paid["receive_amount"]);
        ensure!(paid["receive_amount"]["currency"] == receive.currency.as_str(), "paid {}", paid["receive_amount"]);
        let reference = paid["payout_reference"].as_str().unwrap_or_default();
        ensure!(!reference.is_empty(), "no payout reference at the destination: {paid}");
    }
    // The other way, pushed as usual.
    let mut pushing = net.wallet(1).await?;
    let quote = pb::CreateQuoteRequest::sending("PH", "PHP", "US", "USD", "5000.00");
    let back = pushing.create_remittance(request("push-back", quote, "PH", "US")).await?.into_inner();
    acks.accepted.insert(back.uetr.parse()?);
    let done = watch_to_end(&mut pushing, &back.uetr, COMPLETE_TIMEOUT).await?;
    ensure!(
        history(&done) == ["received", "submitted", "committed", "final", "payout_pending", "completed"],
        "pushed history {:?}",
        history(&done)
    );

    let everything: Vec<usize> = (0..net.len()).collect();
    let (height, _) = net.wait_settled(&everything, Duration::from_secs(30)).await?;
    stop_and_verify(net, height, &acks)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_fetch_messages_the_origin_never_pushed() {
    let options = NetworkOptions {
        node_env: vec![(SILENT_ORIGIN, "REMIT__TESTING__SKIP_MESSAGE_PUSH".into(), "true".into())],
        ..NetworkOptions::default()
    };
    let mut net = Network::start(options).await.expect("the network starts");
    let result = scenario(&mut net).await;
    net.finish(result);
}
