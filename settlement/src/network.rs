//! The network definition (`network.json`): chain id, genesis participants,
//! validator set; key generation for a new network; key file loading.
//!
//! `network.json` is public. Secret key shares and identity keys live in
//! per-participant files with mode 0600 and are never logged.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use iso_currency::Currency;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use threshold_crypto::serde_impl::SerdeSecret;
use threshold_crypto::{PublicKeySet, SecretKeySet, SecretKeyShare};

use crate::block::{BlockProposal, Entry};
use crate::certify::{faulty_max, quorum, ValidatorKey, ValidatorSet};
use crate::constants::{GOVERNANCE_KEYS_MAX, PARTICIPANTS_MAX, VALIDATORS_MAX};
use crate::governance::GovernanceConfig;
use crate::hash::Digest32;
use crate::ids::{ChainId, CountryCode, Height, ParticipantId};
use crate::ledger::{LedgerParams, ReplayWindow};
use crate::participant::{OriginKey, Participant, ParticipantStatus};

/// Version of the `network.json` format. Version 2 adds the governance keys
/// and the replay window, and allows participants that are not validators.
pub const NETWORK_FORMAT_VERSION: u32 = 2;
/// Sub-directory of a keys directory holding the governance secret keys.
pub const GOVERNANCE_DIR: &str = "governance";
/// File name of the network definition inside a keys directory.
pub const NETWORK_FILE: &str = "network.json";
/// File name of the group public key (hex) inside a keys directory.
pub const GROUP_KEY_FILE: &str = "group_public_key.hex";
/// File name of a validator's secret key share inside its participant directory.
pub const KEY_SHARE_FILE: &str = "validator_key_share.json";
/// File name of a participant's ed25519 identity (origin signing) key.
pub const IDENTITY_KEY_FILE: &str = "identity_ed25519.hex";

/// A network definition problem or key file failure.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file's content is invalid.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        reason: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> NetworkError + '_ {
    move |source| NetworkError::Io { path: path.to_owned(), source }
}

fn invalid(path: &Path, reason: impl Into<String>) -> NetworkError {
    NetworkError::Invalid { path: path.to_owned(), reason: reason.into() }
}

/// One validator's public identity in the set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorMember {
    /// Index in the key set (0-based).
    pub index: u32,
    /// The participant that runs it.
    pub participant: ParticipantId,
    /// Its BLS public key share, hex.
    pub public_key_share: String,
}

/// The validator set as written to `network.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorsConfig {
    /// n.
    pub count: u32,
    /// f = (n - 1) / 3.
    pub faulty_max: u32,
    /// ceil((n + f + 1) / 2): shares that certify a block (2f + 1 when n = 3f + 1).
    pub quorum: u32,
    /// The group public key, hex; all an auditor needs.
    pub group_public_key: String,
    /// The full public key set (commitment), from which key shares derive.
    pub public_key_set: PublicKeySet,
    /// The members.
    pub members: Vec<ValidatorMember>,
}

/// The whole network definition: `network.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// Format version ([`NETWORK_FORMAT_VERSION`]).
    pub version: u32,
    /// Chain id, unique per network.
    pub chain_id: ChainId,
    /// Timestamp of the genesis block, ms since the Unix epoch.
    pub genesis_time_ms: u64,
    /// The validators.
    pub validators: ValidatorsConfig,
    /// The keys that approve administrative entries after genesis.
    pub governance: GovernanceConfig,
    /// Replay protection: the accepted range of a transfer's `created_at`.
    #[serde(default)]
    pub replay: ReplayWindow,
    /// Participants registered at genesis: validators (with a
    /// `validator_index`) and member gateways (without).
    pub participants: Vec<Participant>,
}

/// What a participant's node does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// Holds a key share: votes in Raft and signs certification shares.
    Validator,
    /// Follows the certified chain from the validators and runs the
    /// remittance engine; no vote, no key share.
    Gateway,
}

impl NodeRole {
    /// `validator` or `gateway`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Validator => "validator",
            NodeRole::Gateway => "gateway",
        }
    }
}

impl NetworkConfig {
    /// Reads and validates a `network.json`.
    pub fn load(path: &Path) -> Result<Self, NetworkError> {
        let text = fs::read_to_string(path).map_err(io_error(path))?;
        Self::from_json(&text).map_err(|reason| invalid(path, reason))
    }

    /// Parses and validates JSON.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let config: NetworkConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("network config always serializes")
    }

    /// Checks consistency: versions, unique ids, validator indexes and keys,
    /// governance keys and threshold, replay window.
    pub fn validate(&self) -> Result<(), String> {
        if self.version == 1 {
            return Err("version: network format 1 predates governance keys; generate a new network with \
                        `remit keygen` (or re-create the devnet)"
                .into());
        }
        if self.version != NETWORK_FORMAT_VERSION {
            return Err(format!("version: unsupported network format {}", self.version));
        }
        self.governance.validate()?;
        self.replay.validate()?;
        if self.participants.len() > PARTICIPANTS_MAX {
            return Err(format!("participants: at most {PARTICIPANTS_MAX}"));
        }
        let set = self.validator_set()?;
        let v = &self.validators;
        if v.count as usize != set.len()
            || v.faulty_max as usize != faulty_max(set.len())
            || v.quorum as usize != set.quorum()
        {
            return Err("validators: count, faulty_max and quorum are inconsistent".into());
        }
        if v.group_public_key != hex::encode(set.group_key().to_bytes()) {
            return Err("validators.group_public_key: does not match public_key_set".into());
        }
        let mut ids = BTreeSet::new();
        for (i, participant) in self.participants.iter().enumerate() {
            participant.validate().map_err(|e| format!("participants[{i}].{e}"))?;
            if !ids.insert(participant.id.clone()) {
                return Err(format!("participants[{i}].id: duplicate id {}", participant.id));
            }
        }
        if v.members.len() != v.count as usize {
            return Err("validators.members: one member per validator is required".into());
        }
        for (i, member) in v.members.iter().enumerate() {
            if member.index as usize != i {
                return Err(format!("validators.members[{i}].index: expected {i}"));
            }
            let participant = self.participant(&member.participant).ok_or_else(|| {
                format!("validators.members[{i}].participant: {} is not a participant", member.participant)
            })?;
            if participant.validator_index != Some(member.index) {
                return Err(format!(
                    "validators.members[{i}]: participant {} has a different validator_index",
                    member.participant
                ));
            }
            let expected = hex::encode(set.public_key_set().public_key_share(i).to_bytes());
            if member.public_key_share != expected {
                return Err(format!("validators.members[{i}].public_key_share: does not match public_key_set"));
            }
        }
        for (i, participant) in self.participants.iter().enumerate() {
            if let Some(index) = participant.validator_index {
                if index >= v.count || v.members[index as usize].participant != participant.id {
                    return Err(format!(
                        "participants[{i}].validator_index: {index} is not {}'s index in validators.members",
                        participant.id
                    ));
                }
            }
        }
        Ok(())
    }

    /// The parameters of the ledger state machine.
    pub fn ledger_params(&self) -> LedgerParams {
        LedgerParams {
            chain_id: self.chain_id.clone(),
            validator_count: self.validators.count,
            replay: self.replay,
            governance: self.governance.clone(),
        }
    }

    /// The role of a participant's node: validator when it holds a validator
    /// index in this network, gateway otherwise (also for participants
    /// registered after genesis by governance, which are not listed here).
    pub fn role_of(&self, id: &ParticipantId) -> NodeRole {
        match self.participant(id).and_then(|p| p.validator_index) {
            Some(_) => NodeRole::Validator,
            None => NodeRole::Gateway,
        }
    }

    /// The validator set.
    pub fn validator_set(&self) -> Result<ValidatorSet, String> {
        ValidatorSet::new(self.validators.public_key_set.clone(), self.validators.count as usize)
            .map_err(|e| format!("validators: {e}"))
    }

    /// A participant by id.
    pub fn participant(&self, id: &ParticipantId) -> Option<&Participant> {
        self.participants.iter().find(|p| &p.id == id)
    }

    /// The genesis proposal: height 0, registering every participant. Every
    /// node derives the same genesis block from the same `network.json`.
    pub fn genesis_proposal(&self) -> BlockProposal {
        BlockProposal {
            height: Height::GENESIS,
            prev_hash: Digest32::ZERO,
            timestamp_ms: self.genesis_time_ms,
            entries: self
                .participants
                .iter()
                .map(|participant| Entry::RegisterParticipant { participant: participant.clone() })
                .collect(),
        }
    }
}

/// Per-participant defaults used by `keygen` for a devnet or test network:
/// (id, name, country, local currency).
const DEVNET_PROFILES: [(&str, &str, &str, Currency); 10] = [
    ("gw-us", "Remit Gateway US", "US", Currency::USD),
    ("gw-ph", "Remit Gateway Philippines", "PH", Currency::PHP),
    ("gw-mx", "Remit Gateway Mexico", "MX", Currency::MXN),
    ("gw-ke", "Remit Gateway Kenya", "KE", Currency::KES),
    ("gw-in", "Remit Gateway India", "IN", Currency::INR),
    ("gw-gb", "Remit Gateway United Kingdom", "GB", Currency::GBP),
    ("gw-ng", "Remit Gateway Nigeria", "NG", Currency::NGN),
    ("gw-jp", "Remit Gateway Japan", "JP", Currency::JPY),
    ("gw-kw", "Remit Gateway Kuwait", "KW", Currency::KWD),
    ("gw-de", "Remit Gateway Germany", "DE", Currency::EUR),
];

/// Net debit cap given to every devnet participant in every settlement currency.
pub const DEVNET_NET_DEBIT_CAP_MAJOR_UNITS: i64 = 1_000_000_000;

/// Default number of governance keys `keygen` makes.
pub const GOVERNANCE_KEYS_DEFAULT: usize = 3;
/// Default number of governance approvals needed.
pub const GOVERNANCE_THRESHOLD_DEFAULT: usize = 2;

/// What `keygen` generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkShape {
    /// Validators (participants holding a BLS key share).
    pub validators: usize,
    /// Member gateways that are not validators.
    pub gateways: usize,
    /// Governance keys (m).
    pub governance_keys: usize,
    /// Governance approvals needed (k).
    pub governance_threshold: usize,
}

impl NetworkShape {
    /// `validators` validators, no gateway, the default governance.
    pub fn validators(validators: usize) -> Self {
        Self {
            validators,
            gateways: 0,
            governance_keys: GOVERNANCE_KEYS_DEFAULT,
            governance_threshold: GOVERNANCE_THRESHOLD_DEFAULT,
        }
    }
}

/// One participant's secrets.
pub struct ParticipantSecrets {
    /// Whose.
    pub id: ParticipantId,
    /// Its BLS key share, when it is a validator.
    pub validator_key: Option<ValidatorKey>,
    /// Its ed25519 identity (origin signing) key.
    pub identity: SigningKey,
}

impl std::fmt::Debug for ParticipantSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParticipantSecrets({}, secrets redacted)", self.id)
    }
}

/// Everything `keygen` produces: the public network and the secrets.
pub struct GeneratedNetwork {
    /// The public definition.
    pub network: NetworkConfig,
    /// Per participant: its validator key share (validators only) and identity key.
    pub secrets: Vec<ParticipantSecrets>,
    /// The governance secret keys, in the order of `network.governance.keys`.
    pub governance_keys: Vec<SigningKey>,
}

impl std::fmt::Debug for GeneratedNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GeneratedNetwork({}, {} secrets redacted)", self.network.chain_id, self.secrets.len())
    }
}

/// A devnet participant record: profile `i` (id, name, country, local
/// currency plus USD and EUR), the devnet cap in each currency.
pub fn devnet_participant(i: usize, origin_key: OriginKey, validator_index: Option<u32>) -> Participant {
    let (id, name, country, local) = match DEVNET_PROFILES.get(i) {
        Some((id, name, country, local)) => ((*id).to_owned(), (*name).to_owned(), *country, *local),
        None => (format!("gw-{i}"), format!("Remit Gateway {i}"), "US", Currency::USD),
    };
    let mut currencies: Vec<Currency> = vec![local, Currency::USD, Currency::EUR];
    currencies.sort();
    currencies.dedup();
    let cap = Decimal::from(DEVNET_NET_DEBIT_CAP_MAJOR_UNITS);
    Participant {
        id: ParticipantId::new(id).expect("profile ids are valid"),
        name,
        country: CountryCode::new(country).expect("profile countries are valid"),
        net_debit_caps: currencies.iter().map(|c| (*c, cap)).collect::<BTreeMap<_, _>>(),
        settlement_currencies: currencies,
        origin_key,
        validator_index,
        status: ParticipantStatus::Active,
    }
}

/// Generates a network: `validators` devnet participants running validators
/// (fresh BLS key shares), then `gateways` member gateways, each with an
/// ed25519 identity key, and `governance_keys` governance keys of which
/// `governance_threshold` must approve an administrative entry.
pub fn generate_network(shape: NetworkShape, genesis_time_ms: u64) -> Result<GeneratedNetwork, String> {
    let NetworkShape { validators, gateways, governance_keys, governance_threshold } = shape;
    if validators == 0 || validators > VALIDATORS_MAX {
        return Err(format!("--validators must be 1 to {VALIDATORS_MAX}, got {validators}"));
    }
    if validators + gateways > PARTICIPANTS_MAX {
        return Err(format!("--validators plus --gateways must be at most {PARTICIPANTS_MAX}"));
    }
    if governance_keys == 0 || governance_keys > GOVERNANCE_KEYS_MAX {
        return Err(format!("--governance must be 1 to {GOVERNANCE_KEYS_MAX}, got {governance_keys}"));
    }
    if governance_threshold == 0 || governance_threshold > governance_keys {
        return Err(format!(
            "--governance-threshold must be 1 to {governance_keys} (the number of governance keys), got {governance_threshold}"
        ));
    }
    let mut rng07 = rand07::rngs::OsRng;
    let secret_set = SecretKeySet::random(quorum(validators) - 1, &mut rng07);
    let public_set = secret_set.public_keys();
    let chain_id =
        ChainId::new(format!("remit-{}", hex::encode(rand::random::<[u8; 6]>()))).expect("generated chain id is valid");
    let mut participants = Vec::with_capacity(validators + gateways);
    let mut members = Vec::with_capacity(validators);
    let mut secrets = Vec::with_capacity(validators + gateways);
    for i in 0..validators + gateways {
        let identity = SigningKey::generate(&mut rand::rngs::OsRng);
        let validator_index = (i < validators).then(|| index_u32(i));
        let participant = devnet_participant(i, OriginKey::new(identity.verifying_key()), validator_index);
        let validator_key = validator_index.map(|index| {
            members.push(ValidatorMember {
                index,
                participant: participant.id.clone(),
                public_key_share: hex::encode(public_set.public_key_share(i).to_bytes()),
            });
            ValidatorKey::new(index, secret_set.secret_key_share(i))
        });
        secrets.push(ParticipantSecrets { id: participant.id.clone(), validator_key, identity });
        participants.push(participant);
    }
    let governance_secrets: Vec<SigningKey> =
        (0..governance_keys).map(|_| SigningKey::generate(&mut rand::rngs::OsRng)).collect();
    let network = NetworkConfig {
        version: NETWORK_FORMAT_VERSION,
        chain_id,
        genesis_time_ms,
        validators: ValidatorsConfig {
            count: index_u32(validators),
            faulty_max: index_u32(faulty_max(validators)),
            quorum: index_u32(quorum(validators)),
            group_public_key: hex::encode(public_set.public_key().to_bytes()),
            public_key_set: public_set,
            members,
        },
        governance: GovernanceConfig {
            threshold: u32::try_from(governance_threshold).expect("bounded by GOVERNANCE_KEYS_MAX"),
            keys: governance_secrets.iter().map(|k| OriginKey::new(k.verifying_key())).collect(),
        },
        replay: ReplayWindow::default(),
        participants,
    };
    network.validate()?;
    Ok(GeneratedNetwork { network, secrets, governance_keys: governance_secrets })
}

fn index_u32(value: usize) -> u32 {
    u32::try_from(value).expect("bounded by PARTICIPANTS_MAX")
}

/// The file of governance key `i` inside a keys directory.
pub fn governance_key_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(GOVERNANCE_DIR).join(format!("key-{i}.hex"))
}

#[derive(Serialize, Deserialize)]
struct KeyShareFile {
    index: u32,
    secret_key_share: SerdeSecret<SecretKeyShare>,
}

/// Writes a generated network to `dir`: `network.json`, the group key, per
/// participant `<id>/identity_ed25519.hex` (and `<id>/validator_key_share.json`
/// for validators), and `governance/key-<i>.hex`, every secret with mode 0600.
pub fn write_network(generated: &GeneratedNetwork, dir: &Path) -> Result<(), NetworkError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    for secrets in &generated.secrets {
        let participant_dir = dir.join(secrets.id.as_str());
        fs::create_dir_all(&participant_dir).map_err(io_error(&participant_dir))?;
        if let Some(validator_key) = &secrets.validator_key {
            let share = KeyShareFile {
                index: validator_key.index(),
                secret_key_share: SerdeSecret(validator_key.secret_share().clone()),
            };
            let json = serde_json::to_vec_pretty(&share).expect("key share serializes");
            write_secret_file(&participant_dir.join(KEY_SHARE_FILE), &json)?;
        }
        write_secret_file(
            &participant_dir.join(IDENTITY_KEY_FILE),
            hex::encode(secrets.identity.to_bytes()).as_bytes(),
        )?;
    }
    let governance_dir = dir.join(GOVERNANCE_DIR);
    fs::create_dir_all(&governance_dir).map_err(io_error(&governance_dir))?;
    for (i, key) in generated.governance_keys.iter().enumerate() {
        write_secret_file(&governance_key_path(dir, i), hex::encode(key.to_bytes()).as_bytes())?;
    }
    let group_key = dir.join(GROUP_KEY_FILE);
    fs::write(&group_key, format!("{}\n", generated.network.validators.group_public_key))
        .map_err(io_error(&group_key))?;
    let network = dir.join(NETWORK_FILE);
    fs::write(&network, generated.network.to_json()).map_err(io_error(&network))?;
    Ok(())
}

/// Creates or truncates `path` with mode 0600 (before any byte is written)
/// and writes `bytes`.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), NetworkError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_error(path))?;
    // `mode` applies only when the file is created; an existing file (keygen
    // --force) keeps its old mode unless it is set here, before the secret is
    // written.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io_error(path))?;
    }
    file.write_all(bytes).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

/// Reads a validator key share file.
pub fn load_validator_key(path: &Path) -> Result<ValidatorKey, NetworkError> {
    let bytes = fs::read(path).map_err(io_error(path))?;
    let file: KeyShareFile = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(path, format!("not a key share file: {}", e.classify_name())))?;
    Ok(ValidatorKey::new(file.index, file.secret_key_share.into_inner()))
}

/// Reads an ed25519 identity key file (64 hex characters).
pub fn load_identity_key(path: &Path) -> Result<SigningKey, NetworkError> {
    let text = fs::read_to_string(path).map_err(io_error(path))?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| invalid(path, "expected 64 hex characters"))?;
    Ok(SigningKey::from_bytes(&bytes))
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    /// A description of a JSON error that never quotes the secret input.
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "wrong fields or values",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// Everything in a keys directory written by `keygen`: the network and every
/// participant's secrets. Used to run in-process validators (benchmarks,
/// tests, single-machine networks); a real node loads only its own files.
pub struct Keyring {
    /// The network definition.
    pub network: NetworkConfig,
    /// The validator set.
    pub validators: ValidatorSet,
    /// Every validator's key share, by index.
    pub validator_keys: Vec<ValidatorKey>,
    /// Every participant's identity (origin signing) key.
    pub identities: BTreeMap<ParticipantId, SigningKey>,
    /// The governance secret keys found (`governance/key-<i>.hex`), in the
    /// order of `network.governance.keys`.
    pub governance_keys: Vec<SigningKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({}, {} validator keys redacted)", self.network.chain_id, self.validator_keys.len())
    }
}

impl Keyring {
    /// Loads `dir/network.json` and every participant's key files found.
    pub fn load(dir: &Path) -> Result<Self, NetworkError> {
        let network = NetworkConfig::load(&dir.join(NETWORK_FILE))?;
        let validators = network.validator_set().map_err(|e| invalid(&dir.join(NETWORK_FILE), e))?;
        let mut validator_keys = Vec::new();
        let mut identities = BTreeMap::new();
        for participant in &network.participants {
            let participant_dir = dir.join(participant.id.as_str());
            let identity_path = participant_dir.join(IDENTITY_KEY_FILE);
            if identity_path.exists() {
                let identity = load_identity_key(&identity_path)?;
                if identity.verifying_key() != *participant.origin_key.verifying_key() {
                    return Err(invalid(&identity_path, "identity key does not match the participant's origin key"));
                }
                identities.insert(participant.id.clone(), identity);
            }
            let share_path = participant_dir.join(KEY_SHARE_FILE);
            if share_path.exists() {
                let key = load_validator_key(&share_path)?;
                if participant.validator_index != Some(key.index()) {
                    return Err(invalid(
                        &share_path,
                        "key share index does not match the participant's validator_index",
                    ));
                }
                validator_keys.push(key);
            }
        }
        validator_keys.sort_by_key(ValidatorKey::index);
        let mut governance_keys = Vec::new();
        for (i, public) in network.governance.keys.iter().enumerate() {
            let path = governance_key_path(dir, i);
            if path.exists() {
                let key = load_identity_key(&path)?;
                if key.verifying_key() != *public.verifying_key() {
                    return Err(invalid(&path, format!("does not match governance.keys[{i}]")));
                }
                governance_keys.push(key);
            }
        }
        Ok(Self { network, validators, validator_keys, identities, governance_keys })
    }

    /// Every validator signs a share of the block's certification message
    /// (spread over the available cores) and a quorum is combined.
    pub fn certify(
        &self,
        header: &crate::block::BlockHeader,
    ) -> Result<crate::certify::Certificate, crate::certify::CertifyError> {
        let message = crate::certify::CertificationMessage::for_header(header);
        let workers = std::thread::available_parallelism().map_or(1, usize::from).min(self.validator_keys.len()).max(1);
        let chunk = self.validator_keys.len().div_ceil(workers).max(1);
        let shares: Vec<crate::certify::Share> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .validator_keys
                .chunks(chunk)
                .map(|keys| {
                    let message = &message;
                    scope.spawn(move || keys.iter().map(|key| key.sign(message)).collect::<Vec<_>>())
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("share signing does not panic")).collect()
        });
        self.validators.certify(&message, &shares)
    }
}
