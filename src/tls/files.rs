//! The TLS files a node or a tool is given, read and turned into rustls
//! configurations. Everything that can be checked without a peer is
//! checked here, at start and at each reload, so that a mistake is an
//! error naming the flag and the file rather than a failed handshake
//! later: a missing or unreadable file, a file with no PEM certificate or
//! key in it, a key that does not match the certificate, a CA file that
//! rustls cannot use as a trust anchor.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use super::Listener;
use crate::limits::TLS_PEM_FILE_BYTES_MAX;

/// What went wrong with a TLS file; each names the flag and the path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{flag} {}: {source}", path.display())]
    Read {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than any PEM file of certificates or a key.
    #[error("{flag} {}: larger than {TLS_PEM_FILE_BYTES_MAX} bytes (TLS_PEM_FILE_BYTES_MAX): not a PEM file of certificates or a key", path.display())]
    TooLarge {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The file is not what the flag asks for.
    #[error("{flag} {}: {what}", path.display())]
    Content {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The flags do not go together ([`TlsFiles::check`]).
    #[error("{0}")]
    Flags(String),
    /// rustls refused a configuration built from the files.
    #[error("{flag}: {what}")]
    Refused {
        /// The flag whose file it is.
        flag: &'static str,
        /// Why.
        what: String,
    },
    /// The key and the certificate do not belong together, or rustls
    /// refused them for another reason.
    #[error("--tls-cert {} and --tls-key {}: {what}", cert.display(), key.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why they cannot be used.
        what: String,
    },
}

/// The TLS files of `wormdb serve` (DESIGN.md section 10).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// `--tls-cert`: the node's certificate chain (PEM, leaf first). The
    /// listeners present it, and outgoing connections present it as their
    /// client certificate.
    pub cert: Option<PathBuf>,
    /// `--tls-key`: its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// `--tls-client-ca`: the CA client certificates must come from
    /// (required on gRPC, verified when presented on HTTP).
    pub client_ca: Option<PathBuf>,
    /// `--peer-ca`: the CA outgoing connections verify servers against;
    /// given, every outgoing gRPC connection dials TLS.
    pub peer_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Checks which flags go together (files are read by
    /// [`super::NodeTls::load`]).
    pub fn check(&self) -> Result<(), String> {
        match (&self.cert, &self.key) {
            (Some(_), None) => return Err("--tls-cert needs --tls-key (the certificate's private key)".into()),
            (None, Some(_)) => return Err("--tls-key needs --tls-cert (the certificate it belongs to)".into()),
            _ => {}
        }
        if self.client_ca.is_some() && self.cert.is_none() {
            return Err("--tls-client-ca needs --tls-cert and --tls-key: client certificates are asked for only \
                        over TLS"
                .into());
        }
        Ok(())
    }

    /// Whether any TLS flag is given.
    pub fn any(&self) -> bool {
        self.cert.is_some() || self.key.is_some() || self.client_ca.is_some() || self.peer_ca.is_some()
    }
}

/// Reads a whole PEM file, bounded.
fn read_pem(flag: &'static str, path: &Path) -> Result<Vec<u8>, Error> {
    let read = |source| Error::Read { flag, path: path.to_path_buf(), source };
    let length = std::fs::metadata(path).map_err(read)?.len();
    if length > TLS_PEM_FILE_BYTES_MAX {
        return Err(Error::TooLarge { flag, path: path.to_path_buf() });
    }
    std::fs::read(path).map_err(read)
}

fn content(flag: &'static str, path: &Path, what: impl Into<String>) -> Error {
    Error::Content { flag, path: path.to_path_buf(), what: what.into() }
}

/// Every certificate in a PEM file, in order; at least one.
pub fn read_certificates(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read_pem(flag, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| content(flag, path, format!("not a PEM file of certificates: {error}")))?;
    if certificates.is_empty() {
        return Err(content(flag, path, "no certificate in it (expected -----BEGIN CERTIFICATE-----)"));
    }
    Ok(certificates)
}

/// The CA certificates of a PEM file as trust anchors.
pub fn read_roots(flag: &'static str, path: &Path) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(flag, path)? {
        roots
            .add(certificate)
            .map_err(|error| content(flag, path, format!("a certificate cannot be a trust anchor: {error}")))?;
    }
    Ok(Arc::new(roots))
}

/// A certificate chain and its private key, checked to belong together.
#[derive(Debug)]
pub struct CertifiedKey {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    paths: (PathBuf, PathBuf),
}

impl CertifiedKey {
    /// Reads `cert` (`--tls-cert`) and `key` (`--tls-key`).
    pub fn read(cert: &Path, key: &Path) -> Result<CertifiedKey, Error> {
        let chain = read_certificates("--tls-cert", cert)?;
        let pem = read_pem("--tls-key", key)?;
        let private = PrivateKeyDer::from_pem_slice(&pem).map_err(|error| {
            content("--tls-key", key, format!("no PEM private key in it (PKCS#8, PKCS#1 or SEC1): {error}"))
        })?;
        let pair = CertifiedKey { chain, key: private, paths: (cert.to_path_buf(), key.to_path_buf()) };
        // Building a server configuration checks that the key matches the
        // leaf's public key (rustls: InconsistentKeys).
        pair.server_builder(None, Listener::Http)?;
        Ok(pair)
    }

    fn pair_error(&self, error: rustls::Error) -> Error {
        let what = match error {
            rustls::Error::InconsistentKeys(_) => "the key does not match the certificate".to_string(),
            error => error.to_string(),
        };
        Error::Pair { cert: self.paths.0.clone(), key: self.paths.1.clone(), what }
    }

    fn server_builder(
        &self,
        client_ca: Option<&Arc<RootCertStore>>,
        listener: Listener,
    ) -> Result<rustls::ServerConfig, Error> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|error| self.pair_error(error))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(roots) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
                // HTTP lets a client without a certificate in (a bearer
                // token speaks for it); gRPC requires one.
                let verifier = match listener {
                    Listener::Http => verifier.allow_unauthenticated(),
                    Listener::Grpc => verifier,
                };
                let verifier = verifier
                    .build()
                    .map_err(|error| Error::Refused { flag: "--tls-client-ca", what: error.to_string() })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        builder.with_single_cert(self.chain.clone(), self.key.clone_key()).map_err(|error| self.pair_error(error))
    }
}

/// TLS 1.3 and 1.2; never 1.1 or 1.0 (rustls has neither).
const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Everything [`TlsFiles`] names, read and checked.
pub struct Material {
    /// The node's certificate and key.
    pub identity: Option<CertifiedKey>,
    /// The CA of client certificates.
    pub client_ca: Option<Arc<RootCertStore>>,
    /// The CA servers are verified against.
    pub peer_ca: Option<Arc<RootCertStore>>,
}

impl Material {
    /// Reads every file `files` names (flags already [`TlsFiles::check`]ed).
    pub fn read(files: &TlsFiles) -> Result<Material, Error> {
        files.check().map_err(Error::Flags)?;
        let identity = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => Some(CertifiedKey::read(cert, key)?),
            _ => None,
        };
        let client_ca = files.client_ca.as_deref().map(|path| read_roots("--tls-client-ca", path)).transpose()?;
        let peer_ca = files.peer_ca.as_deref().map(|path| read_roots("--peer-ca", path)).transpose()?;
        Ok(Material { identity, client_ca, peer_ca })
    }
}

/// The server configuration of `listener`: TLS 1.2/1.3, its ALPN protocol,
/// and client certificates from `client_ca` (required on gRPC, optional on
/// HTTP).
pub fn server_config(
    identity: &CertifiedKey,
    client_ca: Option<&Arc<RootCertStore>>,
    listener: Listener,
) -> Result<rustls::ServerConfig, Error> {
    let mut config = identity.server_builder(client_ca, listener)?;
    config.alpn_protocols = vec![alpn(listener).to_vec()];
    Ok(config)
}

/// The ALPN protocol a listener speaks.
pub fn alpn(listener: Listener) -> &'static [u8] {
    match listener {
        Listener::Http => b"http/1.1",
        Listener::Grpc => b"h2",
    }
}

/// The configuration of outgoing gRPC connections: servers verified
/// against `roots`, `identity` presented as the client certificate, ALPN
/// `h2`.
pub fn client_config(
    roots: Arc<RootCertStore>,
    identity: Option<&CertifiedKey>,
) -> Result<rustls::ClientConfig, Error> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|error| Error::Refused { flag: "--peer-ca", what: error.to_string() })?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => builder
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|error| identity.pair_error(error))?,
    };
    config.alpn_protocols = vec![alpn(Listener::Grpc).to_vec()];
    Ok(config)
}
