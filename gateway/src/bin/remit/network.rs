//! `remit network info` (one JSON object describing a network.json) and
//! `remit identity new` (an institution's ed25519 identity key).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use ed25519_dalek::SigningKey;
use remit_settlement::network::{write_secret_file, NetworkConfig};
use serde_json::json;

/// The JSON `remit network info` prints.
pub fn info_json(network: &NetworkConfig) -> serde_json::Value {
    let participants: Vec<serde_json::Value> = network
        .participants
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "name": p.name,
                "country": p.country,
                "role": network.role_of(&p.id).as_str(),
                "validator_index": p.validator_index,
                "currencies": p.settlement_currencies.iter().map(|c| c.code()).collect::<Vec<_>>(),
                "status": p.status.as_str(),
            })
        })
        .collect();
    json!({
        "chain_id": network.chain_id,
        "genesis_time_ms": network.genesis_time_ms,
        "validators": network.validators.count,
        "faulty_max": network.validators.faulty_max,
        "quorum": network.validators.quorum,
        "group_public_key": network.validators.group_public_key,
        "governance": {
            "threshold": network.governance.threshold,
            "keys": network.governance.keys.iter().map(|k| hex::encode(k.to_bytes())).collect::<Vec<_>>(),
        },
        "replay": { "horizon_ms": network.replay.horizon_ms, "future_skew_ms": network.replay.future_skew_ms },
        "participants": participants,
    })
}

/// `remit network info --network FILE`.
pub fn info(path: &Path) -> anyhow::Result<ExitCode> {
    let network = NetworkConfig::load(path)?;
    println!("{}", info_json(&network));
    Ok(ExitCode::SUCCESS)
}

/// `remit identity new --out FILE`: a fresh ed25519 identity key (mode
/// 0600); prints its public key, which governance registers as the
/// participant's `--origin-key`.
pub fn new_identity(out: &Path, force: bool) -> anyhow::Result<ExitCode> {
    if out.exists() && !force {
        bail!("{} exists; pass --force to replace it", out.display());
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    write_secret_file(out, hex::encode(key.to_bytes()).as_bytes())?;
    println!("{}", json!({ "public_key": hex::encode(key.verifying_key().to_bytes()), "file": out }));
    Ok(ExitCode::SUCCESS)
}
