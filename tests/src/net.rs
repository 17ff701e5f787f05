//! A validator network of real `remitd` processes on one machine, for the
//! tests in `tests/tests/net_*.rs`.
//!
//! [`Network::start`] lays out a devnet with [`remit_gateway::devnet::prepare`]
//! in a temporary directory (ports from [`pick_base_port`], so networks of
//! parallel test processes do not collide) and spawns one `remitd` per
//! validator, its stdout and stderr appended to `<node dir>/remitd.log`.
//! Node `i` is validator `i`, so the `leader` of `GetTip` is a node index.
//! Tests then drive it through the peer gRPC API: [`Network::wait_ready`],
//! [`Network::leader`], [`Network::kill`] (SIGKILL), [`Network::stop`]
//! (SIGTERM), [`Network::restart`], [`Submitter`] (SubmitBatch with retries)
//! and [`Network::wait_certified`]. Once every node is stopped,
//! [`verify_stopped_network`] runs `remit ledger verify --dir` on every data
//! directory, re-audits each in-process and compares the chains, and
//! [`check_acknowledged`] holds the chain to what the clients were told.
//!
//! A test hands its result to [`Network::finish`], which prints the tail of
//! every node's log when the test failed; a panic inside the test prints them
//! from `Drop`. Every network holds a process-wide lock while it lives, so at
//! most one runs per test process even if a file holds several tests; cargo
//! runs test binaries one after another, so one test per file keeps the whole
//! suite at one network at a time (two cores in CI).
//!
//! The `remitd` and `remit` binaries are looked up next to the test
//! executable (`target/<profile>/`); when either is missing or older than the
//! test executable they are built with `cargo build -p remit-gateway --bins`
//! first. `REMIT_BIN_DIR` points at prebuilt binaries instead.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use remit_gateway::api::grpc::BearerAuth;
use remit_gateway::constants::GET_BLOCKS_LIMIT_MAX;
use remit_gateway::devnet::{
    prepare_with_keys, DevnetNode, DevnetOptions, API_PORT_OFFSET, HTTP_PORT_OFFSET, KEYS_SUBDIR,
};
use remit_gateway::node::peers::{connect_lazy, Client};
use remit_gateway::tls::{NodeTls, CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE};
use remit_proto::v1::{GetBlocksRequest, GetTipRequest, GetTipResponse, SubmitBatchReply, SubmitBatchRequest};
use remit_settlement::codec::Writer;
use remit_settlement::network::{Keyring, NetworkConfig};
use remit_settlement::{Block, Digest32, Entry, Height, TransferBatch, Uetr};
use remit_simulations::traffic::{TrafficConfig, TrafficGenerator};
use tonic::Code;

use crate::{check_stored_ledger, StoredLedger};

/// A `remit.v1.Remittances` client that sends an API key with every call.
pub type WalletClient = remit_proto::v1::remittances_client::RemittancesClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerAuth>,
>;

/// Connects a wallet client to `url` (the node's `api_url`) with `key`.
pub async fn wallet_client(url: &str, key: &str) -> anyhow::Result<WalletClient> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .with_context(|| format!("connecting to the wallet API at {url}"))?;
    let auth = BearerAuth::new(key).context("API key is not ASCII")?;
    Ok(remit_proto::v1::remittances_client::RemittancesClient::with_interceptor(channel, auth))
}

/// Validators of the test networks: n = 3f + 1 with f = 1, quorum 3.
pub const VALIDATORS: usize = 4;
/// Lowest base port handed out. Ports stay below Linux's default ephemeral
/// range (32768 and up) so an outgoing connection never holds a node's port.
pub const PORT_MIN: u16 = 20_000;
/// Highest port any node of a network may use.
pub const PORT_MAX: u16 = 32_000;
/// Ports reserved per network for peer servers (and, offset by
/// [`HTTP_PORT_OFFSET`] and [`API_PORT_OFFSET`], for the operator HTTP and
/// wallet API servers): the most validators a test may run.
pub const PORT_SLOT_WIDTH: u16 = 16;
/// How long a network may take to elect a leader and certify genesis.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a `remitd` may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one GetTip or GetBlocks call made by the harness.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the harness polls the nodes while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Lines of each node's log printed when a test fails.
pub const LOG_TAIL_LINES: usize = 40;
/// Name of each node's log file inside its node directory.
pub const LOG_FILE: &str = "remitd.log";
/// Environment variable that keeps a failed test's network directory.
pub const KEEP_DIR_ENV: &str = "REMIT_TEST_KEEP_DIR";

const _: () = assert!((VALIDATORS as u16) <= PORT_SLOT_WIDTH);
const _: () = assert!(PORT_MIN + PORT_SLOT_WIDTH + API_PORT_OFFSET < PORT_MAX);

/// Held by every live [`Network`]: at most one network per test process.
static NETWORK_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------
// Binaries and ports

/// Paths of the node and CLI binaries under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The node, `remitd`.
    pub remitd: PathBuf,
    /// The operator CLI, `remit`.
    pub remit: PathBuf,
}

/// The binaries under test, found (or built) once per process.
pub fn binaries() -> anyhow::Result<&'static Binaries> {
    static BINARIES: OnceLock<Result<Binaries, String>> = OnceLock::new();
    BINARIES.get_or_init(|| find_or_build_binaries().map_err(|e| format!("{e:#}"))).as_ref().map_err(anyhow::Error::msg)
}

fn find_or_build_binaries() -> anyhow::Result<Binaries> {
    if let Some(dir) = std::env::var_os("REMIT_BIN_DIR") {
        let dir = PathBuf::from(dir);
        let binaries = Binaries { remitd: dir.join("remitd"), remit: dir.join("remit") };
        ensure!(
            binaries.remitd.exists() && binaries.remit.exists(),
            "REMIT_BIN_DIR {} lacks remitd or remit",
            dir.display()
        );
        return Ok(binaries);
    }
    // The test executable is target/<profile>/deps/<name>-<hash>; the
    // workspace's binaries sit in target/<profile>.
    let exe = std::env::current_exe().context("locating the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .with_context(|| format!("{} is not inside target/<profile>/deps", exe.display()))?
        .to_owned();
    let binaries = Binaries { remitd: profile_dir.join("remitd"), remit: profile_dir.join("remit") };
    // A binary older than the newest source it is built from is stale (a
    // developer edited the node and ran only this crate's tests). Comparing
    // with sources rather than with the test executable keeps `cargo test
    // --workspace`, which builds the binaries itself, from rebuilding them.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let newest_source = newest_mtime(&[
        workspace.join("gateway"),
        workspace.join("settlement").join("src"),
        workspace.join("proto"),
        workspace.join("simulations").join("src"),
        workspace.join("Cargo.lock"),
    ]);
    let fresh = |path: &Path| {
        let time = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        match (time, newest_source) {
            (Some(bin), Some(source)) => bin >= source,
            (Some(_), None) => true,
            (None, _) => false,
        }
    };
    if fresh(&binaries.remitd) && fresh(&binaries.remit) {
        return Ok(binaries);
    }
    let target_dir = profile_dir.parent().context("target/<profile> has a parent")?;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "-p", "remit-gateway", "--bins", "--manifest-path"]).arg(&manifest);
    if profile_dir.file_name().is_some_and(|name| name == "release") {
        command.arg("--release");
    }
    command.env("CARGO_TARGET_DIR", target_dir);
    eprintln!(
        "net harness: remitd or remit in {} is missing or older than its sources; building them: {command:?}",
        profile_dir.display()
    );
    let status = command.status().with_context(|| format!("running {command:?}"))?;
    ensure!(status.success(), "{command:?} failed with {status}");
    ensure!(
        binaries.remitd.exists() && binaries.remit.exists(),
        "cargo build succeeded but {} or {} is missing",
        binaries.remitd.display(),
        binaries.remit.display()
    );
    Ok(binaries)
}

/// The newest modification time of any file under `paths` (files or
/// directories, `target` directories skipped).
fn newest_mtime(paths: &[PathBuf]) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = stack.pop() {
        let Ok(metadata) = std::fs::metadata(&path) else { continue };
        if metadata.is_dir() {
            if path.file_name().is_some_and(|name| name == "target" || name == "tests") {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|entry| entry.path()));
            }
        } else if let Ok(modified) = metadata.modified() {
            newest = newest.max(Some(modified));
        }
    }
    newest
}

/// A base port for a new network whose peer ports (base..base+n), operator
/// HTTP ports (base+1000..) and wallet API ports (base+2000..) are all free
/// right now. Candidates come from a
/// per-process counter plus a pid-derived offset, so test processes running
/// side by side start far apart.
pub fn pick_base_port(validators: usize) -> anyhow::Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let width = u16::try_from(validators).ok().filter(|w| *w <= PORT_SLOT_WIDTH).context("too many validators")?;
    let slots = u32::from((PORT_MAX - API_PORT_OFFSET - PORT_MIN) / PORT_SLOT_WIDTH);
    let offset = std::process::id().wrapping_mul(97);
    for _ in 0..64 {
        let slot = offset.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % slots;
        let base = PORT_MIN + u16::try_from(slot).expect("slot < slots fits u16") * PORT_SLOT_WIDTH;
        let mut ports = (0..width).flat_map(|i| [base + i, base + HTTP_PORT_OFFSET + i, base + API_PORT_OFFSET + i]);
        if ports.all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            return Ok(base);
        }
    }
    bail!("no free block of {validators} peer, operator and wallet ports between {PORT_MIN} and {PORT_MAX}")
}

// ---------------------------------------------------------------------------
// The network

/// What to start.
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    /// Number of validators.
    pub validators: usize,
    /// Number of member gateways that are not validators (nodes after the validators).
    pub gateways: usize,
    /// Mutual TLS between nodes (and for the harness's clients).
    pub tls: bool,
    /// Extra environment of individual nodes: (node index, name, value),
    /// e.g. `REMIT__TESTING__FORGE_SHARES=true`.
    pub node_env: Vec<(usize, String, String)>,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        Self { validators: VALIDATORS, gateways: 0, tls: false, node_env: Vec::new() }
    }
}

#[derive(Debug)]
struct NodeProcess {
    devnet: DevnetNode,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

/// A running network of `remitd` processes. Dropping it kills every node.
#[derive(Debug)]
pub struct Network {
    dir: Option<tempfile::TempDir>,
    /// The network definition.
    pub network: NetworkConfig,
    /// The keys directory (network.json, key files, TLS material).
    pub keys_dir: PathBuf,
    nodes: Vec<NodeProcess>,
    clients: Vec<Client>,
    tls: Option<NodeTls>,
    /// Participant -> its devnet wallet client's API key.
    pub api_keys: std::collections::BTreeMap<String, String>,
    /// Node name -> its operator token (for `/ops/*`).
    pub operator_tokens: std::collections::BTreeMap<String, String>,
    /// How the devnet was prepared (for nodes added later).
    devnet: DevnetOptions,
    logs_printed: bool,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl Network {
    /// Prepares a devnet in a fresh temporary directory and starts every node.
    pub async fn start(options: NetworkOptions) -> anyhow::Result<Self> {
        let serial = NETWORK_LOCK.lock().await;
        let binaries = binaries()?;
        let dir = tempfile::Builder::new().prefix("remit-net-").tempdir().context("creating the network directory")?;
        // Room for two members added after genesis.
        let base_port = pick_base_port(options.validators + options.gateways + 2)?;
        let devnet = DevnetOptions {
            dir: dir.path().to_owned(),
            validators: options.validators,
            gateways: options.gateways,
            base_port,
            tls: options.tls,
            log_format: "text".into(),
        };
        let (network, devnet_nodes, api_keys) = prepare_with_keys(&devnet).context("preparing the devnet")?;
        let operator_tokens =
            remit_gateway::devnet::operator_tokens(&devnet, devnet_nodes.iter().map(|n| n.name.as_str()))?;
        let keys_dir = dir.path().join(KEYS_SUBDIR);
        let tls = if options.tls {
            // The harness presents node 0's certificate: one the network's CA issued.
            let first = keys_dir.join(&devnet_nodes[0].name);
            let tls =
                NodeTls::load(&keys_dir.join(CA_CERT_FILE), &first.join(NODE_CERT_FILE), &first.join(NODE_KEY_FILE))
                    .context("loading the harness's TLS identity")?;
            Some(tls)
        } else {
            None
        };
        let clients = devnet_nodes
            .iter()
            .map(|node| {
                connect_lazy(&node.peer_addr, tls.as_ref()).with_context(|| format!("client for {}", node.name))
            })
            .collect::<anyhow::Result<_>>()?;
        let nodes = devnet_nodes
            .into_iter()
            .enumerate()
            .map(|(i, devnet)| {
                let env = options
                    .node_env
                    .iter()
                    .filter(|(node, _, _)| *node == i)
                    .map(|(_, name, value)| (name.clone(), value.clone()))
                    .collect();
                let log = devnet.config.parent().expect("node.toml lies in the node directory").join(LOG_FILE);
                NodeProcess { devnet, env, log, child: None }
            })
            .collect();
        let mut net = Self {
            dir: Some(dir),
            network,
            keys_dir,
            nodes,
            clients,
            tls,
            api_keys,
            operator_tokens,
            devnet,
            logs_printed: false,
            _serial: serial,
        };
        println!(
            "net harness: {} validators, {} gateways, base port {base_port}, dir {}",
            options.validators,
            options.gateways,
            net.dir().display()
        );
        for i in 0..net.len() {
            net.spawn(&binaries.remitd, i)?;
        }
        Ok(net)
    }

    /// The network directory.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |d| d.path())
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the network has no nodes (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s devnet description (addresses, data directory, config).
    pub fn node(&self, i: usize) -> &DevnetNode {
        &self.nodes[i].devnet
    }

    /// The genesis participant node `i` runs.
    pub fn participant(&self, i: usize) -> anyhow::Result<&remit_settlement::participant::Participant> {
        let name = &self.node(i).name;
        let id = remit_settlement::ParticipantId::new(name.as_str()).with_context(|| format!("node {i} ({name})"))?;
        self.network.participant(&id).with_context(|| format!("node {i} ({name}) is not a participant"))
    }

    /// The harness's gRPC client to node `i`.
    pub fn client(&self, i: usize) -> Client {
        self.clients[i].clone()
    }

    /// A new client to node `i` presenting `tls` (or plaintext when `None`).
    pub fn client_with(&self, i: usize, tls: Option<&NodeTls>) -> anyhow::Result<Client> {
        connect_lazy(&self.nodes[i].devnet.peer_addr, tls).context("building a client")
    }

    /// A wallet API client to node `i`, authenticated as its devnet wallet.
    pub async fn wallet(&self, i: usize) -> anyhow::Result<WalletClient> {
        let node = &self.nodes[i].devnet;
        let key = self.api_keys.get(&node.name).context("no API key for the node")?;
        wallet_client(&node.api_url, key).await
    }

    /// The TLS identity the harness's clients present, when TLS is on.
    pub fn tls(&self) -> Option<&NodeTls> {
        self.tls.as_ref()
    }

    /// Indexes of the nodes whose process is running (started and not reaped).
    pub fn up(&mut self) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.nodes[i].child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None))))
            .collect()
    }

    fn spawn(&mut self, remitd: &Path, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        ensure!(node.child.is_none(), "node {i} ({}) is already running", node.devnet.name);
        let log = File::options().create(true).append(true).open(&node.log).context("opening the node log")?;
        let mut command = Command::new(remitd);
        command.arg("--config").arg(&node.devnet.config);
        // Overrides meant for this test's nodes only, not inherited ones.
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with(remit_gateway::config::ENV_PREFIX)) {
            command.env_remove(name);
        }
        command
            .env("NO_COLOR", "1")
            .envs(node.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("cloning the log handle")?)
            .stderr(log);
        let child = command.spawn().with_context(|| format!("spawning {command:?}"))?;
        println!("net harness: started node {i} ({}) pid {}", node.devnet.name, child.id());
        node.child = Some(child);
        Ok(())
    }

    /// Kills node `i` with SIGKILL and reaps it.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let mut child = node.child.take().with_context(|| format!("node {i} is not running"))?;
        child.kill().with_context(|| format!("SIGKILL to node {i}"))?;
        let status = child.wait().with_context(|| format!("reaping node {i}"))?;
        println!("net harness: killed node {i} ({}): {status}", node.devnet.name);
        Ok(())
    }

    /// Stops node `i` with SIGTERM and waits for a clean exit.
    pub fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let mut child = node.child.take().with_context(|| format!("node {i} is not running"))?;
        let status = terminate(&mut child).with_context(|| format!("stopping node {i} ({})", node.devnet.name))?;
        ensure!(status.success(), "node {i} ({}) exited with {status} after SIGTERM", node.devnet.name);
        Ok(())
    }

    /// Waits until node `i` exits on its own; returns its exit status.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let node = &mut self.nodes[i];
        let child = node.child.as_mut().with_context(|| format!("node {i} is not running"))?;
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().with_context(|| format!("waiting for node {i}"))? {
                node.child = None;
                println!("net harness: node {i} ({}) exited: {status}", node.devnet.name);
                return Ok(status);
            }
            ensure!(started.elapsed() < timeout, "node {i} still runs after {timeout:?}");
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Node `i`'s operator token (`authorization: Bearer` for `/ops/*`).
    pub fn operator_token(&self, i: usize) -> anyhow::Result<&str> {
        let name = &self.nodes[i].devnet.name;
        self.operator_tokens.get(name).map(String::as_str).with_context(|| format!("no operator token for {name}"))
    }

    /// Node `i`'s operator view of `uetr` (`GET /ops/remittances/{uetr}`
    /// with its operator token).
    pub async fn operator_view(&self, i: usize, uetr: &str) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}/ops/remittances/{uetr}", self.nodes[i].devnet.ops_url);
        Ok(reqwest::Client::new().get(&url).bearer_auth(self.operator_token(i)?).send().await?)
    }

    /// Node `i`'s log so far.
    pub fn log(&self, i: usize) -> anyhow::Result<String> {
        let path = &self.nodes[i].log;
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }

    /// Fails if any node wrote a panic to its log (a panic in a task does
    /// not stop the process, so it can go unnoticed while other checks pass).
    pub fn no_node_panicked(&self) -> anyhow::Result<()> {
        for i in 0..self.len() {
            if let Some(line) = self.log(i)?.lines().find(|line| line.contains("panicked at")) {
                bail!("node {i} panicked: {line}");
            }
        }
        Ok(())
    }

    /// Forgets node `i`'s extra environment (takes effect at its next start).
    pub fn clear_env(&mut self, i: usize) {
        self.nodes[i].env.clear();
    }

    /// Stops every running node with SIGTERM (see [`Network::stop`]).
    pub fn stop_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.len() {
            if self.nodes[i].child.is_some() {
                self.stop(i)?;
            }
        }
        Ok(())
    }

    /// The identity public key (hex) of `name`, a member to be registered
    /// after genesis (the key is created on first use).
    pub fn member_identity(&self, name: &str) -> anyhow::Result<String> {
        Ok(remit_gateway::devnet::member_identity(&self.devnet, name)?)
    }

    /// Prepares and starts a node for `member`, a gateway not in network.json
    /// (registered by governance); returns its node index.
    pub fn add_member(&mut self, member: &remit_settlement::Participant) -> anyhow::Result<usize> {
        let peers: Vec<remit_gateway::config::PeerEntry> = self
            .nodes
            .iter()
            .map(|n| remit_gateway::config::PeerEntry {
                participant: n.devnet.name.clone(),
                address: n.devnet.peer_addr.clone(),
            })
            .collect();
        let slot = self.nodes.len();
        let (devnet, api_key) =
            remit_gateway::devnet::prepare_member(&self.devnet, &self.network, member, slot, &peers)
                .context("preparing the member's node")?;
        self.clients.push(connect_lazy(&devnet.peer_addr, self.tls.as_ref()).context("client for the member")?);
        self.api_keys.insert(member.id.to_string(), api_key);
        self.operator_tokens.extend(remit_gateway::devnet::operator_tokens(&self.devnet, [member.id.as_str()])?);
        let log = devnet.config.parent().expect("node.toml lies in the node directory").join(LOG_FILE);
        self.nodes.push(NodeProcess { devnet, env: Vec::new(), log, child: None });
        let remitd = binaries()?.remitd.clone();
        self.spawn(&remitd, slot)?;
        Ok(slot)
    }

    /// Starts node `i` again on its data directory, with its environment.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let remitd = binaries()?.remitd.clone();
        self.spawn(&remitd, i)
    }

    /// Node `i`'s tip, or the reason it could not be read.
    pub async fn tip(&self, i: usize) -> anyhow::Result<GetTipResponse> {
        let mut client = self.client(i);
        let reply = tokio::time::timeout(QUERY_TIMEOUT, client.get_tip(GetTipRequest {}))
            .await
            .with_context(|| format!("GetTip on node {i} timed out"))?
            .with_context(|| format!("GetTip on node {i}"))?;
        Ok(reply.into_inner())
    }

    /// Every node's tip (`None` where it could not be read).
    pub async fn tips(&self) -> Vec<Option<GetTipResponse>> {
        let mut tips = Vec::with_capacity(self.len());
        for i in 0..self.len() {
            tips.push(self.tip(i).await.ok());
        }
        tips
    }

    /// The leader the given nodes agree on, if they all answer and agree.
    pub async fn leader_among(&self, nodes: &[usize]) -> Option<usize> {
        let mut agreed = None;
        for &i in nodes {
            let leader = self.tip(i).await.ok()?.leader?;
            let leader = usize::try_from(leader).ok()?;
            if agreed.is_some_and(|l| l != leader) {
                return None;
            }
            agreed = Some(leader);
        }
        agreed.filter(|l| nodes.contains(l))
    }

    /// The leader every running node agrees on, if any.
    pub async fn leader(&mut self) -> Option<usize> {
        let up = self.up();
        self.leader_among(&up).await
    }

    /// Waits until every running node reports the same live leader and a
    /// certified genesis; returns the leader.
    pub async fn wait_ready(&mut self) -> anyhow::Result<usize> {
        let up = self.up();
        let started = Instant::now();
        loop {
            if let Some(leader) = self.leader_among(&up).await {
                let tips = self.tips().await;
                if up.iter().all(|&i| tips[i].as_ref().is_some_and(|t| t.certified_height.is_some())) {
                    println!("net harness: ready after {:?}, leader {leader}", started.elapsed());
                    return Ok(leader);
                }
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "network not ready (leader and certified genesis) after {READY_TIMEOUT:?}: {}",
                    self.describe().await
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until the given nodes agree on a leader that is not `old`.
    pub async fn wait_new_leader(&self, nodes: &[usize], old: usize, timeout: Duration) -> anyhow::Result<usize> {
        let started = Instant::now();
        loop {
            match self.leader_among(nodes).await {
                Some(leader) if leader != old => return Ok(leader),
                _ if started.elapsed() > timeout => {
                    bail!("no new leader among {nodes:?} (old {old}) within {timeout:?}: {}", self.describe().await)
                }
                _ => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }

    /// Waits until every node in `nodes` reports a certified height (the
    /// newest certificate, as GetTip gives it) of `height` or more; returns
    /// their tips.
    pub async fn wait_certified(
        &self,
        nodes: &[usize],
        height: u64,
        timeout: Duration,
    ) -> anyhow::Result<Vec<GetTipResponse>> {
        let started = Instant::now();
        loop {
            let mut tips = Vec::with_capacity(nodes.len());
            for &i in nodes {
                match self.tip(i).await {
                    Ok(tip) if tip.certified_height.is_some_and(|c| c >= height) => tips.push(tip),
                    _ => break,
                }
            }
            if tips.len() == nodes.len() {
                return Ok(tips);
            }
            if started.elapsed() > timeout {
                bail!("nodes {nodes:?} did not certify height {height} within {timeout:?}: {}", self.describe().await);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until every node in `nodes` has applied the same tip and holds
    /// a certificate for every block up to it (the network is idle and in
    /// agreement); returns the tip height and hash.
    pub async fn wait_settled(&self, nodes: &[usize], timeout: Duration) -> anyhow::Result<(u64, Vec<u8>)> {
        let started = Instant::now();
        loop {
            let mut tips = Vec::with_capacity(nodes.len());
            for &i in nodes {
                if let Ok(tip) = self.tip(i).await {
                    tips.push(tip);
                }
            }
            if tips.len() == nodes.len() {
                let first = &tips[0];
                let agreed = tips.iter().all(|t| {
                    t.height.is_some()
                        && t.height == first.height
                        && t.block_hash == first.block_hash
                        && t.certified_height == t.height
                });
                let height = first.height.unwrap_or_default();
                // GetTip's certified height is the newest certificate, and
                // certificates may complete out of order: check the prefix.
                let mut complete = agreed;
                for &i in nodes {
                    if !complete {
                        break;
                    }
                    complete = matches!(self.certified_prefix(i, height).await, Ok(Some(h)) if h == height);
                }
                if complete {
                    return Ok((height, first.block_hash.clone()));
                }
            }
            if started.elapsed() > timeout {
                bail!(
                    "nodes {nodes:?} did not settle on one certified tip within {timeout:?}: {}",
                    self.describe().await
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The last height `h <= tip` such that node `i` holds a certificate for
    /// every block from genesis to `h` (via GetBlocks), or `None` when even
    /// genesis has none.
    pub async fn certified_prefix(&self, i: usize, tip: u64) -> anyhow::Result<Option<u64>> {
        let mut client = self.client(i);
        let mut next = 0;
        while next <= tip {
            let request = GetBlocksRequest {
                from_height: next,
                limit: GET_BLOCKS_LIMIT_MAX,
                certificates_only: true,
                ..Default::default()
            };
            let reply = tokio::time::timeout(QUERY_TIMEOUT, client.get_blocks(request))
                .await
                .with_context(|| format!("GetBlocks on node {i} timed out"))?
                .with_context(|| format!("GetBlocks on node {i}"))?;
            let blocks = reply.into_inner().blocks;
            ensure!(!blocks.is_empty(), "node {i} returned no blocks from height {next} (tip {tip})");
            for block in blocks {
                ensure!(block.height == next, "node {i} returned block {} where {next} was expected", block.height);
                if block.certificate.is_empty() {
                    return Ok(next.checked_sub(1));
                }
                next += 1;
                if next > tip {
                    break;
                }
            }
        }
        Ok(Some(tip))
    }

    /// The hash of the block node `i` stores at `height` (via GetBlocks),
    /// and whether it carries a certificate.
    pub async fn block_hash_at(&self, i: usize, height: u64) -> anyhow::Result<(Digest32, bool)> {
        let mut client = self.client(i);
        let request = GetBlocksRequest { from_height: height, limit: 1, ..Default::default() };
        let reply = tokio::time::timeout(QUERY_TIMEOUT, client.get_blocks(request))
            .await
            .with_context(|| format!("GetBlocks on node {i} timed out"))?
            .with_context(|| format!("GetBlocks on node {i}"))?;
        let encoded = reply.into_inner().blocks.into_iter().find(|b| b.height == height);
        let encoded = encoded.with_context(|| format!("node {i} returned no block at height {height}"))?;
        let block =
            Block::decode(&encoded.block).with_context(|| format!("node {i}'s block {height} does not decode"))?;
        ensure!(block.height().0 == height, "node {i} returned block {} for height {height}", block.height());
        Ok((block.hash(), !encoded.certificate.is_empty()))
    }

    /// One line per node: process state and tip, for failure messages.
    pub async fn describe(&self) -> String {
        let mut out = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let state = if node.child.is_some() { "up" } else { "down" };
            let tip = match self.tip(i).await {
                Ok(t) => {
                    let prefix = match t.height {
                        Some(height) => match self.certified_prefix(i, height).await {
                            Ok(prefix) => format!("{prefix:?}"),
                            Err(e) => format!("unknown ({e:#})"),
                        },
                        None => "None".into(),
                    };
                    format!(
                        "height {:?} certified {:?} (certificates up to {prefix}) leader {:?} accepted {}",
                        t.height, t.certified_height, t.leader, t.transfers_accepted_total
                    )
                }
                Err(e) => format!("no tip ({e:#})"),
            };
            out.push_str(&format!("\n  node {i} ({}, {state}): {tip}", node.devnet.name));
        }
        out
    }

    /// A submitter that reaches every node through the harness's clients.
    pub fn submitter(&self, policy: SubmitPolicy) -> Submitter {
        Submitter { clients: self.clients.clone(), policy }
    }

    /// A traffic generator signing as every participant of the network.
    pub fn traffic(&self, seed: u64) -> anyhow::Result<TrafficGenerator> {
        let keyring = Keyring::load(&self.keys_dir).context("loading the keyring")?;
        let traffic = TrafficGenerator::new(
            &keyring.network,
            &keyring.identities,
            TrafficConfig { seed, ..TrafficConfig::default() },
        );
        ensure!(traffic.sender_count() == self.len(), "expected every participant to send");
        Ok(traffic)
    }

    /// The value of metric `name` on node `i`'s `/metrics`.
    pub fn metric(&self, i: usize, name: &str) -> anyhow::Result<f64> {
        let body = http_get(&self.nodes[i].devnet.ops_url, "/metrics")?;
        parse_metric(&body, name).with_context(|| format!("node {i}'s /metrics has no sample of {name}"))
    }

    /// Prints the last [`LOG_TAIL_LINES`] lines of every node's log.
    pub fn print_logs(&mut self) {
        self.logs_printed = true;
        for (i, node) in self.nodes.iter().enumerate() {
            eprintln!("----- node {i} ({}) log tail: {} -----", node.devnet.name, node.log.display());
            eprintln!("{}", log_tail(&node.log, LOG_TAIL_LINES));
        }
    }

    /// Ends a test: on error prints every node's log tail (and keeps the
    /// directory when [`KEEP_DIR_ENV`] is set) and panics with the error.
    pub fn finish(mut self, result: anyhow::Result<()>) {
        if let Err(error) = result {
            // First, so that a summary that keeps only the head and the
            // tail of the output still shows why the scenario failed.
            println!("net harness: the scenario failed: {error:#}");
            self.print_logs();
            self.keep_dir_if_asked();
            panic!("{error:?}");
        }
    }

    fn keep_dir_if_asked(&mut self) {
        if std::env::var_os(KEEP_DIR_ENV).is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("net harness: kept {}", dir.keep().display());
            }
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.logs_printed {
            self.print_logs();
            self.keep_dir_if_asked();
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // Best effort: the process may already be gone.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Sends SIGTERM and waits up to [`STOP_TIMEOUT`]; kills it after that.
fn terminate(child: &mut Child) -> anyhow::Result<ExitStatus> {
    let status =
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().context("running kill -TERM")?;
    ensure!(status.success(), "kill -TERM {} failed: {status}", child.id());
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().context("waiting for the node")? {
            return Ok(status);
        }
        if started.elapsed() > STOP_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `lines` lines of a log file, without terminal colour codes.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(text) = std::fs::read(path) else { return format!("(cannot read {})", path.display()) };
    let text = strip_ansi(&String::from_utf8_lossy(&text));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequences end with a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A plain HTTP/1.1 GET of `path` on `base_url` (`http://host:port`); the body.
pub fn http_get(base_url: &str, path: &str) -> anyhow::Result<String> {
    let host = base_url.strip_prefix("http://").with_context(|| format!("{base_url} is not an http:// URL"))?;
    let mut stream = TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
    stream.set_read_timeout(Some(QUERY_TIMEOUT))?;
    stream.set_write_timeout(Some(QUERY_TIMEOUT))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response).with_context(|| format!("reading GET {base_url}{path}"))?;
    let (head, body) = response.split_once("\r\n\r\n").context("response has no header end")?;
    let status = head.lines().next().unwrap_or_default();
    ensure!(status.split_whitespace().nth(1) == Some("200"), "GET {base_url}{path}: {status}");
    ensure!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "chunked responses are not supported");
    Ok(body.to_owned())
}

/// The value of an unlabelled Prometheus sample `name` in a text exposition.
pub fn parse_metric(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

// ---------------------------------------------------------------------------
// Submitting batches

/// Retry behaviour of [`Submitter::submit`].
#[derive(Debug, Clone, Copy)]
pub struct SubmitPolicy {
    /// Bound on one SubmitBatch call.
    pub attempt_timeout: Duration,
    /// Give up (status unknown) once this much time passed since the first attempt.
    pub deadline: Duration,
    /// Pause before a retry.
    pub backoff: Duration,
}

impl Default for SubmitPolicy {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(30),
            backoff: Duration::from_millis(100),
        }
    }
}

/// How a submission ended.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// A node answered: the batch's block was applied on a quorum.
    Replied {
        /// The reply.
        reply: SubmitBatchReply,
        /// Attempts made (more than one means an earlier attempt may have been applied).
        attempts: u32,
    },
    /// Every attempt failed with a retryable error until the deadline: the
    /// batch may or may not be in the chain.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last_error: String,
    },
}

/// Submits batches over gRPC, retrying on errors that leave the outcome
/// open (UNAVAILABLE, DEADLINE_EXCEEDED, ...) and moving to the next node on
/// each retry, so a dead node or a leader change is ridden out.
#[derive(Debug, Clone)]
pub struct Submitter {
    clients: Vec<Client>,
    policy: SubmitPolicy,
}

/// Whether a SubmitBatch error leaves the batch's fate open and is worth a retry.
pub fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
    )
}

/// The canonical encoding of a batch, as SubmitBatch carries it.
pub fn encode_batch(batch: &TransferBatch) -> Vec<u8> {
    let mut writer = Writer::with_capacity(256 + batch.transfers.len() * 128);
    batch.encode(&mut writer);
    writer.into_bytes()
}

impl Submitter {
    /// Submits `batch`, first to node `first_node`, then round-robin.
    /// A non-retryable error status is an error.
    pub async fn submit(&self, batch: &TransferBatch, first_node: usize) -> anyhow::Result<Submitted> {
        let bytes = encode_batch(batch);
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            let node = (first_node + attempts as usize) % self.clients.len();
            attempts += 1;
            let mut client = self.clients[node].clone();
            let request = SubmitBatchRequest { batch: bytes.clone(), forwarded: false };
            let status = match tokio::time::timeout(self.policy.attempt_timeout, client.submit_batch(request)).await {
                Ok(Ok(reply)) => return Ok(Submitted::Replied { reply: reply.into_inner(), attempts }),
                Ok(Err(status)) => status,
                Err(_) => {
                    tonic::Status::deadline_exceeded(format!("no reply within {:?}", self.policy.attempt_timeout))
                }
            };
            ensure!(
                retryable(status.code()),
                "SubmitBatch to node {node} failed with {:?}: {}",
                status.code(),
                status.message()
            );
            let last_error = format!("node {node}: {:?}: {}", status.code(), status.message());
            if started.elapsed() + self.policy.backoff >= self.policy.deadline {
                return Ok(Submitted::GaveUp { attempts, last_error });
            }
            tokio::time::sleep(self.policy.backoff).await;
        }
    }
}

/// What the clients were told about their transfers.
#[derive(Default, Clone)]
pub struct Acknowledged {
    /// Acknowledged as applied: accepted in a reply, or reported
    /// `duplicate_uetr` on a retry (an earlier attempt was applied).
    pub accepted: HashSet<Uetr>,
    /// Submitted but never answered: may or may not be in the chain.
    pub unknown: HashSet<Uetr>,
    /// Rejected for any other reason (fresh UETRs between participants
    /// with room under their caps should never be): (uetr, reason).
    pub rejected: Vec<(Uetr, String)>,
    /// Batches answered.
    pub batches_replied: usize,
    /// Batches that needed more than one attempt.
    pub batches_retried: usize,
    /// Transfers acknowledged through a retry's `duplicate_uetr`.
    pub already_applied: usize,
}

impl std::fmt::Debug for Acknowledged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Counts only: the sets hold thousands of UETRs.
        f.debug_struct("Acknowledged")
            .field("accepted", &self.accepted.len())
            .field("unknown", &self.unknown.len())
            .field("rejected", &self.rejected.len())
            .field("batches_replied", &self.batches_replied)
            .field("batches_retried", &self.batches_retried)
            .field("already_applied", &self.already_applied)
            .finish()
    }
}

impl Acknowledged {
    /// Records the outcome of submitting `batch`.
    pub fn record(&mut self, batch: &TransferBatch, submitted: &Submitted) -> anyhow::Result<()> {
        let uetrs = batch.transfers.iter().map(|t| t.uetr);
        match submitted {
            Submitted::GaveUp { .. } => self.unknown.extend(uetrs),
            Submitted::Replied { reply, attempts } => {
                self.batches_replied += 1;
                if *attempts > 1 {
                    self.batches_retried += 1;
                }
                if reply.batch_rejected {
                    self.rejected.extend(uetrs.map(|u| (u, format!("batch rejected: {}", reply.batch_reason))));
                    return Ok(());
                }
                ensure!(
                    reply.results.len() == batch.transfers.len(),
                    "reply has {} results for {} transfers",
                    reply.results.len(),
                    batch.transfers.len()
                );
                for (uetr, result) in uetrs.zip(&reply.results) {
                    if result.accepted {
                        self.accepted.insert(uetr);
                    } else if result.reason == "duplicate_uetr" && *attempts > 1 {
                        self.accepted.insert(uetr);
                        self.already_applied += 1;
                    } else {
                        self.rejected.push((uetr, result.reason.clone()));
                    }
                }
            }
        }
        Ok(())
    }

    /// Merges another record into this one.
    pub fn merge(&mut self, other: Acknowledged) {
        self.accepted.extend(other.accepted);
        self.unknown.extend(other.unknown);
        self.rejected.extend(other.rejected);
        self.batches_replied += other.batches_replied;
        self.batches_retried += other.batches_retried;
        self.already_applied += other.already_applied;
    }
}

/// Batches of synthetic traffic: `rounds` rounds of `transfers_per_round`
/// transfers, each round one signed batch per participant.
pub fn traffic_batches(
    traffic: &mut TrafficGenerator,
    rounds: usize,
    transfers_per_round: usize,
) -> Vec<TransferBatch> {
    let mut batches = Vec::new();
    for _ in 0..rounds {
        let now_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        for entry in traffic.entries(transfers_per_round, now_ms) {
            if let Entry::TransferBatch { batch } = entry {
                batches.push(batch);
            }
        }
    }
    batches
}

/// Shape of a background load.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Batches in flight at once.
    pub concurrency: usize,
    /// Pause of each worker after each batch, to stretch the load over time.
    pub pause: Duration,
}

/// A load running in the background.
#[derive(Debug)]
pub struct Load {
    /// Batches answered or given up so far.
    pub done: Arc<AtomicUsize>,
    /// Batches in the load.
    pub total: usize,
    handle: tokio::task::JoinHandle<anyhow::Result<Acknowledged>>,
}

impl Load {
    /// Submits `batches` with `options.concurrency` workers.
    pub fn spawn(submitter: Submitter, batches: Vec<TransferBatch>, options: LoadOptions) -> Self {
        let total = batches.len();
        let done = Arc::new(AtomicUsize::new(0));
        let queue: Arc<Mutex<VecDeque<(usize, TransferBatch)>>> =
            Arc::new(Mutex::new(batches.into_iter().enumerate().collect()));
        let counter = done.clone();
        let handle = tokio::spawn(async move {
            let mut workers = tokio::task::JoinSet::new();
            for _ in 0..options.concurrency.max(1) {
                let (queue, submitter, done) = (queue.clone(), submitter.clone(), counter.clone());
                workers.spawn(async move {
                    let mut acks = Acknowledged::default();
                    loop {
                        let next = queue.lock().expect("queue lock is never poisoned").pop_front();
                        let Some((index, batch)) = next else { break };
                        let submitted = submitter.submit(&batch, index).await?;
                        acks.record(&batch, &submitted)?;
                        done.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(options.pause).await;
                    }
                    anyhow::Ok(acks)
                });
            }
            let mut all = Acknowledged::default();
            while let Some(worker) = workers.join_next().await {
                all.merge(worker.context("a load worker panicked")??);
            }
            Ok(all)
        });
        Self { done, total, handle }
    }

    /// Whether every batch has been answered or given up.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits for the load to end, at most `timeout`.
    pub async fn join(self, timeout: Duration) -> anyhow::Result<Acknowledged> {
        let done = self.done.clone();
        match tokio::time::timeout(timeout, self.handle).await {
            Ok(joined) => joined.context("the load task panicked")?,
            Err(_) => bail!(
                "load not finished within {timeout:?} ({} of {} batches done)",
                done.load(Ordering::Relaxed),
                self.total
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// Checks on stopped nodes

/// The line `remit ledger verify --dir` prints on success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Certified blocks verified (genesis included).
    pub blocks: u64,
    /// Accepted transfers in them.
    pub transfers: u64,
    /// Height of the last certified block.
    pub tip_height: u64,
    /// Its hash.
    pub tip_hash: Digest32,
}

impl VerifyReport {
    /// Parses `verified <blocks> blocks, <transfers> transfers, tip <height> <hash>`.
    pub fn parse(line: &str) -> anyhow::Result<Self> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let [verified, blocks, blocks_word, transfers, transfers_word, tip, height, hash] = words[..] else {
            bail!("{line:?}: expected `verified <blocks> blocks, <transfers> transfers, tip <height> <hash>`");
        };
        ensure!(
            (verified, blocks_word, transfers_word, tip) == ("verified", "blocks,", "transfers,", "tip"),
            "{line:?}: unexpected wording"
        );
        Ok(Self {
            blocks: blocks.parse().with_context(|| format!("blocks {blocks:?}"))?,
            transfers: transfers.parse().with_context(|| format!("transfers {transfers:?}"))?,
            tip_height: height.parse().with_context(|| format!("tip height {height:?}"))?,
            tip_hash: Digest32::from_hex(hash).with_context(|| format!("tip hash {hash:?}"))?,
        })
    }
}

/// What a run of the `remit` CLI gave.
#[derive(Debug)]
pub struct CliRun {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs the `remit` CLI with `args` and collects its output.
pub fn remit_cli<I, S>(args: I) -> anyhow::Result<CliRun>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let remit = &binaries()?.remit;
    let output = Command::new(remit).args(args).output().with_context(|| format!("running {}", remit.display()))?;
    Ok(CliRun {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Runs `remit ledger verify --dir <data_dir>`; requires exit status 0.
pub fn run_verify_cli(data_dir: &Path) -> anyhow::Result<VerifyReport> {
    let remit = &binaries()?.remit;
    let output = Command::new(remit)
        .args(["ledger", "verify", "--dir"])
        .arg(data_dir)
        .output()
        .with_context(|| format!("running {} ledger verify", remit.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "remit ledger verify --dir {} exited with {}\nstdout: {stdout}\nstderr: {stderr}",
        data_dir.display(),
        output.status
    );
    VerifyReport::parse(stdout.trim()).with_context(|| format!("stderr: {stderr}"))
}

/// A stopped node's chain, checked.
#[derive(Debug, Clone)]
pub struct NodeLedger {
    /// Node index.
    pub node: usize,
    /// What `remit ledger verify --dir` reported.
    pub cli: VerifyReport,
    /// The in-process audit ([`check_stored_ledger`]).
    pub stored: StoredLedger,
}

/// With every node stopped: runs `remit ledger verify --dir` on each data
/// directory (exit 0, report parsed) and [`check_stored_ledger`] in-process
/// (every stored block certified, hash links, certificates, replay, no UETR
/// accepted twice, positions summing to zero per currency), checks that both
/// audits agree, and that every node stores the very same chain.
pub fn verify_stopped_network(net: &mut Network) -> anyhow::Result<Vec<NodeLedger>> {
    let up = net.up();
    ensure!(up.is_empty(), "nodes {up:?} still run; stop them first (sled locks a live node's store)");
    let mut ledgers = Vec::with_capacity(net.len());
    for i in 0..net.len() {
        let data_dir = net.node(i).data_dir.clone();
        let context = || format!("node {i} ({}) data dir {}", net.node(i).name, data_dir.display());
        let cli = run_verify_cli(&data_dir).with_context(context)?;
        let stored = check_stored_ledger(&data_dir, &net.network).with_context(context)?;
        let tip = stored.report.tip.with_context(|| format!("{}: no certified block", context()))?;
        ensure!(
            cli.blocks == stored.report.blocks
                && cli.transfers == stored.report.transfers
                && (Height(cli.tip_height), cli.tip_hash) == tip,
            "{}: the CLI reports {cli:?}, the in-process audit {:?}",
            context(),
            stored.report
        );
        ledgers.push(NodeLedger { node: i, cli, stored });
    }
    let first = &ledgers[0];
    for other in &ledgers[1..] {
        if let Some(height) = (0..first.stored.hashes.len().max(other.stored.hashes.len()))
            .find(|&h| first.stored.hashes.get(h) != other.stored.hashes.get(h))
        {
            bail!(
                "node {} and node {} differ at height {height}: {:?} vs {:?} (tips {:?} vs {:?})",
                first.node,
                other.node,
                first.stored.hashes.get(height),
                other.stored.hashes.get(height),
                first.cli,
                other.cli
            );
        }
    }
    Ok(ledgers)
}

/// Holds a chain to what clients were told: every acknowledged transfer is
/// accepted in it (exactly once: the chain's accepted set is a map, and
/// [`check_stored_ledger`] fails on any UETR accepted twice), and every
/// accepted transfer is one the clients submitted (acknowledged or with an
/// unknown outcome), so nothing was invented or lost.
pub fn check_acknowledged(ledger: &StoredLedger, acks: &Acknowledged) -> anyhow::Result<()> {
    let chain: &HashMap<Uetr, Height> = &ledger.accepted;
    let missing: Vec<&Uetr> = acks.accepted.iter().filter(|u| !chain.contains_key(u)).collect();
    ensure!(
        missing.is_empty(),
        "{} of {} acknowledged transfers are not in the chain, e.g. {}",
        missing.len(),
        acks.accepted.len(),
        missing[0]
    );
    let unexplained: Vec<&Uetr> =
        chain.keys().filter(|u| !acks.accepted.contains(u) && !acks.unknown.contains(u)).collect();
    ensure!(
        unexplained.is_empty(),
        "{} transfers in the chain were never submitted, e.g. {}",
        unexplained.len(),
        unexplained[0]
    );
    ensure!(
        chain.len() as u64 == ledger.report.transfers,
        "{} accepted UETRs but the audit counted {} transfers",
        chain.len(),
        ledger.report.transfers
    );
    Ok(())
}

/// Stops every node, verifies every data directory (`remit ledger verify
/// --dir` and the in-process audit), and checks that each verified to the
/// certified tip `height` the nodes reported and holds every acknowledged
/// transfer exactly once and nothing unacknowledged.
pub fn stop_and_verify(net: &mut Network, height: u64, acks: &Acknowledged) -> anyhow::Result<Vec<NodeLedger>> {
    net.stop_all()?;
    let ledgers = verify_stopped_network(net)?;
    for ledger in &ledgers {
        ensure!(
            ledger.cli.tip_height == height,
            "node {} verified tip {:?}, the nodes reported {height}",
            ledger.node,
            ledger.cli
        );
        check_acknowledged(&ledger.stored, acks)?;
    }
    println!("verified on every node: {:?}", ledgers[0].cli);
    Ok(ledgers)
}
