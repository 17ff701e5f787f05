//! `remit remittances load`: drives remittances through every gateway of a
//! devnet with the batch submit call (SubmitRemittances, priced inline at
//! current rates), then reads each remittance's status history back and
//! reports throughput and create-to-final / create-to-completed latencies.
//! Latencies come from the gateways' own timestamps (received -> final),
//! so the client's scheduling does not distort them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rand::{Rng, SeedableRng};
use remit_gateway::api::grpc::BearerAuth;
use remit_gateway::devnet::{local_currency, DevnetFile};
use remit_proto::v1 as pb;
use remit_proto::v1::remittances_client::RemittancesClient;
use remit_settlement::network::NetworkConfig;
use tokio::sync::Semaphore;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

#[derive(Args, Debug)]
pub struct RemittanceLoadArgs {
    /// Devnet directory (holds devnet.json).
    #[arg(long)]
    devnet: PathBuf,
    /// Remittances to send in all.
    #[arg(long, default_value_t = 100_000)]
    total: usize,
    /// Target remittances per second over all gateways (0: as fast as possible).
    #[arg(long, default_value_t = 20_000.0)]
    rate: f64,
    /// Remittances per SubmitRemittances call.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Calls in flight per gateway.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seed of the traffic (destinations and amounts).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long to wait for every remittance to finish after the last send.
    #[arg(long, default_value_t = 120)]
    settle_secs: u64,
    /// Send only from these gateways (by name; repeat the flag or separate
    /// with commas). Default: every gateway of the devnet, in turn.
    #[arg(long, value_delimiter = ',')]
    from: Vec<String>,
}

type Client = RemittancesClient<InterceptedService<Channel, BearerAuth>>;

struct Gateway {
    name: String,
    country: String,
    currency: String,
    client: Client,
}

/// CPU time (user + system) the devnet's node processes have used so far,
/// in clock ticks, read from `/proc/<pid>/stat`; `None` where that is not
/// available (not Linux, or a node not started by `remit devnet`).
fn nodes_cpu_ticks(devnet: &DevnetFile) -> Option<u64> {
    let mut total = 0u64;
    for node in &devnet.nodes {
        if node.pid == 0 {
            return None;
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", node.pid)).ok()?;
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields of the whole line.
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        total += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Clock ticks per second for `/proc` CPU times (USER_HZ, 100 on Linux).
const CLOCK_TICKS_PER_S: u64 = 100;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn run(args: &RemittanceLoadArgs) -> anyhow::Result<ExitCode> {
    if args.batch == 0 || args.batch > 1_000 || args.concurrency == 0 {
        bail!("--batch must be 1 to 1000 and --concurrency positive");
    }
    let devnet = DevnetFile::load(&args.devnet)?;
    let network = NetworkConfig::load(&devnet.network).with_context(|| devnet.network.display().to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(drive(args, devnet, network))
}

/// `count` remittances from gateway `origin` to random others, with
/// idempotency keys `<prefix>-<batch>-<i>`.
fn make_batch(
    gateways: &[Gateway],
    origin: usize,
    b: usize,
    count: usize,
    rng: &mut impl Rng,
    prefix: &str,
) -> Vec<pb::CreateRemittanceRequest> {
    let source = &gateways[origin];
    (0..count)
        .map(|i| {
            let mut destination = rng.gen_range(0..gateways.len() - 1);
            if destination >= origin {
                destination += 1;
            }
            let target = &gateways[destination];
            let amount = format!("{}", rng.gen_range(20..2_000));
            pb::CreateRemittanceRequest {
                quote_id: String::new(),
                quote: Some(pb::CreateQuoteRequest::sending(
                    &source.country,
                    &source.currency,
                    &target.country,
                    &target.currency,
                    &amount,
                )),
                originator: Some(pb::Party::person_with_account(
                    "Sender",
                    "Load",
                    &format!("S{b}X{i}"),
                    &source.country,
                )),
                beneficiary: Some(pb::Party::person_with_account(
                    "Receiver",
                    "Load",
                    &format!("R{b}X{i}"),
                    &target.country,
                )),
                purpose: "FAMI".into(),
                idempotency_key: format!("{prefix}-{b}-{i}"),
                remittance_information: String::new(),
            }
        })
        .collect()
}

/// Streams remittances through every gateway at `rate` per second until
/// dropped, printing every `every` what was accepted and how a sample of
/// them ended (the devnet's `--remittance-rate`).
pub async fn stream(devnet_dir: PathBuf, rate: f64, every: Duration) -> anyhow::Result<()> {
    let devnet = DevnetFile::load(&devnet_dir)?;
    let network = NetworkConfig::load(&devnet.network).with_context(|| devnet.network.display().to_string())?;
    let gateways = Arc::new(connect(&devnet, &network).await?);
    let batch = ((rate / 20.0).round() as usize).clamp(1, 500);
    let interval = Duration::from_secs_f64(batch as f64 / rate);
    let prefix = format!("devnet-{}", uuid::Uuid::new_v4().simple());
    let mut rng = rand::rngs::StdRng::from_entropy();
    let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let samples = Arc::new(std::sync::Mutex::new(Vec::<(usize, String)>::new()));
    let started = Instant::now();
    let mut report_at = started + every;
    for b in 0.. {
        let origin = b % gateways.len();
        let requests = make_batch(&gateways, origin, b, batch, &mut rng, &prefix);
        tokio::time::sleep_until((started + interval.mul_f64(b as f64)).into()).await;
        let mut client = gateways[origin].client.clone();
        let (accepted_n, refused_n, sampled) = (accepted.clone(), refused.clone(), samples.clone());
        tokio::spawn(async move {
            let (accepted, refused, samples) = (accepted_n, refused_n, sampled);
            let Ok(reply) = client.submit_remittances(pb::SubmitRemittancesRequest { remittances: requests }).await
            else {
                refused.fetch_add(batch as u64, std::sync::atomic::Ordering::Relaxed);
                return;
            };
            let reply = reply.into_inner();
            let ok = reply.results.iter().filter(|r| r.remittance.is_some()).count() as u64;
            accepted.fetch_add(ok, std::sync::atomic::Ordering::Relaxed);
            refused.fetch_add(reply.results.len() as u64 - ok, std::sync::atomic::Ordering::Relaxed);
            if let Some(first) = reply.results.iter().find_map(|r| r.remittance.as_ref()) {
                if let Ok(mut samples) = samples.lock() {
                    samples.push((origin, first.uetr.clone()));
                }
            }
        });
        if Instant::now() >= report_at {
            report_at += every;
            let taken: Vec<(usize, String)> = samples.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default();
            let mut statuses = std::collections::BTreeMap::<String, usize>::new();
            for (origin, uetr) in taken {
                let request = pb::GetRemittanceRequest { uetr };
                if let Ok(reply) = gateways[origin].client.clone().get_remittance(request).await {
                    *statuses.entry(reply.into_inner().status).or_default() += 1;
                }
            }
            eprintln!(
                "devnet: remittances {:.0} s: {} accepted, {} refused; sampled statuses {:?}",
                started.elapsed().as_secs_f64(),
                accepted.load(std::sync::atomic::Ordering::Relaxed),
                refused.load(std::sync::atomic::Ordering::Relaxed),
                statuses
            );
        }
    }
    Ok(())
}

async fn connect(devnet: &DevnetFile, network: &NetworkConfig) -> anyhow::Result<Vec<Gateway>> {
    let mut gateways = Vec::new();
    for node in &devnet.nodes {
        let Some(key) = devnet.api_keys.get(&node.name) else { continue };
        let participant = network
            .participants
            .iter()
            .find(|p| p.id.as_str() == node.name)
            .with_context(|| format!("{} is not in network.json", node.name))?;
        let channel = Endpoint::from_shared(node.api_url.clone())?
            .timeout(Duration::from_secs(60))
            .connect()
            .await
            .with_context(|| format!("connecting to {} at {}", node.name, node.api_url))?;
        let auth = BearerAuth::new(key)?;
        gateways.push(Gateway {
            name: node.name.clone(),
            country: participant.country.to_string(),
            currency: local_currency(participant).code().to_owned(),
            client: RemittancesClient::with_interceptor(channel, auth)
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
        });
    }
    if gateways.len() < 2 {
        bail!("devnet.json lists fewer than two gateways with API keys");
    }
    Ok(gateways)
}

/// Indices of the gateways that send: those named by `--from`, or all.
fn origins(gateways: &[Gateway], names: &[String]) -> anyhow::Result<Vec<usize>> {
    if names.is_empty() {
        return Ok((0..gateways.len()).collect());
    }
    names
        .iter()
        .map(|name| {
            gateways.iter().position(|g| &g.name == name).with_context(|| {
                let known: Vec<&str> = gateways.iter().map(|g| g.name.as_str()).collect();
                format!("--from {name}: no such gateway in devnet.json (gateways: {})", known.join(", "))
            })
        })
        .collect()
}

async fn drive(args: &RemittanceLoadArgs, devnet: DevnetFile, network: NetworkConfig) -> anyhow::Result<ExitCode> {
    let gateways = connect(&devnet, &network).await?;
    let gateways = Arc::new(gateways);
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let batches = args.total.div_ceil(args.batch);
    let interval =
        if args.rate > 0.0 { Duration::from_secs_f64(args.batch as f64 / args.rate) } else { Duration::ZERO };
    let limits: Vec<Arc<Semaphore>> = gateways.iter().map(|_| Arc::new(Semaphore::new(args.concurrency))).collect();
    let origins = origins(&gateways, &args.from)?;
    eprintln!(
        "remittances load: {} remittances in {batches} calls of {} from {} of {} gateways, target {} /s",
        args.total,
        args.batch,
        origins.len(),
        gateways.len(),
        args.rate
    );
    let cpu_before = nodes_cpu_ticks(&devnet);
    let started = Instant::now();
    // Only this run's remittances are read back (the devnet may hold others).
    let started_ms = remit_gateway::node::clock::now_ms();
    let mut tasks = Vec::with_capacity(batches);
    for b in 0..batches {
        let origin = origins[b % origins.len()];
        let count = args.batch.min(args.total - b * args.batch);
        let source = &gateways[origin];
        let requests = make_batch(&gateways, origin, b, count, &mut rng, &format!("load-{}", args.seed));
        if !interval.is_zero() {
            let due = started + interval.mul_f64(b as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = limits[origin].clone().acquire_owned().await?;
        let mut client = source.client.clone();
        tasks.push(tokio::spawn(async move {
            let reply = client.submit_remittances(pb::SubmitRemittancesRequest { remittances: requests }).await;
            drop(permit);
            reply.map(|r| r.into_inner())
        }));
    }
    let mut accepted = 0usize;
    let mut refused = 0usize;
    let mut first_error = None;
    for task in tasks {
        match task.await? {
            Ok(reply) => {
                for result in reply.results {
                    if result.remittance.is_some() {
                        accepted += 1;
                    } else {
                        refused += 1;
                        first_error.get_or_insert(format!("{} {}", result.error_code, result.error_message));
                    }
                }
            }
            Err(status) => {
                refused += args.batch;
                first_error.get_or_insert(format!("{:?} {}", status.code(), status.message()));
            }
        }
    }
    let submitted_in = started.elapsed();
    eprintln!(
        "remittances load: {accepted} accepted, {refused} refused in {:.1} s ({:.0}/s offered){}",
        submitted_in.as_secs_f64(),
        (accepted + refused) as f64 / submitted_in.as_secs_f64(),
        first_error.map(|e| format!("; first refusal: {e}")).unwrap_or_default()
    );
    // Wait until nothing is in flight on any gateway.
    let deadline = Instant::now() + Duration::from_secs(args.settle_secs);
    loop {
        let mut open = 0usize;
        for gateway in gateways.iter() {
            let request = pb::ListRemittancesRequest {
                status: vec!["received,submitted,committed,final,payout_pending".into()],
                page_size: 1,
                created_from_ms: started_ms,
                ..Default::default()
            };
            open += gateway.client.clone().list_remittances(request).await?.into_inner().remittances.len();
        }
        if open == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("remittances still open after {} s", args.settle_secs);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Read every remittance's history back.
    let mut to_final = Vec::with_capacity(accepted);
    let mut to_completed = Vec::with_capacity(accepted);
    let (mut first_received, mut last_final) = (u64::MAX, 0u64);
    let mut by_status = std::collections::BTreeMap::<String, usize>::new();
    for gateway in gateways.iter() {
        let mut token = String::new();
        loop {
            let request = pb::ListRemittancesRequest {
                page_size: 500,
                page_token: token.clone(),
                created_from_ms: started_ms,
                ..Default::default()
            };
            let page = gateway.client.clone().list_remittances(request).await?.into_inner();
            for remittance in &page.remittances {
                *by_status.entry(remittance.status.clone()).or_default() += 1;
                let at = |status: &str| remittance.history.iter().find(|c| c.status == status).map(|c| c.at_ms);
                let Some(received) = at("received") else { continue };
                first_received = first_received.min(received);
                if let Some(final_at) = at("final") {
                    to_final.push(final_at.saturating_sub(received));
                    last_final = last_final.max(final_at);
                }
                if let Some(done) = at("completed") {
                    to_completed.push(done.saturating_sub(received));
                }
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        eprintln!("remittances load: read back {}", gateway.name);
    }
    let read_back: usize = by_status.values().sum();
    if read_back < accepted {
        eprintln!(
            "remittances load: {} of the {accepted} accepted were created before this run (idempotent repeats: \
             the devnet already ran --seed {}); the figures cover the {read_back} created now; use another --seed",
            accepted - read_back,
            args.seed
        );
    }
    let cpu_us_per_remittance = match (cpu_before, nodes_cpu_ticks(&devnet)) {
        (Some(before), Some(after)) if accepted > 0 => {
            Some((after.saturating_sub(before)) * 1_000_000 / CLOCK_TICKS_PER_S / accepted as u64)
        }
        _ => None,
    };
    to_final.sort_unstable();
    to_completed.sort_unstable();
    let span_s = last_final.saturating_sub(first_received).max(1) as f64 / 1000.0;
    let summary = serde_json::json!({
        "accepted": accepted,
        "refused": refused,
        "offered_per_second": ((accepted + refused) as f64 / submitted_in.as_secs_f64()).round(),
        "nodes_cpu_us_per_remittance": cpu_us_per_remittance,
        "statuses": by_status,
        "read_back": read_back,
        "final_per_second": (to_final.len() as f64 / span_s).round(),
        "create_to_final_ms": {"p50": percentile(&to_final, 50.0), "p90": percentile(&to_final, 90.0),
            "p99": percentile(&to_final, 99.0), "max": to_final.last().copied().unwrap_or(0)},
        "create_to_completed_ms": {"p50": percentile(&to_completed, 50.0), "p90": percentile(&to_completed, 90.0),
            "p99": percentile(&to_completed, 99.0), "max": to_completed.last().copied().unwrap_or(0)},
    });
    println!("{summary}");
    Ok(if refused == 0 && to_final.len() == accepted { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
