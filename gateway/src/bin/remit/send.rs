//! `remit send`: a small wallet client for a devnet. Quotes, creates and
//! watches one remittance over gRPC and prints it as one JSON object once it
//! reaches a final status.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use remit_gateway::api::grpc::BearerAuth;
use remit_gateway::devnet::{local_currency, DevnetFile};
use remit_proto::v1 as pb;
use remit_proto::v1::remittances_client::RemittancesClient;
use remit_settlement::network::NetworkConfig;
use remit_settlement::{Money, ParticipantId};
use tokio_stream::StreamExt;
use tonic::transport::Endpoint;

#[derive(Args, Debug)]
pub struct SendArgs {
    /// Devnet directory (holds devnet.json).
    #[arg(long)]
    devnet: PathBuf,
    /// Originating participant, e.g. gw-us.
    #[arg(long)]
    from: String,
    /// Paying participant, e.g. gw-ph.
    #[arg(long)]
    to: String,
    /// Amount with currency, e.g. "100 USD": what the originator pays (in
    /// the origin's currency), or with --receive what the beneficiary gets.
    #[arg(long)]
    amount: String,
    /// The amount is what the beneficiary receives.
    #[arg(long)]
    receive: bool,
    /// Beneficiary account number (the devnet bank returns payouts to
    /// DEVNET-CLOSED-0001 as AC04, closed account).
    #[arg(long, default_value = "0123456789")]
    beneficiary_account: String,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
}

pub fn run(args: &SendArgs) -> anyhow::Result<ExitCode> {
    let devnet = DevnetFile::load(&args.devnet)?;
    let network = NetworkConfig::load(&devnet.network).with_context(|| format!("{}", devnet.network.display()))?;
    let find = |name: &str| {
        let id = ParticipantId::new(name).with_context(|| format!("participant {name:?}"))?;
        network.participant(&id).cloned().with_context(|| format!("{name} is not a participant of the devnet"))
    };
    let (from, to) = (find(&args.from)?, find(&args.to)?);
    let node = devnet.nodes.iter().find(|n| n.name == args.from).context("--from has no node in devnet.json")?;
    let key = devnet.api_keys.get(&args.from).context("devnet.json has no API key for --from")?.clone();
    let amount = Money::parse(&args.amount, "amount").map_err(|e| anyhow::anyhow!("--amount: {e}"))?;
    let (source, destination) = (local_currency(&from), local_currency(&to));
    let expected = if args.receive { destination } else { source };
    if amount.currency() != expected {
        bail!(
            "--amount: {} {} in {}; {} sends {} and {} pays out {}",
            if args.receive { "the receive amount is" } else { "the send amount is" },
            "expected",
            expected.code(),
            from.id,
            source.code(),
            to.id,
            destination.code()
        );
    }
    let wire = pb::Amount { value: amount.amount().to_string(), currency: amount.currency().code().into() };
    let quote_request = pb::CreateQuoteRequest {
        source_country: from.country.to_string(),
        source_currency: source.code().into(),
        destination_country: to.country.to_string(),
        destination_currency: destination.code().into(),
        send_amount: (!args.receive).then(|| wire.clone()),
        receive_amount: args.receive.then_some(wire),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let channel = Endpoint::from_shared(node.api_url.clone())?
            .connect()
            .await
            .with_context(|| format!("connecting to {} at {}; is the devnet running?", node.name, node.api_url))?;
        let mut client = RemittancesClient::with_interceptor(channel, BearerAuth::new(&key)?);
        let quote = client.create_quote(quote_request).await.map_err(status_error)?.into_inner();
        let create = pb::CreateRemittanceRequest {
            quote_id: quote.quote_id.clone(),
            originator: Some(pb::Party::person_with_account("Santos", "Maria", "9876543210", from.country.as_str())),
            beneficiary: Some(pb::Party::person_with_account(
                "Reyes",
                "Jose",
                &args.beneficiary_account,
                to.country.as_str(),
            )),
            purpose: "FAMI".into(),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            remittance_information: "remit send".into(),
            quote: None,
        };
        let created = client.create_remittance(create).await.map_err(status_error)?.into_inner();
        let watch = pb::WatchRemittanceRequest { uetr: created.uetr.clone() };
        let mut stream = client.watch_remittance(watch).await.map_err(status_error)?.into_inner();
        let mut last = created;
        let deadline = tokio::time::sleep(Duration::from_secs(args.timeout_secs));
        tokio::pin!(deadline);
        let finished = loop {
            tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(update)) => {
                        eprintln!("send: {} {}", update.uetr, update.status);
                        last = update;
                        if is_terminal(&last.status) { break true; }
                    }
                    Some(Err(status)) => return Err(status_error(status)),
                    None => break is_terminal(&last.status),
                },
                () = &mut deadline => break false,
            }
        };
        let mut json = serde_json::to_value(&last)?;
        json["rate"] = serde_json::Value::String(last.customer_rate.clone());
        println!("{json}");
        if !finished {
            eprintln!("send: no final status after {} s", args.timeout_secs);
            return Ok(ExitCode::from(3));
        }
        Ok(if last.status == "completed" { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}

fn is_terminal(status: &str) -> bool {
    matches!(status, "completed" | "returned" | "rejected" | "expired" | "cancelled")
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    let field = status.metadata().get("remit-field").and_then(|v| v.to_str().ok()).unwrap_or("");
    anyhow::anyhow!(
        "{:?}: {}{}",
        status.code(),
        status.message(),
        if field.is_empty() { String::new() } else { format!(" (field {field})") }
    )
}
