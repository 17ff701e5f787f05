//! Governance on a 4-validator network of real `remitd` processes, driven
//! with the real CLI (`remit network info`, `remit governance propose`,
//! `sign`, `submit`) and the devnet's governance keys (2 of 3 approve).
//!
//! Checked:
//! - `remit network info` describes the network (quorum 3 of 4, f = 1, the
//!   2-of-3 governance, every participant a validator);
//! - a cap change with one approval is put on the ledger and refused there
//!   (`governance_approvals_insufficient`, exit status 1); with a second
//!   approval it is certified (`certified at height H`); submitted again, it
//!   is refused (`governance_nonce_reused`);
//! - its effect: gw-us's USD cap is now 100.00, so a remittance settling
//!   about 495 USD is rejected by the ledger with AM04 and one settling about
//!   49 USD completes;
//! - a suspension of gw-mx, certified: its new remittance is rejected with
//!   AG01, and a remittance to it too;
//! - a member registered after genesis (gw-ca, not in network.json) with a
//!   cap set by governance starts its node, which catches up from the
//!   validators and sends a remittance to gw-ph; gw-us, restarted to load
//!   the corridors that include the member, sends one to it (the member
//!   fetches the payment message from gw-us);
//! - stopped, every data directory (the member's included) verifies to the
//!   same certified tip, with exactly the completed remittances accepted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context};
use remit_settlement::{CountryCode, OriginKey, Participant, ParticipantId, ParticipantStatus};
use remit_tests::net::{remit_cli, stop_and_verify, Acknowledged, CliRun, Network, NetworkOptions};
use remit_tests::wallet::{send, send_and_complete};

const GW_US: usize = 0;
const GW_PH: usize = 1;
const GW_MX: usize = 2;

fn key(net: &Network, i: usize) -> PathBuf {
    net.keys_dir.join("governance").join(format!("key-{i}.hex"))
}

fn cli(args: &[&str]) -> anyhow::Result<CliRun> {
    let run = remit_cli(args)?;
    println!("$ remit {}\n{}{}", args.join(" "), run.stdout, run.stderr);
    Ok(run)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Signs `file` with governance keys `keys`, then submits it to node 0.
fn approve_and_submit(net: &Network, file: &Path, keys: &[usize]) -> anyhow::Result<CliRun> {
    for i in keys {
        let run = cli(&["governance", "sign", path(file), "--key", path(&key(net, *i))])?;
        ensure!(run.status.success(), "sign with key {i} failed: {}", run.stderr);
    }
    cli(&["governance", "submit", path(file), "--node", &net.node(GW_US).ops_url])
}

fn expect_certified(run: &CliRun) -> anyhow::Result<()> {
    ensure!(run.status.success(), "submit failed: {}{}", run.stdout, run.stderr);
    ensure!(run.stdout.starts_with("certified at height "), "submit printed {:?}", run.stdout);
    Ok(())
}

async fn scenario(net: &mut Network) -> anyhow::Result<()> {
    net.wait_ready().await?;
    let dir = net.dir().to_owned();
    let network_file = net.keys_dir.join("network.json");

    let info = cli(&["network", "info", "--network", path(&network_file)])?;
    ensure!(info.status.success(), "network info failed");
    let info: serde_json::Value = serde_json::from_str(info.stdout.trim()).context("network info prints JSON")?;
    ensure!(info["chain_id"] == net.network.chain_id.as_str(), "{info}");
    ensure!(
        (info["validators"].as_u64(), info["faulty_max"].as_u64(), info["quorum"].as_u64())
            == (Some(4), Some(1), Some(3)),
        "{info}"
    );
    ensure!(
        info["governance"]["threshold"] == 2 && info["governance"]["keys"].as_array().map(Vec::len) == Some(3),
        "{info}"
    );
    let participants = info["participants"].as_array().context("participants")?;
    ensure!(participants.len() == 4 && participants.iter().all(|p| p["role"] == "validator"), "{info}");
    ensure!(participants[1]["id"] == "gw-ph" && participants[1]["validator_index"] == 1, "{info}");

    // A cap change: refused with one approval, certified with two, refused when replayed.
    let cap = dir.join("cap.json");
    let run = cli(&[
        "governance",
        "propose",
        "set-cap",
        "--participant",
        "gw-us",
        "--currency",
        "USD",
        "--amount",
        "100.00",
        "--out",
        path(&cap),
    ])?;
    ensure!(run.status.success(), "propose failed");
    let run = approve_and_submit(net, &cap, &[0])?;
    ensure!(run.status.code() == Some(1), "one approval: exit {:?}", run.status);
    ensure!(
        run.stdout.contains("refused at height")
            && run.stdout.contains("governance_approvals_insufficient: 1 valid approval(s), 2 required"),
        "one approval: {}",
        run.stdout
    );
    expect_certified(&approve_and_submit(net, &cap, &[1])?)?;
    let run = cli(&["governance", "submit", path(&cap), "--node", &net.node(GW_PH).ops_url])?;
    ensure!(
        run.status.code() == Some(1) && run.stdout.contains("governance_nonce_reused [DUPL]"),
        "replay: {}",
        run.stdout
    );

    let mut acks = Acknowledged::default();
    let over = send(net, GW_US, ("US", "USD", "PH", "PHP"), "500.00", "cap-over").await?;
    ensure!(
        over.status == "rejected" && over.reason_code == "AM04",
        "over the cap: {} {} {}",
        over.status,
        over.reason_code,
        over.reason
    );
    let under = send_and_complete(net, GW_US, GW_PH, ("US", "USD", "PH", "PHP"), "50.00", "cap-under").await?;
    acks.accepted.insert(under.uetr.parse()?);

    // A suspension.
    let suspend = dir.join("suspend.json");
    let run = cli(&[
        "governance",
        "propose",
        "set-status",
        "--participant",
        "gw-mx",
        "--status",
        "suspended",
        "--out",
        path(&suspend),
    ])?;
    ensure!(run.status.success(), "propose failed");
    expect_certified(&approve_and_submit(net, &suspend, &[1, 2])?)?;
    let from_suspended = send(net, GW_MX, ("MX", "MXN", "PH", "PHP"), "1000.00", "suspended-origin").await?;
    ensure!(
        from_suspended.status == "rejected" && from_suspended.reason_code == "AG01",
        "from gw-mx: {from_suspended:?}"
    );
    let to_suspended = send(net, GW_PH, ("PH", "PHP", "MX", "MXN"), "3000.00", "suspended-destination").await?;
    ensure!(to_suspended.status == "rejected" && to_suspended.reason_code == "AG01", "to gw-mx: {to_suspended:?}");

    // A member registered after genesis.
    let origin_key = net.member_identity("gw-ca")?;
    let register = dir.join("register.json");
    let run = cli(&[
        "governance",
        "propose",
        "register-participant",
        "--id",
        "gw-ca",
        "--name",
        "Remit Gateway Canada",
        "--country",
        "CA",
        "--currencies",
        "CAD,USD",
        "--origin-key",
        &origin_key,
        "--out",
        path(&register),
    ])?;
    ensure!(run.status.success(), "propose failed");
    expect_certified(&approve_and_submit(net, &register, &[0, 2])?)?;
    let member_cap = dir.join("member-cap.json");
    let run = cli(&[
        "governance",
        "propose",
        "set-cap",
        "--participant",
        "gw-ca",
        "--currency",
        "USD",
        "--amount",
        "1000000.00",
        "--out",
        path(&member_cap),
    ])?;
    ensure!(run.status.success(), "propose failed");
    expect_certified(&approve_and_submit(net, &member_cap, &[0, 1])?)?;
    let member = Participant {
        id: ParticipantId::new("gw-ca")?,
        name: "Remit Gateway Canada".into(),
        country: CountryCode::new("CA")?,
        settlement_currencies: vec![iso_currency::Currency::CAD, iso_currency::Currency::USD],
        origin_key: OriginKey::from_bytes(
            &hex::decode(&origin_key)?.try_into().map_err(|_| anyhow::anyhow!("32 bytes"))?,
        )
        .context("a valid key")?,
        validator_index: None,
        net_debit_caps: Default::default(),
        status: ParticipantStatus::Active,
    };
    let ca = net.add_member(&member)?;
    net.wait_ready().await?;
    let from_member = send_and_complete(net, ca, GW_PH, ("CA", "CAD", "PH", "PHP"), "400.00", "member-out").await?;
    acks.accepted.insert(from_member.uetr.parse()?);
    net.stop(GW_US)?;
    net.restart(GW_US)?;
    net.wait_ready().await?;
    let to_member = send_and_complete(net, GW_US, ca, ("US", "USD", "CA", "CAD"), "40.00", "member-in").await?;
    acks.accepted.insert(to_member.uetr.parse()?);

    let everything: Vec<usize> = (0..net.len()).collect();
    let (height, _) = net.wait_settled(&everything, Duration::from_secs(60)).await?;
    stop_and_verify(net, height, &acks)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_approves_refuses_and_registers_a_member() {
    let mut net = Network::start(NetworkOptions::default()).await.expect("the network starts");
    let result = scenario(&mut net).await;
    net.finish(result);
}
