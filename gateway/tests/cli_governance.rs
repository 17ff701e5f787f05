//! The network and governance commands of the `remit` CLI, offline, one real
//! process per call: `keygen` with gateways and governance keys,
//! `network info` (quorums for 4 to 7 validators, roles), `identity new`,
//! and `governance propose` / `sign` with their refusals. Submitting to a
//! node is covered by `tests/tests/net_governance.rs`.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context};
use serde_json::Value;
use tempfile::TempDir;

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
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

fn ok(run: Run) -> anyhow::Result<Run> {
    ensure!(run.code == Some(0), "remit exited {:?}:\n{}{}", run.code, run.stdout, run.stderr);
    Ok(run)
}

fn refused(run: Run, expected: &str) -> anyhow::Result<()> {
    ensure!(run.code == Some(2), "expected a refusal, exit {:?}:\n{}{}", run.code, run.stdout, run.stderr);
    ensure!(run.stderr.contains(expected), "expected {expected:?} in:\n{}", run.stderr);
    Ok(())
}

fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

fn info(keys: &Path) -> anyhow::Result<Value> {
    let run = ok(remit(["network", "info", "--network", s(&keys.join("network.json"))])?)?;
    ensure!(run.stdout.lines().count() == 1, "one line: {}", run.stdout);
    serde_json::from_str(&run.stdout).context("network info prints JSON")
}

fn mode(path: &Path) -> anyhow::Result<u32> {
    Ok(fs::metadata(path).with_context(|| format!("{} exists", path.display()))?.permissions().mode() & 0o777)
}

#[test]
fn keygen_makes_gateways_and_governance_keys_and_network_info_describes_them() -> anyhow::Result<()> {
    let temp = TempDir::new()?;
    let keys = temp.path().join("keys");
    let args = ["keygen", "--validators", "4", "--gateways", "2", "--governance", "5", "--governance-threshold", "3"];
    let run = ok(remit(args.iter().copied().chain(["--out", s(&keys)]))?)?;
    ensure!(run.stdout.contains("2 gateways and 5 governance keys (3 to approve)"), "{}", run.stdout);
    let network = info(&keys)?;
    ensure!(network["validators"] == 4 && network["faulty_max"] == 1 && network["quorum"] == 3, "{network}");
    ensure!(network["governance"]["threshold"] == 3, "{network}");
    let governance_keys = network["governance"]["keys"].as_array().context("keys")?;
    ensure!(
        governance_keys.len() == 5 && governance_keys.iter().all(|k| k.as_str().map(str::len) == Some(64)),
        "{network}"
    );
    let participants = network["participants"].as_array().context("participants")?;
    let roles: Vec<(&str, &str, Option<u64>)> = participants
        .iter()
        .map(|p| (p["id"].as_str().unwrap_or(""), p["role"].as_str().unwrap_or(""), p["validator_index"].as_u64()))
        .collect();
    ensure!(
        roles
            == [
                ("gw-us", "validator", Some(0)),
                ("gw-ph", "validator", Some(1)),
                ("gw-mx", "validator", Some(2)),
                ("gw-ke", "validator", Some(3)),
                ("gw-in", "gateway", None),
                ("gw-gb", "gateway", None),
            ],
        "{roles:?}"
    );
    ensure!(participants[4]["country"] == "IN" && participants[4]["name"] == "Remit Gateway India", "{network}");
    for i in 0..5 {
        let path = keys.join("governance").join(format!("key-{i}.hex"));
        ensure!(mode(&path)? == 0o600, "{} is not private", path.display());
        let secret = fs::read_to_string(&path)?;
        ensure!(!run.stdout.contains(secret.trim()), "a governance secret was printed");
    }
    for gateway in ["gw-in", "gw-gb"] {
        ensure!(mode(&keys.join(gateway).join("identity_ed25519.hex"))? == 0o600, "{gateway} identity");
        ensure!(!keys.join(gateway).join("validator_key_share.json").exists(), "{gateway} has no key share");
    }
    Ok(())
}

#[test]
fn quorums_for_any_n_and_bad_keygen_parameters() -> anyhow::Result<()> {
    let temp = TempDir::new()?;
    // q = ceil((n + f + 1) / 2): 2f + 1 only when n = 3f + 1.
    for (n, f, q) in [(1, 0, 1), (4, 1, 3), (5, 1, 4), (6, 1, 4), (7, 2, 5)] {
        let keys = temp.path().join(format!("keys-{n}"));
        ok(remit(["keygen", "--validators", &n.to_string(), "--out", s(&keys)])?)?;
        let network = info(&keys)?;
        ensure!(
            (network["validators"].as_u64(), network["faulty_max"].as_u64(), network["quorum"].as_u64())
                == (Some(n), Some(f), Some(q)),
            "n = {n}: {network}"
        );
        ensure!(
            network["governance"]["threshold"] == 2
                && network["governance"]["keys"].as_array().map(Vec::len) == Some(3),
            "defaults: {network}"
        );
    }
    let keys = temp.path().join("bad");
    refused(
        remit(["keygen", "--validators", "4", "--governance", "2", "--governance-threshold", "3", "--out", s(&keys)])?,
        "--governance-threshold must be 1 to 2",
    )?;
    refused(
        remit(["keygen", "--validators", "4", "--governance", "0", "--out", s(&keys)])?,
        "--governance must be 1 to 16",
    )?;
    refused(remit(["keygen", "--validators", "0", "--out", s(&keys)])?, "--validators must be 1 to 64")?;
    ensure!(!keys.join("network.json").exists(), "nothing written on a refusal");
    Ok(())
}

#[test]
fn proposals_are_checked_and_signed_once_per_governance_key() -> anyhow::Result<()> {
    let temp = TempDir::new()?;
    let keys = temp.path().join("keys");
    ok(remit(["keygen", "--validators", "4", "--out", s(&keys)])?)?;
    let network: Value = serde_json::from_str(&fs::read_to_string(keys.join("network.json"))?)?;
    let file = temp.path().join("cap.json");
    let propose = |args: &[&str]| {
        remit(["governance", "propose"].iter().copied().chain(args.iter().copied()).chain(["--out", s(&file)]))
    };
    // Bad input is refused, naming the flag, and writes nothing.
    refused(
        propose(&["set-cap", "--participant", "gw-ph", "--currency", "JPY", "--amount", "1.5"])?,
        "--amount: 1.5 has more decimal places than JPY allows",
    )?;
    refused(
        propose(&["set-cap", "--participant", "gw-ph", "--currency", "XYZ", "--amount", "1"])?,
        "--currency: \"XYZ\" is not an ISO 4217 currency code",
    )?;
    refused(
        propose(&["set-cap", "--participant", "gw-ph", "--currency", "USD", "--amount", "-1"])?,
        "--amount: cap must not be negative",
    )?;
    refused(
        propose(&["set-status", "--participant", "gw-ph", "--status", "paused"])?,
        "--status: \"paused\" must be active or suspended",
    )?;
    refused(
        propose(&[
            "register-participant",
            "--id",
            "gw-za",
            "--name",
            "Z",
            "--country",
            "ZA",
            "--currencies",
            "ZAR",
            "--origin-key",
            "abc",
        ])?,
        "--origin-key: expected 64 hex characters",
    )?;
    ensure!(!file.exists(), "nothing written on a refusal");

    // A valid proposal: no chain yet, no approvals.
    ok(propose(&[
        "set-cap",
        "--participant",
        "gw-ph",
        "--currency",
        "USD",
        "--amount",
        "250000.00",
        "--nonce",
        "42",
    ])?)?;
    let proposal: Value = serde_json::from_str(&fs::read_to_string(&file)?)?;
    ensure!(proposal["chain_id"].is_null() && proposal["nonce"] == 42, "{proposal}");
    ensure!(
        proposal["action"]["type"] == "set_net_debit_cap" && proposal["action"]["cap"] == "250000.00",
        "{proposal}"
    );
    ensure!(proposal["approvals"].as_array().map(Vec::len) == Some(0), "{proposal}");

    // Signing takes the chain from the network.json beside the key; a key
    // signs once; a key that is not a governance key is refused.
    let key0 = keys.join("governance").join("key-0.hex");
    let run = ok(remit(["governance", "sign", s(&file), "--key", s(&key0)])?)?;
    ensure!(run.stdout.contains("(1 approval(s) of 2 needed)"), "{}", run.stdout);
    ok(remit(["governance", "sign", s(&file), "--key", s(&key0)])?)?;
    let signed: Value = serde_json::from_str(&fs::read_to_string(&file)?)?;
    ensure!(signed["chain_id"] == network["chain_id"], "{signed}");
    ensure!(signed["approvals"].as_array().map(Vec::len) == Some(1), "same key twice: {signed}");
    let identity = keys.join("gw-us").join("identity_ed25519.hex");
    refused(
        remit(["governance", "sign", s(&file), "--key", s(&identity), "--network", s(&keys.join("network.json"))])?,
        "is not one of the network's governance keys",
    )?;
    ok(remit(["governance", "sign", s(&file), "--key", s(&keys.join("governance").join("key-2.hex"))])?)?;
    let signed: Value = serde_json::from_str(&fs::read_to_string(&file)?)?;
    ensure!(signed["approvals"].as_array().map(Vec::len) == Some(2), "{signed}");

    // Another network's key file (and its network.json) cannot sign it.
    let other = temp.path().join("other");
    ok(remit(["keygen", "--validators", "1", "--out", s(&other)])?)?;
    refused(
        remit(["governance", "sign", s(&file), "--key", s(&other.join("governance").join("key-0.hex"))])?,
        "is for chain",
    )?;

    // Nothing listens there: the submission fails with the URL.
    let run = remit(["governance", "submit", s(&file), "--node", "http://127.0.0.1:9", "--timeout-secs", "2"])?;
    ensure!(run.code == Some(2) && run.stderr.contains("POST http://127.0.0.1:9/v1/governance"), "{run:?}");
    Ok(())
}

#[test]
fn identity_new_writes_a_private_key_and_prints_its_public_key() -> anyhow::Result<()> {
    let temp = TempDir::new()?;
    let out = temp.path().join("member").join("identity_ed25519.hex");
    let run = ok(remit(["identity", "new", "--out", s(&out)])?)?;
    let printed: Value = serde_json::from_str(run.stdout.trim())?;
    let public = printed["public_key"].as_str().context("public_key")?;
    ensure!(public.len() == 64 && public.chars().all(|c| c.is_ascii_hexdigit()), "{printed}");
    ensure!(mode(&out)? == 0o600, "identity key is not private");
    let secret = fs::read_to_string(&out)?;
    ensure!(secret.trim().len() == 64 && !run.stdout.contains(secret.trim()), "the secret was printed");
    refused(remit(["identity", "new", "--out", s(&out)])?, "pass --force")?;
    ensure!(fs::read_to_string(&out)? == secret, "not overwritten");
    Ok(())
}
