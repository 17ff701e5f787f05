//! Compiles every `.proto` under `remit/` with protox (pure Rust), so building
//! needs no system `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script binary can be reused from another
    // checkout of the same workspace sharing the target directory.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let mut files = Vec::new();
    collect_protos(&root.join("remit"), &mut files)?;
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    let mut config = tonic_prost_build::configure().build_server(true).build_client(true);
    // The wallet API's messages double as the REST/JSON bodies.
    for message in WALLET_MESSAGES {
        config = config.type_attribute(
            format!(".remit.v1.{message}"),
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        );
    }
    config.compile_fds(descriptors)?;
    Ok(())
}

/// Messages of `remittances.proto`, which get serde derives.
const WALLET_MESSAGES: &[&str] = &[
    "Amount",
    "CreateQuoteRequest",
    "Fees",
    "Quote",
    "NaturalPersonName",
    "LegalPerson",
    "Account",
    "Address",
    "Party",
    "CreateRemittanceRequest",
    "StatusChange",
    "Remittance",
    "GetRemittanceRequest",
    "ListRemittancesRequest",
    "ListRemittancesResponse",
    "WatchRemittanceRequest",
    "CancelRemittanceRequest",
    "SubmitRemittancesResponse",
    "SubmitResult",
    "SubmitRemittancesRequest",
    "WebhookDelivery",
    "ListWebhookDeliveriesRequest",
    "ListWebhookDeliveriesResponse",
];

fn collect_protos(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
