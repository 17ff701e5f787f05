//! Remittances end to end on a 4-node network of real `remitd` processes,
//! through the wallet API (gRPC, plus the REST surface).
//!
//! One network runs every scenario in turn:
//! - quote, create, watch to `completed`; the origin's record and the
//!   destination's payout figures equal the quote to the minor unit, and the
//!   ledger transfer carries exactly the settlement amount;
//! - 100 concurrent retries of one create request with the same idempotency
//!   key: one remittance and one ledger transfer;
//! - expired and reused quotes, bad parties and bad amounts are refused with
//!   the right code and field, and nothing is recorded;
//! - a payout the destination bank refuses (closed account) ends `returned`
//!   with AC04 and the obligation is reversed on the ledger;
//! - REST: 401 without a key, 422 naming the field, `/openapi.json`; the
//!   operator view on the operator port only (404 on the wallet port).
//!
//! Then every node is stopped and verified (every final block certified, no
//! acknowledged transfer lost or duplicated, value conserved per currency),
//! and the ledger store and its export are searched for the parties' names
//! and account numbers: none may appear.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use remit_gateway::devnet::DEVNET_CLOSED_ACCOUNT;
use remit_proto::v1 as pb;
use remit_settlement::{PayoutState, ReturnReason, Uetr};
use remit_tests::net::{binaries, stop_and_verify, Acknowledged, Network, NetworkOptions, WalletClient};
use tokio_stream::StreamExt;

/// Quote lifetime on the origin node in this test, so expiry can be seen.
const QUOTE_TTL_MS: u64 = 3_000;
/// Longest a remittance may take to reach a terminal status.
const FINAL_TIMEOUT: Duration = Duration::from_secs(60);
/// Concurrent identical retries.
const RETRIES: usize = 100;

const ORIGINATOR_NAME: &str = "Zebulon";
const ORIGINATOR_ACCOUNT: &str = "ORIGACCT77123";
const BENEFICIARY_NAME: &str = "Quintessa";
const BENEFICIARY_ACCOUNT: &str = "BENEACCT55789";

fn amount(value: &str, currency: &str) -> Option<pb::Amount> {
    Some(pb::Amount { value: value.into(), currency: currency.into() })
}

fn us_to_ph(send: &str) -> pb::CreateQuoteRequest {
    pb::CreateQuoteRequest {
        source_country: "US".into(),
        source_currency: "USD".into(),
        destination_country: "PH".into(),
        destination_currency: "PHP".into(),
        send_amount: amount(send, "USD"),
        receive_amount: None,
    }
}

fn create(quote_id: &str, key: &str, beneficiary_account: &str) -> pb::CreateRemittanceRequest {
    pb::CreateRemittanceRequest {
        quote_id: quote_id.into(),
        originator: Some(pb::Party::person_with_account(ORIGINATOR_NAME, "Ada", ORIGINATOR_ACCOUNT, "US")),
        beneficiary: Some(pb::Party::person_with_account(BENEFICIARY_NAME, "Ray", beneficiary_account, "PH")),
        purpose: "FAMI".into(),
        idempotency_key: key.into(),
        remittance_information: "rent".into(),
        quote: None,
    }
}

async fn watch_to_end(wallet: &mut WalletClient, uetr: &str) -> anyhow::Result<Vec<pb::Remittance>> {
    let mut stream = wallet.watch_remittance(pb::WatchRemittanceRequest { uetr: uetr.into() }).await?.into_inner();
    let mut seen = Vec::new();
    let deadline = tokio::time::sleep(FINAL_TIMEOUT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(update) => {
                    let update = update?;
                    let terminal = matches!(update.status.as_str(), "completed" | "returned" | "rejected" | "expired" | "cancelled");
                    seen.push(update);
                    if terminal { return Ok(seen); }
                }
                None => bail!("watch ended before a terminal status: {:?}", seen.last().map(|r| &r.status)),
            },
            () = &mut deadline => bail!("no terminal status within {FINAL_TIMEOUT:?}: {:?}", seen.last().map(|r| &r.status)),
        }
    }
}

fn field(status: &tonic::Status) -> String {
    status.metadata().get("remit-field").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

/// The destination's operator view once it reaches `status` (each gateway
/// follows the certified chain at its own pace).
async fn operator_view(net: &Network, node: usize, uetr: &str, status: &str) -> anyhow::Result<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let view: serde_json::Value = net.operator_view(node, uetr).await?.error_for_status()?.json().await?;
        if view["status"] == status || tokio::time::Instant::now() > deadline {
            return Ok(view);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn happy_path(net: &Network, acks: &mut Acknowledged) -> anyhow::Result<String> {
    let mut wallet = net.wallet(0).await?;
    let quote = wallet.create_quote(us_to_ph("250.00")).await?.into_inner();
    ensure!(quote.destination_participant == "gw-ph", "quote names {}", quote.destination_participant);
    let created = wallet.create_remittance(create(&quote.quote_id, "happy-1", BENEFICIARY_ACCOUNT)).await?.into_inner();
    ensure!(created.status == "received" || created.status == "submitted", "created as {}", created.status);
    let updates = watch_to_end(&mut wallet, &created.uetr).await?;
    let done = updates.last().context("no update")?;
    ensure!(done.status == "completed" && done.iso_status == "ACCC", "ended {} {}", done.status, done.iso_status);
    let statuses: Vec<&str> = done.history.iter().map(|c| c.status.as_str()).collect();
    ensure!(
        statuses == ["received", "submitted", "committed", "final", "payout_pending", "completed"],
        "history {statuses:?}"
    );
    // Origin figures equal the quote to the minor unit.
    ensure!(done.send_amount == quote.send_amount, "send {:?} vs quote {:?}", done.send_amount, quote.send_amount);
    ensure!(done.receive_amount == quote.receive_amount, "receive differs from the quote");
    ensure!(done.settlement_amount == quote.settlement_amount, "settlement differs from the quote");
    ensure!(done.fees == quote.fees, "fees differ from the quote");
    ensure!(done.customer_rate == quote.customer_rate, "rate differs from the quote");
    let send = quote.send_amount.as_ref().context("send")?;
    ensure!(send.value == "250.00" && send.currency == "USD", "send amount {send:?}");
    let fees = quote.fees.as_ref().and_then(|f| f.total.as_ref()).context("fees")?;
    let principal = quote.principal.as_ref().context("principal")?;
    let cents = |a: &pb::Amount| a.value.replace('.', "").parse::<i64>().unwrap_or(-1);
    ensure!(cents(principal) + cents(fees) == cents(send), "send != principal + fees");
    // Destination figures: the payout used the quoted receive amount.
    let paid = operator_view(net, 1, &created.uetr, "completed").await?;
    ensure!(paid["status"] == "completed", "destination status {}", paid["status"]);
    let receive = quote.receive_amount.as_ref().context("receive")?;
    ensure!(paid["receive_amount"]["value"] == receive.value.as_str(), "destination paid {}", paid["receive_amount"]);
    ensure!(paid["receive_amount"]["currency"] == "PHP", "destination currency {}", paid["receive_amount"]);
    let settlement = quote.settlement_amount.as_ref().context("settlement")?;
    ensure!(paid["settlement_amount"]["value"] == settlement.value.as_str(), "destination settlement differs");
    ensure!(paid["payout_reference"].as_str().is_some_and(|r| r.starts_with("SIM-")), "no payout reference");
    acks.accepted.insert(created.uetr.parse()?);
    println!("happy path: {} completed, {} -> {}", created.uetr, send.value, receive.value);
    Ok(created.uetr)
}

async fn concurrent_retries(net: &Network, acks: &mut Acknowledged) -> anyhow::Result<()> {
    let mut wallet = net.wallet(0).await?;
    let quote = wallet.create_quote(us_to_ph("40.00")).await?.into_inner();
    let request = create(&quote.quote_id, "retry-storm-1", BENEFICIARY_ACCOUNT);
    let mut tasks = Vec::with_capacity(RETRIES);
    for _ in 0..RETRIES {
        let mut client = wallet.clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move { client.create_remittance(request).await }));
    }
    let mut uetrs = HashSet::new();
    for task in tasks {
        let reply = task.await?.map_err(|s| anyhow::anyhow!("a retry failed: {s:?}"))?;
        uetrs.insert(reply.into_inner().uetr);
    }
    ensure!(uetrs.len() == 1, "{} remittances for one idempotency key", uetrs.len());
    let uetr = uetrs.into_iter().next().context("one uetr")?;
    let done = watch_to_end(&mut wallet, &uetr).await?;
    ensure!(done.last().is_some_and(|r| r.status == "completed"), "retried remittance did not complete");
    // A different request reusing the key is refused.
    let mut other = request.clone();
    other.remittance_information = "something else".into();
    let refused = wallet.create_remittance(other).await.expect_err("key reuse with other data");
    ensure!(refused.code() == tonic::Code::AlreadyExists, "key reuse: {refused:?}");
    ensure!(field(&refused) == "idempotency_key", "key reuse field {:?}", field(&refused));
    acks.accepted.insert(uetr.parse()?);
    println!("{RETRIES} concurrent retries: one remittance {uetr}");
    Ok(())
}

async fn refusals(net: &Network) -> anyhow::Result<()> {
    let mut wallet = net.wallet(0).await?;
    let before = wallet.list_remittances(pb::ListRemittancesRequest::default()).await?.into_inner().remittances.len();
    // Bad amount: more decimals than USD has.
    let error = wallet.create_quote(us_to_ph("10.001")).await.expect_err("too precise");
    ensure!(error.code() == tonic::Code::InvalidArgument && field(&error) == "send_amount", "{error:?}");
    // Unknown corridor.
    let mut request = us_to_ph("10.00");
    request.destination_country = "FR".into();
    let error = wallet.create_quote(request).await.expect_err("no corridor");
    ensure!(error.code() == tonic::Code::InvalidArgument, "{error:?}");
    // Bad parties.
    let quote = wallet.create_quote(us_to_ph("30.00")).await?.into_inner();
    let mut bad = create(&quote.quote_id, "bad-1", BENEFICIARY_ACCOUNT);
    bad.beneficiary = Some(pb::Party::person_with_account(BENEFICIARY_NAME, "", "", "PH"));
    let error = wallet.create_remittance(bad).await.expect_err("empty account");
    ensure!(error.code() == tonic::Code::InvalidArgument && field(&error) == "beneficiary.account.value", "{error:?}");
    let mut bad = create(&quote.quote_id, "bad-2", BENEFICIARY_ACCOUNT);
    bad.originator = Some(pb::Party::person_with_account("", "", ORIGINATOR_ACCOUNT, "US"));
    let error = wallet.create_remittance(bad).await.expect_err("no name");
    ensure!(field(&error) == "originator.natural_person.primary_name", "{error:?}");
    let mut bad = create(&quote.quote_id, "bad-3", BENEFICIARY_ACCOUNT);
    bad.purpose = "family".into();
    let error = wallet.create_remittance(bad).await.expect_err("bad purpose");
    ensure!(field(&error) == "purpose", "{error:?}");
    // The quote survived the refusals; use it once, then reuse it.
    let used = wallet.create_remittance(create(&quote.quote_id, "ok-1", BENEFICIARY_ACCOUNT)).await?.into_inner();
    let error =
        wallet.create_remittance(create(&quote.quote_id, "ok-2", BENEFICIARY_ACCOUNT)).await.expect_err("reused");
    ensure!(error.code() == tonic::Code::FailedPrecondition && field(&error) == "quote_id", "{error:?}");
    // Expired quote.
    let quote = wallet.create_quote(us_to_ph("30.00")).await?.into_inner();
    tokio::time::sleep(Duration::from_millis(QUOTE_TTL_MS + 200)).await;
    let error =
        wallet.create_remittance(create(&quote.quote_id, "late-1", BENEFICIARY_ACCOUNT)).await.expect_err("expired");
    ensure!(error.code() == tonic::Code::FailedPrecondition && field(&error) == "quote_id", "{error:?}");
    ensure!(error.message().contains("expired"), "{error:?}");
    let after = wallet.list_remittances(pb::ListRemittancesRequest::default()).await?.into_inner().remittances;
    ensure!(after.len() == before + 1, "{} recorded, expected only the one good remittance", after.len() - before);
    ensure!(after.iter().any(|r| r.uetr == used.uetr), "the good remittance is listed");
    let done = watch_to_end(&mut wallet, &used.uetr).await?;
    ensure!(done.last().is_some_and(|r| r.status == "completed"), "good remittance did not complete");
    println!("refusals: bad amount, corridor, parties, purpose, reused and expired quotes refused");
    Ok(())
}

async fn return_path(net: &Network, acks: &mut Acknowledged) -> anyhow::Result<Uetr> {
    let mut wallet = net.wallet(0).await?;
    let quote = wallet.create_quote(us_to_ph("120.00")).await?.into_inner();
    let created = wallet.create_remittance(create(&quote.quote_id, "closed-1", DEVNET_CLOSED_ACCOUNT)).await?;
    let uetr = created.into_inner().uetr;
    let done = watch_to_end(&mut wallet, &uetr).await?;
    let last = done.last().context("no update")?;
    ensure!(last.status == "returned" && last.iso_status == "RJCT", "ended {} {}", last.status, last.iso_status);
    ensure!(last.reason_code == "AC04", "reason code {}", last.reason_code);
    ensure!(last.reason.contains("closed"), "reason {}", last.reason);
    let uetr: Uetr = uetr.parse()?;
    acks.accepted.insert(uetr);
    println!("return path: {uetr} returned AC04");
    Ok(uetr)
}

async fn rest_surface(net: &Network) -> anyhow::Result<()> {
    let node = net.node(0);
    let key = net.api_keys.get(&node.name).context("key")?;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", node.api_url);
    let body = serde_json::json!({"source_country": "US", "source_currency": "USD", "destination_country": "PH",
        "destination_currency": "PHP", "send_amount": {"value": "10.00", "currency": "USD"}});
    let unauthenticated = http.post(url("/v1/quotes")).json(&body).send().await?;
    ensure!(unauthenticated.status() == 401, "no key: {}", unauthenticated.status());
    let quote: serde_json::Value =
        http.post(url("/v1/quotes")).bearer_auth(key).json(&body).send().await?.error_for_status()?.json().await?;
    ensure!(quote["receive_amount"]["currency"] == "PHP", "quote {quote}");
    let mut bad = body.clone();
    bad["send_amount"]["value"] = "abc".into();
    let response = http.post(url("/v1/quotes")).header("x-api-key", key).json(&bad).send().await?;
    // Well-formed JSON with a refused value: 422 naming the field.
    ensure!(response.status() == 422, "bad amount: {}", response.status());
    let error: serde_json::Value = response.json().await?;
    ensure!(error["error"]["field"] == "send_amount", "error {error}");
    ensure!(error["error"]["code"] == "INVALID_ARGUMENT", "error {error}");
    // A create answers 201; the same request again answers 200 with the same
    // remittance; the key reused for another request is a conflict.
    let request = remit_proto::v1::CreateRemittanceRequest {
        quote_id: quote["quote_id"].as_str().context("quote id")?.to_owned(),
        quote: None,
        originator: Some(remit_proto::v1::Party::person_with_account("Okafor", "Ngozi", "REST0001", "US")),
        beneficiary: Some(remit_proto::v1::Party::person_with_account("Bautista", "Lea", "REST0002", "PH")),
        purpose: "FAMI".into(),
        idempotency_key: "rest-repeat".into(),
        remittance_information: String::new(),
    };
    let create = || http.post(url("/v1/remittances")).bearer_auth(key).json(&request);
    let first = create().send().await?;
    ensure!(first.status() == 201, "first create: {}", first.status());
    let first: serde_json::Value = first.json().await?;
    let again = create().send().await?;
    ensure!(again.status() == 200, "repeated create: {}", again.status());
    let again: serde_json::Value = again.json().await?;
    ensure!(again["uetr"] == first["uetr"] && first["uetr"].is_string(), "repeat {again} of {first}");
    let mut other = request.clone();
    other.purpose = "SALA".into();
    let conflict = http.post(url("/v1/remittances")).bearer_auth(key).json(&other).send().await?;
    ensure!(conflict.status() == 409, "key reused for another request: {}", conflict.status());
    // It completes like any other (the scenario's ledger checks expect that).
    let uetr = first["uetr"].as_str().context("uetr")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let view: serde_json::Value = http
            .get(url(&format!("/v1/remittances/{uetr}")))
            .bearer_auth(key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if view["status"] == "completed" {
            break;
        }
        ensure!(tokio::time::Instant::now() < deadline, "REST remittance {uetr}: {}", view["status"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The operator view needs the node's operator token: none, or a wallet
    // key in its place, is 401; the token reads the (masked) record.
    let ops = format!("{}/ops/remittances/{uetr}", node.ops_url);
    let anonymous = http.get(&ops).send().await?;
    ensure!(anonymous.status() == 401, "operator view without a token: {}", anonymous.status());
    let with_wallet_key = http.get(&ops).bearer_auth(key).send().await?;
    ensure!(with_wallet_key.status() == 401, "operator view with a wallet key: {}", with_wallet_key.status());
    let view: serde_json::Value = net.operator_view(0, uetr).await?.error_for_status()?.json().await?;
    ensure!(view["uetr"] == uetr && view["status"] == "completed", "operator view {view}");
    // The operator view is not served on the wallet port, whatever the token.
    let on_wallet_port =
        http.get(url(&format!("/ops/remittances/{uetr}"))).bearer_auth(net.operator_token(0)?).send().await?;
    ensure!(on_wallet_port.status() == 404, "operator view on the wallet port: {}", on_wallet_port.status());
    let wallet_on_ops = http.get(format!("{}/v1/remittances/{uetr}", node.ops_url)).bearer_auth(key).send().await?;
    ensure!(wallet_on_ops.status() == 404, "wallet route on the operator port: {}", wallet_on_ops.status());
    let document: serde_json::Value = http.get(url("/openapi.json")).send().await?.error_for_status()?.json().await?;
    ensure!(document["paths"]["/v1/remittances"]["post"]["operationId"] == "createRemittance", "openapi");
    let missing = http.get(url("/v1/remittances/not-a-uetr")).bearer_auth(key).send().await?;
    ensure!(missing.status() == 400, "bad uetr: {}", missing.status());
    Ok(())
}

/// Searches raw bytes for customer data.
fn contains_any(haystack: &[u8], needles: &[&str]) -> Option<String> {
    needles
        .iter()
        .find(|needle| haystack.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .map(|n| (*n).to_owned())
}

fn ledger_holds_no_customer_data(net: &Network) -> anyhow::Result<()> {
    let needles = [ORIGINATOR_NAME, ORIGINATOR_ACCOUNT, BENEFICIARY_NAME, BENEFICIARY_ACCOUNT, DEVNET_CLOSED_ACCOUNT];
    for i in 0..net.len() {
        let data_dir = net.node(i).data_dir.clone();
        let ledger_dir = data_dir.join(remit_gateway::node::LEDGER_SUBDIR);
        for entry in walk(&ledger_dir)? {
            let bytes = std::fs::read(&entry)?;
            if let Some(found) = contains_any(&bytes, &needles) {
                bail!("ledger file {} contains {found:?}", entry.display());
            }
        }
        let export = net.dir().join(format!("export-{i}.jsonl"));
        let status = std::process::Command::new(&binaries()?.remit)
            .args(["ledger", "export", "--dir"])
            .arg(&data_dir)
            .arg("--out")
            .arg(&export)
            .status()?;
        ensure!(status.success(), "remit ledger export failed on node {i}");
        let text = std::fs::read(&export)?;
        ensure!(text.len() > 1_000, "export of node {i} is only {} bytes", text.len());
        if let Some(found) = contains_any(&text, &needles) {
            bail!("ledger export of node {i} contains {found:?}");
        }
        // The gateway's own store does hold them (the search would find them).
        let gateway_dir = data_dir.join(remit_gateway::node::GATEWAY_SUBDIR);
        let held = walk(&gateway_dir)?
            .iter()
            .any(|f| std::fs::read(f).ok().and_then(|b| contains_any(&b, &needles)).is_some());
        if i == 0 {
            ensure!(held, "the origin's private store should hold the parties (the search must be able to fail)");
        }
    }
    Ok(())
}

fn walk(dir: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    Ok(files)
}

async fn scenario(net: &mut Network) -> anyhow::Result<()> {
    net.wait_ready().await?;
    let mut acks = Acknowledged::default();
    happy_path(net, &mut acks).await?;
    concurrent_retries(net, &mut acks).await?;
    refusals(net).await?;
    let returned = return_path(net, &mut acks).await?;
    rest_surface(net).await?;
    // The refusals scenario's good remittance.
    let mut wallet = net.wallet(0).await?;
    let all = wallet.list_remittances(pb::ListRemittancesRequest::default()).await?.into_inner().remittances;
    for remittance in &all {
        acks.accepted.insert(remittance.uetr.parse()?);
    }
    ensure!(all.len() == acks.accepted.len(), "{} listed, {} accepted", all.len(), acks.accepted.len());
    let everything: Vec<usize> = (0..net.len()).collect();
    let (height, _) = net.wait_settled(&everything, Duration::from_secs(30)).await?;
    stop_and_verify(net, height, &acks)?;
    // The return reversed the obligation: on every node the transfer's
    // payout state is Returned(AC04), and the rest completed.
    let data_dir = net.node(0).data_dir.clone();
    let store = remit_settlement::store::SledLedgerStore::open(&data_dir.join(remit_gateway::node::LEDGER_SUBDIR))?;
    let chain = remit_settlement::chain::Chain::open(store, Some(&net.network))?;
    let state = chain.state();
    let returned_view = state.applied_transfer(&returned).context("returned transfer on the ledger")?;
    ensure!(
        returned_view.payout == PayoutState::Returned(ReturnReason::new("AC04")?),
        "payout state {:?}",
        returned_view.payout
    );
    for uetr in &acks.accepted {
        if *uetr != returned {
            let view = state.applied_transfer(uetr).context("accepted transfer on the ledger")?;
            ensure!(view.payout == PayoutState::Completed, "{uetr}: {:?}", view.payout);
        }
    }
    // Positions: the completed transfers net out, the returned one is gone.
    let completed_total: rust_decimal::Decimal = acks
        .accepted
        .iter()
        .filter(|u| **u != returned)
        .filter_map(|u| state.applied_transfer(u))
        .map(|v| v.amount.amount())
        .sum();
    let us = remit_settlement::ParticipantId::new("gw-us")?;
    let ph = remit_settlement::ParticipantId::new("gw-ph")?;
    let usd = iso_currency::Currency::USD;
    ensure!(state.position(&us, usd) == -completed_total, "gw-us USD position {}", state.position(&us, usd));
    ensure!(state.position(&ph, usd) == completed_total, "gw-ph USD position {}", state.position(&ph, usd));
    drop(chain);
    ledger_holds_no_customer_data(net)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remittances_end_to_end() {
    let options = NetworkOptions {
        node_env: vec![(0, "REMIT__REMITTANCE__QUOTE_TTL_MS".into(), QUOTE_TTL_MS.to_string())],
        ..NetworkOptions::default()
    };
    let mut net = Network::start(options).await.expect("the network starts");
    let result = scenario(&mut net).await;
    net.finish(result);
}
