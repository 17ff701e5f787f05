//! `remit governance`: propose an administrative action, approve it with
//! governance keys, submit it to a node.
//!
//! A proposal is a JSON file: `chain_id`, `action` (`type` and fields),
//! `nonce`, `approvals` (`public_key`, `signature`). `propose` writes it
//! without approvals; each `sign` adds one (the chain id is taken from the
//! `network.json` beside the governance key file, `keys/network.json` for
//! `keys/governance/key-<i>.hex`, or from `--network`); `submit` sends it to
//! a node's API, which puts it on the ledger, and prints
//! `certified at height H` once the block is certified, or the refusal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use iso_currency::Currency;
use remit_settlement::network::{load_identity_key, NetworkConfig, NETWORK_FILE};
use remit_settlement::participant::validate_cap;
use remit_settlement::{
    ChainId, CountryCode, GovernanceAction, GovernanceProposal, OriginKey, Participant, ParticipantId,
    ParticipantStatus, SignedProposal,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

#[derive(Subcommand, Debug)]
pub enum GovernanceCommand {
    /// Write a new proposal (no approvals yet) to --out.
    Propose {
        #[command(subcommand)]
        action: ProposeAction,
    },
    /// Add one governance key's approval to a proposal file (in place).
    Sign(SignArgs),
    /// Submit a proposal to a node; wait until its block is certified.
    Submit(SubmitArgs),
}

#[derive(Args, Debug)]
pub struct ProposalOptions {
    /// Where to write the proposal (JSON).
    #[arg(long)]
    out: PathBuf,
    /// The nonce that makes the proposal single-use (default: random).
    #[arg(long)]
    nonce: Option<u64>,
    /// The network.json of the chain (sets `chain_id` now; otherwise the
    /// first `sign` sets it).
    #[arg(long)]
    network: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ProposeAction {
    /// Register a participant (a member gateway, or a validator of the key set).
    RegisterParticipant {
        /// Participant id, e.g. gw-za.
        #[arg(long)]
        id: String,
        /// Institution name.
        #[arg(long)]
        name: String,
        /// Home country (ISO 3166-1 alpha-2).
        #[arg(long)]
        country: String,
        /// Settlement currencies, comma-separated (e.g. USD,PHP).
        #[arg(long, value_delimiter = ',')]
        currencies: Vec<String>,
        /// Its ed25519 identity public key (64 hex characters).
        #[arg(long)]
        origin_key: String,
        /// Its index in the validator set, when it runs a validator.
        #[arg(long)]
        validator_index: Option<u32>,
        #[command(flatten)]
        options: ProposalOptions,
    },
    /// Set a participant's net debit cap in one currency.
    SetCap {
        /// Whose cap.
        #[arg(long)]
        participant: String,
        /// The currency (ISO 4217).
        #[arg(long)]
        currency: String,
        /// The cap, exact to the currency's minor unit (e.g. 250000.00).
        #[arg(long, allow_hyphen_values = true)]
        amount: String,
        #[command(flatten)]
        options: ProposalOptions,
    },
    /// Suspend or reactivate a participant.
    SetStatus {
        /// Whose status.
        #[arg(long)]
        participant: String,
        /// `active` or `suspended`.
        #[arg(long)]
        status: String,
        #[command(flatten)]
        options: ProposalOptions,
    },
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// The proposal file.
    file: PathBuf,
    /// A governance secret key file (`keys/governance/key-<i>.hex`).
    #[arg(long)]
    key: PathBuf,
    /// The network.json (default: the one beside the key's folder).
    #[arg(long)]
    network: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The proposal file.
    file: PathBuf,
    /// A node's operator listener (its `ops_url` in devnet.json).
    #[arg(long)]
    node: String,
    /// Give up waiting for the node after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
}

/// The proposal file: a [`SignedProposal`] whose chain id may not be set yet.
#[derive(Debug, Serialize, Deserialize)]
struct ProposalFile {
    chain_id: Option<ChainId>,
    #[serde(flatten)]
    proposal: GovernanceProposal,
    #[serde(default)]
    approvals: Vec<remit_settlement::Approval>,
}

impl ProposalFile {
    fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a governance proposal", path.display()))
    }

    fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self).expect("proposals serialize");
        std::fs::write(path, format!("{text}\n")).with_context(|| format!("writing {}", path.display()))
    }
}

pub fn run(command: GovernanceCommand) -> anyhow::Result<ExitCode> {
    match command {
        GovernanceCommand::Propose { action } => propose(action),
        GovernanceCommand::Sign(args) => sign(&args),
        GovernanceCommand::Submit(args) => submit(&args),
    }
}

fn parse_currency(code: &str, flag: &str) -> anyhow::Result<Currency> {
    let currency = Currency::from_code(&code.trim().to_ascii_uppercase())
        .with_context(|| format!("{flag}: {code:?} is not an ISO 4217 currency code"))?;
    if currency.exponent().is_none() {
        bail!("{flag}: {} has no minor unit and cannot be settled", currency.code());
    }
    Ok(currency)
}

fn parse_participant(id: &str, flag: &str) -> anyhow::Result<ParticipantId> {
    ParticipantId::new(id).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

fn propose(action: ProposeAction) -> anyhow::Result<ExitCode> {
    let (action, options) = match action {
        ProposeAction::RegisterParticipant { id, name, country, currencies, origin_key, validator_index, options } => {
            let mut settlement_currencies =
                currencies.iter().map(|c| parse_currency(c, "--currencies")).collect::<anyhow::Result<Vec<_>>>()?;
            settlement_currencies.sort();
            settlement_currencies.dedup();
            let mut key = [0u8; 32];
            hex::decode_to_slice(origin_key.trim(), &mut key)
                .map_err(|_| anyhow::anyhow!("--origin-key: expected 64 hex characters"))?;
            let participant = Participant {
                id: parse_participant(&id, "--id")?,
                name,
                country: CountryCode::new(&country.to_ascii_uppercase())
                    .map_err(|e| anyhow::anyhow!("--country: {e}"))?,
                settlement_currencies,
                origin_key: OriginKey::from_bytes(&key).context("--origin-key: not a valid ed25519 public key")?,
                validator_index,
                net_debit_caps: Default::default(),
                status: ParticipantStatus::Active,
            };
            participant.validate().map_err(|e| anyhow::anyhow!("--{}: {}", e.field.replace('_', "-"), e.reason))?;
            (GovernanceAction::RegisterParticipant { participant }, options)
        }
        ProposeAction::SetCap { participant, currency, amount, options } => {
            let currency = parse_currency(&currency, "--currency")?;
            let cap = Decimal::from_str(amount.trim())
                .map_err(|_| anyhow::anyhow!("--amount: {amount:?} is not a decimal number"))?;
            validate_cap(currency, cap, "--amount").map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.reason))?;
            (
                GovernanceAction::SetNetDebitCap {
                    participant: parse_participant(&participant, "--participant")?,
                    currency,
                    cap,
                },
                options,
            )
        }
        ProposeAction::SetStatus { participant, status, options } => {
            let status = match status.as_str() {
                "active" => ParticipantStatus::Active,
                "suspended" => ParticipantStatus::Suspended,
                other => bail!("--status: {other:?} must be active or suspended"),
            };
            (
                GovernanceAction::SetParticipantStatus {
                    participant: parse_participant(&participant, "--participant")?,
                    status,
                },
                options,
            )
        }
    };
    let chain_id = match &options.network {
        Some(path) => Some(NetworkConfig::load(path)?.chain_id),
        None => None,
    };
    let file = ProposalFile {
        chain_id,
        proposal: GovernanceProposal { action, nonce: options.nonce.unwrap_or_else(rand::random) },
        approvals: Vec::new(),
    };
    file.write(&options.out)?;
    println!(
        "proposal written to {}: {} (nonce {})",
        options.out.display(),
        file.proposal.action.describe(),
        file.proposal.nonce
    );
    Ok(ExitCode::SUCCESS)
}

/// The network.json beside a governance key's folder (`keys/governance/key-0.hex` -> `keys/network.json`).
fn network_beside(key: &Path) -> Option<PathBuf> {
    let path = key.parent()?.parent()?.join(NETWORK_FILE);
    path.is_file().then_some(path)
}

fn sign(args: &SignArgs) -> anyhow::Result<ExitCode> {
    let mut file = ProposalFile::read(&args.file)?;
    let key = load_identity_key(&args.key)?;
    let network_path = args.network.clone().or_else(|| network_beside(&args.key));
    let network = match &network_path {
        Some(path) => Some(NetworkConfig::load(path)?),
        None => None,
    };
    let chain_id = match (&file.chain_id, &network) {
        (Some(chain_id), Some(network)) if *chain_id != network.chain_id => bail!(
            "{} is for chain {chain_id}, but {} is chain {}",
            args.file.display(),
            network_path.as_deref().unwrap_or(Path::new("network.json")).display(),
            network.chain_id
        ),
        (Some(chain_id), _) => chain_id.clone(),
        (None, Some(network)) => network.chain_id.clone(),
        (None, None) => bail!(
            "the proposal names no chain and no network.json was found beside {}; pass --network",
            args.key.display()
        ),
    };
    let public = OriginKey::new(key.verifying_key());
    if let Some(network) = &network {
        if !network.governance.keys.contains(&public) {
            bail!("{} is not one of the network's governance keys", args.key.display());
        }
    }
    let mut signed = SignedProposal {
        chain_id: chain_id.clone(),
        proposal: file.proposal.clone(),
        approvals: std::mem::take(&mut file.approvals),
    };
    signed.approve(&key);
    file.chain_id = Some(chain_id);
    file.approvals = signed.approvals;
    file.write(&args.file)?;
    let threshold = network.as_ref().map(|n| format!(" of {} needed", n.governance.threshold)).unwrap_or_default();
    println!(
        "approved by {} ({} approval(s){threshold}): {}",
        hex::encode(public.to_bytes()),
        file.approvals.len(),
        file.proposal.action.describe()
    );
    Ok(ExitCode::SUCCESS)
}

/// What the node answers (`POST /v1/governance`).
#[derive(Debug, Deserialize)]
struct Outcome {
    height: u64,
    status: String,
    reason: Option<String>,
    iso_code: Option<String>,
    approvals: usize,
    threshold: u32,
    certified: bool,
}

fn submit(args: &SubmitArgs) -> anyhow::Result<ExitCode> {
    let file = ProposalFile::read(&args.file)?;
    let Some(chain_id) = file.chain_id else {
        bail!("{} names no chain yet: sign it first (or propose with --network)", args.file.display());
    };
    let proposal = SignedProposal { chain_id, proposal: file.proposal, approvals: file.approvals };
    let url = format!("{}/v1/governance", args.node.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    let (status, body) = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(args.timeout_secs))
            .build()
            .context("building the HTTP client")?;
        let response = client.post(&url).json(&proposal).send().await.with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let body = response.text().await.with_context(|| format!("reading the answer of {url}"))?;
        Ok::<_, anyhow::Error>((status, body))
    })?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or(body);
        println!("refused by the node ({status}): {message}");
        return Ok(ExitCode::FAILURE);
    }
    let outcome: Outcome =
        serde_json::from_str(&body).with_context(|| format!("unexpected answer from {url}: {body}"))?;
    match outcome.status.as_str() {
        "applied" if outcome.certified => {
            println!("certified at height {}", outcome.height);
            Ok(ExitCode::SUCCESS)
        }
        "applied" => {
            println!("committed at height {} but not certified yet; check the node's certified height", outcome.height);
            Ok(ExitCode::from(3))
        }
        _ => {
            let reason = outcome.reason.unwrap_or_else(|| "refused".into());
            let iso = outcome.iso_code.map(|code| format!(" [{code}]")).unwrap_or_default();
            let detail = match reason.as_str() {
                "governance_approvals_insufficient" => {
                    format!(": {} valid approval(s), {} required", outcome.approvals, outcome.threshold)
                }
                "governance_nonce_reused" => ": this nonce was used by an earlier action; propose again".into(),
                _ => String::new(),
            };
            let certified = if outcome.certified { "" } else { " (not certified yet)" };
            println!("refused at height {}{certified}: {reason}{iso}{detail}", outcome.height);
            Ok(ExitCode::FAILURE)
        }
    }
}
