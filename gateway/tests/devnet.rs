//! `remit devnet` end to end: it starts four validators and one gateway
//! (`--gateways 1`), writes `devnet.json` in the documented shape (each node
//! with its `role`, the `governance_keys` files), prefixes the nodes' log
//! lines with their names, reports readiness, and on SIGTERM stops every
//! node and exits 0. Run again on the same directory, it reuses the same
//! keys and chain (another shape is refused); both a validator's and the
//! gateway's data directories verify.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

struct Devnet {
    child: Child,
    lines: mpsc::Receiver<String>,
}

fn start(dir: &Path, base_port: u16, gateways: usize) -> anyhow::Result<Devnet> {
    // `cargo test` built remitd beside remit with this build's features;
    // without CARGO in its environment the devnet uses it as is instead of
    // rebuilding it under `cargo run` rules.
    let mut child = Command::new(env!("CARGO_BIN_EXE_remit"))
        .env_remove("CARGO")
        .args(["devnet", "--validators", "4", "--gateways", &gateways.to_string()])
        .args(["--base-port", &base_port.to_string(), "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting remit devnet")?;
    let (sender, lines) = mpsc::channel();
    for pipe in [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child.stderr.take().map(|p| Box::new(p) as _),
    ]
    .into_iter()
    .flatten()
    {
        let sender = sender.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
    }
    Ok(Devnet { child, lines })
}

impl Devnet {
    /// Reads output until a line satisfies `want`; returns every line read.
    fn wait_for(&self, want: impl Fn(&str) -> bool, timeout: Duration) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = want(&line);
                    seen.push(line);
                    if done {
                        return Ok(seen);
                    }
                }
                Err(_) => break,
            }
        }
        bail!("timed out; output so far:\n{}", seen.join("\n"))
    }

    fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = Pid::from_raw(i32::try_from(self.child.id())?);
        kill(pid, Signal::SIGTERM).context("sending SIGTERM")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("remit devnet did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn alive(pid: i64) -> bool {
    i32::try_from(pid).is_ok_and(|pid| kill(Pid::from_raw(pid), None).is_ok())
}

fn base_port() -> u16 {
    // Away from the other tests' ranges and below the ephemeral ports.
    33_000 + u16::try_from(std::process::id() % 500).unwrap_or(0) * 4
}

#[test]
fn devnet_starts_describes_and_stops_its_nodes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = base_port();
    let devnet = start(dir.path(), port, 1)?;
    let output = devnet.wait_for(|line| line.starts_with("devnet ready: 4 validators, 1 gateways"), READY_TIMEOUT)?;
    for name in ["gw-us", "gw-ph", "gw-mx", "gw-ke", "gw-in"] {
        ensure!(
            output.iter().any(|line| line.starts_with(&format!("[{name}] "))),
            "no log line prefixed [{name}] in:\n{}",
            output.join("\n")
        );
    }
    let json: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("devnet.json"))?)?;
    let network = json["network"].as_str().context("network is a string")?;
    ensure!(Path::new(network).ends_with("keys/network.json") && Path::new(network).exists(), "network: {network}");
    let nodes = json["nodes"].as_array().context("nodes is an array")?;
    ensure!(nodes.len() == 5, "{} nodes", nodes.len());
    let governance_keys = json["governance_keys"].as_array().context("governance_keys is an array")?;
    ensure!(governance_keys.len() == 3, "{json}");
    for (i, key) in governance_keys.iter().enumerate() {
        let path = Path::new(key.as_str().context("a path")?);
        ensure!(path.ends_with(format!("keys/governance/key-{i}.hex")) && path.is_file(), "governance key {i}: {key}");
    }
    let mut pids = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for field in ["name", "role", "pid", "peer_addr", "api_url", "ops_url", "metrics_url", "data_dir"] {
            ensure!(!node[field].is_null(), "node {i} lacks {field}: {node}");
        }
        let role = if i < 4 { "validator" } else { "gateway" };
        ensure!(node["role"] == role, "node {i}: {node}");
        let peer = port + u16::try_from(i)?;
        ensure!(node["peer_addr"] == format!("127.0.0.1:{peer}"), "node {i}: {node}");
        ensure!(node["api_url"] == format!("http://127.0.0.1:{}", peer + 2000), "node {i}: {node}");
        ensure!(node["ops_url"] == format!("http://127.0.0.1:{}", peer + 1000), "node {i}: {node}");
        ensure!(node["metrics_url"] == format!("http://127.0.0.1:{}/metrics", peer + 1000), "node {i}: {node}");
        let pid = node["pid"].as_i64().context("pid is a number")?;
        ensure!(alive(pid), "node {i} pid {pid} is not running");
        pids.push(pid);
    }

    let status = devnet.terminate()?;
    ensure!(status.success(), "remit devnet exited with {status}");
    for pid in &pids {
        ensure!(!alive(*pid), "remitd pid {pid} still runs after the devnet stopped");
    }

    // Run again: same keys (same chain id), existing data reused.
    let chain_id = |dir: &Path| -> anyhow::Result<String> {
        let network: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("keys/network.json"))?)?;
        Ok(network["chain_id"].as_str().unwrap_or_default().to_owned())
    };
    let before = chain_id(dir.path())?;
    // Another shape over the same keys is refused, naming the flags to pass.
    let refused = Command::new(env!("CARGO_BIN_EXE_remit"))
        .env_remove("CARGO")
        .args(["devnet", "--validators", "4", "--base-port", &port.to_string(), "--dir"])
        .arg(dir.path())
        .output()?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(!refused.status.success() && stderr.contains("--validators 4 --gateways 1"), "{stderr}");
    let devnet = start(dir.path(), port, 1)?;
    devnet.wait_for(|line| line.starts_with("devnet ready: 4 validators, 1 gateways"), READY_TIMEOUT)?;
    ensure!(chain_id(dir.path())? == before, "the second run generated a new network");
    let status = devnet.terminate()?;
    ensure!(status.success(), "second run exited with {status}");
    for node in ["gw-us", "gw-in"] {
        let verify = Command::new(env!("CARGO_BIN_EXE_remit"))
            .args(["ledger", "verify", "--dir"])
            .arg(dir.path().join(node).join("data"))
            .output()?;
        let stdout = String::from_utf8_lossy(&verify.stdout);
        ensure!(verify.status.success() && stdout.starts_with("verified "), "verify {node} after the devnet: {stdout}");
    }
    Ok(())
}
