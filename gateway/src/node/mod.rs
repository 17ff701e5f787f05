//! A running node: ledger chain, Raft replication, certification round,
//! batch intake, peer gRPC server and HTTP health/metrics server.

pub mod certifier;
pub mod http;
pub mod peers;
pub mod proposer;
pub mod raft_network;
pub mod service;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::{BasicNode, Config, SnapshotPolicy};
use remit_compliance::PassThrough;
use remit_proto::v1::peer_server::PeerServer;
use remit_settlement::chain::Chain;
use remit_settlement::network::{load_identity_key, load_validator_key, NetworkConfig};
use remit_settlement::replica::state_machine::lock;
use remit_settlement::replica::{AppliedBlock, LedgerStateMachine, Raft, SharedChain, SledRaftLog};
use remit_settlement::store::SledLedgerStore;
use remit_settlement::{ParticipantId, SignatureCheck};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::api::auth::Authenticator;
use crate::config::NodeConfig;
use crate::constants::{GRPC_MESSAGE_BYTES_MAX, RAFT_APPEND_ENTRIES_MAX};
use crate::metrics::Metrics;
use crate::remittance::engine::{Engine, EngineConfig, LedgerAccess};
use crate::remittance::recent::RecentBlocks;
use crate::remittance::{Corridors, FileRateSource, RateSource, RateTable, StaticRates};
use crate::tls::NodeTls;
use crate::webhook::{RetryPolicy, WebhookDispatcher, WebhookEndpoint};
use certifier::{Certifier, CertifierEvent};
use peers::Peers;
use proposer::Proposer;
use raft_network::RaftNetworkFactoryImpl;
use service::PeerService;

/// Sub-directory of the data directory holding the sled database.
pub const LEDGER_SUBDIR: &str = "ledger";
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

/// A started node.
pub struct Node {
    /// Validator index.
    pub me: u64,
    /// Raft handle.
    pub raft: Raft,
    /// The chain.
    pub chain: SharedChain,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node(validator {})", self.me)
    }
}

impl Node {
    /// Opens the ledger, starts Raft, the certification round and both servers.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        let network = NetworkConfig::load(&config.node.network).map_err(setup)?;
        let participant = ParticipantId::new(config.node.participant.clone())
            .map_err(|e| NodeError::Setup(format!("config key `node.participant`: {e}")))?;
        let me = network.participant(&participant).and_then(|p| p.validator_index).ok_or_else(|| {
            setup(format!("config key `node.participant`: {participant} is not a validator in network.json"))
        })?;
        let key = load_validator_key(&config.node.key_share).map_err(setup)?;
        if key.index() != me {
            return Err(setup(format!("config key `node.key_share`: holds validator {}, not {me}", key.index())));
        }
        let addresses = peer_addresses(&config, &network)?;
        let tls = if config.tls.enabled {
            let (Some(ca), Some(cert), Some(tls_key)) = (&config.tls.ca_cert, &config.tls.cert, &config.tls.key) else {
                return Err(setup("config key `tls`: ca_cert, cert and key are required"));
            };
            Some(NodeTls::load(ca, cert, tls_key).map_err(setup)?)
        } else {
            None
        };
        let me = u64::from(me);

        let ledger_dir = config.node.data_dir.join(LEDGER_SUBDIR);
        std::fs::create_dir_all(&ledger_dir).map_err(|e| setup(format!("{}: {e}", ledger_dir.display())))?;
        let store = SledLedgerStore::open(&ledger_dir)?;
        let raft_log = SledRaftLog::open(store.db()).map_err(setup)?;
        let mut chain = Chain::open(store, Some(&network))?;
        let (applied_tx, mut applied_rx) = mpsc::unbounded_channel::<AppliedBlock>();
        if chain.tip().is_none() {
            // Every node derives the same genesis block from network.json.
            let (genesis, _) = chain.append(network.genesis_proposal(), SignatureCheck::Verify, |_| None)?;
            info!(hash = %genesis.hash(), "genesis block applied");
        }
        let validators = chain.validators().clone();
        let chain: SharedChain = Arc::new(Mutex::new(chain));
        let metrics = Metrics::new();

        let peers = Peers::new(addresses.clone(), tls.as_ref()).map_err(setup)?;
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
        let state_machine =
            LedgerStateMachine::new(chain.clone(), applied_tx, remit_settlement::replica::FailStop::new());
        let raft = Raft::new(me, raft_config, RaftNetworkFactoryImpl::new(peers.clone()), raft_log, state_machine)
            .await
            .map_err(setup)?;
        if !raft.is_initialized().await.map_err(setup)? {
            let members: BTreeMap<u64, BasicNode> =
                addresses.iter().map(|(index, address)| (*index, BasicNode { addr: address.clone() })).collect();
            if let Err(error) = raft.initialize(members).await {
                warn!(%error, "raft initialize (another node may have initialised the cluster)");
            }
        }

        let (certifier_tx, certifier_rx) = mpsc::unbounded_channel();
        let certifier = Certifier::new(
            me,
            key,
            validators,
            chain.clone(),
            peers.clone(),
            metrics.clone(),
            config.testing.forge_shares,
        );
        let mut servers = vec![tokio::spawn(certifier.run(certifier_rx))];
        let forward = certifier_tx.clone();
        let recent_blocks = RecentBlocks::default();
        let keep = recent_blocks.clone();
        servers.push(tokio::spawn(async move {
            while let Some(applied) = applied_rx.recv().await {
                if let Some(block) = &applied.block {
                    keep.insert(block.clone());
                }
                if forward.send(CertifierEvent::Applied(applied)).is_err() {
                    return;
                }
            }
        }));
        let proposer = Proposer::new(me, raft.clone(), peers.clone(), metrics.clone(), config.block.clone());
        servers.push(tokio::spawn(proposer.clone().run()));

        let ledger =
            LedgerAccess { proposer: proposer.clone(), chain: chain.clone(), peers: peers.clone(), recent_blocks };
        // The gateway's private records (customer data) live apart from the
        // ledger, so a ledger directory can be handed to an auditor as is.
        let gateway_dir = config.node.data_dir.join(GATEWAY_SUBDIR);
        let (gateway_db, journal_path) = open_gateway_store(&gateway_dir)?;
        let engine = start_engine(&config, &network, &gateway_db, &journal_path, ledger)?;
        // The wallet API on its own listener, or beside health and metrics.
        let mut wallet_api = None;
        if let Some(api) = &config.api {
            let auth = Authenticator::new(&api.clients).map_err(setup)?;
            match api.listen {
                Some(listen) => {
                    let handle = crate::api::serve(listen, engine.clone(), auth)
                        .await
                        .map_err(|e| NodeError::Server(format!("config key `api.listen` ({listen}): {e}")))?;
                    servers.push(handle);
                }
                None => wallet_api = Some(crate::api::router(engine.clone(), auth)),
            }
        }

        let service =
            PeerServer::new(PeerService::new(raft.clone(), chain.clone(), proposer, certifier_tx, engine.clone()))
                .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &tls {
            builder = builder.tls_config(tls.server()).map_err(|e| NodeError::Server(e.to_string()))?;
        }
        let peer_listener = tokio::net::TcpListener::bind(config.peer.listen)
            .await
            .map_err(|e| NodeError::Server(format!("config key `peer.listen` ({}): {e}", config.peer.listen)))?;
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(peer_listener);
        let router = builder.add_service(service);
        servers.push(tokio::spawn(async move {
            if let Err(error) = router.serve_with_incoming(incoming).await {
                tracing::error!(%error, "peer server stopped");
            }
        }));

        let http_listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .map_err(|e| NodeError::Server(format!("config key `http.listen` ({}): {e}", config.http.listen)))?;
        let mut app = http::router(http::HttpState {
            raft: raft.clone(),
            chain: chain.clone(),
            metrics,
            me,
            engine: engine.clone(),
        });
        if let Some(wallet_api) = wallet_api {
            app = app.merge(wallet_api);
        }
        servers.push(tokio::spawn(async move {
            if let Err(error) = axum::serve(http_listener, app).await {
                tracing::error!(%error, "http server stopped");
            }
        }));
        info!(
            validator = me,
            participant = %participant,
            peer = %config.peer.listen,
            http = %config.http.listen,
            tls = config.tls.enabled,
            height = lock(&chain).tip().map(|(h, _)| h.0),
            "node started"
        );
        Ok(Self { me, raft, chain, servers })
    }

    /// Stops Raft and the servers; the store is flushed on every write, so
    /// nothing acknowledged is lost.
    pub async fn shutdown(self) {
        if let Err(error) = self.raft.shutdown().await {
            warn!(%error, "raft shutdown");
        }
        for server in self.servers {
            server.abort();
        }
        info!("node stopped");
    }
}

/// Opens the remittance engine: corridors, rates, keys, payout adapter and
/// webhooks from the configuration.
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

fn start_engine(
    config: &NodeConfig,
    network: &NetworkConfig,
    db: &sled::Db,
    journal_path: &Path,
    ledger: LedgerAccess,
) -> Result<Engine, NodeError> {
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
    let gateways: HashMap<ParticipantId, u64> =
        network.validators.members.iter().map(|m| (m.participant.clone(), u64::from(m.index))).collect();
    let engine_config = EngineConfig {
        me: ParticipantId::new(config.node.participant.clone()).map_err(setup)?,
        chain_id: network.chain_id.clone(),
        signing_key: load_identity_key(&config.node.identity_key).map_err(setup)?,
        corridors,
        rates,
        quote_ttl_ms: section.quote_ttl_ms,
        gateways,
        push_messages: !config.testing.skip_message_push,
    };
    let payout = crate::payout::build_adapter(&config.payout).map_err(setup)?;
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
    Engine::start(engine_config, journal_path, ledger, Arc::new(PassThrough), payout, webhooks).map_err(setup)
}

/// Validator index -> peer address, checked against network.json.
fn peer_addresses(config: &NodeConfig, network: &NetworkConfig) -> Result<BTreeMap<u64, String>, NodeError> {
    let mut addresses = BTreeMap::new();
    for (i, entry) in config.peers.iter().enumerate() {
        let id = ParticipantId::new(entry.participant.clone())
            .map_err(|e| setup(format!("config key `peers[{i}].participant`: {e}")))?;
        let index = network
            .participant(&id)
            .and_then(|p| p.validator_index)
            .ok_or_else(|| setup(format!("config key `peers[{i}].participant`: {id} is not a validator")))?;
        if addresses.insert(u64::from(index), entry.address.clone()).is_some() {
            return Err(setup(format!("config key `peers[{i}].participant`: {id} listed twice")));
        }
    }
    let expected: BTreeSet<u64> = (0..u64::from(network.validators.count)).collect();
    let listed: BTreeSet<u64> = addresses.keys().copied().collect();
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
