//! `remit ledger bench`: builds a certified chain with in-process validators
//! (every validator signs a share; a quorum is combined and checked), stored
//! durably, and prints one JSON line of figures.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use remit_settlement::chain::Chain;
use remit_settlement::network::{generate_network, write_network, Keyring, NETWORK_FILE};
use remit_settlement::store::SledLedgerStore;
use remit_settlement::SignatureCheck;
use remit_simulations::traffic::{TrafficConfig, TrafficGenerator};

use crate::ledger::ledger_path;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Keys directory written by `remit keygen`; a 4-validator network is
    /// generated there when it holds none.
    #[arg(long)]
    keys: PathBuf,
    /// Node data directory to build the chain in (created if absent; an
    /// existing chain of the same network is extended).
    #[arg(long)]
    dir: PathBuf,
    /// Number of blocks to append.
    #[arg(long, default_value_t = 100)]
    blocks: u64,
    /// Transfers per block, split into one signed batch per participant.
    #[arg(long, default_value_t = 8192)]
    batch: usize,
}

fn now_ms() -> anyhow::Result<u64> {
    Ok(u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).context("clock before 1970")?.as_millis())?)
}

fn percentile_ms(samples: &mut [f64], percentile: usize) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    let rank = (samples.len() * percentile).div_ceil(100).clamp(1, samples.len());
    (samples[rank - 1] * 1000.0).round() / 1000.0
}

/// Validators in the network the bench generates when `--keys` holds none.
const BENCH_DEFAULT_VALIDATORS: usize = 4;

pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if !args.keys.join(NETWORK_FILE).exists() {
        let now = now_ms()?;
        let generated =
            generate_network(remit_settlement::network::NetworkShape::validators(BENCH_DEFAULT_VALIDATORS), now)
                .map_err(anyhow::Error::msg)?;
        write_network(&generated, &args.keys).context("writing generated keys")?;
        eprintln!(
            "generated a {BENCH_DEFAULT_VALIDATORS}-validator network {} in {}",
            generated.network.chain_id,
            args.keys.display()
        );
    }
    let keyring = Keyring::load(&args.keys).with_context(|| format!("loading keys from {}", args.keys.display()))?;
    anyhow::ensure!(
        keyring.validator_keys.len() == keyring.validators.len(),
        "{} holds {} of {} validator key shares; the bench runs every validator",
        args.keys.display(),
        keyring.validator_keys.len(),
        keyring.validators.len()
    );
    let path = ledger_path(&args.dir);
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    let store = SledLedgerStore::open(&path)?;
    let mut chain = Chain::open(store, Some(&keyring.network))?;
    if chain.tip().is_none() {
        let genesis = keyring.network.genesis_proposal();
        chain.append(genesis, SignatureCheck::Verify, |block| keyring.certify(&block.header).ok())?;
    }
    let mut traffic = TrafficGenerator::new(
        &keyring.network,
        &keyring.identities,
        TrafficConfig { seed: rand::random(), ..TrafficConfig::default() },
    );
    anyhow::ensure!(traffic.sender_count() > 1, "the network needs at least two participants with identity keys");

    let mut certify_ms = Vec::with_capacity(args.blocks as usize);
    let mut block_ms = Vec::with_capacity(args.blocks as usize);
    let mut busy_s = 0.0f64;
    let mut accepted = 0u64;
    let mut rejected = 0u64;
    let wall = Instant::now();
    for _ in 0..args.blocks {
        let timestamp = now_ms()?;
        let entries = traffic.entries(args.batch, timestamp);
        let proposal = chain.next_proposal(timestamp, entries);
        let started = Instant::now();
        let mut certify_elapsed = 0.0;
        let (block, certificate) = chain.append(proposal, SignatureCheck::Verify, |block| {
            let certify_started = Instant::now();
            let certificate = keyring.certify(&block.header);
            certify_elapsed = certify_started.elapsed().as_secs_f64();
            certificate.ok()
        })?;
        anyhow::ensure!(certificate.is_some(), "block {} could not be certified", block.height());
        let elapsed = started.elapsed().as_secs_f64();
        busy_s += elapsed;
        block_ms.push(elapsed * 1000.0);
        certify_ms.push(certify_elapsed * 1000.0);
        accepted += u64::from(block.header.accepted_count);
        rejected += u64::from(block.header.transfer_count - block.header.accepted_count);
    }
    let wall_s = wall.elapsed().as_secs_f64();
    let (tip_height, tip_hash) = chain.tip().context("chain has a tip after genesis")?;
    let line = serde_json::json!({
        "blocks": args.blocks,
        "transfers": accepted,
        "rejected": rejected,
        "batch": args.batch,
        "validators": keyring.validators.len(),
        "quorum": keyring.validators.quorum(),
        "transfers_per_s": if busy_s > 0.0 { (accepted as f64 / busy_s).round() } else { 0.0 },
        "transfers_per_s_wall": if wall_s > 0.0 { (accepted as f64 / wall_s).round() } else { 0.0 },
        "certify_ms_p50": percentile_ms(&mut certify_ms, 50),
        "certify_ms_p99": percentile_ms(&mut certify_ms, 99),
        "block_ms_p50": percentile_ms(&mut block_ms, 50),
        "block_ms_p99": percentile_ms(&mut block_ms, 99),
        "tip_height": tip_height.0,
        "tip_hash": tip_hash.to_hex(),
    });
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}
