//! A running node. Every node holds the ledger chain, serves the peer gRPC
//! API, the HTTP health, metrics and governance endpoints, and runs the
//! remittance engine of its participant. What else it runs depends on its
//! role in `network.json`:
//!
//! - a **validator** (holds a BLS key share) runs Raft replication, the
//!   block proposer (batch intake, block cutting) and the certification round;
//! - a **gateway** (a member institution without a key share) follows the
//!   certified chain from the validators, verifying and replaying every
//!   block ([`follower`]), and submits its batches and reports to them
//!   ([`intake::RemoteIntake`]). It has no Raft vote and signs no shares.

pub mod certifier;
pub mod clock;
pub mod follower;
pub mod http;
pub mod intake;
pub mod ledger_port;
pub mod message_exchange;
pub mod peer_access;
pub mod peer_identity;
pub mod peers;
pub mod proposer;
pub mod raft_network;
pub mod service;
pub mod webhook_sink;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::{BasicNode, Config, SnapshotPolicy};
use remit_compliance::PassThrough;
use remit_proto::v1::peer_server::PeerServer;
use remit_settlement::chain::Chain;
use remit_settlement::network::{load_identity_key, load_validator_key, NetworkConfig, NodeRole};
use remit_settlement::replica::state_machine::lock;
use remit_settlement::replica::{AppliedBlock, FailStop, LedgerStateMachine, Raft, SharedChain, SledRaftLog};
use remit_settlement::store::SledLedgerStore;
use remit_settlement::{Height, ParticipantId, SignatureCheck};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::api::auth::Authenticator;
use crate::config::NodeConfig;
use crate::constants::{GRPC_MESSAGE_BYTES_MAX, RAFT_APPEND_ENTRIES_MAX};
use crate::metrics::Metrics;
use crate::remittance::engine::{Engine, EngineConfig, StoreOptions};
use crate::remittance::journal::JournalOptions;
use crate::remittance::ports::{EnginePorts, EventSink};
use crate::remittance::recent::RecentBlocks;
use crate::remittance::{Corridors, FileRateSource, RateSource, RateTable, StaticRates};
use crate::tls::NodeTls;
use crate::webhook::{RetryPolicy, WebhookDispatcher, WebhookEndpoint};
use certifier::{Certifier, CertifierEvent, CertifierLinks};
use follower::{CertifiedHeight, ChainFollower};
use intake::{LeaderHint, LedgerIntake, RemoteIntake};
use peers::{PeerAddress, Peers};
use proposer::Proposer;
use raft_network::RaftNetworkFactoryImpl;
use service::PeerService;

/// Sub-directory of the data directory holding the ledger's sled database.
pub const LEDGER_SUBDIR: &str = "ledger";
/// Sub-directory of the data directory holding the Raft log's sled database.
pub const RAFT_SUBDIR: &str = "raft";
/// Sub-directory of the data directory holding the gateway's own records
/// (remittances, payment messages, webhook queue).
pub const GATEWAY_SUBDIR: &str = "gateway";
/// Sub-directory of the gateway directory holding its sled database (the
/// webhook queue); the remittance journal is `journal.log` beside it.
pub const GATEWAY_DB_SUBDIR: &str = "db";

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A configured file or key is wrong.
    #[error("{0}")]
    Setup(String),
    /// The ledger could not be opened.
    #[error(transparent)]
    Chain(#[from] remit_settlement::chain::ChainError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] remit_settlement::store::StoreError),
    /// A server could not start.
    #[error("server: {0}")]
    Server(String),
}

fn setup(e: impl std::fmt::Display) -> NodeError {
    NodeError::Setup(e.to_string())
}

/// What only one role has: a validator's Raft and index, a gateway's view
/// of who leads the validators.
#[derive(Clone)]
pub enum RoleParts {
    /// A validator.
    Validator {
        /// Its validator index.
        me: u64,
        /// Its Raft instance.
        raft: Raft,
    },
    /// A gateway that is not a validator.
    Gateway {
        /// The leader as last reported by a validator.
        leader: LeaderHint,
    },
}

impl std::fmt::Debug for RoleParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoleParts::Validator { me, .. } => write!(f, "Validator({me})"),
            RoleParts::Gateway { .. } => f.write_str("Gateway"),
        }
    }
}

impl RoleParts {
    /// The role.
    pub fn role(&self) -> NodeRole {
        match self {
            RoleParts::Validator { .. } => NodeRole::Validator,
            RoleParts::Gateway { .. } => NodeRole::Gateway,
        }
    }

    /// The Raft instance, on a validator.
    pub fn raft(&self) -> Option<&Raft> {
        match self {
            RoleParts::Validator { raft, .. } => Some(raft),
            RoleParts::Gateway { .. } => None,
        }
    }

    /// This node's validator index, on a validator.
    pub fn validator_index(&self) -> Option<u64> {
        match self {
            RoleParts::Validator { me, .. } => Some(*me),
            RoleParts::Gateway { .. } => None,
        }
    }

    /// The Raft leader's validator index as this node knows it.
    pub fn leader(&self) -> Option<u64> {
        match self {
            RoleParts::Validator { raft, .. } => raft.metrics().borrow().current_leader,
            RoleParts::Gateway { leader } => leader.get(),
        }
    }
}

/// A started node.
pub struct Node {
    /// Validator or gateway, with the parts of that role.
    pub role: RoleParts,
    /// The chain.
    pub chain: SharedChain,
    /// Raised when a durable write fails: the node must exit.
    pub fail_stop: FailStop,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({:?})", self.role)
    }
}

/// What the role-specific start returns.
struct RoleStart {
    parts: RoleParts,
    intake: Arc<dyn LedgerIntake>,
    certifier: Option<mpsc::UnboundedSender<CertifierEvent>>,
}

impl Node {
    /// Opens the ledger, starts the parts of this node's role, the
    /// remittance engine and the servers, all on the current runtime.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        Self::start_on(config, tokio::runtime::Handle::current()).await
    }

    /// [`Node::start`], running the ledger (Raft, proposer, certifier or
    /// follower, and the peer server) on the runtime of `ledger`, apart from
    /// the remittance engine and the APIs: a burst of wallet traffic then
    /// cannot hold back a Raft append past its timeout.
    pub async fn start_on(config: NodeConfig, ledger_runtime: tokio::runtime::Handle) -> Result<Self, NodeError> {
        let network = NetworkConfig::load(&config.node.network).map_err(setup)?;
        let participant = ParticipantId::new(config.node.participant.clone())
            .map_err(|e| NodeError::Setup(format!("config key `node.participant`: {e}")))?;
        let role = network.role_of(&participant);
        let addresses = peer_addresses(&config, &network)?;
        let tls = if config.tls.enabled {
            let (Some(ca), Some(cert), Some(tls_key)) = (&config.tls.ca_cert, &config.tls.cert, &config.tls.key) else {
                return Err(setup("config key `tls`: ca_cert, cert and key are required"));
            };
            Some(NodeTls::load(ca, cert, tls_key).map_err(setup)?)
        } else {
            None
        };

        let ledger_dir = config.node.data_dir.join(LEDGER_SUBDIR);
        std::fs::create_dir_all(&ledger_dir).map_err(|e| setup(format!("{}: {e}", ledger_dir.display())))?;
        let store = SledLedgerStore::open(&ledger_dir)?;
        if let Some(height) = config.testing.fail_ledger_writes_from_height {
            store.fail_writes_from(Height(height));
        }
        // The Raft log has a database of its own: an append is flushed
        // before the leader hears of it, and sharing the ledger's database
        // made it wait for the flush of whatever block was being applied.
        let raft_dir = config.node.data_dir.join(RAFT_SUBDIR);
        let raft_db =
            sled::Config::new().path(&raft_dir).open().map_err(|e| setup(format!("{}: {e}", raft_dir.display())))?;
        let (raft_log, moved) = SledRaftLog::open_moving_from(&raft_db, store.db()).map_err(setup)?;
        if moved {
            info!(from = %ledger_dir.display(), to = %raft_dir.display(), "moved the Raft log and vote to their own database");
        }
        let mut chain = Chain::open(store, Some(&network))?;
        if chain.tip().is_none() && role == NodeRole::Validator {
            // Every validator derives the same genesis block from
            // network.json (and certifies it); a gateway takes it certified
            // from the validators like every other block.
            let (genesis, _) = chain.append(network.genesis_proposal(), SignatureCheck::Verify, |_| None)?;
            info!(hash = %genesis.hash(), "genesis block applied");
        }
        let certified = CertifiedHeight::new(chain.certified_height().map(|h| h.0));
        let chain: SharedChain = Arc::new(Mutex::new(chain));
        let metrics = Metrics::new();
        let fail_stop = FailStop::new();
        let signer = peer_identity::RequestSigner::new(
            network.chain_id.clone(),
            participant.clone(),
            load_identity_key(&config.node.identity_key).map_err(setup)?,
        );
        let peers = Peers::new(&addresses, tls.as_ref()).map_err(setup)?.with_signer(signer);
        let recent_blocks = RecentBlocks::default();
        let mut servers = Vec::new();
        let links = RoleLinks {
            chain: chain.clone(),
            peers: peers.clone(),
            metrics: metrics.clone(),
            recent_blocks: recent_blocks.clone(),
            certified: certified.clone(),
            fail_stop: fail_stop.clone(),
        };
        let started = match role {
            NodeRole::Validator => {
                let (config, network, participant, addresses) =
                    (config.clone(), network.clone(), participant.clone(), addresses.clone());
                ledger_runtime
                    .spawn(async move {
                        let mut servers = Vec::new();
                        start_validator(&config, &network, &participant, &addresses, raft_log, links, &mut servers)
                            .await
                            .map(|started| (started, servers))
                    })
                    .await
                    .map_err(|e| NodeError::Server(format!("ledger runtime: {e}")))??
            }
            NodeRole::Gateway => {
                if config.node.key_share.is_some() {
                    warn!(participant = %participant, "config key `node.key_share` ignored: not a validator in network.json");
                }
                ledger_runtime
                    .spawn(async move {
                        let mut servers = Vec::new();
                        let started = start_gateway(links, &mut servers);
                        (started, servers)
                    })
                    .await
                    .map_err(|e| NodeError::Server(format!("ledger runtime: {e}")))?
            }
        };
        let (RoleStart { parts, intake, certifier }, role_servers) = started;
        servers.extend(role_servers);

        let adapters = EngineAdapters {
            ledger: Arc::new(ledger_port::IntakeLedger::new(intake.clone())),
            blocks: Arc::new(ledger_port::ChainBlocks::new(chain.clone(), recent_blocks)),
            exchange: Arc::new(message_exchange::PeerExchange::new(peers.clone(), participant.clone())),
        };
        // The gateway's private records (customer data) live apart from the
        // ledger, so a ledger directory can be handed to an auditor as is.
        let gateway_dir = config.node.data_dir.join(GATEWAY_SUBDIR);
        let (gateway_db, journal_path) = open_gateway_store(&gateway_dir)?;
        let (engine, webhooks) = start_engine(&config, &network, &gateway_db, &journal_path, adapters)?;
        let governance = http::GovernanceEndpoint {
            chain_id: network.chain_id.clone(),
            governance: network.governance.clone(),
            intake: intake.clone(),
            chain: chain.clone(),
        };
        // The wallet API on a listener of its own: operator routes (health,
        // metrics, governance, `/ops/*`) are served on `[http]` only, so a
        // wallet port exposed to the internet offers none of them.
        if let Some(api) = &config.api {
            let auth = Authenticator::new(&api.clients).map_err(setup)?;
            let listen = api.listen.ok_or_else(|| setup("config key `api.listen`: required with [api]"))?;
            let tls = match (&api.tls_cert, &api.tls_key) {
                (Some(cert), Some(key)) => Some(crate::api::listener::server_config(cert, key).map_err(setup)?),
                _ => None,
            };
            let handle =
                crate::api::serve_router(listen, crate::api::router(engine.clone(), auth, webhooks.clone()), tls)
                    .await
                    .map_err(|e| NodeError::Server(format!("config key `api.listen` ({listen}): {e}")))?;
            servers.push(handle);
        }

        let service = PeerServer::new(PeerService {
            role: parts.clone(),
            chain: chain.clone(),
            intake,
            certifier,
            engine: engine.clone(),
            certified,
            metrics: metrics.clone(),
            serve_altered_blocks: config.testing.serve_altered_blocks,
            auth: peer_identity::PeerAuthenticator::new(chain.clone(), network.chain_id.clone()),
        })
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
        let mut builder = tonic::transport::Server::builder()
            .initial_stream_window_size(Some(crate::constants::HTTP2_WINDOW_BYTES))
            .initial_connection_window_size(Some(crate::constants::HTTP2_WINDOW_BYTES))
            .tcp_nodelay(true);
        if let Some(tls) = &tls {
            builder = builder.tls_config(tls.server()).map_err(|e| NodeError::Server(e.to_string()))?;
        }
        // Bound here (errors are reported at start), served on the ledger runtime.
        let peer_listener = std::net::TcpListener::bind(config.peer.listen)
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .map_err(|e| NodeError::Server(format!("config key `peer.listen` ({}): {e}", config.peer.listen)))?;
        let router = builder.add_service(service);
        servers.push(ledger_runtime.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(peer_listener) {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, "peer server cannot listen");
                    return;
                }
            };
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            if let Err(error) = router.serve_with_incoming(incoming).await {
                tracing::error!(%error, "peer server stopped");
            }
        }));

        let http_listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .map_err(|e| NodeError::Server(format!("config key `http.listen` ({}): {e}", config.http.listen)))?;
        let app = http::router(http::HttpState {
            role: parts.clone(),
            chain: chain.clone(),
            metrics,
            engine: engine.clone(),
            operators: http::Operators::new(&config.http.operators).map_err(setup)?,
        })
        .merge(http::governance_router(governance));
        servers.push(tokio::spawn(async move {
            if let Err(error) = axum::serve(http_listener, app).await {
                tracing::error!(%error, "http server stopped");
            }
        }));
        info!(
            role = parts.role().as_str(),
            validator = ?parts.validator_index(),
            participant = %participant,
            peer = %config.peer.listen,
            http = %config.http.listen,
            api = ?config.api.as_ref().and_then(|api| api.listen),
            tls = config.tls.enabled,
            height = lock(&chain).tip().map(|(h, _)| h.0),
            "node started"
        );
        Ok(Self { role: parts, chain, fail_stop, servers })
    }

    /// Stops Raft and the servers; the store is flushed on every write, so
    /// nothing acknowledged is lost.
    pub async fn shutdown(self) {
        if let Some(raft) = self.role.raft() {
            if let Err(error) = raft.shutdown().await {
                warn!(%error, "raft shutdown");
            }
        }
        for server in self.servers {
            server.abort();
        }
        info!("node stopped");
    }
}

/// What both roles' start functions share.
struct RoleLinks {
    chain: SharedChain,
    peers: Peers,
    metrics: Metrics,
    recent_blocks: RecentBlocks,
    certified: CertifiedHeight,
    fail_stop: FailStop,
}

/// Starts Raft, the certification round and the proposer of a validator.
async fn start_validator(
    config: &NodeConfig,
    network: &NetworkConfig,
    participant: &ParticipantId,
    addresses: &[PeerAddress],
    raft_log: SledRaftLog,
    links: RoleLinks,
    servers: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<RoleStart, NodeError> {
    let RoleLinks { chain, peers, metrics, recent_blocks, certified, fail_stop } = links;
    let proposer_certified = certified.clone();
    let me = network.participant(participant).and_then(|p| p.validator_index).ok_or_else(|| {
        setup(format!("config key `node.participant`: {participant} is not a validator in network.json"))
    })?;
    let key_share = config
        .node
        .key_share
        .as_ref()
        .ok_or_else(|| setup(format!("config key `node.key_share`: required, {participant} is a validator")))?;
    let key = load_validator_key(key_share).map_err(setup)?;
    if key.index() != me {
        return Err(setup(format!("config key `node.key_share`: holds validator {}, not {me}", key.index())));
    }
    let me = u64::from(me);
    let validators = lock(&chain).validators().clone();
    let raft_config = Config {
        cluster_name: network.chain_id.to_string(),
        heartbeat_interval: config.raft.heartbeat_ms,
        election_timeout_min: config.raft.election_timeout_min_ms,
        election_timeout_max: config.raft.election_timeout_max_ms,
        max_payload_entries: RAFT_APPEND_ENTRIES_MAX,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.raft.snapshot_every_blocks),
        max_in_snapshot_log_to_keep: config.raft.snapshot_every_blocks / 2,
        purge_batch_size: 1,
        ..Default::default()
    };
    let raft_config = Arc::new(raft_config.validate().map_err(setup)?);
    let (applied_tx, mut applied_rx) = mpsc::unbounded_channel::<AppliedBlock>();
    let state_machine = LedgerStateMachine::new(chain.clone(), applied_tx, fail_stop.clone());
    // Raft gets connections of its own: a follower's append must not queue
    // behind payment messages and fetches on a shared HTTP/2 connection.
    let raft_peers = peers.reconnect().map_err(setup)?;
    let raft = Raft::new(me, raft_config, RaftNetworkFactoryImpl::new(raft_peers), raft_log, state_machine)
        .await
        .map_err(setup)?;
    if !raft.is_initialized().await.map_err(setup)? {
        let members: BTreeMap<u64, BasicNode> = addresses
            .iter()
            .filter_map(|peer| peer.validator.map(|index| (index, BasicNode { addr: peer.address.clone() })))
            .collect();
        if let Err(error) = raft.initialize(members).await {
            warn!(%error, "raft initialize (another node may have initialised the cluster)");
        }
    }

    let (certifier_tx, certifier_rx) = mpsc::unbounded_channel();
    let links = CertifierLinks {
        peers: peers.clone(),
        metrics: metrics.clone(),
        certified,
        fail_stop,
        forge_shares: config.testing.forge_shares,
    };
    let certifier = Certifier::new(me, key, validators, chain, links);
    servers.push(tokio::spawn(certifier.run(certifier_rx)));
    let forward = certifier_tx.clone();
    servers.push(tokio::spawn(async move {
        while let Some(applied) = applied_rx.recv().await {
            if let Some(block) = &applied.block {
                recent_blocks.insert(block.clone());
            }
            if forward.send(CertifierEvent::Applied(applied)).is_err() {
                return;
            }
        }
    }));
    let proposer = Proposer::new(me, raft.clone(), peers, metrics, config.block.clone(), proposer_certified);
    servers.push(tokio::spawn(proposer.clone().run()));
    Ok(RoleStart { parts: RoleParts::Validator { me, raft }, intake: proposer, certifier: Some(certifier_tx) })
}

/// Starts a gateway's chain follower; its submissions go to the validators.
fn start_gateway(links: RoleLinks, servers: &mut Vec<tokio::task::JoinHandle<()>>) -> RoleStart {
    let RoleLinks { chain, peers, metrics, recent_blocks, certified, fail_stop } = links;
    let leader = LeaderHint::default();
    let follower =
        ChainFollower::new(chain, peers.clone(), metrics, recent_blocks, leader.clone(), certified, fail_stop);
    servers.push(tokio::spawn(follower.run()));
    RoleStart {
        parts: RoleParts::Gateway { leader: leader.clone() },
        intake: Arc::new(RemoteIntake::new(peers, leader)),
        certifier: None,
    }
}

/// Opens the gateway's private store: the remittance journal
/// (`<dir>/journal.log`) and a sled database for the webhook queue
/// (`<dir>/db`). Refuses the layout of earlier versions (the journal in sled)
/// rather than start with an empty history.
fn open_gateway_store(dir: &Path) -> Result<(sled::Db, PathBuf), NodeError> {
    if dir.join("conf").exists() {
        return Err(setup(format!(
            "{}: gateway store from an earlier version (journal in sled); this version keeps the journal in \
             journal.log: move the directory aside and rebuild the node (or re-create the devnet)",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| setup(format!("{}: {e}", dir.display())))?;
    let db_dir = dir.join(GATEWAY_DB_SUBDIR);
    let db = sled::Config::new().path(&db_dir).open().map_err(|e| setup(format!("{}: {e}", db_dir.display())))?;
    Ok((db, dir.join(crate::remittance::journal::JOURNAL_FILE)))
}

/// The engine's ports that the node's ledger parts serve.
struct EngineAdapters {
    ledger: Arc<ledger_port::IntakeLedger>,
    blocks: Arc<ledger_port::ChainBlocks>,
    exchange: Arc<message_exchange::PeerExchange>,
}

/// Opens the remittance engine: corridors, rates, keys, payout adapter and
/// webhooks from the configuration; the webhook dispatcher is returned for
/// the wallet API's delivery log.
fn start_engine(
    config: &NodeConfig,
    network: &NetworkConfig,
    db: &sled::Db,
    journal_path: &Path,
    adapters: EngineAdapters,
) -> Result<(Engine, Option<WebhookDispatcher>), NodeError> {
    let section = &config.remittance;
    let corridors = match &section.corridors_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| setup(format!("config key `remittance.corridors_file` ({}): {e}", path.display())))?;
            Corridors::from_toml(&text).map_err(|e| setup(format!("{}: {e}", path.display())))?
        }
        None => Corridors::from_config(&Default::default()).map_err(setup)?,
    };
    let rates: Arc<dyn RateSource> = match &section.rates_file {
        Some(path) => {
            Arc::new(FileRateSource::open(path).map_err(|e| setup(format!("config key `remittance.rates_file`: {e}")))?)
        }
        None => Arc::new(StaticRates::new(RateTable::new(iso_currency::Currency::USD))),
    };
    let engine_config = EngineConfig {
        me: ParticipantId::new(config.node.participant.clone()).map_err(setup)?,
        chain_id: network.chain_id.clone(),
        signing_key: load_identity_key(&config.node.identity_key).map_err(setup)?,
        corridors,
        rates,
        quote_ttl_ms: section.quote_ttl_ms,
        push_messages: !config.testing.skip_message_push,
        store: StoreOptions {
            journal: JournalOptions { checkpoint_bytes: section.journal_checkpoint_bytes, checkpoints: true },
            terminal_retention_ms: section.terminal_retention_s * 1_000,
            inbox_ttl_ms: section.inbox_ttl_s * 1_000,
            ..StoreOptions::default()
        },
    };
    let payout = crate::payout::build_adapter(&config.payout, &config.node.data_dir).map_err(setup)?;
    let mut endpoints = HashMap::new();
    for (i, client) in config.api.iter().flat_map(|api| api.clients.iter()).enumerate() {
        let (Some(url), Some(secret_file)) = (&client.webhook_url, &client.webhook_secret_file) else { continue };
        let secret = std::fs::read(secret_file).map_err(|e| {
            setup(format!("config key `api.clients[{i}].webhook_secret_file` ({}): {e}", secret_file.display()))
        })?;
        let secret = String::from_utf8_lossy(&secret).trim().as_bytes().to_vec();
        let endpoint = WebhookEndpoint::new(url.clone(), secret)
            .map_err(|e| setup(format!("config key `api.clients[{i}].webhook_url`: {e}")))?;
        endpoints.insert(client.id.clone(), endpoint);
    }
    let webhooks = if endpoints.is_empty() {
        None
    } else {
        let tree = db.open_tree("gateway/webhooks").map_err(setup)?;
        let dispatcher = WebhookDispatcher::new(endpoints, Some(tree), RetryPolicy::default());
        dispatcher.spawn();
        Some(dispatcher)
    };
    let ports = EnginePorts {
        ledger: adapters.ledger,
        blocks: adapters.blocks,
        exchange: adapters.exchange,
        payout,
        screening: Arc::new(PassThrough),
        clock: Arc::new(clock::SystemClock),
        events: webhooks
            .clone()
            .map(|dispatcher| Arc::new(webhook_sink::WebhookSink::new(dispatcher)) as Arc<dyn EventSink>),
    };
    let engine = Engine::start(engine_config, journal_path, ports).map_err(setup)?;
    Ok((engine, webhooks))
}

/// Every node this one talks to, from `[[peers]]`, checked against
/// network.json: every validator must be listed (with its index); gateways
/// may be listed, also ones registered after genesis (not in network.json).
fn peer_addresses(config: &NodeConfig, network: &NetworkConfig) -> Result<Vec<PeerAddress>, NodeError> {
    let mut addresses = Vec::with_capacity(config.peers.len());
    let mut seen = BTreeSet::new();
    for (i, entry) in config.peers.iter().enumerate() {
        let participant = ParticipantId::new(entry.participant.clone())
            .map_err(|e| setup(format!("config key `peers[{i}].participant`: {e}")))?;
        if !seen.insert(participant.clone()) {
            return Err(setup(format!("config key `peers[{i}].participant`: {participant} listed twice")));
        }
        let validator = network.participant(&participant).and_then(|p| p.validator_index).map(u64::from);
        addresses.push(PeerAddress { participant, address: entry.address.clone(), validator });
    }
    let expected: BTreeSet<u64> = (0..u64::from(network.validators.count)).collect();
    let listed: BTreeSet<u64> = addresses.iter().filter_map(|peer| peer.validator).collect();
    if listed != expected {
        return Err(setup(format!(
            "config key `peers`: must list all {} validators of network.json",
            network.validators.count
        )));
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_store_holds_a_journal_file_and_a_webhook_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gateway = dir.path().join(GATEWAY_SUBDIR);
        let (db, journal) = open_gateway_store(&gateway).expect("opens a new store");
        assert_eq!(journal, gateway.join("journal.log"));
        assert!(gateway.join(GATEWAY_DB_SUBDIR).join("conf").exists(), "sled lives in db/");
        drop(db);
    }

    #[test]
    fn a_gateway_store_of_the_earlier_layout_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gateway = dir.path().join(GATEWAY_SUBDIR);
        // The earlier layout: sled's files directly in gateway/.
        let old = sled::Config::new().path(&gateway).open().expect("old layout");
        drop(old);
        let error = open_gateway_store(&gateway).expect_err("refused");
        let text = error.to_string();
        assert!(text.contains("earlier version") && text.contains("journal.log"), "{text}");
        // Left as it was: `db` is still the old sled's data file.
        assert!(gateway.join("db").is_file(), "nothing changed");
        assert!(!gateway.join("journal.log").exists(), "nothing created");
    }
}
