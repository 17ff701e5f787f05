//! The wallet API over TLS, and its start-up refusals.
//!
//! A one-validator devnet whose node has `[api] tls_cert` and `tls_key` (by
//! `REMIT__API__TLS_CERT` / `REMIT__API__TLS_KEY`, a certificate for
//! `localhost` issued by a CA made here) answers REST over https (ALPN
//! http/1.1, a reqwest client trusting only that CA) and gRPC over TLS
//! (ALPN h2, a tonic client trusting that CA) on the one wallet port, and
//! answers nothing in plaintext there. Then `remitd` with the same
//! configuration is started with the wallet API moved to `0.0.0.0` without
//! TLS: it exits non-zero before serving anything, naming
//! `api.allow_plaintext`; with an unreadable certificate it exits naming
//! `api.tls_cert`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use remit_gateway::api::grpc::BearerAuth;
use remit_proto::v1::remittances_client::RemittancesClient;
use remit_proto::v1::ListRemittancesRequest;
use remit_tests::net::{binaries, Network, NetworkOptions};

/// Bound on the node answering on its wallet port after start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a refused `remitd` exiting.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// A CA and a certificate for `localhost` and 127.0.0.1 signed by it:
/// (CA PEM, certificate file, key file).
fn certificates(dir: &Path) -> anyhow::Result<(Vec<u8>, PathBuf, PathBuf)> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "wallet API test CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?;
    params.subject_alt_names.push(rcgen::SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    let (cert_path, key_path) = (dir.join("api_cert.pem"), dir.join("api_key.pem"));
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    Ok((ca.pem().into_bytes(), cert_path, key_path))
}

/// The port of an `http://127.0.0.1:PORT` URL.
fn port_of(url: &str) -> anyhow::Result<u16> {
    url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).with_context(|| format!("port of {url}"))
}

/// Runs `remitd` on `config` with `env` and returns its exit code and stderr.
fn refused_start(config: &Path, env: &[(&str, String)]) -> anyhow::Result<(Option<i32>, String)> {
    let mut command = Command::new(&binaries()?.remitd);
    command.arg("--config").arg(config).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with(remit_gateway::config::ENV_PREFIX)) {
        command.env_remove(name);
    }
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let mut child = command.spawn().context("starting remitd")?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > EXIT_TIMEOUT {
            child.kill()?;
            child.wait()?;
            anyhow::bail!("remitd still runs after {EXIT_TIMEOUT:?} with {env:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr)?;
    }
    Ok((status.code(), stderr))
}

async fn scenario(net: &mut Network, ca: &[u8], scratch: &Path) -> anyhow::Result<()> {
    let node = net.node(0).clone();
    let key = net.api_keys.get(&node.name).context("no API key")?.clone();
    let port = port_of(&node.api_url)?;
    let https = format!("https://localhost:{port}");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca)?)
        .tls_built_in_root_certs(false)
        .https_only(true)
        .timeout(Duration::from_secs(10))
        .build()?;

    // REST over https, once the node is up.
    let started = Instant::now();
    let document = loop {
        match client.get(format!("{https}/openapi.json")).send().await {
            Ok(response) => break response,
            Err(error) => {
                ensure!(started.elapsed() < START_TIMEOUT, "no https answer on {https}: {error:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    ensure!(document.status() == 200, "openapi.json over https: {}", document.status());
    ensure!(document.version() == reqwest::Version::HTTP_11, "ALPN http/1.1: {:?}", document.version());
    let document: serde_json::Value = document.json().await?;
    ensure!(document["openapi"] == "3.1.0", "the document over https: {document}");
    let list = client.get(format!("{https}/v1/remittances")).bearer_auth(&key).send().await?;
    ensure!(list.status() == 200, "an authenticated list over https: {}", list.status());
    let list: serde_json::Value = list.json().await?;
    ensure!(list["remittances"] == serde_json::json!([]), "a fresh node lists nothing: {list}");
    let anonymous = client.get(format!("{https}/v1/remittances")).send().await?;
    ensure!(anonymous.status() == 401, "no key over https: {}", anonymous.status());

    // gRPC over TLS (ALPN h2) on the same port.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(https.clone())?
        .tls_config(tls)?
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .context("gRPC over TLS")?;
    let mut grpc = RemittancesClient::with_interceptor(channel, BearerAuth::new(&key)?);
    let listed = grpc.list_remittances(ListRemittancesRequest::default()).await.context("ListRemittances over TLS")?;
    ensure!(listed.into_inner().remittances.is_empty(), "gRPC lists nothing on a fresh node");

    // No plaintext on the TLS port.
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    // The TLS server drops a plaintext request (an error here); it never answers it.
    if let Ok(response) = plain.get(format!("http://127.0.0.1:{port}/openapi.json")).send().await {
        ensure!(!response.status().is_success(), "plaintext answered {}", response.status());
    }

    // Plaintext beyond loopback does not start, naming the key.
    let free = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let (code, stderr) = refused_start(&node.config, &[("REMIT__API__LISTEN", format!("0.0.0.0:{free}"))])?;
    ensure!(code.is_some_and(|c| c != 0), "plaintext on 0.0.0.0 started: {code:?} {stderr}");
    ensure!(stderr.contains("api.allow_plaintext") && stderr.contains("api.tls_cert"), "stderr: {stderr}");
    ensure!(std::net::TcpListener::bind(("0.0.0.0", free)).is_ok(), "the refused node bound its port");

    // An unreadable certificate names its key (a data directory of its own,
    // so the running node's lock is not what stops it).
    let env = [
        ("REMIT__API__TLS_CERT", scratch.join("missing.pem").display().to_string()),
        ("REMIT__API__TLS_KEY", scratch.join("api_key.pem").display().to_string()),
        ("REMIT__NODE__DATA_DIR", scratch.join("data").display().to_string()),
        ("REMIT__API__LISTEN", format!("127.0.0.1:{free}")),
    ];
    let (code, stderr) = refused_start(&node.config, &env)?;
    ensure!(code.is_some_and(|c| c != 0), "a missing certificate started: {code:?} {stderr}");
    ensure!(stderr.contains("api.tls_cert") && stderr.contains("missing.pem"), "stderr: {stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallet_api_serves_tls_and_refuses_plaintext_beyond_loopback() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = certificates(scratch.path()).expect("certificates");
    let options = NetworkOptions {
        validators: 1,
        node_env: vec![
            (0, "REMIT__API__TLS_CERT".into(), cert.display().to_string()),
            (0, "REMIT__API__TLS_KEY".into(), key.display().to_string()),
        ],
        ..NetworkOptions::default()
    };
    let mut net = Network::start(options).await.expect("the network starts");
    let result = scenario(&mut net, &ca, scratch.path()).await;
    net.finish(result);
}
