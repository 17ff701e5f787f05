//! The `remit` operator CLI as an operator runs it, one real process per call:
//! `keygen` writes private key files and refuses to overwrite, `ledger bench`
//! builds a chain that `ledger verify --dir` accepts, `ledger export` writes a
//! chain that `ledger verify --chain` accepts, and every tampering with the
//! export is refused with the height it happened at.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context};
use serde_json::Value;
use tempfile::TempDir;

/// Participant key files keygen writes, all of which must be private.
const SECRET_FILES: [&str; 2] = ["validator_key_share.json", "identity_ed25519.hex"];

/// What one `remit` call did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn remit<I, S>(args: I) -> anyhow::Result<Run>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = Command::new(env!("CARGO_BIN_EXE_remit")).args(args).output().context("running remit")?;
    Ok(Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).context("stdout is UTF-8")?,
        stderr: String::from_utf8(output.stderr).context("stderr is UTF-8")?,
    })
}

/// Runs `remit` and requires exit code 0.
fn remit_ok<I, S>(args: I) -> anyhow::Result<Run>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let run = remit(args)?;
    ensure!(run.code == Some(0), "remit exited with {:?}:\n{}", run.code, run.output());
    Ok(run)
}

fn keygen(out: &Path, force: bool) -> anyhow::Result<Run> {
    let mut args = vec![OsStr::new("keygen"), OsStr::new("--validators"), OsStr::new("4")];
    args.extend([OsStr::new("--out"), out.as_os_str()]);
    if force {
        args.push(OsStr::new("--force"));
    }
    remit(args)
}

fn participant_ids(keys: &Path) -> anyhow::Result<Vec<String>> {
    let network: Value = serde_json::from_str(&fs::read_to_string(keys.join("network.json"))?)?;
    let participants = network["participants"].as_array().context("network.json has participants")?;
    participants.iter().map(|p| p["id"].as_str().map(str::to_owned).context("participant has an id")).collect()
}

/// Every secret value keygen wrote: identity keys in hex and the numbers of
/// each key share.
fn secrets(keys: &Path) -> anyhow::Result<Vec<String>> {
    let mut secrets = Vec::new();
    for id in participant_ids(keys)? {
        let dir = keys.join(&id);
        secrets.push(fs::read_to_string(dir.join("identity_ed25519.hex"))?.trim().to_owned());
        let share: Value = serde_json::from_str(&fs::read_to_string(dir.join("validator_key_share.json"))?)?;
        let limbs = share["secret_key_share"].as_array().context("key share file has secret_key_share")?;
        secrets.extend(limbs.iter().map(Value::to_string));
    }
    ensure!(secrets.len() >= 8, "expected secrets for 4 participants, found {}", secrets.len());
    Ok(secrets)
}

fn assert_no_secret_in(keys: &Path, run: &Run) -> anyhow::Result<()> {
    let output = run.output();
    for secret in secrets(keys)? {
        ensure!(!output.contains(&secret), "a secret appears in the output:\n{output}");
    }
    Ok(())
}

fn assert_secret_files_private(keys: &Path) -> anyhow::Result<()> {
    for id in participant_ids(keys)? {
        for file in SECRET_FILES {
            let path = keys.join(&id).join(file);
            let mode = fs::metadata(&path).with_context(|| format!("{} exists", path.display()))?.permissions().mode();
            ensure!(mode & 0o777 == 0o600, "{} has mode {:o}, not 600", path.display(), mode & 0o777);
        }
    }
    Ok(())
}

#[test]
fn keygen_writes_private_key_files_and_refuses_to_overwrite() -> anyhow::Result<()> {
    let temp = TempDir::new()?;
    let keys = temp.path().join("keys");
    let first = keygen(&keys, false)?;
    ensure!(first.code == Some(0), "keygen failed:\n{}", first.output());

    let network_json = fs::read_to_string(keys.join("network.json"))?;
    let network: Value = serde_json::from_str(&network_json)?;
    let group_key = fs::read_to_string(keys.join("group_public_key.hex"))?;
    ensure!(Some(group_key.trim()) == network["validators"]["group_public_key"].as_str(), "group key file differs");
    ensure!(participant_ids(&keys)?.len() == 4, "one participant per validator");
    assert_secret_files_private(&keys)?;
    assert_no_secret_in(&keys, &first)?;

    let refused = keygen(&keys, false)?;
    ensure!(refused.code == Some(2), "keygen over a network exited {:?}:\n{}", refused.code, refused.output());
    ensure!(refused.stderr.contains("--force"), "the refusal names --force:\n{}", refused.stderr);
    ensure!(fs::read_to_string(keys.join("network.json"))? == network_json, "network.json was changed");
    assert_no_secret_in(&keys, &refused)?;

    // A key file loosened by hand is private again once --force rewrites it.
    let loosened = keys.join("gw-us").join("identity_ed25519.hex");
    fs::set_permissions(&loosened, fs::Permissions::from_mode(0o644))?;
    let forced = keygen(&keys, true)?;
    ensure!(forced.code == Some(0), "keygen --force failed:\n{}", forced.output());
    ensure!(fs::read_to_string(keys.join("network.json"))? != network_json, "--force wrote a new network");
    assert_secret_files_private(&keys)?;
    assert_no_secret_in(&keys, &forced)?;
    Ok(())
}

/// A 4-validator network with a 5-block bench chain of 64 transfers a block.
struct BenchChain {
    _temp: TempDir,
    keys: PathBuf,
    data: PathBuf,
    bench: Value,
}

impl BenchChain {
    fn new() -> anyhow::Result<Self> {
        let temp = TempDir::new()?;
        let keys = temp.path().join("keys");
        let data = temp.path().join("node");
        let generated = keygen(&keys, false)?;
        ensure!(generated.code == Some(0), "keygen failed:\n{}", generated.output());
        let args = [OsStr::new("ledger"), OsStr::new("bench"), OsStr::new("--keys"), keys.as_os_str()];
        let run = remit_ok(
            args.into_iter()
                .chain([OsStr::new("--dir"), data.as_os_str()])
                .chain(["--blocks", "5", "--batch", "64"].map(OsStr::new)),
        )?;
        let lines: Vec<&str> = run.stdout.lines().collect();
        ensure!(lines.len() == 1, "bench prints one line, got:\n{}", run.stdout);
        let bench = serde_json::from_str(lines[0]).context("bench prints JSON")?;
        Ok(Self { _temp: temp, keys, data, bench })
    }

    fn tip_hash(&self) -> anyhow::Result<&str> {
        self.bench["tip_hash"].as_str().context("bench reports tip_hash")
    }

    /// The line `ledger verify` must print for the whole bench chain.
    fn verified_line(&self) -> anyhow::Result<String> {
        Ok(format!("verified 6 blocks, 320 transfers, tip 5 {}\n", self.tip_hash()?))
    }

    fn export(&self) -> anyhow::Result<PathBuf> {
        let out = self.data.with_file_name("chain.jsonl");
        remit_ok([OsStr::new("ledger"), OsStr::new("export"), OsStr::new("--dir")].into_iter().chain([
            self.data.as_os_str(),
            OsStr::new("--out"),
            out.as_os_str(),
        ]))?;
        Ok(out)
    }

    fn verify_chain_file(&self, chain: &Path) -> anyhow::Result<Run> {
        let network = self.keys.join("network.json");
        remit([OsStr::new("ledger"), OsStr::new("verify"), OsStr::new("--chain")].into_iter().chain([
            chain.as_os_str(),
            OsStr::new("--network"),
            network.as_os_str(),
        ]))
    }
}

#[test]
fn bench_reports_figures_and_its_chain_verifies() -> anyhow::Result<()> {
    let chain = BenchChain::new()?;
    let bench = &chain.bench;
    ensure!(bench["blocks"].as_u64() == Some(5), "blocks: {bench}");
    ensure!(bench["transfers"].as_u64() == Some(320), "transfers: {bench}");
    ensure!(bench["tip_height"].as_u64() == Some(5), "tip_height: {bench}");
    let rate = bench["transfers_per_s"].as_f64().context("transfers_per_s is a number")?;
    let p50 = bench["certify_ms_p50"].as_f64().context("certify_ms_p50 is a number")?;
    let p99 = bench["certify_ms_p99"].as_f64().context("certify_ms_p99 is a number")?;
    ensure!(rate > 0.0 && p50 > 0.0 && p50 <= p99, "figures out of order: {bench}");
    ensure!(chain.tip_hash()?.len() == 64, "tip_hash is a hex digest: {bench}");

    let verified = remit_ok([OsStr::new("ledger"), OsStr::new("verify"), OsStr::new("--dir"), chain.data.as_os_str()])?;
    ensure!(verified.stdout == chain.verified_line()?, "verify --dir printed:\n{}", verified.output());
    Ok(())
}

#[test]
fn export_verifies_offline_with_only_the_network_file() -> anyhow::Result<()> {
    let chain = BenchChain::new()?;
    let export = chain.export()?;
    ensure!(fs::read_to_string(&export)?.lines().count() == 6, "one line per block, genesis included");
    let verified = chain.verify_chain_file(&export)?;
    ensure!(verified.code == Some(0), "verify --chain failed:\n{}", verified.output());
    ensure!(verified.stdout == chain.verified_line()?, "verify --chain printed:\n{}", verified.output());
    Ok(())
}

/// What verifying a tampered export must report.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Exit 0 with the untampered chain's line.
    Verified,
    /// Exit 1 naming this height, with this phrase in the reason.
    FailsAt(u64, &'static str),
}

fn lines_of(path: &Path) -> anyhow::Result<Vec<Value>> {
    fs::read_to_string(path)?.lines().map(|line| Ok(serde_json::from_str(line)?)).collect()
}

/// Writes the export's blocks changed by `tamper`, verifies the result and
/// compares with `expected`.
fn check(chain: &BenchChain, export: &Path, tamper: fn(&mut Vec<Value>), expected: Expect) -> anyhow::Result<()> {
    let mut blocks = lines_of(export)?;
    tamper(&mut blocks);
    let tampered = export.with_file_name("tampered.jsonl");
    let text: Vec<String> = blocks.iter().map(Value::to_string).collect();
    fs::write(&tampered, text.join("\n") + "\n")?;
    let run = chain.verify_chain_file(&tampered)?;
    match expected {
        Expect::Verified => {
            ensure!(run.code == Some(0) && run.stdout == chain.verified_line()?, "expected success:\n{}", run.output())
        }
        Expect::FailsAt(height, phrase) => {
            let prefix = format!("verification failed at height {height}: ");
            ensure!(run.code == Some(1), "expected exit 1, got {:?}:\n{}", run.code, run.output());
            ensure!(run.stdout.starts_with(&prefix), "expected {prefix:?}, got:\n{}", run.output());
            ensure!(run.stdout.contains(phrase), "expected {phrase:?} in:\n{}", run.output());
        }
    }
    Ok(())
}

fn first_transfer_amount(block: &mut Value) -> Option<&mut Value> {
    let entries = block["entries"].as_array_mut()?;
    let batch = entries.iter_mut().find(|entry| entry["type"] == "transfer_batch")?;
    batch["batch"]["transfers"].get_mut(0)?["amount"].get_mut("amount")
}

fn change_amount_in_block_3(blocks: &mut [Value]) {
    let amount = first_transfer_amount(&mut blocks[3]).expect("block 3 carries a transfer batch");
    // Another valid amount, so the line still parses and the audit must find it.
    *amount = Value::from(if amount == "1.00" { "2.00" } else { "1.00" });
}

#[test]
fn tampered_exports_fail_at_the_tampered_height() -> anyhow::Result<()> {
    let chain = BenchChain::new()?;
    let export = chain.export()?;
    // Parsing and rewriting alone changes nothing, so each failure below is
    // the tampering's.
    check(&chain, &export, |_| {}, Expect::Verified)?;
    check(&chain, &export, |blocks| change_amount_in_block_3(blocks), Expect::FailsAt(3, "entries root"))?;
    check(&chain, &export, |blocks| blocks.swap(2, 3), Expect::FailsAt(2, "expected block 2, found block 3"))?;
    check(
        &chain,
        &export,
        |blocks| blocks[4]["certificate"] = blocks[2]["certificate"].clone(),
        Expect::FailsAt(4, "certificate does not verify"),
    )?;
    // A line deleted in the middle: block 4 arrives where block 3 belongs.
    check(
        &chain,
        &export,
        |blocks| {
            blocks.remove(3);
        },
        Expect::FailsAt(3, "expected block 3, found block 4"),
    )?;
    // An empty export proves nothing and must not pass.
    check(&chain, &export, |blocks| blocks.clear(), Expect::FailsAt(0, "no genesis block"))?;
    Ok(())
}
