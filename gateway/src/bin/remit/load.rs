//! `remit ledger load`: drives a running devnet with signed transfer batches
//! over gRPC, measures submit -> certified latency, then checks on the chain
//! that every acknowledged transfer was applied exactly once. The same engine
//! runs behind `remit devnet --load-rate`, without an end and without the
//! chain check.
//!
//! A transfer counts as certified once a certificate exists at its block's
//! height or above: a certificate commits to the block's hash, which links to
//! every earlier block.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use remit_gateway::devnet::{DevnetFile, KEYS_SUBDIR};
use remit_gateway::node::peers::{connect_lazy, Client};
use remit_gateway::tls::{NodeTls, CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE};
use remit_proto::v1::{GetBlocksRequest, GetTipRequest, SubmitBatchReply, SubmitBatchRequest};
use remit_settlement::codec::Writer;
use remit_settlement::network::Keyring;
use remit_settlement::{Block, Entry, EntryResult, TransferOutcome, Uetr};
use remit_simulations::traffic::{TrafficConfig, TrafficGenerator};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tonic::Code;

/// Default transfers per batch.
pub const BATCH_TRANSFERS_DEFAULT: usize = 512;
/// Default batches submitted and not yet answered at once.
pub const BATCHES_IN_FLIGHT_DEFAULT: usize = 32;
/// How often every node's certified height is polled.
const TIP_POLL_INTERVAL_MS: u64 = 20;
/// Time allowed for one GetTip poll before the node counts as silent.
const TIP_POLL_TIMEOUT_MS: u64 = 1_000;
/// First pause between retries of a batch; it doubles on every retry.
const RETRY_BACKOFF_MS_MIN: u64 = 20;
/// Largest pause between retries of a batch.
const RETRY_BACKOFF_MS_MAX: u64 = 1_000;
/// Attempts of one batch before it counts as failed.
const ATTEMPTS_MAX: u32 = 40;
/// Attempts at one node before a batch's retries move on to the next node.
const ATTEMPTS_PER_NODE: u32 = 3;
/// Blocks fetched per GetBlocks call during the check.
const VERIFY_BLOCKS_PER_CALL: u32 = 16;
/// Time the chain check may take after the load itself ended.
const VERIFY_TIMEOUT_S: u64 = 60;
/// Prepared batches waiting for a submission slot.
const PREPARED_BATCHES_MAX: usize = 64;

/// Batch reason meaning "already applied": counts as applied for a retried batch.
const DUPLICATE_UETR: &str = "duplicate_uetr";

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// The devnet directory (holds devnet.json and keys/).
    #[arg(long)]
    devnet: PathBuf,
    /// Number of transfers to submit.
    #[arg(long)]
    transfers: u64,
    /// Rate limit in transfers per second (default: as fast as the nodes take them).
    #[arg(long)]
    rate: Option<f64>,
    /// Transfers per signed batch.
    #[arg(long, default_value_t = BATCH_TRANSFERS_DEFAULT)]
    batch: usize,
    /// Batches submitted and not yet answered at once.
    #[arg(long, default_value_t = BATCHES_IN_FLIGHT_DEFAULT)]
    in_flight: usize,
    /// Give up (and exit non-zero) when the load is not certified within this time.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
}

/// gRPC clients to every node of a devnet, by participant name.
#[derive(Debug)]
pub struct Target {
    clients: BTreeMap<String, Client>,
}

impl Target {
    /// Clients for the nodes of `devnet`; with TLS each presents the node
    /// certificate of its own participant from `dir/keys`.
    pub fn connect(dir: &Path, devnet: &DevnetFile) -> anyhow::Result<Self> {
        let keys = dir.join(KEYS_SUBDIR);
        let mut clients = BTreeMap::new();
        for node in &devnet.nodes {
            let tls = if devnet.tls {
                let participant = keys.join(&node.name);
                let tls = NodeTls::load(
                    &keys.join(CA_CERT_FILE),
                    &participant.join(NODE_CERT_FILE),
                    &participant.join(NODE_KEY_FILE),
                )
                .with_context(|| format!("loading TLS material of {}", node.name))?;
                Some(tls)
            } else {
                None
            };
            let client = connect_lazy(&node.peer_addr, tls.as_ref())
                .with_context(|| format!("node {}: peer address {}", node.name, node.peer_addr))?;
            clients.insert(node.name.clone(), client);
        }
        if clients.is_empty() {
            bail!("{} lists no nodes", dir.join(remit_gateway::devnet::DEVNET_FILE).display());
        }
        Ok(Self { clients })
    }

    /// The node to send `participant`'s batch to on attempt `attempt`: its
    /// own node first; after a few failed attempts (its node may be down) the
    /// next nodes in turn. A participant without a node starts at the first.
    fn client_for(&self, participant: &str, attempt: u32) -> Client {
        let own = self.clients.keys().position(|name| name == participant).unwrap_or(0);
        let index = (own + (attempt / ATTEMPTS_PER_NODE) as usize) % self.clients.len();
        self.clients.values().nth(index).cloned().expect("index is taken modulo the non-zero node count")
    }

    /// The highest applied height over the nodes that answer.
    async fn tip_height(&self) -> Option<u64> {
        let mut best = None;
        for client in self.clients.values() {
            let mut client = client.clone();
            let call = client.get_tip(GetTipRequest {});
            if let Ok(Ok(tip)) = tokio::time::timeout(Duration::from_millis(TIP_POLL_TIMEOUT_MS), call).await {
                best = best.max(tip.into_inner().height);
            }
        }
        best
    }
}

/// A traffic generator signing with every participant identity in `keyring`.
pub fn traffic(keyring: &Keyring) -> anyhow::Result<TrafficGenerator> {
    let generator = TrafficGenerator::new(
        &keyring.network,
        &keyring.identities,
        TrafficConfig { seed: rand::random(), ..TrafficConfig::default() },
    );
    if generator.sender_count() < 2 {
        bail!("the keys directory needs identity keys of at least two participants that settle in USD");
    }
    Ok(generator)
}

/// A signed batch ready to send.
struct PreparedBatch {
    origin: String,
    bytes: Vec<u8>,
    uetrs: Vec<Uetr>,
}

/// Signs batches on a thread of its own (signing is CPU work) until `total`
/// transfers are made, or forever, or until the receiver is gone.
fn spawn_generator(
    mut generator: TrafficGenerator,
    batch: usize,
    total: Option<u64>,
) -> (mpsc::Receiver<PreparedBatch>, std::thread::JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel(PREPARED_BATCHES_MAX);
    let senders = generator.sender_count();
    let handle = std::thread::spawn(move || {
        let mut made = 0u64;
        loop {
            let round = (batch * senders) as u64;
            let count = total.map_or(round, |total| round.min(total - made));
            if count == 0 {
                return;
            }
            made += count;
            let created_at_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            for entry in generator.entries(count as usize, created_at_ms) {
                let Entry::TransferBatch { batch } = entry else { continue };
                let mut writer = Writer::with_capacity(128 * batch.transfers.len() + 128);
                batch.encode(&mut writer);
                let prepared = PreparedBatch {
                    origin: batch.origin.to_string(),
                    uetrs: batch.transfers.iter().map(|t| t.uetr).collect(),
                    bytes: writer.into_bytes(),
                };
                if sender.blocking_send(prepared).is_err() {
                    return;
                }
            }
        }
    });
    (receiver, handle)
}

/// Everything counted during a run. Transfer counts unless named otherwise.
#[derive(Debug, Default)]
struct Tally {
    submitted: u64,
    accepted: u64,
    rejected: u64,
    /// Transfers of batches that failed for good (no reply after the retries).
    failed: u64,
    certified: u64,
    batches: u64,
    batches_failed: u64,
    retries: u64,
    /// Transfers of retried batches found already applied (duplicate_uetr).
    already_applied: u64,
    rejected_reasons: BTreeMap<String, u64>,
    last_error: Option<String>,
    /// Accepted, not yet certified: block height -> (first submit, transfers).
    awaiting: BTreeMap<u64, Vec<(Instant, u64)>>,
    certified_height: Option<u64>,
    /// Submit -> certified latencies in ms, weighted by transfers.
    latencies: Vec<(f64, u64)>,
    first_submit: Option<Instant>,
    last_certified: Option<Instant>,
    highest_height: Option<u64>,
    /// Accepted UETRs, kept only when the run ends with a chain check.
    accepted_uetrs: Option<Vec<Uetr>>,
}

impl Tally {
    fn certify(&mut self, height: u64, first_submit: Instant, transfers: u64, now: Instant) {
        self.certified += transfers;
        self.latencies.push((now.duration_since(first_submit).as_secs_f64() * 1000.0, transfers));
        self.last_certified = Some(now);
        debug_assert!(self.certified_height.is_some_and(|h| h >= height));
    }

    fn observe_certified(&mut self, height: u64, now: Instant) {
        if self.certified_height.is_some_and(|h| h >= height) {
            return;
        }
        self.certified_height = Some(height);
        let later = self.awaiting.split_off(&(height + 1));
        let done = std::mem::replace(&mut self.awaiting, later);
        for (h, batches) in done {
            for (first_submit, transfers) in batches {
                self.certify(h, first_submit, transfers, now);
            }
        }
    }

    /// Counts a batch's final reply (or failure).
    fn record(
        &mut self,
        batch: &PreparedBatch,
        first_submit: Instant,
        retried: bool,
        reply: Result<SubmitBatchReply, tonic::Status>,
    ) {
        let transfers = batch.uetrs.len() as u64;
        let reply = match reply {
            Ok(reply) if !reply.batch_rejected && reply.results.len() != batch.uetrs.len() => {
                Err(tonic::Status::internal(format!(
                    "reply has {} results for {} transfers",
                    reply.results.len(),
                    batch.uetrs.len()
                )))
            }
            other => other,
        };
        let reply = match reply {
            Ok(reply) => reply,
            Err(status) => {
                self.batches_failed += 1;
                self.failed += transfers;
                self.last_error = Some(format!("{:?}: {}", status.code(), status.message()));
                return;
            }
        };
        if reply.batch_rejected {
            self.rejected += transfers;
            *self.rejected_reasons.entry(reply.batch_reason).or_default() += transfers;
            return;
        }
        let mut accepted = 0u64;
        for (uetr, result) in batch.uetrs.iter().zip(&reply.results) {
            // A retry of a batch that was applied after all finds its UETRs taken.
            if result.accepted || (retried && result.reason == DUPLICATE_UETR) {
                accepted += 1;
                self.already_applied += u64::from(!result.accepted);
                if let Some(uetrs) = &mut self.accepted_uetrs {
                    uetrs.push(*uetr);
                }
            } else {
                self.rejected += 1;
                *self.rejected_reasons.entry(result.reason.clone()).or_default() += 1;
            }
        }
        if accepted == 0 {
            return;
        }
        self.accepted += accepted;
        self.highest_height = self.highest_height.max(Some(reply.height));
        if self.certified_height.is_some_and(|h| h >= reply.height) {
            self.certify(reply.height, first_submit, accepted, Instant::now());
        } else {
            self.awaiting.entry(reply.height).or_default().push((first_submit, accepted));
        }
    }
}

/// Weighted percentile of `(value, weight)` samples, rounded to 0.1.
fn percentile(samples: &mut [(f64, u64)], percent: u64) -> f64 {
    let total: u64 = samples.iter().map(|(_, w)| w).sum();
    if total == 0 {
        return 0.0;
    }
    samples.sort_by(|a, b| a.0.total_cmp(&b.0));
    let rank = (total * percent).div_ceil(100).max(1);
    let mut seen = 0;
    for (value, weight) in samples.iter() {
        seen += weight;
        if seen >= rank {
            return (value * 10.0).round() / 10.0;
        }
    }
    samples.last().map_or(0.0, |(v, _)| (v * 10.0).round() / 10.0)
}

fn retryable(code: Code) -> bool {
    // DEADLINE_EXCEEDED, CANCELLED (client timeout) and UNKNOWN (a connection
    // dropped mid-call, e.g. a follower's forward to a leader that died) are
    // ambiguous like UNAVAILABLE: the batch may have been applied, which a
    // retry detects through duplicate_uetr.
    matches!(
        code,
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

/// How a run submits.
#[derive(Clone, Copy, Debug)]
pub struct LoadPlan {
    /// Transfers to submit; `None` runs until stopped.
    pub transfers: Option<u64>,
    /// Transfers per second; `None` for no limit.
    pub rate: Option<f64>,
    /// Transfers per batch.
    pub batch: usize,
    /// Batches in flight at once.
    pub in_flight: usize,
    /// No retry starts after this instant.
    pub deadline: Option<Instant>,
}

/// Paces submissions to a rate, allowing a burst of one batch.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn new(rate: f64, batch: usize) -> Self {
        let capacity = (batch as f64).max(rate / 20.0);
        Self { rate, capacity, tokens: batch as f64, refilled: Instant::now() }
    }

    async fn take(&mut self, tokens: usize) {
        let wanted = tokens as f64;
        loop {
            let now = Instant::now();
            self.tokens =
                (self.tokens + now.duration_since(self.refilled).as_secs_f64() * self.rate).min(self.capacity);
            self.refilled = now;
            if self.tokens >= wanted {
                self.tokens -= wanted;
                return;
            }
            tokio::time::sleep(Duration::from_secs_f64((wanted - self.tokens) / self.rate)).await;
        }
    }
}

/// A load run: the target, the counts, and one certified-height poller per node.
#[derive(Debug)]
pub struct Session {
    target: Arc<Target>,
    tally: Arc<Mutex<Tally>>,
    pollers: Vec<JoinHandle<()>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for poller in &self.pollers {
            poller.abort();
        }
    }
}

impl Session {
    /// Starts polling every node's certified height (inside a tokio runtime).
    pub fn start(target: Target, keep_uetrs: bool) -> Self {
        let target = Arc::new(target);
        let tally = Arc::new(Mutex::new(Tally { accepted_uetrs: keep_uetrs.then(Vec::new), ..Tally::default() }));
        let pollers =
            target.clients.values().map(|client| tokio::spawn(poll_certified(client.clone(), tally.clone()))).collect();
        Self { target, tally, pollers }
    }

    fn tally(&self) -> MutexGuard<'_, Tally> {
        lock(&self.tally)
    }

    /// Submits generated batches as planned; returns once every batch has its
    /// final answer (or, without a transfer count, never).
    pub async fn submit(&self, generator: TrafficGenerator, plan: LoadPlan) -> anyhow::Result<()> {
        let (mut batches, generator_thread) = spawn_generator(generator, plan.batch.max(1), plan.transfers);
        let slots = Arc::new(Semaphore::new(plan.in_flight.max(1)));
        let mut bucket = plan.rate.filter(|r| *r > 0.0).map(|rate| TokenBucket::new(rate, plan.batch));
        let mut tasks = JoinSet::new();
        while let Some(batch) = batches.recv().await {
            if let Some(bucket) = &mut bucket {
                bucket.take(batch.uetrs.len()).await;
            }
            let slot = slots.clone().acquire_owned().await.context("submission slots closed")?;
            let target = self.target.clone();
            let tally = self.tally.clone();
            tasks.spawn(async move {
                submit_batch(&target, batch, tally, plan.deadline).await;
                drop(slot);
            });
            while let Some(done) = tasks.try_join_next() {
                done.context("a submission task panicked")?;
            }
        }
        while let Some(done) = tasks.join_next().await {
            done.context("a submission task panicked")?;
        }
        if generator_thread.join().is_err() {
            bail!("the batch generator panicked");
        }
        Ok(())
    }

    /// Waits until every accepted transfer is certified; false at the deadline.
    pub async fn wait_certified(&self, deadline: Instant) -> bool {
        loop {
            if self.tally().awaiting.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(TIP_POLL_INTERVAL_MS)).await;
        }
    }

    /// `load: submitted N, certified M, rejected K, p99 submit->certified X ms`,
    /// the percentile over transfers certified since the previous line.
    pub fn status_line(&self) -> String {
        let mut tally = self.tally();
        let mut window = std::mem::take(&mut tally.latencies);
        let mut line = format!(
            "load: submitted {}, certified {}, rejected {}, p99 submit->certified {} ms",
            tally.submitted,
            tally.certified,
            tally.rejected,
            percentile(&mut window, 99)
        );
        if tally.failed > 0 {
            line.push_str(&format!(
                " ({} failed; last error {})",
                tally.failed,
                tally.last_error.as_deref().unwrap_or("none")
            ));
        }
        line
    }
}

fn lock(tally: &Mutex<Tally>) -> MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn poll_certified(mut client: Client, tally: Arc<Mutex<Tally>>) {
    let mut interval = tokio::time::interval(Duration::from_millis(TIP_POLL_INTERVAL_MS));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let call = client.get_tip(GetTipRequest {});
        let Ok(Ok(tip)) = tokio::time::timeout(Duration::from_millis(TIP_POLL_TIMEOUT_MS), call).await else {
            continue;
        };
        if let Some(certified) = tip.into_inner().certified_height {
            lock(&tally).observe_certified(certified, Instant::now());
        }
    }
}

/// Submits one batch, retrying transient refusals with backoff, and counts the answer.
async fn submit_batch(target: &Target, batch: PreparedBatch, tally: Arc<Mutex<Tally>>, deadline: Option<Instant>) {
    let first_submit = Instant::now();
    {
        let mut tally = lock(&tally);
        tally.submitted += batch.uetrs.len() as u64;
        tally.batches += 1;
        tally.first_submit.get_or_insert(first_submit);
    }
    let mut backoff = Duration::from_millis(RETRY_BACKOFF_MS_MIN);
    let mut attempt = 0;
    let reply = loop {
        let request = SubmitBatchRequest { batch: batch.bytes.clone(), forwarded: false };
        match target.client_for(&batch.origin, attempt).submit_batch(request).await {
            Ok(reply) => break Ok(reply.into_inner()),
            Err(status)
                if retryable(status.code())
                    && attempt + 1 < ATTEMPTS_MAX
                    && deadline.is_none_or(|d| Instant::now() + backoff < d) =>
            {
                lock(&tally).retries += 1;
                attempt += 1;
                let jitter = Duration::from_millis(rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1));
                tokio::time::sleep(backoff + jitter).await;
                backoff = (backoff * 2).min(Duration::from_millis(RETRY_BACKOFF_MS_MAX));
            }
            Err(status) => break Err(status),
        }
    };
    lock(&tally).record(&batch, first_submit, attempt > 0, reply);
}

/// What the chain says about the acknowledged transfers.
#[derive(Debug, Default)]
struct ChainCheck {
    blocks: u64,
    lost: u64,
    duplicated: u64,
    complete: bool,
}

/// Reads blocks `from..=to` and counts acknowledged UETRs that are missing or
/// accepted more than once.
async fn check_chain(
    target: &Target,
    from: u64,
    to: u64,
    acked: &[Uetr],
    deadline: Instant,
) -> anyhow::Result<ChainCheck> {
    let mut accepted_in_range: HashSet<Uetr> = HashSet::with_capacity(acked.len());
    let mut check = ChainCheck::default();
    let mut clients = target.clients.values().cycle();
    let mut height = from;
    while height <= to {
        if Instant::now() >= deadline {
            break;
        }
        let mut client = clients.next().cloned().expect("cycle over a non-empty map");
        let request = GetBlocksRequest { from_height: height, limit: VERIFY_BLOCKS_PER_CALL, ..Default::default() };
        let blocks = match client.get_blocks(request).await {
            Ok(reply) => reply.into_inner().blocks,
            Err(_) => Vec::new(),
        };
        if blocks.is_empty() {
            // This node is behind or down; ask the next one after a pause.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        for encoded in blocks {
            if encoded.height != height || height > to {
                break;
            }
            let block = Block::decode(&encoded.block).with_context(|| format!("decoding block {height}"))?;
            if block.height().0 != height {
                bail!("GetBlocks returned block {} for height {height}", block.height().0);
            }
            for (entry, result) in block.entries.iter().zip(&block.results) {
                let (Entry::TransferBatch { batch }, EntryResult::Batch { outcomes }) = (entry, result) else {
                    continue;
                };
                for (transfer, outcome) in batch.transfers.iter().zip(outcomes) {
                    if *outcome != TransferOutcome::Accepted {
                        continue;
                    }
                    if !accepted_in_range.insert(transfer.uetr) {
                        check.duplicated += 1;
                    }
                }
            }
            check.blocks += 1;
            height += 1;
        }
    }
    check.complete = height > to;
    check.lost = acked.iter().filter(|u| !accepted_in_range.contains(u)).count() as u64;
    Ok(check)
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// `remit ledger load`.
pub fn run(args: &LoadArgs) -> anyhow::Result<ExitCode> {
    if args.transfers == 0 {
        bail!("--transfers must be at least 1");
    }
    if args.batch == 0 || args.batch > remit_settlement::constants::BATCH_TRANSFERS_MAX {
        bail!("--batch must be 1 to {}", remit_settlement::constants::BATCH_TRANSFERS_MAX);
    }
    if args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        bail!("--rate must be a positive number of transfers per second");
    }
    let devnet = DevnetFile::load(&args.devnet).with_context(|| {
        format!("reading the devnet description; is `remit devnet --dir {}` running?", args.devnet.display())
    })?;
    let keys = args.devnet.join(KEYS_SUBDIR);
    let keyring = Keyring::load(&keys).with_context(|| format!("loading keys from {}", keys.display()))?;
    let generator = traffic(&keyring)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(run_load(args, &devnet, generator))
}

async fn run_load(args: &LoadArgs, devnet: &DevnetFile, generator: TrafficGenerator) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_s);
    let session = Session::start(Target::connect(&args.devnet, devnet)?, true);
    let Some(start_height) = session.target.tip_height().await else {
        bail!("no node of {} answers GetTip; is the devnet running?", args.devnet.display());
    };
    let plan = LoadPlan {
        transfers: Some(args.transfers),
        rate: args.rate,
        batch: args.batch,
        in_flight: args.in_flight,
        deadline: Some(deadline),
    };
    let submitted = tokio::time::timeout_at(deadline.into(), session.submit(generator, plan)).await;
    let timed_out = match submitted {
        Ok(result) => {
            result?;
            !session.wait_certified(deadline).await
        }
        Err(_) => true,
    };
    let (highest, acked) = {
        let mut tally = session.tally();
        (tally.highest_height, tally.accepted_uetrs.take().unwrap_or_default())
    };
    let check = match highest {
        Some(to) => {
            let verify_deadline = Instant::now() + Duration::from_secs(VERIFY_TIMEOUT_S);
            check_chain(&session.target, start_height + 1, to, &acked, verify_deadline).await?
        }
        None => ChainCheck { complete: true, ..ChainCheck::default() },
    };
    let mut tally = session.tally();
    let busy_s = match (tally.first_submit, tally.last_certified) {
        (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
        _ => 0.0,
    };
    let mut latencies = std::mem::take(&mut tally.latencies);
    let line = serde_json::json!({
        "submitted": tally.submitted,
        "accepted": tally.accepted,
        "certified": tally.certified,
        "rejected": tally.rejected,
        "failed": tally.failed,
        "unanswered": tally.submitted - tally.accepted - tally.rejected - tally.failed,
        "lost": check.lost,
        "duplicated": check.duplicated,
        "transfers_per_s": if busy_s > 0.0 { (tally.certified as f64 / busy_s).round() } else { 0.0 },
        "latency_ms_p50": percentile(&mut latencies, 50),
        "latency_ms_p99": percentile(&mut latencies, 99),
        "latency_ms_max": percentile(&mut latencies, 100),
        "batches": tally.batches,
        "batches_failed": tally.batches_failed,
        "batch": args.batch,
        "retries": tally.retries,
        "already_applied": tally.already_applied,
        "elapsed_s": round1(started.elapsed().as_secs_f64()),
        "blocks": check.blocks,
        "first_height": start_height + 1,
        "last_height": highest,
        "rejected_reasons": tally.rejected_reasons,
        "last_error": tally.last_error,
        "chain_checked": check.complete,
        "timed_out": timed_out,
        "tls": devnet.tls,
    });
    println!("{line}");
    // Batches that failed for good are not lost (never acknowledged), but the
    // run did not do what was asked, so it fails too.
    let ok = check.lost == 0 && check.duplicated == 0 && !timed_out && check.complete && tally.failed == 0;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::*;
    use remit_proto::v1::TransferResult;

    fn check_percentile(samples: &[(f64, u64)], percent: u64, expected: f64) {
        let mut samples = samples.to_vec();
        assert_eq!(percentile(&mut samples, percent), expected, "{samples:?} p{percent}");
    }

    #[test]
    fn percentiles_are_weighted_by_transfers() {
        check_percentile(&[], 99, 0.0);
        check_percentile(&[(5.0, 1)], 50, 5.0);
        check_percentile(&[(30.0, 1), (10.0, 98), (20.0, 1)], 50, 10.0);
        check_percentile(&[(30.0, 1), (10.0, 98), (20.0, 1)], 99, 20.0);
        check_percentile(&[(30.0, 1), (10.0, 98), (20.0, 1)], 100, 30.0);
        check_percentile(&[(1.04, 3)], 99, 1.0);
    }

    fn batch(transfers: usize) -> PreparedBatch {
        PreparedBatch {
            origin: "gw-us".into(),
            bytes: Vec::new(),
            uetrs: (0..transfers).map(|_| Uetr::new_random()).collect(),
        }
    }

    fn reply(height: u64, results: &[(bool, &str)]) -> Result<SubmitBatchReply, tonic::Status> {
        Ok(SubmitBatchReply {
            height,
            results: results
                .iter()
                .map(|(accepted, reason)| TransferResult {
                    accepted: *accepted,
                    reason: (*reason).into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn duplicates_count_as_applied_only_on_a_retry() {
        let mut tally = Tally { accepted_uetrs: Some(Vec::new()), ..Tally::default() };
        let now = Instant::now();
        tally.record(&batch(2), now, false, reply(5, &[(true, ""), (false, DUPLICATE_UETR)]));
        assert_eq!((tally.accepted, tally.rejected, tally.already_applied), (1, 1, 0));
        tally.record(&batch(2), now, true, reply(6, &[(true, ""), (false, DUPLICATE_UETR)]));
        assert_eq!((tally.accepted, tally.rejected, tally.already_applied), (3, 1, 1));
        tally.record(&batch(1), now, true, reply(6, &[(false, "net_debit_cap_exceeded")]));
        assert_eq!(tally.rejected_reasons.get("net_debit_cap_exceeded"), Some(&1));
        tally.record(&batch(3), now, false, Err(tonic::Status::invalid_argument("bad")));
        tally.record(&batch(3), now, false, reply(7, &[(true, "")]));
        assert_eq!((tally.failed, tally.batches_failed), (6, 2), "an error or a short reply fails the batch");
        assert_eq!(tally.accepted_uetrs.as_ref().map(Vec::len), Some(3));
    }

    #[test]
    fn certification_drains_heights_at_or_below() {
        let mut tally = Tally::default();
        let start = Instant::now();
        tally.record(&batch(2), start, false, reply(5, &[(true, ""), (true, "")]));
        tally.record(&batch(1), start, false, reply(7, &[(true, "")]));
        tally.observe_certified(6, start);
        assert_eq!(tally.certified, 2);
        tally.observe_certified(6, start);
        assert_eq!(tally.certified, 2, "a height seen twice counts once");
        tally.record(&batch(1), start, false, reply(4, &[(true, "")]));
        assert_eq!(tally.certified, 3, "a reply below the certified height is certified at once");
        tally.observe_certified(9, start);
        assert_eq!((tally.certified, tally.awaiting.len()), (4, 0));
    }
}
