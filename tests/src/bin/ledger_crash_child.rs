//! `ledger_crash_child --keys DIR --dir DATA_DIR --blocks N --batch M [--seed S]`
//!
//! Opens the chain in `DATA_DIR/ledger` (creating genesis when the store is
//! empty) and appends `N` certified blocks of `M` synthetic transfers each,
//! certified by every validator in `DIR`. After each append returns, which is
//! after the block is flushed to disk, it prints `done <height> <hash-hex>` and
//! flushes stdout: a `done` line is a promise the crash test holds it to.
//!
//! `--seed` fixes the traffic; restarting with a seed already used replays
//! the same UETRs, which the ledger must reject as duplicates.
//!
//! Each block after the first of a run also carries payout reports from the
//! destinations of the previous block's accepted transfers: about a quarter
//! completed and a quarter returned (AC04), so that crashes also hit blocks
//! whose returns reverse positions and whose payout states must survive.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use remit_settlement::chain::Chain;
use remit_settlement::network::Keyring;
use remit_settlement::store::SledLedgerStore;
use remit_settlement::{
    Block, Entry, EntryResult, ParticipantId, PayoutOutcome, PayoutReport, PayoutReportBatch, ReturnReason,
    SignatureCheck, TransferOutcome,
};
use remit_simulations::traffic::{TrafficConfig, TrafficGenerator};
use remit_tests::{ledger_path, DoneBlock};

/// Longest run a caller may ask for; the crash test kills far sooner.
const BLOCKS_MAX: u64 = 100_000;

#[derive(Debug)]
struct Args {
    keys: PathBuf,
    dir: PathBuf,
    blocks: u64,
    batch: usize,
    seed: Option<u64>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let (mut keys, mut dir, mut blocks, mut batch, mut seed) = (None, None, None, None, None);
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--keys" => keys = Some(PathBuf::from(value)),
            "--dir" => dir = Some(PathBuf::from(value)),
            "--blocks" => blocks = Some(value.parse().with_context(|| format!("--blocks {value:?}"))?),
            "--batch" => batch = Some(value.parse().with_context(|| format!("--batch {value:?}"))?),
            "--seed" => seed = Some(value.parse().with_context(|| format!("--seed {value:?}"))?),
            other => bail!("unknown argument {other:?}"),
        }
    }
    let args = Args {
        keys: keys.context("--keys is required")?,
        dir: dir.context("--dir is required")?,
        blocks: blocks.context("--blocks is required")?,
        batch: batch.context("--batch is required")?,
        seed,
    };
    ensure!(args.blocks <= BLOCKS_MAX, "--blocks must be at most {BLOCKS_MAX}");
    Ok(args)
}

fn now_ms() -> anyhow::Result<u64> {
    Ok(u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).context("clock before 1970")?.as_millis())?)
}

fn report_done(height: remit_settlement::Height, hash: remit_settlement::Digest32) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", DoneBlock { height, hash }.to_line()).context("writing stdout")?;
    stdout.flush().context("flushing stdout")
}

/// Payout reports on some of `block`'s accepted transfers, one signed batch
/// per destination. The choice depends only on the UETR, so it is the same
/// whenever the same block is replayed.
fn payout_reports(block: &Block, keyring: &Keyring) -> anyhow::Result<Vec<Entry>> {
    let mut by_destination: BTreeMap<ParticipantId, Vec<PayoutReport>> = BTreeMap::new();
    for (entry, result) in block.entries.iter().zip(&block.results) {
        let (Entry::TransferBatch { batch }, EntryResult::Batch { outcomes }) = (entry, result) else { continue };
        for (transfer, outcome) in batch.transfers.iter().zip(outcomes) {
            let outcome = match (outcome, transfer.uetr.as_bytes()[15] % 4) {
                (TransferOutcome::Accepted, 0) => PayoutOutcome::Completed,
                (TransferOutcome::Accepted, 1) => PayoutOutcome::Returned { reason: ReturnReason::new("AC04")? },
                _ => continue,
            };
            by_destination
                .entry(transfer.destination.clone())
                .or_default()
                .push(PayoutReport { uetr: transfer.uetr, outcome });
        }
    }
    let chain_id = &keyring.network.chain_id;
    Ok(by_destination
        .into_iter()
        .filter_map(|(reporter, reports)| {
            let key = keyring.identities.get(&reporter)?;
            Some(Entry::PayoutReports { batch: PayoutReportBatch::sign(chain_id, reporter, reports, key) })
        })
        .collect())
}

fn main() -> anyhow::Result<()> {
    let args = parse_args(std::env::args().skip(1))?;
    let keyring = Keyring::load(&args.keys).with_context(|| format!("loading keys from {}", args.keys.display()))?;
    let path = ledger_path(&args.dir);
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    let store = SledLedgerStore::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut chain = Chain::open(store, Some(&keyring.network))?;
    if chain.tip().is_none() {
        let genesis = keyring.network.genesis_proposal();
        let (block, certificate) =
            chain.append(genesis, SignatureCheck::Verify, |block| keyring.certify(&block.header).ok())?;
        ensure!(certificate.is_some(), "genesis could not be certified");
        report_done(block.height(), block.hash())?;
    }
    let config = TrafficConfig { seed: args.seed.unwrap_or_else(rand::random), ..TrafficConfig::default() };
    let mut traffic = TrafficGenerator::new(&keyring.network, &keyring.identities, config);
    let mut previous: Option<Block> = None;
    for _ in 0..args.blocks {
        let timestamp = now_ms()?;
        let mut entries = traffic.entries(args.batch, timestamp);
        if let Some(previous) = &previous {
            entries.extend(payout_reports(previous, &keyring)?);
        }
        let proposal = chain.next_proposal(timestamp, entries);
        let (block, certificate) =
            chain.append(proposal, SignatureCheck::Verify, |block| keyring.certify(&block.header).ok())?;
        ensure!(certificate.is_some(), "block {} could not be certified", block.height());
        report_done(block.height(), block.hash())?;
        previous = Some(block);
    }
    Ok(())
}
