//! `remit`: the operator CLI. Key generation, ledger audit and export, the
//! ledger benchmark, a local devnet and a load generator against it.

mod bench;
mod devnet;
mod governance;
mod ledger;
mod load;
mod network;
mod remittance_load;
mod send;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "remit", version, about = "Operate and audit a remit settlement network")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a new network: BLS key shares, identity keys, governance
    /// keys and network.json.
    Keygen {
        /// Number of validators (n tolerates f = floor((n - 1) / 3) faulty;
        /// n = 3f + 1 is the most efficient).
        #[arg(long)]
        validators: usize,
        /// Number of member gateways that are not validators.
        #[arg(long, default_value_t = 0)]
        gateways: usize,
        /// Number of governance keys (m).
        #[arg(long, default_value_t = remit_settlement::network::GOVERNANCE_KEYS_DEFAULT)]
        governance: usize,
        /// Governance approvals an administrative action needs (k of m).
        #[arg(long, default_value_t = remit_settlement::network::GOVERNANCE_THRESHOLD_DEFAULT)]
        governance_threshold: usize,
        /// Directory to write the keys and network.json to.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite an existing network in --out.
        #[arg(long)]
        force: bool,
    },
    /// Describe a network.
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// Governance: propose, approve and submit administrative actions.
    Governance {
        #[command(subcommand)]
        command: governance::GovernanceCommand,
    },
    /// An institution's identity key.
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// Run a local network of remitd validators until Ctrl-C or SIGTERM.
    Devnet(devnet::DevnetArgs),
    /// Send one remittance through a devnet and wait for its final status.
    Send(send::SendArgs),
    /// Remittance tools.
    Remittances {
        #[command(subcommand)]
        command: RemittancesCommand,
    },
    /// Audit, export, benchmark and load the settlement ledger.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
}

#[derive(Subcommand, Debug)]
enum NetworkCommand {
    /// Print one JSON object: chain id, validators, faulty_max, quorum,
    /// governance (threshold, keys) and participants with their roles.
    Info {
        /// The network.json.
        #[arg(long)]
        network: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum IdentityCommand {
    /// Write a new ed25519 identity key (mode 0600) and print its public key.
    New {
        /// The key file to write.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RemittancesCommand {
    /// Drive remittances through every gateway of a devnet with the batch
    /// submit call and report throughput and create-to-final latency.
    Load(remittance_load::RemittanceLoadArgs),
}

#[derive(Subcommand, Debug)]
enum LedgerCommand {
    /// Re-check every hash link, Merkle root and certificate, replay the state
    /// machine and compare state roots.
    Verify {
        /// A node's data directory.
        #[arg(long, conflicts_with_all = ["chain", "network"], required_unless_present = "chain")]
        dir: Option<PathBuf>,
        /// A JSON Lines chain export.
        #[arg(long, requires = "network")]
        chain: Option<PathBuf>,
        /// The network.json the chain belongs to (for the group key).
        #[arg(long)]
        network: Option<PathBuf>,
    },
    /// Write a node's chain as JSON Lines, one block per line.
    Export {
        /// A node's data directory.
        #[arg(long)]
        dir: PathBuf,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Build a certified chain with in-process validators and report throughput.
    Bench(bench::BenchArgs),
    /// Submit signed transfer batches to a running devnet, wait until they are
    /// certified, check the chain, and print one JSON line of figures.
    Load(load::LoadArgs),
}

fn main() -> ExitCode {
    remit_gateway::init_cli_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen { validators, gateways, governance, governance_threshold, out, force } => {
            let shape = remit_settlement::network::NetworkShape {
                validators,
                gateways,
                governance_keys: governance,
                governance_threshold,
            };
            ledger::keygen(shape, &out, force)
        }
        Command::Network { command: NetworkCommand::Info { network } } => network::info(&network),
        Command::Governance { command } => governance::run(command),
        Command::Identity { command: IdentityCommand::New { out, force } } => network::new_identity(&out, force),
        Command::Devnet(args) => devnet::run(&args),
        Command::Send(args) => send::run(&args),
        Command::Remittances { command: RemittancesCommand::Load(args) } => remittance_load::run(&args),
        Command::Ledger { command } => match command {
            LedgerCommand::Verify { dir: Some(dir), .. } => ledger::verify_dir(&dir),
            LedgerCommand::Verify { chain: Some(chain), network: Some(network), .. } => {
                ledger::verify_file(&chain, &network)
            }
            LedgerCommand::Verify { .. } => {
                Err(anyhow::anyhow!("give --dir DIR, or --chain FILE with --network network.json"))
            }
            LedgerCommand::Export { dir, out } => ledger::export(&dir, &out),
            LedgerCommand::Bench(args) => bench::run(&args),
            LedgerCommand::Load(args) => load::run(&args),
        },
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
