//! Mutual TLS between nodes: certificates generated with the network's keys,
//! loaded for tonic servers and clients. A peer whose certificate was not
//! issued by the network's CA is refused during the handshake.
//!
//! Each participant gets a certificate of its own from the network CA. Its
//! subject alternative names: the URI `remit:participant:<id>`
//! ([`PARTICIPANT_URI_PREFIX`]), which the peer
//! service reads as the caller's identity; the DNS names [`NODE_TLS_NAME`]
//! (which every client checks), `localhost` and the participant id; and the
//! IP address 127.0.0.1 (loopback devnets).

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Prefix of the URI SAN that names a certificate's participant.
pub const PARTICIPANT_URI_PREFIX: &str = "remit:participant:";

/// Name every node certificate carries and every client checks.
pub const NODE_TLS_NAME: &str = "remit-node";
/// CA certificate file inside a keys directory.
pub const CA_CERT_FILE: &str = "tls_ca.pem";
/// CA private key file inside a keys directory (needed only to issue more node certificates).
pub const CA_KEY_FILE: &str = "tls_ca.key";
/// A node's certificate inside its participant directory.
pub const NODE_CERT_FILE: &str = "tls_node.pem";
/// A node's private key inside its participant directory.
pub const NODE_KEY_FILE: &str = "tls_node.key";

/// A TLS setup problem.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    Generate(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io { path: path.to_owned(), source })
}

/// PEM material of one node: CA, certificate, key.
#[derive(Clone)]
pub struct NodeTls {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeTls(key redacted)")
    }
}

impl NodeTls {
    /// Loads the PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self { ca: read(ca)?, cert: read(cert)?, key: read(key)? })
    }

    /// Server side: present our certificate, require a client certificate from the CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
    }

    /// Client side: verify the server against the CA, present our certificate.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.cert, &self.key))
            .domain_name(NODE_TLS_NAME)
    }
}

/// Generates a network CA and one certificate per participant directory in
/// `keys_dir` (for `remit keygen --tls` and devnet), each naming its
/// participant (`remit:participant:<id>`, see the module doc). Keys are
/// mode 0600.
pub fn generate_tls(keys_dir: &Path, participants: &[String]) -> Result<(), TlsError> {
    let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let ca_key = rcgen::KeyPair::generate().map_err(generate)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "remit network CA");
    let ca_cert = ca_params.self_signed(&ca_key).map_err(generate)?;
    write_public(&keys_dir.join(CA_CERT_FILE), ca_cert.pem().as_bytes())?;
    write_secret(&keys_dir.join(CA_KEY_FILE), ca_key.serialize_pem().as_bytes())?;
    for participant in participants {
        let key = rcgen::KeyPair::generate().map_err(generate)?;
        let names = vec![NODE_TLS_NAME.to_owned(), "localhost".to_owned(), participant.clone()];
        let mut params = rcgen::CertificateParams::new(names).map_err(generate)?;
        params.subject_alt_names.push(rcgen::SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        let uri = format!("{PARTICIPANT_URI_PREFIX}{participant}");
        params.subject_alt_names.push(rcgen::SanType::URI(uri.as_str().try_into().map_err(generate)?));
        params.distinguished_name.push(rcgen::DnType::CommonName, participant.as_str());
        let cert = params.signed_by(&key, &ca_cert, &ca_key).map_err(generate)?;
        let dir = keys_dir.join(participant);
        std::fs::create_dir_all(&dir).map_err(|source| TlsError::Io { path: dir.clone(), source })?;
        write_public(&dir.join(NODE_CERT_FILE), cert.pem().as_bytes())?;
        write_secret(&dir.join(NODE_KEY_FILE), key.serialize_pem().as_bytes())?;
    }
    Ok(())
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    std::fs::write(path, bytes).map_err(|source| TlsError::Io { path: path.to_owned(), source })
}

fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    remit_settlement::network::write_secret_file(path, bytes).map_err(|e| match e {
        remit_settlement::network::NetworkError::Io { path, source } => TlsError::Io { path, source },
        other => TlsError::Generate(other.to_string()),
    })
}
