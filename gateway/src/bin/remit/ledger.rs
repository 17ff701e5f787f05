//! `remit keygen`, `remit ledger verify` and `remit ledger export`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use remit_settlement::audit::{export_chain, read_export, stored_blocks, verify_chain, AuditFailure, AuditReport};
use remit_settlement::chain::Chain;
use remit_settlement::network::{generate_network, write_network, NetworkConfig, NetworkShape, NETWORK_FILE};
use remit_settlement::store::SledLedgerStore;

/// Sub-directory of a node's data directory that holds the ledger store.
pub const LEDGER_SUBDIR: &str = "ledger";

/// The ledger store inside a node data directory.
pub fn ledger_path(data_dir: &Path) -> PathBuf {
    data_dir.join(LEDGER_SUBDIR)
}

pub fn keygen(shape: NetworkShape, out: &Path, force: bool) -> anyhow::Result<ExitCode> {
    if out.join(NETWORK_FILE).exists() && !force {
        bail!("{} already holds a network; pass --force to replace it", out.display());
    }
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).context("system clock before 1970")?.as_millis();
    let generated = generate_network(shape, u64::try_from(now_ms)?).map_err(anyhow::Error::msg)?;
    write_network(&generated, out).context("writing the network")?;
    let network = &generated.network;
    println!(
        "wrote network {} with {} validators (quorum {}, tolerates {} faulty), {} gateways and {} governance keys \
         ({} to approve) to {}",
        network.chain_id,
        network.validators.count,
        network.validators.quorum,
        network.validators.faulty_max,
        shape.gateways,
        network.governance.keys.len(),
        network.governance.threshold,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn open_store(data_dir: &Path) -> anyhow::Result<SledLedgerStore> {
    let path = ledger_path(data_dir);
    if !path.exists() {
        bail!("{} has no ledger (expected {})", data_dir.display(), path.display());
    }
    SledLedgerStore::open(&path).with_context(|| format!("opening {}", path.display()))
}

fn report(result: Result<AuditReport, AuditFailure>) -> ExitCode {
    match result {
        Ok(report) => {
            println!("{report}");
            if report.uncertified_tail > 0 {
                eprintln!(
                    "note: {} newer block(s) applied but not yet certified (not counted)",
                    report.uncertified_tail
                );
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("verification failed at height {}: {}", failure.height, failure.what);
            ExitCode::FAILURE
        }
    }
}

pub fn verify_dir(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let store = open_store(data_dir)?;
    // Opening the chain re-checks the stored tip and snapshot; a failure there
    // is reported like any audit failure.
    let chain = match Chain::open(store, None) {
        Ok(chain) => chain,
        Err(error) => {
            println!("verification failed: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let blocks = stored_blocks(chain.store()).context("reading blocks")?;
    Ok(report(verify_chain(chain.network(), blocks)))
}

pub fn verify_file(chain_file: &Path, network_file: &Path) -> anyhow::Result<ExitCode> {
    let network = NetworkConfig::load(network_file)?;
    let file = File::open(chain_file).with_context(|| format!("opening {}", chain_file.display()))?;
    Ok(report(verify_chain(&network, read_export(BufReader::new(file)))))
}

pub fn export(data_dir: &Path, out: &Path) -> anyhow::Result<ExitCode> {
    let store = open_store(data_dir)?;
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut writer = BufWriter::new(file);
    let blocks = export_chain(&store, &mut writer)?;
    writer.flush().context("writing the export")?;
    eprintln!("exported {blocks} blocks to {}", out.display());
    Ok(ExitCode::SUCCESS)
}
