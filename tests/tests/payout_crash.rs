//! Exactly-once payouts across crashes: the destination gateway is killed
//! with SIGKILL again and again while it pays out.
//!
//! Five `remitd` processes: 4 validators (gw-us, gw-ph, gw-mx, gw-ke), which
//! are the origins, and one member gateway that is not a validator (gw-in),
//! the destination of every remittance. The origins send small
//! `SubmitRemittances` batches to gw-in for as long as the killer runs; one
//! remittance in ten goes to the devnet's closed account, which the
//! simulated bank refuses (AC04), so returns are paid out and reported too.
//! The killer SIGKILLs gw-in [`KILLS`] times at short, varying intervals and
//! restarts it on its data directory each time.
//!
//! Checked afterwards, with every node stopped:
//! - every acknowledged remittance ends on its origin `completed` (or
//!   `returned` AC04 for the closed account), with exactly one terminal
//!   status in its history;
//! - the simulated bank's book (`<data_dir>/simulated_bank.jsonl` of gw-in,
//!   read with `remit_gateway::payout::simulated::read_entries`) holds, for
//!   every UETR, exactly one outcome: one credit of exactly the origin's
//!   receive amount, or one refusal for the closed account; no UETR it never
//!   should; and no second payout request for any UETR (a `duplicate`
//!   entry: the gateway paid again instead of asking the bank);
//! - the ledger holds exactly one accepted payout report per UETR
//!   (`check_stored_ledger` refuses a UETR reported twice), `Completed` for
//!   the credited ones and `Returned(AC04)` for the refused ones, every
//!   acknowledged transfer once, and every data directory verifies;
//! - the kills caught work in flight: at least one restart resumed payouts
//!   or reports (the engine logs how many it resumed);
//! - no node wrote a panic to its log.
//!
//! The figures (kills, remittances, credits, refusals, credits per UETR,
//! duplicate requests, reports on the ledger) are printed.
//!
//! Against the engine before journalled in-flight payouts (a restart paid
//! every `payout_pending` remittance again) the book shows `duplicate`
//! requests and the test fails.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use remit_gateway::devnet::{local_currency, DEVNET_CLOSED_ACCOUNT};
use remit_gateway::payout::simulated::read_entries;
use remit_gateway::payout::{BookEntry, SIMULATED_BANK_FILE};
use remit_proto::v1 as pb;
use remit_settlement::{PayoutState, Uetr};
use remit_tests::net::{
    retryable, stop_and_verify, Acknowledged, Network, NetworkOptions, WalletClient, READY_TIMEOUT,
};
use rust_decimal::Decimal;

/// Node index of the destination (the member gateway after the 4 validators).
const DESTINATION: usize = 4;
/// SIGKILLs of the destination.
const KILLS: usize = 24;
/// Remittances per `SubmitRemittances` call.
const BATCH_REMITTANCES: usize = 2;
/// Pause of each origin's sender between calls, so the load spans the kills.
const BATCH_PAUSE: Duration = Duration::from_millis(700);
/// Bound on the remittances each origin sends.
const PER_ORIGIN_MAX: usize = 80;
/// Every tenth remittance goes to the closed account.
const CLOSED_EVERY: usize = 10;
/// How long the destination runs between a restart (once ready) and the
/// next kill, by kill number: varied, so kills land at different points.
const UP_TIMES_MS: [u64; 6] = [150, 420, 260, 600, 90, 330];
/// How long the destination stays down.
const DOWN_TIME: Duration = Duration::from_millis(150);
/// Bound on one wallet API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on every acknowledged remittance reaching a terminal status.
const TERMINAL_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on the network settling on one certified tip at the end.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll interval of the waits.
const POLL: Duration = Duration::from_millis(200);

/// One acknowledged remittance.
#[derive(Debug, Clone)]
struct Sent {
    origin: usize,
    to_closed: bool,
}

/// A participant as its wallet clients see it.
#[derive(Debug, Clone)]
struct Gateway {
    country: String,
    currency: String,
}

fn gateway(net: &Network, i: usize) -> anyhow::Result<Gateway> {
    let participant = net.participant(i)?;
    Ok(Gateway { country: participant.country.to_string(), currency: local_currency(participant).code().to_owned() })
}

fn request(origin: usize, n: usize, from: &Gateway, to: &Gateway) -> (pb::CreateRemittanceRequest, bool) {
    let to_closed = n % CLOSED_EVERY == CLOSED_EVERY - 1;
    let account = if to_closed { DEVNET_CLOSED_ACCOUNT.to_owned() } else { format!("IN{origin}X{n}") };
    let send = Decimal::from(20 + (origin * 7_919 + n * 613) % 480);
    let request = pb::CreateRemittanceRequest {
        quote_id: String::new(),
        quote: Some(pb::CreateQuoteRequest::sending(
            &from.country,
            &from.currency,
            &to.country,
            &to.currency,
            &send.to_string(),
        )),
        originator: Some(pb::Party::person_with_account("Sender", "Crash", &format!("S{origin}X{n}"), &from.country)),
        beneficiary: Some(pb::Party::person_with_account("Receiver", "Crash", &account, &to.country)),
        purpose: "FAMI".into(),
        idempotency_key: format!("payout-crash-{origin}-{n}"),
        remittance_information: String::new(),
    };
    (request, to_closed)
}

/// One origin's sender: batches until `stop` (or its bound), each retried
/// with the same keys until answered. Returns UETR -> what was sent.
async fn run_origin(
    client: WalletClient,
    origin: usize,
    from: Gateway,
    to: Gateway,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<(String, Sent)>> {
    let mut sent = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) && n < PER_ORIGIN_MAX {
        let batch: Vec<(pb::CreateRemittanceRequest, bool)> =
            (n..n + BATCH_REMITTANCES).map(|k| request(origin, k, &from, &to)).collect();
        n += BATCH_REMITTANCES;
        let call = pb::SubmitRemittancesRequest { remittances: batch.iter().map(|(r, _)| r.clone()).collect() };
        let mut attempts = 0;
        let results = loop {
            attempts += 1;
            ensure!(attempts <= 50, "origin {origin}: a batch unanswered after 50 attempts");
            match tokio::time::timeout(CALL_TIMEOUT, client.clone().submit_remittances(call.clone())).await {
                Ok(Ok(reply)) => {
                    let results = reply.into_inner().results;
                    if results.iter().all(|r| r.remittance.is_some()) {
                        break results;
                    }
                    let failed = results.iter().find(|r| r.remittance.is_none()).expect("one failed");
                    ensure!(
                        matches!(failed.error_code.as_str(), "INTERNAL" | "UNAVAILABLE"),
                        "origin {origin}: create refused: {} {} {}",
                        failed.error_code,
                        failed.error_field,
                        failed.error_message
                    );
                }
                Ok(Err(status)) if retryable(status.code()) => {}
                Ok(Err(status)) => bail!("origin {origin}: SubmitRemittances failed: {status:?}"),
                Err(_) => {}
            }
            tokio::time::sleep(POLL).await;
        };
        ensure!(results.len() == batch.len(), "origin {origin}: {} results for {}", results.len(), batch.len());
        for ((_, to_closed), result) in batch.iter().zip(results) {
            let remittance = result.remittance.context("answered")?;
            sent.push((remittance.uetr, Sent { origin, to_closed: *to_closed }));
        }
        tokio::time::sleep(BATCH_PAUSE).await;
    }
    Ok(sent)
}

/// Waits until node `i` answers `/readyz` with 200.
async fn wait_node_ready(net: &Network, i: usize) -> anyhow::Result<()> {
    let node = net.node(i);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let last = match http.get(format!("{}/readyz", node.ops_url)).send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => format!("/readyz: {}", response.status()),
            Err(error) => format!("/readyz: {error}"),
        };
        if tokio::time::Instant::now() > deadline {
            bail!("node {i} not ready within {READY_TIMEOUT:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The origin's view of `uetr` once terminal.
async fn terminal(client: &WalletClient, uetr: &str) -> anyhow::Result<pb::Remittance> {
    let deadline = tokio::time::Instant::now() + TERMINAL_TIMEOUT;
    loop {
        let record =
            client.clone().get_remittance(pb::GetRemittanceRequest { uetr: uetr.to_owned() }).await?.into_inner();
        if matches!(record.status.as_str(), "completed" | "returned" | "rejected" | "expired" | "cancelled") {
            return Ok(record);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{uetr} not terminal within {TERMINAL_TIMEOUT:?}: {}",
            record.status
        );
        tokio::time::sleep(POLL).await;
    }
}

/// What the bank's book holds for one UETR.
#[derive(Debug, Default)]
struct Booked {
    credits: Vec<(Decimal, String)>,
    refusals: Vec<String>,
    duplicates: usize,
}

fn read_book(net: &Network) -> anyhow::Result<HashMap<Uetr, Booked>> {
    let path = net.node(DESTINATION).data_dir.join(SIMULATED_BANK_FILE);
    let (entries, _) = read_entries(&path).with_context(|| path.display().to_string())?;
    let mut book: HashMap<Uetr, Booked> = HashMap::new();
    for entry in entries {
        let booked = book.entry(entry.uetr()).or_default();
        match entry {
            BookEntry::Paid { amount, currency, .. } => booked.credits.push((amount, currency.code().to_owned())),
            BookEntry::Refused { reason_code, .. } => booked.refusals.push(reason_code),
            BookEntry::Duplicate { .. } => booked.duplicates += 1,
        }
    }
    Ok(book)
}

/// How many times the destination's engine started, and how many of those
/// starts resumed work in flight (payouts, reports or message fetches:
/// `resumed=N`, N > 0, in the engine's start line).
fn starts_that_resumed(net: &Network) -> anyhow::Result<(usize, usize)> {
    let text = net.log(DESTINATION)?;
    let starts: Vec<u64> = text
        .lines()
        .filter(|line| line.contains("remittance engine started"))
        .filter_map(|line| {
            let at = line.find("resumed=")? + "resumed=".len();
            line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .collect();
    Ok((starts.len(), starts.iter().filter(|n| **n > 0).count()))
}

async fn scenario(net: &mut Network) -> anyhow::Result<()> {
    net.wait_ready().await?;
    wait_node_ready(net, DESTINATION).await?;
    let to = gateway(net, DESTINATION)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    let mut senders = Vec::new();
    for origin in 0..DESTINATION {
        let client = net.wallet(origin).await?;
        clients.push(client.clone());
        let from = gateway(net, origin)?;
        senders.push(tokio::spawn(run_origin(client, origin, from, to.clone(), stop.clone())));
    }

    // The killer: the destination dies while payouts run, again and again.
    for kill in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(UP_TIMES_MS[kill % UP_TIMES_MS.len()])).await;
        net.kill(DESTINATION)?;
        tokio::time::sleep(DOWN_TIME).await;
        net.restart(DESTINATION)?;
        wait_node_ready(net, DESTINATION).await?;
    }
    stop.store(true, Ordering::SeqCst);
    let mut sent: BTreeMap<String, Sent> = BTreeMap::new();
    for sender in senders {
        sent.extend(sender.await.context("a sender panicked")??);
    }
    println!("{KILLS} kills of node {DESTINATION}; {} remittances acknowledged", sent.len());

    // Every acknowledged remittance ends completed (returned for the closed account).
    let mut receive: HashMap<Uetr, (Decimal, String)> = HashMap::new();
    for (uetr, what) in &sent {
        let record = terminal(&clients[what.origin], uetr).await?;
        let expected = if what.to_closed { "returned" } else { "completed" };
        ensure!(record.status == expected, "{uetr}: ended {} ({}), expected {expected}", record.status, record.reason);
        let terminals = record.history.iter().filter(|c| matches!(c.status.as_str(), "completed" | "returned")).count();
        ensure!(terminals == 1, "{uetr}: {terminals} terminal statuses in its history");
        let amount = record.receive_amount.context("receive amount")?;
        receive.insert(uetr.parse()?, (Decimal::from_str(&amount.value)?, amount.currency));
    }

    // The bank's book: one outcome per UETR, no second request.
    let book = read_book(net)?;
    let (mut credits, mut refusals, mut duplicates) = (0, 0, 0);
    let mut per_uetr: BTreeMap<usize, usize> = BTreeMap::new();
    for (uetr, booked) in &book {
        duplicates += booked.duplicates;
        credits += booked.credits.len();
        refusals += booked.refusals.len();
        *per_uetr.entry(booked.credits.len()).or_default() += 1;
        ensure!(receive.contains_key(uetr), "the bank holds {uetr}, which no origin acknowledged");
    }
    println!(
        "bank book: {} UETRs, {credits} credits, {refusals} refusals, {duplicates} second payout requests; \
         UETRs by credits: {per_uetr:?}",
        book.len()
    );
    for (uetr, what) in &sent {
        let uetr: Uetr = uetr.parse()?;
        let booked = book.get(&uetr).with_context(|| format!("{uetr}: not in the bank's book"))?;
        ensure!(booked.duplicates == 0, "{uetr}: asked to pay {} more time(s) after the first", booked.duplicates);
        if what.to_closed {
            ensure!(booked.credits.is_empty() && booked.refusals == ["AC04"], "{uetr}: {booked:?}");
        } else {
            ensure!(booked.refusals.is_empty(), "{uetr}: refused {:?}", booked.refusals);
            ensure!(booked.credits.len() == 1, "{uetr}: credited {} times", booked.credits.len());
            ensure!(
                booked.credits[0] == receive[&uetr],
                "{uetr}: credited {:?}, quoted {:?}",
                booked.credits[0],
                receive[&uetr]
            );
        }
    }

    let (starts, resumed) = starts_that_resumed(net)?;
    println!("destination engine started {starts} times; {resumed} starts resumed work in flight");
    ensure!(resumed > 0, "no restart found work in flight: the kills caught no payout");

    // The ledger: one report per UETR, completion or AC04 return.
    let everything: Vec<usize> = (0..net.len()).collect();
    let (height, _) = net.wait_settled(&everything, SETTLE_TIMEOUT).await?;
    let mut acks = Acknowledged::default();
    for uetr in sent.keys() {
        acks.accepted.insert(uetr.parse()?);
    }
    let ledgers = stop_and_verify(net, height, &acks)?;
    let payouts = &ledgers[0].stored.payouts;
    let (mut completed, mut returned) = (0, 0);
    for (uetr, what) in &sent {
        let uetr: Uetr = uetr.parse()?;
        let state = payouts.get(&uetr).with_context(|| format!("{uetr}: no payout report on the ledger"))?;
        match state {
            PayoutState::Completed if !what.to_closed => completed += 1,
            PayoutState::Returned(reason) if what.to_closed && reason.as_str() == "AC04" => returned += 1,
            other => bail!("{uetr}: reported {other:?} on the ledger"),
        }
    }
    ensure!(payouts.len() == sent.len(), "{} payout reports for {} remittances", payouts.len(), sent.len());
    println!(
        "ledger: {} payout reports, one per UETR: {completed} completed, {returned} returned (AC04)",
        payouts.len()
    );
    net.no_node_panicked()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_sigkilled_during_payouts_pays_and_reports_each_uetr_once() {
    let options = NetworkOptions { gateways: 1, ..NetworkOptions::default() };
    let mut net = Network::start(options).await.expect("the network starts");
    let result = scenario(&mut net).await;
    net.finish(result);
}
