//! Crash test of the durable ledger: a real child process appends certified
//! blocks and is killed with SIGKILL at random points, at least
//! [`KILLS_MIN`] times, restarting on the same data directory each time (a
//! fresh directory every [`KILLS_PER_DATA_DIR`] kills).
//!
//! Kills land either after a random delay from spawn (2 to 150 ms, so some
//! hit start-up, genesis, or a block half-written) or a random 0 to 12 ms after
//! a random number of `done` lines (so some hit the write of the next block).
//! The traffic seed is drawn from a small set, so later runs replay UETRs that
//! earlier runs already applied.
//!
//! Invariants checked after every kill, on the reopened store:
//! - the store reopens: `Chain::open` re-checks the tip (snapshot height and
//!   hash, state root, link to the previous block, newest certificate);
//! - every block the child reported `done`, in this run or any earlier one, is
//!   stored at its height with the same hash: nothing reported durable is lost
//!   or rewritten;
//! - `audit::verify_chain` over `stored_blocks` passes, every stored block is
//!   certified, and the audit tip equals the chain tip;
//! - no UETR is accepted twice across the chain (replayed ones are rejected),
//!   and the applied-UETR index matches the accepted transfers exactly;
//! - the payout states (the child reports completions and returns on the
//!   previous block's transfers) are exactly those the stored reports set;
//! - positions per currency sum to zero and equal the positions recomputed
//!   from the accepted transfers less the returned ones.
//!
//! Set `REMIT_CRASH_SEED` to replay a run's choices of kill points and seeds
//! (process timing still varies).

use std::ops::RangeInclusive;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use remit_settlement::network::{generate_network, write_network, NetworkConfig};
use remit_settlement::{Digest32, Height};
use remit_tests::{check_stored_ledger, ChildEnd, DoneBlock, WatchedChild};

/// Kills that must land on a running child.
const KILLS_MIN: usize = 50;
/// Kills on one data directory before the test moves to a fresh one. Every
/// check replays the whole chain (one pairing check per block), so bounding
/// the chain keeps the test's cost quadratic in this rather than in
/// [`KILLS_MIN`].
const KILLS_PER_DATA_DIR: usize = 10;
/// Bound on runs, in case children keep exiting before the kill.
const RUNS_MAX: usize = 4 * KILLS_MIN;
/// Validators in the generated network (n = 3f + 1 with f = 1).
const VALIDATORS: usize = 4;
/// Transfers per block: small, so a run appends several blocks before its kill.
const BATCH_TRANSFERS: usize = 256;
/// Blocks one run would append if never killed; far more than fit in a kill delay.
const BLOCKS_PER_RUN: u64 = 64;
/// Kill delay after spawn, in milliseconds.
const KILL_DELAY_MS: RangeInclusive<u64> = 2..=150;
/// `done` lines to wait for before a line-triggered kill.
const KILL_AFTER_DONE: RangeInclusive<usize> = 0..=12;
/// Extra delay after the awaited `done` line, in milliseconds.
const KILL_AFTER_DONE_DELAY_MS: RangeInclusive<u64> = 0..=12;
/// Traffic seeds; few, so that runs repeat each other's UETRs.
const TRAFFIC_SEEDS: u64 = 4;
/// How long to wait for one `done` line before declaring the child stuck.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

const _: () = assert!(KILLS_PER_DATA_DIR <= KILLS_MIN && KILLS_MIN <= RUNS_MAX);

/// Counts over the whole test.
#[derive(Debug, Default)]
struct Totals {
    data_dirs: usize,
    runs: usize,
    kills: usize,
    blocks_reported: usize,
    transfers_rejected: u64,
    payouts_reported: usize,
}

fn spawn_child(keys: &Path, data: &Path, traffic_seed: u64) -> anyhow::Result<WatchedChild> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ledger_crash_child"));
    command
        .arg("--keys")
        .arg(keys)
        .arg("--dir")
        .arg(data)
        .args(["--blocks", &BLOCKS_PER_RUN.to_string()])
        .args(["--batch", &BATCH_TRANSFERS.to_string()])
        .args(["--seed", &traffic_seed.to_string()]);
    WatchedChild::spawn(command)
}

/// Lets the child run until a randomly chosen point and kills it there.
fn run_and_kill(mut child: WatchedChild, rng: &mut StdRng) -> anyhow::Result<ChildEnd> {
    if rng.gen_bool(0.5) {
        std::thread::sleep(Duration::from_millis(rng.gen_range(KILL_DELAY_MS)));
    } else {
        let wanted = rng.gen_range(KILL_AFTER_DONE);
        for _ in 0..wanted {
            // `None`: it exited or stalled; the end status tells which.
            if child.next_line(LINE_TIMEOUT).is_none() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(KILL_AFTER_DONE_DELAY_MS)));
    }
    child.kill()
}

/// Records the child's `done` lines, refusing a height reported with two hashes.
fn record_done(end: &ChildEnd, reported: &mut Vec<Option<Digest32>>) -> anyhow::Result<()> {
    for line in &end.stdout_lines {
        let done = DoneBlock::parse(line)?;
        let slot = usize::try_from(done.height.0)?;
        if reported.len() <= slot {
            reported.resize(slot + 1, None);
        }
        if let Some(earlier) = reported[slot] {
            ensure!(earlier == done.hash, "block {} reported as {earlier} and later as {}", done.height, done.hash);
        }
        reported[slot] = Some(done.hash);
    }
    Ok(())
}

/// Checks the reopened store against every block ever reported done; returns
/// the number of stored transfers that were rejected and of payout reports accepted.
fn check_after_kill(
    data: &Path,
    network: &NetworkConfig,
    reported: &[Option<Digest32>],
) -> anyhow::Result<(u64, usize)> {
    let stored = check_stored_ledger(data, network)?;
    for (height, hash) in reported.iter().enumerate() {
        let Some(hash) = hash else { continue };
        let height = Height(u64::try_from(height)?);
        match stored.hash_at(height) {
            Some(found) => ensure!(found == *hash, "block {height} was reported as {hash}, the store holds {found}"),
            None => bail!("block {height} was reported done as {hash} but is not stored"),
        }
    }
    Ok((stored.transfers_rejected, stored.payouts.len()))
}

/// Starts, kills and checks children on one fresh data directory until
/// [`KILLS_PER_DATA_DIR`] kills landed there.
fn crash_one_data_dir(
    keys: &Path,
    data: &Path,
    network: &NetworkConfig,
    rng: &mut StdRng,
    totals: &mut Totals,
) -> anyhow::Result<()> {
    // Hash of every block ever reported done in this data directory, by height.
    let mut reported: Vec<Option<Digest32>> = Vec::new();
    let mut kills = 0;
    let mut transfers_rejected = 0;
    let mut payouts_reported = 0;
    while kills < KILLS_PER_DATA_DIR {
        ensure!(totals.runs < RUNS_MAX, "only {} of {} runs were killed while running", totals.kills, totals.runs);
        totals.runs += 1;
        let child = spawn_child(keys, data, rng.gen_range(0..TRAFFIC_SEEDS))?;
        let end = run_and_kill(child, rng)?;
        let context = || format!("run {} in {}, child stderr:\n{}", totals.runs, data.display(), end.stderr);
        if end.killed {
            kills += 1;
        } else {
            ensure!(end.status.success(), "child failed with {}; {}", end.status, context());
        }
        record_done(&end, &mut reported).with_context(context)?;
        (transfers_rejected, payouts_reported) = check_after_kill(data, network, &reported).with_context(context)?;
    }
    ensure!(reported.len() > 1, "no block beyond genesis was reported done in {}", data.display());
    totals.kills += kills;
    totals.blocks_reported += reported.len();
    totals.transfers_rejected += transfers_rejected;
    totals.payouts_reported += payouts_reported;
    Ok(())
}

#[test]
fn ledger_survives_sigkill_at_random_points() -> anyhow::Result<()> {
    let seed = match std::env::var("REMIT_CRASH_SEED") {
        Ok(text) => text.parse().context("REMIT_CRASH_SEED must be a u64")?,
        Err(_) => rand::random(),
    };
    println!("REMIT_CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let temp = tempfile::tempdir()?;
    let keys = temp.path().join("keys");
    let genesis_time_ms = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    let generated = generate_network(remit_settlement::network::NetworkShape::validators(VALIDATORS), genesis_time_ms)
        .map_err(anyhow::Error::msg)?;
    write_network(&generated, &keys)?;

    let started = Instant::now();
    let mut totals = Totals::default();
    while totals.kills < KILLS_MIN {
        let data = temp.path().join(format!("node-{}", totals.data_dirs));
        totals.data_dirs += 1;
        crash_one_data_dir(&keys, &data, &generated.network, &mut rng, &mut totals)
            .with_context(|| format!("REMIT_CRASH_SEED={seed}"))?;
    }
    println!("{totals:?} in {:?}", started.elapsed());
    // Seeds repeat across runs, so replayed UETRs must have reached the ledger
    // and been rejected; otherwise the duplicate check checked nothing.
    ensure!(totals.transfers_rejected > 0, "no replayed transfer reached the ledger");
    ensure!(totals.payouts_reported > 0, "no payout report reached the ledger");
    Ok(())
}
