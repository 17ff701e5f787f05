//! `remit devnet`: a local network of `remitd` processes on 127.0.0.1.
//! Prepares keys and configs (reused on the next run), starts one child per
//! validator, writes `devnet.json`, streams the children's output prefixed
//! with their participant, reports readiness, optionally drives load, and on
//! Ctrl-C or SIGTERM stops every child with SIGTERM and waits for it.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use remit_gateway::devnet::{
    governance_key_files, prepare_with_keys, DevnetFile, DevnetNode, DevnetOptions, API_PORT_OFFSET, DEFAULT_BASE_PORT,
    DEVNET_FILE, KEYS_SUBDIR,
};
use remit_settlement::network::{Keyring, NETWORK_FILE};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::signal::unix::{signal, Signal as SignalStream, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::load::{self, LoadPlan, Session, Target};

/// Time the children get to stop after SIGTERM before they are killed.
const STOP_TIMEOUT_S: u64 = 20;
/// Pause between readiness probes.
const READY_POLL_MS: u64 = 200;
/// How often the nodes not yet ready are named.
const READY_NOTE_EVERY_S: u64 = 30;
/// Time one readiness probe may take.
const READY_PROBE_TIMEOUT_MS: u64 = 1_000;
/// Interval of the load status line.
const LOAD_STATUS_EVERY_S: u64 = 5;
/// Batches per second the `--load-rate` traffic is cut into (smoother than
/// few large batches), within 1 to 512 transfers per batch.
const LOAD_BATCHES_PER_S: f64 = 40.0;
/// Log lines of a node shown when it exits unexpectedly (with `--load-rate`).
const LOG_TAIL_LINES: usize = 5;

#[derive(clap::Args, Debug)]
pub struct DevnetArgs {
    /// Number of validators.
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Number of member gateways that are not validators (they follow the
    /// certified chain and run the remittance engine, without a vote).
    #[arg(long, default_value_t = 0)]
    gateways: usize,
    /// Devnet directory: keys, node configs and data (created if absent, reused if present).
    #[arg(long)]
    dir: PathBuf,
    /// Mutual TLS between the nodes (and for load clients).
    #[arg(long)]
    tls: bool,
    /// First peer port: node i listens on P+i (peer gRPC), P+1000+i (operator
    /// HTTP: health, metrics, governance, /ops) and P+2000+i (wallet API).
    #[arg(long, default_value_t = DEFAULT_BASE_PORT)]
    base_port: u16,
    /// Once ready, submit this many transfers per second until stopped; node
    /// logs then go to DIR/<participant>/remitd.log instead of stdout.
    #[arg(long)]
    load_rate: Option<f64>,
    /// Once ready, send this many remittances per second through the
    /// gateways' wallet APIs until stopped (quote, screen, settle, pay out),
    /// reporting every 5 s; node logs then go to DIR/<participant>/remitd.log.
    #[arg(long)]
    remittance_rate: Option<f64>,
}

/// Writes a line to stdout; a closed stdout must not stop the supervisor.
fn say(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn send_signal(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        // ESRCH (already gone) is fine: the exit is reported by its waiter.
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// `remit devnet`.
pub fn run(args: &DevnetArgs) -> anyhow::Result<ExitCode> {
    if args.validators == 0 {
        bail!("--validators must be at least 1");
    }
    if args.load_rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        bail!("--load-rate must be a positive number of transfers per second");
    }
    if args.remittance_rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        bail!("--remittance-rate must be a positive number of remittances per second");
    }
    let nodes = u32::try_from(args.validators.saturating_add(args.gateways)).unwrap_or(u32::MAX);
    let highest_port = u32::from(args.base_port).saturating_add(u32::from(API_PORT_OFFSET)).saturating_add(nodes);
    if args.base_port == 0 || highest_port > u32::from(u16::MAX) {
        bail!(
            "--base-port {} leaves no room for {} validators and {} gateways (wallet API ports are +{API_PORT_OFFSET})",
            args.base_port,
            args.validators,
            args.gateways
        );
    }
    let remitd = remitd_path()?;
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize().with_context(|| format!("resolving {}", args.dir.display()))?;
    let options = DevnetOptions {
        dir: dir.clone(),
        validators: args.validators,
        gateways: args.gateways,
        base_port: args.base_port,
        tls: args.tls,
        log_format: "json".into(),
    };
    let (network, nodes, api_keys) = prepare_with_keys(&options)?;
    let operator_tokens = remit_gateway::devnet::operator_tokens(&options, nodes.iter().map(|n| n.name.as_str()))?;
    let governance_keys = governance_key_files(&options, &network)?;
    check_ports_free(&nodes)?;
    // A devnet.json left by an earlier run names dead processes.
    let devnet_path = dir.join(DEVNET_FILE);
    if devnet_path.exists() {
        std::fs::remove_file(&devnet_path).with_context(|| format!("removing stale {}", devnet_path.display()))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let supervisor = Supervisor {
        dir,
        remitd,
        tls: args.tls,
        load_rate: args.load_rate,
        remittance_rate: args.remittance_rate,
        api_keys,
        operator_tokens,
        governance_keys,
    };
    runtime.block_on(supervisor.run(nodes))
}

/// `remitd` next to the running `remit`. Under `cargo run` (which builds
/// only `remit`), a missing or older `remitd` is built first with the same
/// profile, so `cargo run --release --bin remit -- devnet` works from a
/// fresh checkout.
fn remitd_path() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating the remit executable")?;
    let remitd = me.with_file_name("remitd");
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let stale = match (modified(&remitd), modified(&me)) {
        (Some(node), Some(cli)) => node < cli,
        (None, _) => true,
        (Some(_), None) => false,
    };
    if stale {
        if let Some(cargo) = std::env::var_os("CARGO") {
            let release = me.parent().and_then(|dir| dir.file_name()).is_some_and(|name| name == "release");
            let mut command = std::process::Command::new(cargo);
            command.args(["build", "--bin", "remitd"]);
            // Build from the workspace root, as `cargo run` did, so both
            // binaries share one feature resolution and nothing recompiles.
            if let Some(package_dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
                command.arg("--manifest-path").arg(PathBuf::from(package_dir).join("..").join("Cargo.toml"));
            }
            if release {
                command.arg("--release");
            }
            eprintln!("devnet: building remitd ({command:?})");
            let status = command.status().context("running cargo build for remitd")?;
            if !status.success() {
                bail!("building remitd failed ({status})");
            }
        }
    }
    if !remitd.is_file() {
        bail!(
            "remitd not found at {} (it must sit next to remit); build both with `cargo build -p remit-gateway --bins`",
            remitd.display()
        );
    }
    Ok(remitd)
}

/// Refuses to start when a port is taken, most likely by a devnet still running.
fn check_ports_free(nodes: &[DevnetNode]) -> anyhow::Result<()> {
    for node in nodes {
        let http = node.ops_url.trim_start_matches("http://");
        let api = node.api_url.trim_start_matches("http://");
        for (what, address) in [("peer", node.peer_addr.as_str()), ("operator HTTP", http), ("wallet API", api)] {
            if let Err(error) = std::net::TcpListener::bind(address) {
                bail!(
                    "{what} address {address} of {} is not free ({error}); is another devnet running? \
                     Stop it or pick another --base-port",
                    node.name
                );
            }
        }
    }
    Ok(())
}

struct Supervisor {
    dir: PathBuf,
    remitd: PathBuf,
    tls: bool,
    load_rate: Option<f64>,
    remittance_rate: Option<f64>,
    api_keys: std::collections::BTreeMap<String, String>,
    operator_tokens: std::collections::BTreeMap<String, String>,
    governance_keys: Vec<PathBuf>,
}

impl Supervisor {
    /// Node logs go to files while a load prints its status lines.
    fn quiet(&self) -> bool {
        self.load_rate.is_some() || self.remittance_rate.is_some()
    }
}

/// A started child: its name, pid, log file (quiet mode) and whether it runs.
struct Child {
    node: DevnetNode,
    log: Option<PathBuf>,
    running: bool,
}

/// What the supervisor waits for.
enum Event {
    Stop(&'static str),
    Exited(usize, std::io::Result<ExitStatus>),
    Ready(u64),
    LoadEnded(String),
}

impl Supervisor {
    async fn run(self, nodes: Vec<DevnetNode>) -> anyhow::Result<ExitCode> {
        let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let (events, mut event_rx) = mpsc::unbounded_channel();
        let mut children = Vec::with_capacity(nodes.len());
        for (index, node) in nodes.into_iter().enumerate() {
            match self.spawn(index, node, events.clone()) {
                Ok(child) => children.push(child),
                Err(error) => {
                    stop_children(&mut children, &mut event_rx, &mut interrupt).await;
                    return Err(error);
                }
            }
        }
        let devnet = DevnetFile {
            network: self.dir.join(KEYS_SUBDIR).join(NETWORK_FILE),
            tls: self.tls,
            nodes: children.iter().map(|c| c.node.clone()).collect(),
            api_keys: self.api_keys.clone(),
            operator_tokens: self.operator_tokens.clone(),
            governance_keys: self.governance_keys.clone(),
        };
        devnet.write(&self.dir)?;
        let devnet_path = self.dir.join(DEVNET_FILE);
        let pids: Vec<String> = children.iter().map(|c| format!("{} pid {}", c.node.name, c.node.pid)).collect();
        say(&format!("devnet: started {} remitd ({}); waiting until ready", children.len(), pids.join(", ")));
        if self.quiet() {
            say(&format!("devnet: node logs in {}", self.dir.join("<participant>").join("remitd.log").display()));
        }
        let ready = tokio::spawn(wait_ready(devnet.nodes.clone(), events.clone()));
        let mut load: Option<(Arc<Session>, Vec<JoinHandle<()>>)> = None;
        let mut remittances: Option<JoinHandle<()>> = None;
        let code = loop {
            let event = tokio::select! {
                _ = interrupt.recv() => Event::Stop("SIGINT"),
                _ = terminate.recv() => Event::Stop("SIGTERM"),
                event = event_rx.recv() => event.expect("the supervisor holds a sender"),
            };
            match event {
                Event::Stop(signal) => {
                    say(&format!("devnet: {signal} received, stopping the nodes"));
                    break ExitCode::SUCCESS;
                }
                Event::Exited(index, status) => {
                    report_exit(&mut children[index], &status);
                    let running = children.iter().filter(|c| c.running).count();
                    if running == 0 {
                        say("devnet: every node has exited; stopping");
                        break ExitCode::FAILURE;
                    }
                    say(&format!("devnet: {running} of {} nodes keep running (not restarted)", children.len()));
                }
                Event::Ready(leader) => {
                    let validators = children
                        .iter()
                        .filter(|c| c.node.role == remit_settlement::network::NodeRole::Validator)
                        .count();
                    say(&format!(
                        "devnet ready: {validators} validators, {} gateways, leader {leader}, devnet.json at {}",
                        children.len() - validators,
                        devnet_path.display()
                    ));
                    match self.load_rate {
                        Some(rate) => match start_load(&self.dir, &devnet, rate, events.clone()) {
                            Ok(started) => load = Some(started),
                            Err(error) => say(&format!("devnet: load not started: {error:#}")),
                        },
                        None if self.remittance_rate.is_none() => say(&format!(
                            "devnet: try `remit send --devnet {} --from gw-us --to gw-ph --amount \"100 USD\"`; \
                             Ctrl-C stops",
                            self.dir.display()
                        )),
                        None => {}
                    }
                    if let Some(rate) = self.remittance_rate {
                        say(&format!("devnet: sending {rate} remittances/s through the wallet APIs; status every 5 s"));
                        let dir = self.dir.clone();
                        let events = events.clone();
                        remittances = Some(tokio::spawn(async move {
                            let why = match crate::remittance_load::stream(dir, rate, Duration::from_secs(5)).await {
                                Ok(()) => "ended".to_owned(),
                                Err(error) => format!("{error:#}"),
                            };
                            let _ = events.send(Event::LoadEnded(why));
                        }));
                    }
                }
                Event::LoadEnded(why) => say(&format!("devnet: load stopped: {why}")),
            }
        };
        ready.abort();
        if let Some(task) = remittances.take() {
            task.abort();
        }
        if let Some((session, tasks)) = load.take() {
            for task in tasks {
                task.abort();
            }
            say(&format!("{} (final)", session.status_line()));
        }
        stop_children(&mut children, &mut event_rx, &mut interrupt).await;
        say("devnet: stopped");
        Ok(code)
    }

    /// Starts `remitd` for `node`: its own process group (so a terminal's
    /// Ctrl-C reaches only the supervisor, which stops the nodes in order),
    /// output streamed or logged, exit reported as an event.
    fn spawn(&self, index: usize, mut node: DevnetNode, events: mpsc::UnboundedSender<Event>) -> anyhow::Result<Child> {
        let mut command = std::process::Command::new(&self.remitd);
        command.arg("--config").arg(&node.config).stdin(Stdio::null()).process_group(0);
        let log = if self.quiet() {
            let path = self.dir.join(&node.name).join("remitd.log");
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let copy = file.try_clone().with_context(|| format!("opening {}", path.display()))?;
            command.stdout(Stdio::from(copy)).stderr(Stdio::from(file));
            Some(path)
        } else {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
            None
        };
        let mut child = tokio::process::Command::from(command)
            .spawn()
            .with_context(|| format!("starting {} for {}", self.remitd.display(), node.name))?;
        node.pid = child.id().context("a just-started child has a pid")?;
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(stream_lines(node.name.clone(), stdout));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(stream_lines(node.name.clone(), stderr));
        }
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = events.send(Event::Exited(index, status));
        });
        Ok(Child { node, log, running: true })
    }
}

fn report_exit(child: &mut Child, status: &std::io::Result<ExitStatus>) {
    child.running = false;
    let status = match status {
        Ok(status) => status.to_string(),
        Err(error) => format!("unknown status ({error})"),
    };
    say(&format!("devnet: node {} (pid {}) exited unexpectedly: {status}", child.node.name, child.node.pid));
    if let Some(log) = &child.log {
        say(&format!("devnet: last lines of {}:", log.display()));
        for line in log_tail(log, LOG_TAIL_LINES) {
            say(&format!("[{}] {line}", child.node.name));
        }
    }
}

fn log_tail(path: &Path, lines: usize) -> Vec<String> {
    let Ok(text) = std::fs::read(path) else { return Vec::new() };
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].iter().map(|l| (*l).to_owned()).collect()
}

/// SIGTERM to every running child, then wait; SIGKILL whatever is left
/// after the timeout or a second Ctrl-C.
async fn stop_children(
    children: &mut [Child],
    events: &mut mpsc::UnboundedReceiver<Event>,
    interrupt: &mut SignalStream,
) {
    for child in children.iter().filter(|c| c.running) {
        send_signal(child.node.pid, Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(STOP_TIMEOUT_S);
    while children.iter().any(|c| c.running) {
        let event = tokio::select! {
            event = events.recv() => event,
            () = tokio::time::sleep_until(deadline) => None,
            _ = interrupt.recv() => None,
        };
        match event {
            Some(Event::Exited(index, status)) => {
                let child = &mut children[index];
                child.running = false;
                match status {
                    Ok(status) if status.success() => {}
                    Ok(status) => say(&format!("devnet: node {} stopped with {status}", child.node.name)),
                    Err(error) => say(&format!("devnet: node {} stopped, status unknown: {error}", child.node.name)),
                }
            }
            Some(_) => {}
            None => {
                for child in children.iter_mut().filter(|c| c.running) {
                    say(&format!("devnet: node {} (pid {}) did not stop; killing it", child.node.name, child.node.pid));
                    send_signal(child.node.pid, Signal::SIGKILL);
                    child.running = false;
                }
            }
        }
    }
}

/// Copies lines from a child's pipe to stdout as `[name] line`.
async fn stream_lines(name: String, pipe: impl AsyncRead + Unpin) {
    let mut reader = tokio::io::BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        say(&format!("[{name}] {}", text.trim_end_matches(['\n', '\r'])));
    }
}

/// Polls every node's `/readyz` until all answer 200, then reports the leader.
async fn wait_ready(nodes: Vec<DevnetNode>, events: mpsc::UnboundedSender<Event>) {
    let started = Instant::now();
    let mut noted = Instant::now();
    let mut leader = vec![None; nodes.len()];
    loop {
        for (node, leader) in nodes.iter().zip(leader.iter_mut()).filter(|(_, l)| l.is_none()) {
            if let Ok((200, body)) = http_get(&node.ops_url, "/readyz").await {
                *leader = Some(parse_leader(&body));
            }
        }
        if leader.iter().all(Option::is_some) {
            // The nodes agree once they are all ready; report the most common answer.
            let mut counts = std::collections::BTreeMap::new();
            for index in leader.iter().flatten().flatten() {
                *counts.entry(*index).or_insert(0) += 1;
            }
            let leader = counts.into_iter().max_by_key(|(_, n)| *n).map_or(0, |(index, _)| index);
            let _ = events.send(Event::Ready(leader));
            return;
        }
        if noted.elapsed() >= Duration::from_secs(READY_NOTE_EVERY_S) {
            noted = Instant::now();
            let waiting: Vec<&str> =
                nodes.iter().zip(&leader).filter(|(_, l)| l.is_none()).map(|(n, _)| n.name.as_str()).collect();
            say(&format!(
                "devnet: still waiting after {}s for {} to be ready",
                started.elapsed().as_secs(),
                waiting.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(READY_POLL_MS)).await;
    }
}

/// The leader index in a `/readyz` body (`ready: ROLE, height H, certified C, leader L`).
fn parse_leader(body: &str) -> Option<u64> {
    body.split("leader ").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// A minimal HTTP/1.1 GET for the node's own health endpoints: status and body.
async fn http_get(base_url: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let host = base_url.strip_prefix("http://").context("ops_url must start with http://")?.trim_end_matches('/');
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(host).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response =
        tokio::time::timeout(Duration::from_millis(READY_PROBE_TIMEOUT_MS), exchange).await.context("timed out")??;
    let text = String::from_utf8_lossy(&response);
    let status =
        text.split_whitespace().nth(1).and_then(|code| code.parse().ok()).context("malformed HTTP status line")?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_owned();
    Ok((status, body))
}

/// Starts the load generator at `rate` and its status line.
fn start_load(
    dir: &Path,
    devnet: &DevnetFile,
    rate: f64,
    events: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<(Arc<Session>, Vec<JoinHandle<()>>)> {
    let keys = dir.join(KEYS_SUBDIR);
    let keyring = Keyring::load(&keys).with_context(|| format!("loading keys from {}", keys.display()))?;
    let generator = load::traffic(&keyring)?;
    let session = Arc::new(Session::start(Target::connect(dir, devnet)?, false));
    let batch = ((rate / LOAD_BATCHES_PER_S).round() as usize).clamp(1, load::BATCH_TRANSFERS_DEFAULT);
    let plan = LoadPlan {
        transfers: None,
        rate: Some(rate),
        batch,
        in_flight: load::BATCHES_IN_FLIGHT_DEFAULT,
        deadline: None,
    };
    say(&format!(
        "devnet: load running at {rate} transfers/s in batches of {batch}; status every {LOAD_STATUS_EVERY_S}s"
    ));
    let submitter = {
        let session = session.clone();
        tokio::spawn(async move {
            let why = match session.submit(generator, plan).await {
                Ok(()) => "the generator ended".to_owned(),
                Err(error) => format!("{error:#}"),
            };
            let _ = events.send(Event::LoadEnded(why));
        })
    };
    let status = {
        let session = session.clone();
        tokio::spawn(async move {
            let period = Duration::from_secs(LOAD_STATUS_EVERY_S);
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                interval.tick().await;
                say(&session.status_line());
            }
        })
    };
    Ok((session, vec![submitter, status]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_leader_from_readyz() {
        for (body, expected) in [
            ("ready: height 12, leader 3\n", Some(3)),
            ("ready: height 12, certified 11, leader 2\n", Some(2)),
            ("ready: gateway, height 12, certified 12, leader 1\n", Some(1)),
            ("ready: height 0, leader 0", Some(0)),
            ("not ready: no leader\n", None),
            ("", None),
        ] {
            assert_eq!(parse_leader(body), expected, "{body:?}");
        }
    }
}
