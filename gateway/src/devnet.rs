//! A local network on one machine: keys, one `node.toml` per node
//! (validators, then member gateways that are not validators), and the
//! `devnet.json` that tools read to find the nodes. Used by `remit devnet`
//! and by the multi-process tests.
//!
//! Layout of a devnet directory:
//! `keys/` (network.json, key files, `governance/key-<i>.hex`, TLS
//! material), `<participant>/node.toml`, `<participant>/data/` (the node's
//! data directory), `devnet.json`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use remit_settlement::network::{
    generate_network, governance_key_path, write_network, NetworkConfig, NetworkShape, NodeRole, IDENTITY_KEY_FILE,
    KEY_SHARE_FILE, NETWORK_FILE,
};

use crate::api::auth::{generate_key, hash_key, ApiClientConfig};
use crate::config::{
    ApiSection, BlockSection, HttpSection, LogSection, NodeConfig, NodeSection, PeerEntry, PeerSection, RaftSection,
    RemittanceSection, TestingSection, TlsSection,
};
use crate::payout::PayoutSection;
use crate::tls::{generate_tls, CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE};

/// File name of the devnet description.
pub const DEVNET_FILE: &str = "devnet.json";
/// Sub-directory holding the keys.
pub const KEYS_SUBDIR: &str = "keys";
/// Default first peer port; node i listens on `base + i` (peer),
/// `base + 1000 + i` (operator HTTP: health, metrics, governance, `/ops/*`)
/// and `base + 2000 + i` (the wallet API).
pub const DEFAULT_BASE_PORT: u16 = 7100;
/// Offset between a node's peer port and its operator HTTP port.
pub const HTTP_PORT_OFFSET: u16 = 1000;
/// Offset between a node's peer port and its wallet API port.
pub const API_PORT_OFFSET: u16 = 2000;
const _: () = assert!(API_PORT_OFFSET > HTTP_PORT_OFFSET);

/// A devnet setup problem.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The existing keys do not fit the request.
    #[error("{0}")]
    Mismatch(String),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> DevnetError {
    DevnetError::File { path: path.to_owned(), reason: reason.to_string() }
}

/// One node of `devnet.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevnetNode {
    /// Participant id.
    pub name: String,
    /// `validator` or `gateway`.
    pub role: NodeRole,
    /// Process id (0 until started).
    pub pid: u32,
    /// Peer gRPC address, host:port.
    pub peer_addr: String,
    /// Base URL of the node's wallet API (gRPC and REST, `/openapi.json`).
    pub api_url: String,
    /// Base URL of the node's operator listener (`/healthz`, `/readyz`,
    /// `/metrics`, `POST /v1/governance`, `/ops/*`).
    #[serde(default)]
    pub ops_url: String,
    /// Prometheus metrics URL (on the operator listener).
    pub metrics_url: String,
    /// The node's data directory.
    pub data_dir: PathBuf,
    /// The node's configuration file.
    #[serde(default)]
    pub config: PathBuf,
}

/// `devnet.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevnetFile {
    /// Path of network.json.
    pub network: PathBuf,
    /// Whether peers use mutual TLS.
    #[serde(default)]
    pub tls: bool,
    /// The nodes.
    pub nodes: Vec<DevnetNode>,
    /// Participant -> API key of its wallet client (the wallet API is
    /// served at each node's `api_url`).
    #[serde(default)]
    pub api_keys: std::collections::BTreeMap<String, String>,
    /// Node name -> operator token for its `/ops/*` views
    /// (`authorization: Bearer <token>`).
    #[serde(default)]
    pub operator_tokens: std::collections::BTreeMap<String, String>,
    /// The governance secret key files (`keys/governance/key-<i>.hex`), in
    /// the order of network.json's `governance.keys`.
    #[serde(default)]
    pub governance_keys: Vec<PathBuf>,
}

impl DevnetFile {
    /// Reads `dir/devnet.json`.
    pub fn load(dir: &Path) -> Result<Self, DevnetError> {
        let path = dir.join(DEVNET_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| file_error(&path, e))?;
        serde_json::from_str(&text).map_err(|e| file_error(&path, e))
    }

    /// Writes `dir/devnet.json`.
    pub fn write(&self, dir: &Path) -> Result<(), DevnetError> {
        let path = dir.join(DEVNET_FILE);
        let text = serde_json::to_string_pretty(self).expect("devnet file serializes");
        std::fs::write(&path, text).map_err(|e| file_error(&path, e))
    }
}

/// What to set up.
#[derive(Clone, Debug)]
pub struct DevnetOptions {
    /// The devnet directory.
    pub dir: PathBuf,
    /// Number of validators.
    pub validators: usize,
    /// Number of member gateways that are not validators.
    pub gateways: usize,
    /// First peer port.
    pub base_port: u16,
    /// Mutual TLS between nodes.
    pub tls: bool,
    /// Log format of the nodes.
    pub log_format: String,
}

/// File (in `keys/<participant>/`) holding the devnet wallet client's API key.
pub const API_KEY_FILE: &str = "wallet_api_key";
/// File in `keys/<name>/` holding the node's operator token (devnet only).
pub const OPERATOR_TOKEN_FILE: &str = "operator_token";
/// An account the devnet's simulated banks treat as closed (payouts to it
/// are returned with AC04), for trying the return path.
pub const DEVNET_CLOSED_ACCOUNT: &str = "DEVNET-CLOSED-0001";
/// Mid rates of the devnet, per US dollar.
const DEVNET_RATES: [(&str, &str); 11] = [
    ("USD/PHP", "56.1250"),
    ("USD/MXN", "17.0530"),
    ("USD/KES", "129.50"),
    ("USD/INR", "83.2150"),
    ("USD/GBP", "0.7912"),
    ("USD/NGN", "1550.25"),
    ("USD/JPY", "149.875"),
    ("USD/KWD", "0.30745"),
    ("USD/EUR", "0.9215"),
    ("USD/CAD", "1.3650"),
    ("USD/AUD", "1.5210"),
];

/// The client id of a participant's devnet wallet client.
pub fn wallet_client_id(participant: &str) -> String {
    format!("{participant}-wallet")
}

/// A participant's local currency: the settlement currency that is neither
/// USD nor EUR, else USD or EUR by country.
pub fn local_currency(participant: &remit_settlement::Participant) -> iso_currency::Currency {
    use iso_currency::Currency;
    participant
        .settlement_currencies
        .iter()
        .copied()
        .find(|c| *c != Currency::USD && *c != Currency::EUR)
        .unwrap_or(if participant.country.as_str() == "US" { Currency::USD } else { Currency::EUR })
}

/// Corridors from every participant to every other, settled in USD.
fn devnet_corridors(participants: &[remit_settlement::Participant]) -> String {
    let mut text = String::from("# Devnet corridors: every gateway to every other, settled in USD.\n");
    for source in participants {
        for destination in participants {
            if source.id == destination.id {
                continue;
            }
            text.push_str(&format!(
                "\n[[corridor]]\nsource_country = \"{}\"\nsource_currency = \"{}\"\ndestination_country = \"{}\"\n\
                 destination_currency = \"{}\"\nsettlement_currency = \"USD\"\nsend_amount_min = \"5\"\n\
                 send_amount_max = \"1000000\"\nfixed_fee = \"1\"\nfee_percent = \"1.0\"\n\
                 fx_margin_percent = \"0.5\"\ndestination_participant = \"{}\"\n",
                source.country,
                local_currency(source).code(),
                destination.country,
                local_currency(destination).code(),
                destination.id,
            ));
        }
    }
    text
}

fn devnet_rates() -> String {
    let mut text = String::from("pivot = \"USD\"\n[rates]\n");
    for (pair, rate) in DEVNET_RATES {
        text.push_str(&format!("\"{pair}\" = \"{rate}\"\n"));
    }
    text
}

/// The devnet wallet key of `name`, created once under `keys/<name>/`.
fn wallet_key(keys: &Path, name: &str) -> Result<String, DevnetError> {
    secret_key_file(&keys.join(name).join(API_KEY_FILE))
}

/// The key in `path` (mode 0600), generated there on first use.
fn secret_key_file(path: &Path) -> Result<String, DevnetError> {
    if let Ok(key) = std::fs::read_to_string(path) {
        return Ok(key.trim().to_owned());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    }
    let key = generate_key();
    remit_settlement::network::write_secret_file(path, key.as_bytes()).map_err(|e| file_error(path, e))?;
    Ok(key)
}

/// The operator token of `name`'s node (`keys/<name>/operator_token`,
/// mode 0600), created on first use; its SHA-256 goes into `node.toml`.
fn operator_token(keys: &Path, name: &str) -> Result<String, DevnetError> {
    secret_key_file(&keys.join(name).join(OPERATOR_TOKEN_FILE))
}

/// Node name -> operator token, for `devnet.json`'s `operator_tokens`.
pub fn operator_tokens<'a>(
    options: &DevnetOptions,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<std::collections::BTreeMap<String, String>, DevnetError> {
    let keys = options.dir.join(KEYS_SUBDIR);
    names.into_iter().map(|name| Ok((name.to_owned(), operator_token(&keys, name)?))).collect()
}

/// The operator id of `name`'s node in its `node.toml`.
pub fn operator_id(name: &str) -> String {
    format!("ops-{name}")
}

/// Creates keys (if absent) and writes every node's `node.toml`; returns the
/// nodes (pids 0), the network and each participant's wallet API key.
pub fn prepare(options: &DevnetOptions) -> Result<(NetworkConfig, Vec<DevnetNode>), DevnetError> {
    prepare_with_keys(options).map(|(network, nodes, _)| (network, nodes))
}

/// Participant -> the devnet wallet client's API key.
pub type ApiKeys = std::collections::BTreeMap<String, String>;

/// The governance key files of a devnet's keys directory, in key order.
pub fn governance_key_files(options: &DevnetOptions, network: &NetworkConfig) -> Result<Vec<PathBuf>, DevnetError> {
    let keys = options.dir.join(KEYS_SUBDIR);
    (0..network.governance.keys.len())
        .map(|i| {
            let path = governance_key_path(&keys, i);
            path.canonicalize().map_err(|e| file_error(&path, e))
        })
        .collect()
}

/// [`prepare`], also returning participant -> wallet API key.
pub fn prepare_with_keys(options: &DevnetOptions) -> Result<(NetworkConfig, Vec<DevnetNode>, ApiKeys), DevnetError> {
    let keys = options.dir.join(KEYS_SUBDIR);
    let network_path = keys.join(NETWORK_FILE);
    if !network_path.exists() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| DevnetError::Mismatch(e.to_string()))?;
        let now_ms = u64::try_from(now.as_millis()).map_err(|e| DevnetError::Mismatch(e.to_string()))?;
        let shape = NetworkShape { gateways: options.gateways, ..NetworkShape::validators(options.validators) };
        let generated = generate_network(shape, now_ms).map_err(DevnetError::Mismatch)?;
        write_network(&generated, &keys).map_err(|e| file_error(&keys, e))?;
    }
    let network = NetworkConfig::load(&network_path).map_err(|e| file_error(&network_path, e))?;
    let gateways = network.participants.iter().filter(|p| p.validator_index.is_none()).count();
    if network.validators.count as usize != options.validators || gateways != options.gateways {
        return Err(DevnetError::Mismatch(format!(
            "{} holds a network of {} validators and {gateways} gateways; remove it or pass --validators {} --gateways {gateways}",
            options.dir.display(),
            network.validators.count,
            network.validators.count,
        )));
    }
    let names: Vec<String> = network.participants.iter().map(|p| p.id.to_string()).collect();
    if options.tls && !keys.join(CA_CERT_FILE).exists() {
        generate_tls(&keys, &names).map_err(|e| file_error(&keys, e))?;
    }
    let peers: Vec<PeerEntry> = names
        .iter()
        .enumerate()
        .map(|(i, name)| PeerEntry {
            participant: name.clone(),
            address: format!("127.0.0.1:{}", peer_port(options, i)),
        })
        .collect();
    let shared = shared_files(options, &network.participants)?;
    let mut api_keys = std::collections::BTreeMap::new();
    let mut nodes = Vec::with_capacity(names.len());
    for (i, participant) in network.participants.iter().enumerate() {
        let name = participant.id.to_string();
        let role = network.role_of(&participant.id);
        let (node, api_key) = write_node(options, &shared, &name, role, i, &peers)?;
        api_keys.insert(name, api_key);
        nodes.push(node);
    }
    Ok((network, nodes, api_keys))
}

/// Files every node of a devnet reads: corridors and rates.
struct SharedFiles {
    corridors: PathBuf,
    rates: PathBuf,
}

/// Writes the corridors between `participants` (all of network.json's, plus
/// members registered later) and the rates, once.
fn shared_files(
    options: &DevnetOptions,
    participants: &[remit_settlement::Participant],
) -> Result<SharedFiles, DevnetError> {
    let corridors_path = options.dir.join("corridors.toml");
    std::fs::write(&corridors_path, devnet_corridors(participants)).map_err(|e| file_error(&corridors_path, e))?;
    let rates_path = options.dir.join("rates.toml");
    if !rates_path.exists() {
        std::fs::write(&rates_path, devnet_rates()).map_err(|e| file_error(&rates_path, e))?;
    }
    Ok(SharedFiles {
        corridors: corridors_path.canonicalize().map_err(|e| file_error(&corridors_path, e))?,
        rates: rates_path.canonicalize().map_err(|e| file_error(&rates_path, e))?,
    })
}

fn peer_port(options: &DevnetOptions, i: usize) -> u16 {
    options.base_port + u16::try_from(i).expect("devnet nodes are bounded by the port range")
}

/// Writes `<dir>/<name>/node.toml` for the node in slot `i` (its ports) and
/// returns its `devnet.json` entry and wallet API key. The identity key is
/// `keys/<name>/identity_ed25519.hex`; a validator also has its key share there.
fn write_node(
    options: &DevnetOptions,
    shared: &SharedFiles,
    name: &str,
    role: NodeRole,
    i: usize,
    peers: &[PeerEntry],
) -> Result<(DevnetNode, String), DevnetError> {
    let keys = options.dir.join(KEYS_SUBDIR);
    let api_key = wallet_key(&keys, name)?;
    let operator =
        crate::config::OperatorConfig { id: operator_id(name), token_sha256: hash_key(&operator_token(&keys, name)?) };
    let node_dir = options.dir.join(name);
    std::fs::create_dir_all(&node_dir).map_err(|e| file_error(&node_dir, e))?;
    let node_dir = node_dir.canonicalize().map_err(|e| file_error(&node_dir, e))?;
    let keys = keys.canonicalize().map_err(|e| file_error(&keys, e))?;
    let peer_port = peer_port(options, i);
    let http_port = peer_port + HTTP_PORT_OFFSET;
    let api_port = peer_port + API_PORT_OFFSET;
    let config = NodeConfig {
        node: NodeSection {
            participant: name.to_owned(),
            data_dir: node_dir.join("data"),
            network: keys.join(NETWORK_FILE),
            key_share: (role == NodeRole::Validator).then(|| keys.join(name).join(KEY_SHARE_FILE)),
            identity_key: keys.join(name).join(IDENTITY_KEY_FILE),
        },
        peer: PeerSection { listen: ([127, 0, 0, 1], peer_port).into() },
        http: HttpSection { listen: ([127, 0, 0, 1], http_port).into(), operators: vec![operator] },
        peers: peers.to_vec(),
        tls: if options.tls {
            TlsSection {
                enabled: true,
                ca_cert: Some(keys.join(CA_CERT_FILE)),
                cert: Some(keys.join(name).join(NODE_CERT_FILE)),
                key: Some(keys.join(name).join(NODE_KEY_FILE)),
            }
        } else {
            TlsSection::default()
        },
        block: BlockSection::default(),
        raft: RaftSection::default(),
        log: LogSection { format: options.log_format.clone(), ..LogSection::default() },
        testing: TestingSection::default(),
        api: Some(ApiSection {
            listen: Some(([127, 0, 0, 1], api_port).into()),
            tls_cert: None,
            tls_key: None,
            allow_plaintext: false,
            clients: vec![ApiClientConfig {
                id: wallet_client_id(name),
                key_sha256: hash_key(&api_key),
                rate_per_second: 100_000,
                burst: 200_000,
                webhook_url: None,
                webhook_secret_file: None,
            }],
        }),
        remittance: RemittanceSection {
            corridors_file: Some(shared.corridors.clone()),
            rates_file: Some(shared.rates.clone()),
            ..RemittanceSection::default()
        },
        payout: PayoutSection { closed_accounts: vec![DEVNET_CLOSED_ACCOUNT.to_owned()], ..PayoutSection::default() },
    };
    let config_path = node_dir.join("node.toml");
    let text = toml::to_string_pretty(&config).map_err(|e| file_error(&config_path, e))?;
    std::fs::write(&config_path, text).map_err(|e| file_error(&config_path, e))?;
    let node = DevnetNode {
        name: name.to_owned(),
        role,
        pid: 0,
        peer_addr: format!("127.0.0.1:{peer_port}"),
        api_url: format!("http://127.0.0.1:{api_port}"),
        ops_url: format!("http://127.0.0.1:{http_port}"),
        metrics_url: format!("http://127.0.0.1:{http_port}/metrics"),
        data_dir: config.node.data_dir.clone(),
        config: config_path,
    };
    Ok((node, api_key))
}

/// The identity key of a member to be registered after genesis: created in
/// `keys/<name>/identity_ed25519.hex` if absent; returns its public key
/// (hex), which governance registers as the member's origin key.
pub fn member_identity(options: &DevnetOptions, name: &str) -> Result<String, DevnetError> {
    let dir = options.dir.join(KEYS_SUBDIR).join(name);
    let path = dir.join(IDENTITY_KEY_FILE);
    if !path.exists() {
        std::fs::create_dir_all(&dir).map_err(|e| file_error(&dir, e))?;
        let identity = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        remit_settlement::network::write_secret_file(&path, hex::encode(identity.to_bytes()).as_bytes())
            .map_err(|e| file_error(&path, e))?;
    }
    let key = remit_settlement::network::load_identity_key(&path).map_err(|e| file_error(&path, e))?;
    Ok(hex::encode(key.verifying_key().to_bytes()))
}

/// Prepares the node of `member`, a gateway registered after genesis (not
/// in network.json; its identity from [`member_identity`]): its `node.toml`
/// in slot `slot` (after the genesis nodes), listing `peers` and itself.
/// The devnet's corridors file is rewritten to include the member, so nodes
/// (re)started from now on serve corridors to and from it. Returns the node
/// and its wallet API key.
pub fn prepare_member(
    options: &DevnetOptions,
    network: &NetworkConfig,
    member: &remit_settlement::Participant,
    slot: usize,
    peers: &[PeerEntry],
) -> Result<(DevnetNode, String), DevnetError> {
    let name = member.id.to_string();
    member_identity(options, &name)?;
    let mut participants = network.participants.clone();
    participants.push(member.clone());
    let shared = shared_files(options, &participants)?;
    let mut peers = peers.to_vec();
    peers.push(PeerEntry { participant: name.clone(), address: format!("127.0.0.1:{}", peer_port(options, slot)) });
    write_node(options, &shared, &name, NodeRole::Gateway, slot, &peers)
}
