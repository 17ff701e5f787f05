//! Wallet-side helpers shared by the remittance tests: build a create
//! request, watch a remittance to its end, read a destination's operator view.

use std::time::Duration;

use anyhow::{bail, ensure};
use remit_proto::v1 as pb;
use tokio_stream::StreamExt;

use crate::net::{Network, WalletClient};

/// Statuses after which a remittance changes no more.
pub const TERMINAL: [&str; 5] = ["completed", "returned", "rejected", "expired", "cancelled"];

/// A create request with an inline quote, two persons as parties and the
/// given idempotency key.
pub fn remittance_request(
    key: &str,
    quote: pb::CreateQuoteRequest,
    from_country: &str,
    to_country: &str,
) -> pb::CreateRemittanceRequest {
    pb::CreateRemittanceRequest {
        quote_id: String::new(),
        quote: Some(quote),
        originator: Some(pb::Party::person_with_account("Okafor", "Ngozi", "WALLET0001", from_country)),
        beneficiary: Some(pb::Party::person_with_account("Bautista", "Lea", "WALLET0002", to_country)),
        purpose: "FAMI".into(),
        idempotency_key: key.into(),
        remittance_information: String::new(),
    }
}

/// Watches `uetr` at its origin until it reaches a terminal status.
pub async fn watch_to_end(wallet: &mut WalletClient, uetr: &str, timeout: Duration) -> anyhow::Result<pb::Remittance> {
    let mut stream = wallet.watch_remittance(pb::WatchRemittanceRequest { uetr: uetr.into() }).await?.into_inner();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut last = None;
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(update) => {
                    let update = update?;
                    if TERMINAL.contains(&update.status.as_str()) {
                        return Ok(update);
                    }
                    last = Some(update.status);
                }
                None => bail!("watch of {uetr} ended at {last:?}"),
            },
            () = &mut deadline => bail!("{uetr} not terminal within {timeout:?}: {last:?}"),
        }
    }
}

/// The destination's operator view of `uetr` once it shows `completed`.
pub async fn completed_at_destination(net: &Network, node: usize, uetr: &str) -> anyhow::Result<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let response = net.operator_view(node, uetr).await?;
        if response.status().is_success() {
            let view: serde_json::Value = response.json().await?;
            if view["status"] == "completed" {
                return Ok(view);
            }
            ensure!(tokio::time::Instant::now() < deadline, "{uetr} at the destination: {}", view["status"]);
        } else {
            ensure!(tokio::time::Instant::now() < deadline, "{uetr} at the destination: HTTP {}", response.status());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A corridor as the wallet API names it: source country and currency,
/// destination country and currency.
pub type Corridor<'a> = (&'a str, &'a str, &'a str, &'a str);

/// Creates one remittance at node `from` sending `amount` along `corridor`
/// and watches it to its terminal status.
pub async fn send(
    net: &Network,
    from: usize,
    corridor: Corridor<'_>,
    amount: &str,
    key: &str,
) -> anyhow::Result<pb::Remittance> {
    let (from_country, from_currency, to_country, to_currency) = corridor;
    let mut wallet = net.wallet(from).await?;
    let quote = pb::CreateQuoteRequest::sending(from_country, from_currency, to_country, to_currency, amount);
    let created =
        wallet.create_remittance(remittance_request(key, quote, from_country, to_country)).await?.into_inner();
    watch_to_end(&mut wallet, &created.uetr, Duration::from_secs(60)).await
}

/// [`send`], then checks the remittance completed and the destination node
/// `to_node` paid exactly the quoted receive amount.
pub async fn send_and_complete(
    net: &Network,
    from: usize,
    to_node: usize,
    corridor: Corridor<'_>,
    amount: &str,
    key: &str,
) -> anyhow::Result<pb::Remittance> {
    let done = send(net, from, corridor, amount, key).await?;
    ensure!(done.status == "completed", "{} from node {from} ended {} ({})", done.uetr, done.status, done.reason);
    let paid = completed_at_destination(net, to_node, &done.uetr).await?;
    let receive = done.receive_amount.clone().unwrap_or_default();
    ensure!(
        paid["receive_amount"]["value"] == receive.value.as_str()
            && paid["receive_amount"]["currency"] == receive.currency.as_str(),
        "node {to_node} paid {} for a quoted {receive:?}",
        paid["receive_amount"]
    );
    ensure!(!paid["payout_reference"].as_str().unwrap_or_default().is_empty(), "no payout reference: {paid}");
    Ok(done)
}
