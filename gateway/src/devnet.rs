//! A local network on one machine: keys, one `node.toml` per validator,
//! and the `devnet.json` that tools read to find the nodes. Used by
//! `remit devnet` and by the multi-process tests.
//!
//! Layout of a devnet directory:
//! `keys/` (network.json, key files, TLS material), `<participant>/node.toml`,
//! `<participant>/data/` (the node's data directory), `devnet.json`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use remit_settlement::network::{
    generate_network, write_network, NetworkConfig, IDENTITY_KEY_FILE, KEY_SHARE_FILE, NETWORK_FILE,
};

use crate::config::{
    BlockSection, HttpSection, LogSection, NodeConfig, NodeSection, PeerEntry, PeerSection, RaftSection,
    TestingSection, TlsSection,
};
use crate::tls::{generate_tls, CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE};

/// File name of the devnet description.
pub const DEVNET_FILE: &str = "devnet.json";
/// Sub-directory holding the keys.
pub const KEYS_SUBDIR: &str = "keys";
/// Default first peer port; node i listens on `base + i` (peer) and `base + 1000 + i` (HTTP).
pub const DEFAULT_BASE_PORT: u16 = 7100;
/// Offset between a node's peer port and its HTTP port.
pub const HTTP_PORT_OFFSET: u16 = 1000;

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
    /// Process id (0 until started).
    pub pid: u32,
    /// Peer gRPC address, host:port.
    pub peer_addr: String,
    /// Base URL of the node's HTTP API.
    pub api_url: String,
    /// Prometheus metrics URL.
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
    /// First peer port.
    pub base_port: u16,
    /// Mutual TLS between nodes.
    pub tls: bool,
    /// Log format of the nodes.
    pub log_format: String,
}

/// Creates keys (if absent) and writes every node's `node.toml`; returns the
/// nodes (pids 0) and the network.
pub fn prepare(options: &DevnetOptions) -> Result<(NetworkConfig, Vec<DevnetNode>), DevnetError> {
    let keys = options.dir.join(KEYS_SUBDIR);
    let network_path = keys.join(NETWORK_FILE);
    if !network_path.exists() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| DevnetError::Mismatch(e.to_string()))?;
        let now_ms = u64::try_from(now.as_millis()).map_err(|e| DevnetError::Mismatch(e.to_string()))?;
        let generated = generate_network(options.validators, now_ms).map_err(DevnetError::Mismatch)?;
        write_network(&generated, &keys).map_err(|e| file_error(&keys, e))?;
    }
    let network = NetworkConfig::load(&network_path).map_err(|e| file_error(&network_path, e))?;
    if network.validators.count as usize != options.validators {
        return Err(DevnetError::Mismatch(format!(
            "{} holds a {}-validator network; remove it or pass --validators {}",
            options.dir.display(),
            network.validators.count,
            network.validators.count
        )));
    }
    let names: Vec<String> = network.validators.members.iter().map(|m| m.participant.to_string()).collect();
    if options.tls && !keys.join(CA_CERT_FILE).exists() {
        generate_tls(&keys, &names).map_err(|e| file_error(&keys, e))?;
    }
    let peer_port = |i: usize| options.base_port + u16::try_from(i).expect("validators bounded by VALIDATORS_MAX");
    let peers: Vec<PeerEntry> = names
        .iter()
        .enumerate()
        .map(|(i, name)| PeerEntry { participant: name.clone(), address: format!("127.0.0.1:{}", peer_port(i)) })
        .collect();
    let mut nodes = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let node_dir = options.dir.join(name);
        std::fs::create_dir_all(&node_dir).map_err(|e| file_error(&node_dir, e))?;
        let node_dir = node_dir.canonicalize().map_err(|e| file_error(&node_dir, e))?;
        let keys = keys.canonicalize().map_err(|e| file_error(&keys, e))?;
        let http_port = peer_port(i) + HTTP_PORT_OFFSET;
        let config = NodeConfig {
            node: NodeSection {
                participant: name.clone(),
                data_dir: node_dir.join("data"),
                network: keys.join(NETWORK_FILE),
                key_share: keys.join(name).join(KEY_SHARE_FILE),
                identity_key: keys.join(name).join(IDENTITY_KEY_FILE),
            },
            peer: PeerSection { listen: ([127, 0, 0, 1], peer_port(i)).into() },
            http: HttpSection { listen: ([127, 0, 0, 1], http_port).into() },
            peers: peers.clone(),
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
        };
        let config_path = node_dir.join("node.toml");
        let text = toml::to_string_pretty(&config).map_err(|e| file_error(&config_path, e))?;
        std::fs::write(&config_path, text).map_err(|e| file_error(&config_path, e))?;
        nodes.push(DevnetNode {
            name: name.clone(),
            pid: 0,
            peer_addr: format!("127.0.0.1:{}", peer_port(i)),
            api_url: format!("http://127.0.0.1:{http_port}"),
            metrics_url: format!("http://127.0.0.1:{http_port}/metrics"),
            data_dir: config.node.data_dir.clone(),
            config: config_path,
        });
    }
    Ok((network, nodes))
}
