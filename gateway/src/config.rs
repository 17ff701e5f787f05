//! Node configuration: `node.toml`, with `REMIT__SECTION__KEY` environment
//! overrides (for example `REMIT__PEER__LISTEN=0.0.0.0:7100`). Errors name
//! the key and the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "REMIT__";

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML does not parse.
    #[error("{path}: not valid TOML: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A key has a bad value or is missing.
    #[error("config key `{key}`: {reason}")]
    Key {
        /// Dotted key, e.g. `peer.listen`.
        key: String,
        /// Why it is wrong.
        reason: String,
    },
}

fn key_error(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Key { key: key.to_owned(), reason: reason.into() }
}

/// `[node]`: who this node is and where its files are.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Participant id of the institution running this node.
    pub participant: String,
    /// Data directory (ledger store, Raft log).
    pub data_dir: PathBuf,
    /// The network definition.
    pub network: PathBuf,
    /// This validator's BLS key share file (validators only; a gateway that
    /// is not a validator has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_share: Option<PathBuf>,
    /// This participant's ed25519 identity key file.
    pub identity_key: PathBuf,
}

/// `[peer]`: the peer gRPC server.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// Listen address, e.g. `127.0.0.1:7100`.
    pub listen: SocketAddr,
}

/// `[http]`: health, readiness and metrics.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Listen address, e.g. `127.0.0.1:8100`.
    pub listen: SocketAddr,
    /// `[[http.operators]]`: who may read the operator views (`/ops/*`),
    /// each with the hex SHA-256 of its token. None: `/ops/*` answers 401.
    #[serde(default)]
    pub operators: Vec<OperatorConfig>,
}

/// One operator of the node's `/ops/*` views.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// Operator id, e.g. `ops-gw-us` (logged with each access).
    pub id: String,
    /// Hex SHA-256 of the operator's token (`remit apikey` makes a pair).
    pub token_sha256: String,
}

/// One `[[peers]]` entry: a node (validator or gateway) and its peer address.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    /// Participant id (every validator of network.json must be listed;
    /// gateways may be, also ones registered after genesis).
    pub participant: String,
    /// Host and port of its peer server, e.g. `127.0.0.1:7101`.
    pub address: String,
}

/// `[tls]`: mutual TLS between nodes.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Required for any non-loopback address.
    #[serde(default)]
    pub enabled: bool,
    /// CA certificate (PEM) that signed every node certificate.
    pub ca_cert: Option<PathBuf>,
    /// This node's certificate (PEM).
    pub cert: Option<PathBuf>,
    /// This node's private key (PEM).
    pub key: Option<PathBuf>,
}

/// `[block]`: when the leader cuts a block.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BlockSection {
    /// Cut a block once this many transfers are pending.
    #[serde(default = "default_block_transfers_max")]
    pub transfers_max: usize,
    /// Cut a block once the oldest pending batch is this old.
    #[serde(default = "default_block_age_ms_max")]
    pub age_ms_max: u64,
    /// When the pipeline goes idle (every proposed block certified), cut the
    /// next block early, but not sooner than this after the previous one.
    #[serde(default = "default_block_interval_ms_min")]
    pub interval_ms_min: u64,
}

impl Default for BlockSection {
    fn default() -> Self {
        Self {
            transfers_max: default_block_transfers_max(),
            age_ms_max: default_block_age_ms_max(),
            interval_ms_min: default_block_interval_ms_min(),
        }
    }
}

fn default_block_interval_ms_min() -> u64 {
    crate::constants::BLOCK_INTERVAL_MS_MIN
}

fn default_block_transfers_max() -> usize {
    crate::constants::BLOCK_TRANSFERS_TARGET
}

fn default_block_age_ms_max() -> u64 {
    crate::constants::BLOCK_AGE_MS_MAX
}

/// `[raft]`: replication timing.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSection {
    /// Leader heartbeat interval.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Lower bound of the election timeout.
    #[serde(default = "default_election_min_ms")]
    pub election_timeout_min_ms: u64,
    /// Upper bound of the election timeout.
    #[serde(default = "default_election_max_ms")]
    pub election_timeout_max_ms: u64,
    /// Raft log entries (blocks) between snapshots; a follower further
    /// behind than the kept log catches up from a snapshot.
    #[serde(default = "default_snapshot_every_blocks")]
    pub snapshot_every_blocks: u64,
}

impl Default for RaftSection {
    fn default() -> Self {
        Self {
            heartbeat_ms: default_heartbeat_ms(),
            election_timeout_min_ms: default_election_min_ms(),
            election_timeout_max_ms: default_election_max_ms(),
            snapshot_every_blocks: default_snapshot_every_blocks(),
        }
    }
}

fn default_heartbeat_ms() -> u64 {
    150
}
fn default_election_min_ms() -> u64 {
    750
}
fn default_election_max_ms() -> u64 {
    1500
}
fn default_snapshot_every_blocks() -> u64 {
    20_000
}

/// `[log]`: logging.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `json` (default) or `text`.
    #[serde(default = "default_log_format")]
    pub format: String,
    /// A `tracing` filter, e.g. `info` or `info,openraft=warn`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self { format: default_log_format(), level: default_log_level() }
    }
}

fn default_log_format() -> String {
    "json".into()
}
fn default_log_level() -> String {
    "info,openraft=warn".into()
}

/// `[api]`: the wallet API (gRPC and REST on one port, its own listener:
/// the `[http]` listener serves operators only).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Listen address, e.g. `0.0.0.0:9100`: required (absent is a start-up
    /// error naming the key), and apart from `http.listen` and `peer.listen`.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// `[[api.clients]]`: wallet clients and their hashed keys.
    #[serde(default)]
    pub clients: Vec<crate::api::auth::ApiClientConfig>,
    /// Certificate chain (PEM) for TLS on the wallet port; with `tls_key`,
    /// gRPC and REST are served over TLS only (ALPN h2 and http/1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Serve plaintext on a non-loopback `listen` (behind a TLS-terminating
    /// proxy); without it such a configuration does not start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_plaintext: bool,
}

impl ApiSection {
    /// Checks the listener keys: an address of its own, TLS files in pairs,
    /// no plaintext beyond loopback unless allowed.
    fn validate(&self, http: SocketAddr, peer: SocketAddr) -> Result<(), ConfigError> {
        let Some(listen) = self.listen else {
            return Err(key_error(
                "api.listen",
                "required with [api]: the wallet API has a listener of its own (the [http] listener serves \
                 health, metrics, governance and /ops/* only)",
            ));
        };
        for (other, name) in [(http, "http.listen"), (peer, "peer.listen")] {
            if listen == other
                || (listen.port() == other.port() && (listen.ip().is_unspecified() || other.ip().is_unspecified()))
            {
                return Err(key_error(
                    "api.listen",
                    format!("{listen} is also {name}: the wallet API needs its own port"),
                ));
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return Err(key_error("api.tls_key", "required with api.tls_cert")),
            (None, Some(_)) => return Err(key_error("api.tls_cert", "required with api.tls_key")),
            (None, None) if !listen.ip().is_loopback() && !self.allow_plaintext => {
                return Err(key_error(
                    "api.allow_plaintext",
                    format!(
                        "the wallet API would serve plaintext on the non-loopback address {listen}: set api.tls_cert \
                         and api.tls_key, or api.allow_plaintext = true (e.g. behind a TLS-terminating proxy)"
                    ),
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// `[remittance]`: corridors, rates and quotes.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemittanceSection {
    /// TOML file of `[[corridor]]` tables; none: no corridors (pay out only).
    #[serde(default)]
    pub corridors_file: Option<PathBuf>,
    /// FX rates file (TOML or JSON), re-read when it changes.
    #[serde(default)]
    pub rates_file: Option<PathBuf>,
    /// How long a quote stays firm (at most 600000).
    #[serde(default = "default_quote_ttl_ms")]
    pub quote_ttl_ms: u64,
    /// The gateway journal's active segment is sealed past this many bytes
    /// and sealed segments are folded into a snapshot (at least 1024).
    #[serde(default = "default_journal_checkpoint_bytes")]
    pub journal_checkpoint_bytes: u64,
    /// Seconds a terminal remittance stays in memory before it moves to the
    /// archive (still readable by UETR).
    #[serde(default = "default_terminal_retention_s")]
    pub terminal_retention_s: u64,
    /// Seconds a payment message for a transfer never certified is kept
    /// (at least 1).
    #[serde(default = "default_inbox_ttl_s")]
    pub inbox_ttl_s: u64,
}

impl Default for RemittanceSection {
    fn default() -> Self {
        Self {
            corridors_file: None,
            rates_file: None,
            quote_ttl_ms: default_quote_ttl_ms(),
            journal_checkpoint_bytes: default_journal_checkpoint_bytes(),
            terminal_retention_s: default_terminal_retention_s(),
            inbox_ttl_s: default_inbox_ttl_s(),
        }
    }
}

fn default_journal_checkpoint_bytes() -> u64 {
    crate::remittance::journal::JOURNAL_CHECKPOINT_BYTES_DEFAULT
}

fn default_terminal_retention_s() -> u64 {
    300
}

fn default_inbox_ttl_s() -> u64 {
    86_400
}

fn default_quote_ttl_ms() -> u64 {
    300_000
}

/// `[testing]`: fault injection for tests; never set in production.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TestingSection {
    /// Send forged signature shares instead of real ones (a Byzantine validator).
    #[serde(default)]
    pub forge_shares: bool,
    /// Never push payment messages to destination gateways, so that they
    /// must fetch them (exercises the fetch path).
    #[serde(default)]
    pub skip_message_push: bool,
    /// Make every durable ledger write fail from this height on (exercises
    /// the fail-stop: the node must exit, its memory never ahead of its disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_ledger_writes_from_height: Option<u64>,
    /// Serve altered blocks to peers asking for them (a lying peer: the
    /// entries of every transfer batch changed under the original header).
    #[serde(default)]
    pub serve_altered_blocks: bool,
}

/// The whole `node.toml`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// `[node]`.
    pub node: NodeSection,
    /// `[peer]`.
    pub peer: PeerSection,
    /// `[http]`.
    pub http: HttpSection,
    /// `[[peers]]`: every validator, this node, and the gateways it exchanges payment messages with.
    pub peers: Vec<PeerEntry>,
    /// `[tls]`.
    #[serde(default)]
    pub tls: TlsSection,
    /// `[block]`.
    #[serde(default)]
    pub block: BlockSection,
    /// `[raft]`.
    #[serde(default)]
    pub raft: RaftSection,
    /// `[log]`.
    #[serde(default)]
    pub log: LogSection,
    /// `[testing]`.
    #[serde(default)]
    pub testing: TestingSection,
    /// `[api]`; absent: no wallet API on this node.
    #[serde(default)]
    pub api: Option<ApiSection>,
    /// `[remittance]`.
    #[serde(default)]
    pub remittance: RemittanceSection,
    /// `[payout]`: how this gateway pays beneficiaries.
    #[serde(default)]
    pub payout: crate::payout::PayoutSection,
}

impl NodeConfig {
    /// Reads `path`, applies `REMIT__*` overrides from `env`, and validates.
    pub fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, env).map_err(|e| match e {
            ConfigError::Syntax { reason, .. } => ConfigError::Syntax { path: path.to_owned(), reason },
            other => other,
        })
    }

    /// Parses TOML text with overrides.
    pub fn parse(text: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: PathBuf::new(),
            reason: e.message().to_owned(),
        })?;
        apply_env_overrides(&mut table, env)?;
        let config: NodeConfig = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            key_error(if key == "." { "(root)" } else { &key }, e.into_inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks relations between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.peers.is_empty() {
            return Err(key_error("peers", "list every validator and this node"));
        }
        if !self.peers.iter().any(|p| p.participant == self.node.participant) {
            return Err(key_error("peers", format!("no entry for this node's participant {}", self.node.participant)));
        }
        if self.block.transfers_max == 0 || self.block.transfers_max > remit_settlement::constants::BLOCK_TRANSFERS_MAX
        {
            return Err(key_error(
                "block.transfers_max",
                format!("must be 1 to {}", remit_settlement::constants::BLOCK_TRANSFERS_MAX),
            ));
        }
        if self.raft.election_timeout_min_ms <= self.raft.heartbeat_ms * 2
            || self.raft.election_timeout_max_ms <= self.raft.election_timeout_min_ms
        {
            return Err(key_error(
                "raft.election_timeout_min_ms",
                "must exceed twice the heartbeat, and be below election_timeout_max_ms",
            ));
        }
        if self.raft.snapshot_every_blocks < 2 {
            return Err(key_error("raft.snapshot_every_blocks", "must be at least 2"));
        }
        if self.remittance.quote_ttl_ms == 0 || self.remittance.quote_ttl_ms > crate::remittance::QUOTE_TTL_MS_MAX {
            return Err(key_error(
                "remittance.quote_ttl_ms",
                format!("must be 1 to {}", crate::remittance::QUOTE_TTL_MS_MAX),
            ));
        }
        if self.remittance.journal_checkpoint_bytes < crate::remittance::journal::JOURNAL_CHECKPOINT_BYTES_MIN {
            return Err(key_error(
                "remittance.journal_checkpoint_bytes",
                format!("must be at least {}", crate::remittance::journal::JOURNAL_CHECKPOINT_BYTES_MIN),
            ));
        }
        // Kept below u64::MAX / 1000 so that the milliseconds fit.
        const SECONDS_MAX: u64 = 100 * 365 * 86_400;
        if self.remittance.terminal_retention_s > SECONDS_MAX {
            return Err(key_error("remittance.terminal_retention_s", format!("must be at most {SECONDS_MAX}")));
        }
        if self.remittance.inbox_ttl_s == 0 || self.remittance.inbox_ttl_s > SECONDS_MAX {
            return Err(key_error("remittance.inbox_ttl_s", format!("must be 1 to {SECONDS_MAX}")));
        }
        if let Some(api) = &self.api {
            api.validate(self.http.listen, self.peer.listen)?;
            crate::api::auth::Authenticator::new(&api.clients).map_err(|message| {
                let (key, reason) = message.split_once(": ").unwrap_or(("api.clients", &message));
                key_error(key, reason)
            })?;
        }
        if !matches!(self.log.format.as_str(), "json" | "text") {
            return Err(key_error("log.format", "must be \"json\" or \"text\""));
        }
        if self.tls.enabled {
            for (key, value) in
                [("tls.ca_cert", &self.tls.ca_cert), ("tls.cert", &self.tls.cert), ("tls.key", &self.tls.key)]
            {
                if value.is_none() {
                    return Err(key_error(key, "required when tls.enabled = true"));
                }
            }
        } else {
            let loopback =
                self.peer.listen.ip().is_loopback() && self.peers.iter().all(|p| is_loopback_address(&p.address));
            if !loopback {
                return Err(key_error("tls.enabled", "must be true when any peer address is not loopback"));
            }
        }
        Ok(())
    }
}

fn is_loopback_address(address: &str) -> bool {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host).trim_matches(['[', ']']);
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Applies `REMIT__SECTION__KEY=value` overrides. Values parse as TOML
/// scalars (integers, booleans) and otherwise stay strings.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else { continue };
        let keys: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        if keys.len() != 2 || keys.iter().any(String::is_empty) {
            return Err(key_error(&name, "environment overrides take the form REMIT__SECTION__KEY"));
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .filter(|v| !v.is_table())
            .unwrap_or(toml::Value::String(value));
        let section = table.entry(keys[0].clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(section) = section.as_table_mut() else {
            return Err(key_error(&keys[0], "cannot override keys of a non-table section"));
        };
        section.insert(keys[1].clone(), parsed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[node]
participant = "gw-us"
data_dir = "/tmp/d"
network = "/tmp/k/network.json"
key_share = "/tmp/k/gw-us/validator_key_share.json"
identity_key = "/tmp/k/gw-us/identity_ed25519.hex"
[peer]
listen = "127.0.0.1:7100"
[http]
listen = "127.0.0.1:8100"
[[peers]]
participant = "gw-us"
address = "127.0.0.1:7100"
"#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn check(extra: &str, overrides: &[(&str, &str)], expected_error_key: Option<&str>) {
        let text = format!("{BASE}{extra}");
        match (NodeConfig::parse(&text, env(overrides)), expected_error_key) {
            (Ok(_), None) => {}
            (Err(ConfigError::Key { key, .. }), Some(want)) => assert_eq!(key, want, "{extra} {overrides:?}"),
            (got, want) => panic!("{extra} {overrides:?}: got {got:?}, want error at {want:?}"),
        }
    }

    #[test]
    fn parses_defaults_and_overrides() {
        let config = NodeConfig::parse(BASE, env(&[("REMIT__BLOCK__AGE_MS_MAX", "7"), ("OTHER", "x")])).expect("valid");
        assert_eq!(config.block.age_ms_max, 7);
        assert_eq!(config.log.format, "json");
        let config = NodeConfig::parse(BASE, env(&[("REMIT__PEER__LISTEN", "127.0.0.1:9999")])).expect("valid");
        assert_eq!(config.peer.listen.port(), 9999);
    }

    #[test]
    fn errors_name_the_key() {
        check("", &[("REMIT__PEER__LISTEN", "nonsense")], Some("peer.listen"));
        check("", &[("REMIT__BLOCK__TRANSFERS_MAX", "0")], Some("block.transfers_max"));
        check("", &[("REMIT__BLOCK__AGE_MS_MAX", "-3")], Some("block.age_ms_max"));
        check("", &[("REMIT__LOG__FORMAT", "xml")], Some("log.format"));
        check("", &[("REMIT__PEER__LISTEN", "10.0.0.1:7100")], Some("tls.enabled"));
        check("", &[("REMIT__TLS__ENABLED", "true")], Some("tls.ca_cert"));
        check("[block]\nbogus = 1\n", &[], Some("block.bogus"));
        check("", &[("REMIT__NODE__PARTICIPANT", "gw-xx")], Some("peers"));
        check("", &[("REMIT__RAFT__HEARTBEAT_MS", "5000")], Some("raft.election_timeout_min_ms"));
    }

    #[test]
    fn the_journal_keys_have_defaults_and_bounds() {
        let config = NodeConfig::parse(BASE, env(&[])).expect("valid");
        let section = &config.remittance;
        assert_eq!(
            (section.journal_checkpoint_bytes, section.terminal_retention_s, section.inbox_ttl_s),
            (64 << 20, 300, 86_400)
        );
        let config =
            NodeConfig::parse(BASE, env(&[("REMIT__REMITTANCE__JOURNAL_CHECKPOINT_BYTES", "1024")])).expect("minimum");
        assert_eq!(config.remittance.journal_checkpoint_bytes, 1_024);
        let key = "remittance.journal_checkpoint_bytes";
        check("", &[("REMIT__REMITTANCE__JOURNAL_CHECKPOINT_BYTES", "1023")], Some(key));
        check("", &[("REMIT__REMITTANCE__INBOX_TTL_S", "0")], Some("remittance.inbox_ttl_s"));
        check("", &[("REMIT__REMITTANCE__TERMINAL_RETENTION_S", "0")], None);
        check(
            "",
            &[("REMIT__REMITTANCE__TERMINAL_RETENTION_S", "99999999999")],
            Some("remittance.terminal_retention_s"),
        );
    }

    #[test]
    fn the_wallet_api_needs_its_own_listener_and_tls_beyond_loopback() {
        check("[api]\n", &[], Some("api.listen"));
        check("[api]\nlisten = \"127.0.0.1:9100\"\n", &[], None);
        check("[api]\nlisten = \"127.0.0.1:8100\"\n", &[], Some("api.listen"));
        check("[api]\nlisten = \"0.0.0.0:7100\"\n", &[], Some("api.listen"));
        check("[api]\nlisten = \"0.0.0.0:9100\"\n", &[], Some("api.allow_plaintext"));
        check("[api]\nlisten = \"10.0.0.5:9100\"\n", &[], Some("api.allow_plaintext"));
        check("[api]\nlisten = \"0.0.0.0:9100\"\nallow_plaintext = true\n", &[], None);
        check("[api]\nlisten = \"0.0.0.0:9100\"\ntls_cert = \"/c.pem\"\n", &[], Some("api.tls_key"));
        check("[api]\nlisten = \"0.0.0.0:9100\"\ntls_key = \"/k.pem\"\n", &[], Some("api.tls_cert"));
        check("[api]\nlisten = \"0.0.0.0:9100\"\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n", &[], None);
        // An override reaches the key as well, and the error names it.
        check(
            "[api]\nlisten = \"127.0.0.1:9100\"\n",
            &[("REMIT__API__LISTEN", "0.0.0.0:9100")],
            Some("api.allow_plaintext"),
        );
        let text = format!("{BASE}[api]\nlisten = \"0.0.0.0:9100\"\n");
        let error = NodeConfig::parse(&text, env(&[])).expect_err("refused").to_string();
        assert!(error.contains("api.tls_cert") && error.contains("0.0.0.0:9100"), "{error}");
    }
}
