//! `remitd`: a remit gateway node. `remitd --config node.toml`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use remit_gateway::config::NodeConfig;
use remit_gateway::node::Node;

// The node allocates and frees many small buffers per remittance from
// several threads; jemalloc spends less time on that than glibc malloc and,
// unlike mimalloc's default eager purging, keeps freed pages for reuse
// instead of faulting in fresh zeroed pages (measured under
// `remit remittances load`, see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit status after a failed durable write (EX_IOERR).
const EXIT_DURABLE_WRITE_FAILED: u8 = 74;

#[derive(Parser, Debug)]
#[command(name = "remitd", version, about = "A remit gateway node")]
struct Args {
    /// Node configuration (TOML); `REMIT__SECTION__KEY` variables override keys.
    #[arg(long)]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match NodeConfig::load(&args.config, std::env::vars()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("remitd: bad configuration: {error}");
            return ExitCode::from(2);
        }
    };
    remit_gateway::init_node_tracing(&config.log);
    let runtimes = tokio::runtime::Builder::new_multi_thread().enable_all().build().and_then(|main| {
        // The ledger's own threads: Raft, certification and the peer server
        // are scheduled by the OS beside the wallet API and the remittance
        // engine, not behind them in one task queue.
        let ledger = tokio::runtime::Builder::new_multi_thread().thread_name("remitd-ledger").enable_all().build()?;
        Ok((main, ledger))
    });
    let (runtime, ledger) = match runtimes {
        Ok(runtimes) => runtimes,
        Err(error) => {
            eprintln!("remitd: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let ledger_handle = ledger.handle().clone();
    let code = runtime.block_on(async move {
        let node = match Node::start_on(config, ledger_handle).await {
            Ok(node) => node,
            Err(error) => {
                tracing::error!(%error, "node failed to start");
                eprintln!("remitd: {error}");
                return ExitCode::FAILURE;
            }
        };
        let fail_stop = node.fail_stop.clone();
        let code = tokio::select! {
            () = wait_for_shutdown() => {
                tracing::info!("shutdown requested");
                ExitCode::SUCCESS
            }
            reason = fail_stop.stopped() => {
                // Fail-stop: memory was rewound to the disk; carrying on
                // could serve or sign what was never stored. Restarting
                // reopens the store and catches up from the peers.
                tracing::error!(%reason, "stopping: a durable write failed");
                eprintln!("remitd: stopping: a durable write failed: {reason}");
                ExitCode::from(EXIT_DURABLE_WRITE_FAILED)
            }
        };
        node.shutdown().await;
        code
    });
    ledger.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}

async fn wait_for_shutdown() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
