//! The wallet API's listener: plaintext TCP, or TLS with rustls (the
//! certificate and key of `[api] tls_cert`, `tls_key`), offering ALPN `h2`
//! (gRPC, REST over HTTP/2) and `http/1.1` (REST) on the one port.
//!
//! Handshakes run in tasks of their own, bounded in number and time, so a
//! client that opens a connection and sends nothing holds up no one else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

/// Longest a TLS handshake may take before the connection is dropped.
pub const TLS_HANDSHAKE_MS_MAX: u64 = 10_000;
/// Most TLS handshakes in progress at once; further connections wait in the
/// kernel's accept queue.
pub const TLS_HANDSHAKES_MAX: usize = 256;
/// Handshaken connections waiting for the server to take them.
const TLS_ACCEPTED_QUEUE_MAX: usize = 64;

/// Why the wallet API's TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum WalletTlsError {
    /// A file could not be read or holds no usable PEM.
    #[error("config key `{key}` ({path}): {reason}")]
    File {
        /// `api.tls_cert` or `api.tls_key`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate and key do not make a rustls configuration.
    #[error("config keys `api.tls_cert`, `api.tls_key`: {0}")]
    Config(String),
}

/// A rustls server configuration for the wallet API, ALPN h2 and http/1.1.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, WalletTlsError> {
    let file_error =
        |key: &'static str, path: &Path, reason: String| WalletTlsError::File { key, path: path.to_owned(), reason };
    let cert_pem = std::fs::read(cert).map_err(|e| file_error("api.tls_cert", cert, e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| file_error("api.tls_cert", cert, format!("not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(file_error("api.tls_cert", cert, "holds no certificate".into()));
    }
    let key_pem = std::fs::read(key).map_err(|e| file_error("api.tls_key", key, e.to_string()))?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| file_error("api.tls_key", key, format!("no PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WalletTlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| WalletTlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener handing axum connections whose TLS handshake completed.
#[derive(Debug)]
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Serves TLS on `listener`: handshakes run in a task of their own.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, accepted) = mpsc::channel(TLS_ACCEPTED_QUEUE_MAX);
        tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), sender));
        Ok(Self { accepted, local })
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    sender: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(TLS_HANDSHAKES_MAX));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: wait, as axum's own listener does.
                warn!(%error, "wallet API accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if sender.is_closed() {
            return;
        }
        let (acceptor, sender) = (acceptor.clone(), sender.clone());
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(Duration::from_millis(TLS_HANDSHAKE_MS_MAX), acceptor.accept(stream));
            match handshake.await {
                Ok(Ok(tls)) => {
                    drop(permit);
                    let _ = sender.send((tls, peer)).await;
                }
                Ok(Err(error)) => debug!(%peer, %error, "wallet API TLS handshake failed"),
                Err(_) => debug!(%peer, "wallet API TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept loop ended (the runtime is shutting down): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
