//! SIGKILL of a gateway with remittances in flight: none is lost, none is
//! duplicated, none is reported paid twice.
//!
//! Four `remitd` processes; every gateway is an origin. Each sends batches of
//! remittances (`SubmitRemittances`, priced inline at current rates, one
//! idempotency key per remittance) to the three others in turn, so one third
//! of all remittances are paid out by the gateway that is killed. The victim
//! is the node after the Raft leader (a gateway that is origin and
//! destination, not the leader). It is killed with SIGKILL once it was sent
//! its third batch and a remittance to or from it was acknowledged after that
//! (so one is always in flight), while the other origins keep sending (to it
//! too: they hold their fourth batch until the kill, so they are still
//! sending however slow the machine), then restarted on its data directory.
//!
//! Checked:
//! - every create gets an answer: those whose answer was lost or failed are
//!   retried with the same key and request until answered, and only
//!   `INTERNAL` / `UNAVAILABLE` (or a lost call) may need a retry;
//! - idempotent across the restart: every create acknowledged (before the
//!   kill or after) sent again returns the same UETR;
//! - each origin lists exactly one remittance per idempotency key it was
//!   sent, with the acknowledged UETR, its own participant as origin, the
//!   planned destination and the planned send amount;
//! - every acknowledged remittance ends `completed` on its origin (exactly
//!   one `completed` in its history, never held, rejected, returned,
//!   cancelled or expired);
//! - the destination gateway holds the remittance (operator view) as
//!   `completed`, with a payout reference and the origin's send, receive and
//!   settlement amounts; the two other gateways do not hold it;
//! - the crash caught work in flight: some remittances to the victim, and
//!   some to or from it that were acknowledged before the kill, completed
//!   only after the restart;
//! - with every node stopped: each data directory verifies (CLI and in-process
//!   audit, one chain, every block certified), the chain holds exactly the
//!   acknowledged UETRs once each as transfers (nothing lost, nothing extra),
//!   exactly one accepted payout report per UETR, all `Completed`, each
//!   transfer from the origin to the destination for the settlement amount,
//!   and every participant's position equals the sum of the acknowledged
//!   settlement amounts it is owed less those it owes (value conserved; the
//!   positions also sum to zero per currency);
//! - no node wrote a panic to its log.
//!
//! "Paid once" is checked here where the gateway records it: one destination
//! record and one payout report per UETR; the simulated bank's own book
//! (`<data_dir>/simulated_bank.jsonl`) is checked across 24 kills in
//! `payout_crash.rs`.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use iso_currency::Currency;
use remit_gateway::devnet::local_currency;
use remit_gateway::node::clock::now_ms;
use remit_gateway::node::LEDGER_SUBDIR;
use remit_proto::v1 as pb;
use remit_settlement::chain::Chain;
use remit_settlement::store::SledLedgerStore;
use remit_settlement::{PayoutState, Uetr};
use remit_tests::net::{
    retryable, stop_and_verify, wallet_client, Acknowledged, Network, NetworkOptions, WalletClient, READY_TIMEOUT,
};
use rust_decimal::Decimal;
use tokio::sync::{oneshot, watch};

/// Batches each origin sends.
const BATCHES_PER_ORIGIN: usize = 6;
/// Remittances per `SubmitRemittances` call.
const BATCH_REMITTANCES: usize = 20;
/// Pause of each origin's sender between calls, so the load spans the kill.
const BATCH_PAUSE: Duration = Duration::from_millis(150);
/// The victim is killed while this (0-based) batch of its own is in flight.
const KILL_BATCH: usize = 2;
/// After the signal, how often the test looks for an acknowledged
/// remittance to or from the victim before killing it.
const KILL_POLL: Duration = Duration::from_millis(1);
/// How long the victim stays down.
const DOWN_TIME: Duration = Duration::from_secs(1);
/// Bound on one wallet API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on retrying every unanswered create after the restart.
const RETRY_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on every acknowledged remittance reaching a terminal status.
const TERMINAL_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on the network settling on one certified tip at the end.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a destination applying the block that completed a remittance
/// at its origin.
const DESTINATION_LAG_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll interval of the waits in this test.
const POLL: Duration = Duration::from_millis(200);
/// Every status that is not terminal.
const OPEN_STATUSES: &str = "received,compliance_hold,submitted,committed,final,payout_pending";

/// A gateway as its wallet clients see it.
#[derive(Debug, Clone)]
struct Gateway {
    id: String,
    country: String,
    currency: String,
}

/// One remittance the test sends.
#[derive(Debug, Clone)]
struct Planned {
    origin: usize,
    destination: usize,
    key: String,
    send: Decimal,
    request: pb::CreateRemittanceRequest,
}

/// What the wallet clients were told, shared by the senders.
#[derive(Debug, Default)]
struct Answers {
    /// Idempotency key -> acknowledged UETR.
    acked: BTreeMap<String, String>,
    /// Calls that failed as a whole (transport or status), for the report.
    calls_failed: usize,
    /// Creates answered with a retryable per-item error.
    items_failed: usize,
}

fn gateways(net: &Network) -> anyhow::Result<Vec<Gateway>> {
    (0..net.len())
        .map(|i| {
            let participant = net.participant(i)?;
            Ok(Gateway {
                id: net.node(i).name.clone(),
                country: participant.country.to_string(),
                currency: local_currency(participant).code().to_owned(),
            })
        })
        .collect()
}

/// Every remittance, and per origin its batches (indexes into the plan).
/// Destinations rotate over the other gateways; amounts are whole units
/// from a fixed formula.
fn plan(gateways: &[Gateway]) -> (Vec<Planned>, Vec<Vec<Vec<usize>>>) {
    let mut all = Vec::new();
    let mut batches = vec![Vec::new(); gateways.len()];
    for (origin, source) in gateways.iter().enumerate() {
        let others: Vec<usize> = (0..gateways.len()).filter(|&d| d != origin).collect();
        for b in 0..BATCHES_PER_ORIGIN {
            let mut batch = Vec::with_capacity(BATCH_REMITTANCES);
            for j in 0..BATCH_REMITTANCES {
                let n = b * BATCH_REMITTANCES + j;
                let destination = others[n % others.len()];
                let target = &gateways[destination];
                let send = Decimal::from(20 + (origin * 7_919 + n * 613) % 980);
                let key = format!("restart-{origin}-{b}-{j}");
                let request = pb::CreateRemittanceRequest {
                    quote_id: String::new(),
                    quote: Some(pb::CreateQuoteRequest::sending(
                        &source.country,
                        &source.currency,
                        &target.country,
                        &target.currency,
                        &send.to_string(),
                    )),
                    originator: Some(pb::Party::person_with_account(
                        "Sender",
                        "Restart",
                        &format!("S{origin}X{n}"),
                        &source.country,
                    )),
                    beneficiary: Some(pb::Party::person_with_account(
                        "Receiver",
                        "Restart",
                        &format!("R{origin}X{n}"),
                        &target.country,
                    )),
                    purpose: "FAMI".into(),
                    idempotency_key: key.clone(),
                    remittance_information: String::new(),
                };
                batch.push(all.len());
                all.push(Planned { origin, destination, key, send, request });
            }
            batches[origin].push(batch);
        }
    }
    (all, batches)
}

/// Records the answers to one call; returns the creates left unanswered.
/// A refusal other than a retryable fault fails the test.
fn record(
    plan: &[Planned],
    batch: &[usize],
    reply: pb::SubmitRemittancesResponse,
    answers: &Mutex<Answers>,
) -> anyhow::Result<Vec<usize>> {
    ensure!(reply.results.len() == batch.len(), "{} results for {} creates", reply.results.len(), batch.len());
    let mut answers = answers.lock().expect("answers lock is never poisoned");
    let mut unanswered = Vec::new();
    for (&i, result) in batch.iter().zip(reply.results) {
        let planned = &plan[i];
        match result.remittance {
            Some(remittance) => {
                ensure!(
                    remittance.idempotency_key == planned.key,
                    "create {} answered with key {}",
                    planned.key,
                    remittance.idempotency_key
                );
                ensure!(!remittance.uetr.is_empty(), "create {} answered without a UETR", planned.key);
                if let Some(first) = answers.acked.insert(planned.key.clone(), remittance.uetr.clone()) {
                    ensure!(
                        first == remittance.uetr,
                        "key {} acknowledged as {first}, then as {}",
                        planned.key,
                        remittance.uetr
                    );
                }
            }
            None if matches!(result.error_code.as_str(), "INTERNAL" | "UNAVAILABLE") => {
                answers.items_failed += 1;
                unanswered.push(i);
            }
            None => bail!(
                "create {} refused: {} {} {}",
                planned.key,
                result.error_code,
                result.error_field,
                result.error_message
            ),
        }
    }
    Ok(unanswered)
}

/// Sends `batch` once; returns the creates left without an answer.
async fn send_batch(
    client: &WalletClient,
    plan: &[Planned],
    batch: &[usize],
    answers: &Mutex<Answers>,
) -> anyhow::Result<Vec<usize>> {
    let request =
        pb::SubmitRemittancesRequest { remittances: batch.iter().map(|&i| plan[i].request.clone()).collect() };
    let mut client = client.clone();
    match tokio::time::timeout(CALL_TIMEOUT, client.submit_remittances(request)).await {
        Ok(Ok(reply)) => record(plan, batch, reply.into_inner(), answers),
        Ok(Err(status)) if retryable(status.code()) || status.code() == tonic::Code::Internal => {
            answers.lock().expect("answers lock is never poisoned").calls_failed += 1;
            Ok(batch.to_vec())
        }
        Ok(Err(status)) => bail!("SubmitRemittances failed: {status:?}"),
        Err(_) => {
            answers.lock().expect("answers lock is never poisoned").calls_failed += 1;
            Ok(batch.to_vec())
        }
    }
}

/// One origin's sender: every batch once, paced. The victim's sender
/// signals `kill` as soon as its batch [`KILL_BATCH`] is on its way; the
/// other senders send nothing after that batch until `killed` turns true, so
/// that however slowly the machine runs they are still sending at the kill
/// and after the restart.
async fn run_origin(
    client: WalletClient,
    plan: Arc<Vec<Planned>>,
    batches: Vec<Vec<usize>>,
    answers: Arc<Mutex<Answers>>,
    mut kill: Option<oneshot::Sender<()>>,
    mut killed: watch::Receiver<bool>,
) -> anyhow::Result<Vec<usize>> {
    let is_victim = kill.is_some();
    let mut unanswered = Vec::new();
    for (b, batch) in batches.into_iter().enumerate() {
        if b == KILL_BATCH + 1 && !is_victim {
            killed.wait_for(|killed| *killed).await.context("the scenario ended before the kill")?;
        }
        let call = {
            let (client, plan, answers) = (client.clone(), plan.clone(), answers.clone());
            tokio::spawn(async move { send_batch(&client, &plan, &batch, &answers).await })
        };
        if b == KILL_BATCH {
            if let Some(kill) = kill.take() {
                let _ = kill.send(());
            }
        }
        unanswered.extend(call.await.context("a sender call panicked")??);
        tokio::time::sleep(BATCH_PAUSE).await;
    }
    Ok(unanswered)
}

/// Waits until node `i` answers `/readyz` with 200 and its wallet API takes
/// connections; returns a wallet client to it.
async fn wait_gateway_ready(net: &Network, i: usize) -> anyhow::Result<WalletClient> {
    let node = net.node(i);
    let key = net.api_keys.get(&node.name).context("no API key for the node")?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let last = match http.get(format!("{}/readyz", node.ops_url)).send().await {
            Ok(response) if response.status().is_success() => match wallet_client(&node.api_url, key).await {
                Ok(client) => return Ok(client),
                Err(error) => format!("{error:#}"),
            },
            Ok(response) => format!("/readyz: {}", response.status()),
            Err(error) => format!("/readyz: {error}"),
        };
        if tokio::time::Instant::now() > deadline {
            bail!("node {i} not ready within {READY_TIMEOUT:?}: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Retries every create in `pending` (same key, same request) until each is
/// answered.
async fn retry_until_answered(
    clients: &[WalletClient],
    plan: &[Planned],
    mut pending: Vec<usize>,
    answers: &Mutex<Answers>,
) -> anyhow::Result<usize> {
    let deadline = tokio::time::Instant::now() + RETRY_TIMEOUT;
    let mut rounds = 0;
    while !pending.is_empty() {
        rounds += 1;
        let mut left = Vec::new();
        for (origin, client) in clients.iter().enumerate() {
            let mine: Vec<usize> = pending.iter().copied().filter(|&i| plan[i].origin == origin).collect();
            for batch in mine.chunks(BATCH_REMITTANCES) {
                left.extend(send_batch(client, plan, batch, answers).await?);
            }
        }
        pending = left;
        if !pending.is_empty() {
            if tokio::time::Instant::now() > deadline {
                bail!("{} creates still unanswered after {RETRY_TIMEOUT:?} of retries", pending.len());
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(rounds)
}

/// Sends every acknowledged create again: each must come back with the
/// UETR it was acknowledged with.
async fn check_idempotent(
    clients: &[WalletClient],
    plan: &[Planned],
    acked: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    for (origin, client) in clients.iter().enumerate() {
        let mine: Vec<&Planned> = plan.iter().filter(|p| p.origin == origin).collect();
        for chunk in mine.chunks(200) {
            let request =
                pb::SubmitRemittancesRequest { remittances: chunk.iter().map(|p| p.request.clone()).collect() };
            let reply = tokio::time::timeout(CALL_TIMEOUT, client.clone().submit_remittances(request))
                .await
                .context("repeat call timed out")??
                .into_inner();
            ensure!(reply.results.len() == chunk.len(), "{} results for {} repeats", reply.results.len(), chunk.len());
            for (planned, result) in chunk.iter().zip(reply.results) {
                let expected =
                    acked.get(&planned.key).with_context(|| format!("{} never acknowledged", planned.key))?;
                let got = result.remittance.map(|r| r.uetr).unwrap_or_default();
                ensure!(
                    got == *expected,
                    "repeat of {} on origin {origin}: {got:?} ({} {}), acknowledged as {expected}",
                    planned.key,
                    result.error_code,
                    result.error_message
                );
            }
        }
    }
    Ok(())
}

/// Waits until no remittance of any origin is in a non-terminal status.
async fn wait_terminal(clients: &[WalletClient]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + TERMINAL_TIMEOUT;
    loop {
        let mut open = Vec::new();
        for (origin, client) in clients.iter().enumerate() {
            let request =
                pb::ListRemittancesRequest { status: vec![OPEN_STATUSES.into()], page_size: 500, ..Default::default() };
            let page = client.clone().list_remittances(request).await?.into_inner();
            if let Some(first) = page.remittances.first() {
                open.push(format!(
                    "origin {origin}: {} open, e.g. {} {}",
                    page.remittances.len(),
                    first.uetr,
                    first.status
                ));
            }
        }
        if open.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("remittances not terminal within {TERMINAL_TIMEOUT:?}: {}", open.join("; "));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Every remittance an origin's wallet client sees, by idempotency key.
async fn list_all(client: &WalletClient) -> anyhow::Result<BTreeMap<String, pb::Remittance>> {
    let mut all = BTreeMap::new();
    let mut token = String::new();
    loop {
        let request = pb::ListRemittancesRequest { page_size: 500, page_token: token.clone(), ..Default::default() };
        let page = client.clone().list_remittances(request).await?.into_inner();
        for remittance in page.remittances {
            let key = remittance.idempotency_key.clone();
            if let Some(other) = all.insert(key.clone(), remittance) {
                bail!("two remittances with key {key}: {} and another", other.uetr);
            }
        }
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        token = page.next_page_token;
    }
}

fn decimal(amount: &Option<pb::Amount>, what: &str) -> anyhow::Result<(Decimal, String)> {
    let amount = amount.as_ref().with_context(|| format!("no {what}"))?;
    let value = Decimal::from_str(&amount.value).with_context(|| format!("{what} {:?}", amount.value))?;
    Ok((value, amount.currency.clone()))
}

/// The origin's record of every planned remittance, checked against the plan
/// and the acknowledged UETRs: one per key, completed once, never refused.
async fn check_origins(
    clients: &[WalletClient],
    gateways: &[Gateway],
    plan: &[Planned],
    acked: &BTreeMap<String, String>,
) -> anyhow::Result<HashMap<String, pb::Remittance>> {
    let mut records = HashMap::new();
    for (origin, client) in clients.iter().enumerate() {
        let mut listed = list_all(client).await?;
        let mine: Vec<&Planned> = plan.iter().filter(|p| p.origin == origin).collect();
        ensure!(
            listed.len() == mine.len(),
            "origin {origin} lists {} remittances, {} were sent",
            listed.len(),
            mine.len()
        );
        for planned in mine {
            let record =
                listed.remove(&planned.key).with_context(|| format!("origin {origin} lacks key {}", planned.key))?;
            let context = || format!("{} ({})", planned.key, record.uetr);
            ensure!(acked.get(&planned.key) == Some(&record.uetr), "{}: not the acknowledged UETR", context());
            ensure!(
                record.status == "completed" && record.iso_status == "ACCC",
                "{}: ended {}",
                context(),
                record.status
            );
            let statuses: Vec<&str> = record.history.iter().map(|c| c.status.as_str()).collect();
            ensure!(
                statuses.iter().filter(|s| **s == "completed").count() == 1
                    && statuses.iter().all(|s| {
                        matches!(*s, "received" | "submitted" | "committed" | "final" | "payout_pending" | "completed")
                    }),
                "{}: history {statuses:?}",
                context()
            );
            let (source, target) = (&gateways[origin], &gateways[planned.destination]);
            ensure!(
                record.origin == source.id && record.destination == target.id,
                "{}: {} -> {}, planned {} -> {}",
                context(),
                record.origin,
                record.destination,
                source.id,
                target.id
            );
            let send = decimal(&record.send_amount, "send amount")?;
            ensure!(send == (planned.send, source.currency.clone()), "{}: send amount {send:?}", context());
            let (receive, currency) = decimal(&record.receive_amount, "receive amount")?;
            ensure!(
                receive > Decimal::ZERO && currency == target.currency,
                "{}: receives {receive} {currency}",
                context()
            );
            records.insert(record.uetr.clone(), record);
        }
    }
    Ok(records)
}

/// The destination's operator view of every remittance: completed, paid,
/// with the origin's amounts; no third gateway holds it.
async fn check_destinations(
    net: &Network,
    gateways: &[Gateway],
    records: &HashMap<String, pb::Remittance>,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let node_of = |id: &str| gateways.iter().position(|g| g.id == id).with_context(|| format!("no gateway {id}"));
    let mut lagging = 0;
    for (uetr, origin_record) in records {
        let (origin, destination) = (node_of(&origin_record.origin)?, node_of(&origin_record.destination)?);
        for node in 0..net.len() {
            if node == origin {
                continue;
            }
            let url = format!("{}/ops/remittances/{uetr}", net.node(node).ops_url);
            let response = http.get(&url).bearer_auth(net.operator_token(node)?).send().await?;
            if node != destination {
                ensure!(
                    response.status() == 404,
                    "node {node} holds {uetr} ({}), not its destination",
                    response.status()
                );
                continue;
            }
            let mut view: pb::Remittance = response.error_for_status()?.json().await.with_context(|| url.clone())?;
            // The origin's `completed` comes from the certified report; the
            // destination applies the same block on its own scan, which a
            // restarted destination may still be catching up on.
            let is_open = |status: &str| OPEN_STATUSES.split(',').any(|s| s == status);
            lagging += usize::from(is_open(&view.status));
            let deadline = tokio::time::Instant::now() + DESTINATION_LAG_TIMEOUT;
            while is_open(&view.status) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(POLL).await;
                let response = http.get(&url).bearer_auth(net.operator_token(node)?).send().await?;
                view = response.error_for_status()?.json().await.with_context(|| url.clone())?;
            }
            let context = || format!("{uetr} at its destination (node {node})");
            ensure!(view.uetr == *uetr && view.status == "completed", "{}: {}", context(), view.status);
            ensure!(!view.payout_reference.is_empty(), "{}: no payout reference", context());
            ensure!(
                view.origin == origin_record.origin && view.destination == origin_record.destination,
                "{}: {} -> {}",
                context(),
                view.origin,
                view.destination
            );
            for (what, here, there) in [
                ("receive", &view.receive_amount, &origin_record.receive_amount),
                ("send", &view.send_amount, &origin_record.send_amount),
                ("settlement", &view.settlement_amount, &origin_record.settlement_amount),
            ] {
                ensure!(here == there, "{}: {what} amount {here:?}, the origin says {there:?}", context());
            }
        }
    }
    println!("{lagging} destinations had not yet applied the completion their origin had");
    Ok(())
}

/// The stopped network's ledger against the acknowledged remittances.
fn check_ledger(net: &mut Network, height: u64, records: &HashMap<String, pb::Remittance>) -> anyhow::Result<()> {
    let mut acks = Acknowledged::default();
    for uetr in records.keys() {
        acks.accepted.insert(uetr.parse()?);
    }
    // Every node verifies and holds exactly the acknowledged UETRs, once each.
    let ledgers = stop_and_verify(net, height, &acks)?;
    for ledger in &ledgers {
        ensure!(
            ledger.stored.accepted.len() == records.len(),
            "node {}: {} transfers, {} acknowledged",
            ledger.node,
            ledger.stored.accepted.len(),
            records.len()
        );
        // `check_stored_ledger` refuses a UETR reported twice; here every
        // transfer has its one report, a completion.
        ensure!(
            ledger.stored.payouts.len() == records.len(),
            "node {}: {} payout reports",
            ledger.node,
            ledger.stored.payouts.len()
        );
        ensure!(
            ledger.stored.payouts.values().all(|p| *p == PayoutState::Completed),
            "node {}: a payout report is not a completion",
            ledger.node
        );
    }
    let store = SledLedgerStore::open(&net.node(0).data_dir.join(LEDGER_SUBDIR))?;
    let chain = Chain::open(store, Some(&net.network))?;
    let state = chain.state();
    let mut expected: BTreeMap<(String, Currency), Decimal> = BTreeMap::new();
    for (uetr, record) in records {
        let transfer =
            state.applied_transfer(&uetr.parse::<Uetr>()?).with_context(|| format!("{uetr} not on the ledger"))?;
        let (amount, currency) = decimal(&record.settlement_amount, "settlement amount")?;
        ensure!(
            transfer.origin.as_str() == record.origin
                && transfer.destination.as_str() == record.destination
                && transfer.amount.amount() == amount
                && transfer.amount.currency().code() == currency
                && transfer.payout == PayoutState::Completed,
            "{uetr}: ledger has {} -> {} {} {:?}, the origin {} -> {} {amount} {currency}",
            transfer.origin,
            transfer.destination,
            transfer.amount,
            transfer.payout,
            record.origin,
            record.destination
        );
        let currency = transfer.amount.currency();
        *expected.entry((record.origin.clone(), currency)).or_default() -= amount;
        *expected.entry((record.destination.clone(), currency)).or_default() += amount;
    }
    for participant in state.participants() {
        for currency in &participant.settlement_currencies {
            let want = expected.get(&(participant.id.to_string(), *currency)).copied().unwrap_or_default();
            let have = state.position(&participant.id, *currency);
            ensure!(
                have == want,
                "position of {} in {}: {have}, the remittances give {want}",
                participant.id,
                currency.code()
            );
        }
    }
    let total: Decimal = expected.values().copied().filter(|v| *v > Decimal::ZERO).sum();
    println!("ledger: {} transfers, each completed once; {total} owed across the network", records.len());
    drop(chain);
    Ok(())
}

async fn scenario(net: &mut Network) -> anyhow::Result<()> {
    let leader = net.wait_ready().await?;
    let victim = (leader + 1) % net.len();
    let gateways = gateways(net)?;
    let (plan, batches) = plan(&gateways);
    let plan = Arc::new(plan);
    println!(
        "{} remittances from every gateway; leader {leader}, victim node {victim} ({})",
        plan.len(),
        gateways[victim].id
    );

    let answers = Arc::new(Mutex::new(Answers::default()));
    let (kill_tx, kill_rx) = oneshot::channel();
    let mut kill_tx = Some(kill_tx);
    let (killed_tx, killed_rx) = watch::channel(false);
    let mut senders = Vec::new();
    for (origin, batches) in batches.into_iter().enumerate() {
        let client = net.wallet(origin).await?;
        let kill = if origin == victim { kill_tx.take() } else { None };
        senders.push(tokio::spawn(run_origin(client, plan.clone(), batches, answers.clone(), kill, killed_rx.clone())));
    }
    tokio::time::timeout(Duration::from_secs(60), kill_rx).await.context("the victim's sender never got far")??;
    // Kill as soon as a remittance to or from the victim is acknowledged
    // after the signal (it cannot be complete yet: certification alone takes
    // longer than the poll), so the crash always catches one in flight.
    let acked_at_signal = answers.lock().expect("answers lock is never poisoned").acked.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let involved = {
            let answers = answers.lock().expect("answers lock is never poisoned");
            plan.iter().any(|p| {
                (p.destination == victim || p.origin == victim)
                    && answers.acked.contains_key(&p.key)
                    && !acked_at_signal.contains_key(&p.key)
            })
        };
        if involved {
            break;
        }
        ensure!(tokio::time::Instant::now() < deadline, "no remittance to or from the victim acknowledged in 60 s");
        tokio::time::sleep(KILL_POLL).await;
    }
    let acked_before_kill = answers.lock().expect("answers lock is never poisoned").acked.clone();
    let killed_ms = now_ms();
    net.kill(victim)?;
    // The other senders wait for this before their next batch.
    let _ = killed_tx.send(true);
    let still_sending = senders.iter().enumerate().filter(|(i, s)| *i != victim && !s.is_finished()).count();
    ensure!(still_sending == net.len() - 1, "only {still_sending} other origins were still sending at the kill");
    println!("killed node {victim} with {} creates acknowledged", acked_before_kill.len());
    tokio::time::sleep(DOWN_TIME).await;
    net.restart(victim)?;
    let restarted_ms = now_ms();
    let victim_client = wait_gateway_ready(net, victim).await?;
    net.wait_ready().await?;
    println!("node {victim} ready again");

    let mut unanswered = Vec::new();
    for sender in senders {
        unanswered.extend(sender.await.context("a sender panicked")??);
    }
    let mut clients = Vec::with_capacity(net.len());
    for i in 0..net.len() {
        clients.push(if i == victim { victim_client.clone() } else { net.wallet(i).await? });
    }
    let rounds = retry_until_answered(&clients, &plan, unanswered.clone(), &answers).await?;
    let acked = {
        let answers = answers.lock().expect("answers lock is never poisoned");
        println!(
            "{} creates unanswered after the first send ({} calls failed, {} items failed); \
             all answered after {rounds} retry rounds",
            unanswered.len(),
            answers.calls_failed,
            answers.items_failed
        );
        answers.acked.clone()
    };
    ensure!(acked.len() == plan.len(), "{} of {} creates acknowledged", acked.len(), plan.len());
    for (key, uetr) in &acked_before_kill {
        ensure!(
            acked.get(key) == Some(uetr),
            "{key} acknowledged as {uetr} before the kill, later as {:?}",
            acked.get(key)
        );
    }
    check_idempotent(&clients, &plan, &acked).await?;
    let victim_origin_before_kill =
        plan.iter().filter(|p| p.origin == victim && acked_before_kill.contains_key(&p.key)).count();
    println!(
        "every create repeated after the restart returned its UETR ({} acknowledged before the kill, \
         {victim_origin_before_kill} of them by the victim)",
        acked_before_kill.len()
    );

    wait_terminal(&clients).await?;
    let records = check_origins(&clients, &gateways, &plan, &acked).await?;
    ensure!(records.len() == plan.len(), "{} distinct UETRs for {} keys", records.len(), plan.len());
    let completed_after_restart = |p: &Planned| {
        let record = acked.get(&p.key).and_then(|uetr| records.get(uetr));
        record.and_then(|r| r.history.iter().find(|c| c.status == "completed")).is_some_and(|c| c.at_ms >= restarted_ms)
    };
    let to_victim: Vec<&Planned> = plan.iter().filter(|p| p.destination == victim).collect();
    let in_flight_to_victim = to_victim.iter().filter(|p| completed_after_restart(p)).count();
    let caught_by_kill = plan
        .iter()
        .filter(|p| (p.destination == victim || p.origin == victim) && acked_before_kill.contains_key(&p.key))
        .filter(|p| completed_after_restart(p))
        .count();
    ensure!(
        in_flight_to_victim > 0 && caught_by_kill > 0,
        "nothing was in flight at the kill: {in_flight_to_victim} remittances to the victim and {caught_by_kill} \
         to or from it acknowledged before the kill completed after its restart"
    );
    println!(
        "all {} completed on their origins; after the restart {in_flight_to_victim} to the victim completed, \
         and {caught_by_kill} to or from it that were acknowledged before the kill",
        records.len()
    );
    // Creates whose answer was lost although the gateway had recorded them:
    // the retry returned the record made before the kill.
    let recorded_unanswered = unanswered
        .iter()
        .filter_map(|&i| acked.get(&plan[i].key).and_then(|uetr| records.get(uetr)))
        .filter(|r| r.created_at_ms <= killed_ms)
        .count();
    println!("{recorded_unanswered} of the unanswered creates had been recorded before the kill");
    check_destinations(net, &gateways, &records).await?;
    println!("every destination holds its remittance once, completed, with the origin's amounts");

    let everything: Vec<usize> = (0..net.len()).collect();
    let (height, _) = net.wait_settled(&everything, SETTLE_TIMEOUT).await?;
    check_ledger(net, height, &records)?;
    net.no_node_panicked()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_sigkill_loses_and_duplicates_no_remittance() {
    let mut net = Network::start(NetworkOptions::default()).await.expect("the network starts");
    let result = scenario(&mut net).await;
    net.finish(result);
}
