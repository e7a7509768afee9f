//! TLS and mutual TLS on every port (DESIGN.md section 10), with rustls on
//! glommio's sockets; no OpenSSL.
//!
//! What it does, and where:
//!
//! - [`files`]: reads the PEM files (`--tls-cert`, `--tls-key`,
//!   `--tls-client-ca`, `--peer-ca`) and builds rustls configurations from
//!   them: TLS 1.2 and 1.3 only, ALPN `h2` on the gRPC listener and
//!   `http/1.1` on the HTTP one. The gRPC listener *requires* a client
//!   certificate from `--tls-client-ca`; the HTTP listener verifies one
//!   when a client presents it, and lets a client without one in (curl
//!   with a bearer token must still work; tokens decide what it may do).
//! - [`identity`]: what a verified client certificate names (its DNS SAN,
//!   or its CN) as a [`net::Identity`](crate::net::Identity). Pure.
//! - [`stream`]: the one stream type the front doors and the gRPC client
//!   run on ([`Stream`]: plaintext, server TLS or client TLS), and the
//!   handshakes: [`accept`] in the connection's own task (never in the
//!   accept loop), bounded by [`limits::TLS_HANDSHAKE_TIMEOUT`], failures
//!   counted per listener ([`handshake_failures`]); [`connect`] for the
//!   client side.
//!
//! Reload ([`NodeTls::reload`], on SIGHUP): the files are read again and
//! the new configurations replace the old ones behind a lock that new
//! connections read once, at accept. Established connections keep the
//! configuration they started with (rustls holds it by `Arc`). A reload
//! that fails (a missing file, a key that does not match) changes nothing.
//!
//! The client side is process-wide ([`set_client_config`],
//! [`client_config`]): every outgoing gRPC connection
//! ([`crate::grpc::transport::Channel::connect`]: the follower pusher,
//! restore, the Raft transport, forwarded writes, `wormdb cluster`) dials
//! with it when one is set. The server name it checks is the IP address
//! dialled, so a node's certificate must carry its IP as a SAN.
//!
//! Costs: rustls decrypts into a buffer per record (16 KiB), and our
//! adapter adds no allocation of its own; the socket under a TLS stream is
//! read through a fixed [`limits::TLS_READ_BUFFER_BYTES`] buffer, sized once
//! per connection, because rustls asks for 4 KiB at a time and each of
//! those would otherwise be a `recv` system call.

pub mod files;
pub mod identity;
pub mod stream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

pub use files::{Error, TlsFiles};
/// The client configuration type, for tools that hold one.
pub use rustls::ClientConfig;
pub use stream::{accept, connect, Stream};

/// The two listeners of a node, as metrics label them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The HTTP API (`--http-addr`).
    Http,
    /// gRPC (`--grpc-addr`).
    Grpc,
}

impl Listener {
    /// Both, in the order metrics list them.
    pub const ALL: [Listener; 2] = [Listener::Http, Listener::Grpc];

    /// The `listener` label.
    pub fn label(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Grpc => "grpc",
        }
    }
}

/// Failed server handshakes since start, per listener (process-wide: one
/// node per process).
static HANDSHAKE_FAILURES: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Counts one failed handshake on `listener`.
pub(crate) fn count_handshake_failure(listener: Listener) {
    HANDSHAKE_FAILURES[listener as usize].fetch_add(1, Ordering::Relaxed);
}

/// Server handshakes that failed on `listener` since the process started
/// (`wormdb_tls_handshake_failures_total{listener}`): a bad or truncated
/// ClientHello, TLS 1.0/1.1, plaintext, a client certificate that does not
/// verify, no certificate where one is required, or a timeout.
pub fn handshake_failures(listener: Listener) -> u64 {
    HANDSHAKE_FAILURES[listener as usize].load(Ordering::Relaxed)
}

/// The server configurations new connections get, one per listener.
struct ServerConfigs {
    http: Arc<rustls::ServerConfig>,
    grpc: Arc<rustls::ServerConfig>,
}

/// A node's TLS material as its listeners and its outgoing connections use
/// it, reloadable as a whole. Shared by every core.
pub struct NodeTls {
    files: TlsFiles,
    current: RwLock<Option<ServerConfigs>>,
}

impl NodeTls {
    /// Reads `files` and builds every configuration they call for: the
    /// listeners' (when `--tls-cert` is given) and the process-wide client
    /// configuration (when `--peer-ca` is). Fails, naming the flag and the
    /// file, on anything that would fail a handshake later.
    pub fn load(files: TlsFiles) -> Result<NodeTls, Error> {
        let (servers, client) = build(&files)?;
        set_client_config(client);
        Ok(NodeTls { files, current: RwLock::new(servers) })
    }

    /// Reads the files again (the same paths) and swaps what new
    /// connections get. On an error nothing changes.
    pub fn reload(&self) -> Result<(), Error> {
        let (servers, client) = build(&self.files)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = servers;
        set_client_config(client);
        Ok(())
    }

    /// The configuration a new connection on `listener` handshakes with;
    /// `None`: the listener speaks plaintext.
    pub fn config(&self, listener: Listener) -> Option<Arc<rustls::ServerConfig>> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().map(|configs| match listener {
            Listener::Http => configs.http.clone(),
            Listener::Grpc => configs.grpc.clone(),
        })
    }

    /// Whether the listeners speak TLS.
    pub fn enabled(&self) -> bool {
        self.current.read().unwrap_or_else(PoisonError::into_inner).is_some()
    }
}

/// Every configuration `files` calls for.
fn build(files: &TlsFiles) -> Result<(Option<ServerConfigs>, Option<Arc<rustls::ClientConfig>>), Error> {
    let material = files::Material::read(files)?;
    let servers = match &material.identity {
        None => None,
        Some(identity) => Some(ServerConfigs {
            http: Arc::new(files::server_config(identity, material.client_ca.as_ref(), Listener::Http)?),
            grpc: Arc::new(files::server_config(identity, material.client_ca.as_ref(), Listener::Grpc)?),
        }),
    };
    let client = match &material.peer_ca {
        None => None,
        Some(roots) => Some(Arc::new(files::client_config(roots.clone(), material.identity.as_ref())?)),
    };
    Ok((servers, client))
}

/// The process-wide client configuration (see the module doc).
static CLIENT_CONFIG: RwLock<Option<Arc<rustls::ClientConfig>>> = RwLock::new(None);

/// Sets (or, with `None`, clears) the configuration every outgoing gRPC
/// connection dials with from now on.
pub fn set_client_config(config: Option<Arc<rustls::ClientConfig>>) {
    *CLIENT_CONFIG.write().unwrap_or_else(PoisonError::into_inner) = config;
}

/// The configuration outgoing gRPC connections dial with; `None`:
/// plaintext.
pub fn client_config() -> Option<Arc<rustls::ClientConfig>> {
    CLIENT_CONFIG.read().unwrap_or_else(PoisonError::into_inner).clone()
}

/// A client configuration for tools (`wormdb cluster`, `wormdb restore`,
/// the load generator): trust `ca` (`--tls-ca`), present `cert` and `key`
/// (`--tls-cert`, `--tls-key`) when given, and speak what `listener`
/// speaks (ALPN `h2` or `http/1.1`).
pub fn tool_client_config(
    ca: &std::path::Path,
    cert_and_key: Option<(&std::path::Path, &std::path::Path)>,
    listener: Listener,
) -> Result<Arc<ClientConfig>, Error> {
    let roots = files::read_roots("--tls-ca", ca)?;
    let identity = match cert_and_key {
        None => None,
        Some((cert, key)) => Some(files::CertifiedKey::read(cert, key)?),
    };
    let mut config = files::client_config(roots, identity.as_ref())?;
    config.alpn_protocols = vec![files::alpn(listener).to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::limits;
    use crate::net::Identity;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR")))
    }

    /// The fixture files of `name` (`NAME.pem`, `NAME.key`) copied into `dir`.
    fn pair_in(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::copy(fixture(&format!("{name}.pem")), &cert).unwrap();
        std::fs::copy(fixture(&format!("{name}.key")), &key).unwrap();
        (cert, key)
    }

    fn server_files(client_ca: bool) -> TlsFiles {
        TlsFiles {
            cert: Some(fixture("server.pem")),
            key: Some(fixture("server.key")),
            client_ca: client_ca.then(|| fixture("ca.pem")),
            // Never `peer_ca` here: it would set the process-wide client
            // configuration under other tests' in-process connections.
            peer_ca: None,
        }
    }

    #[test]
    fn each_listener_gets_its_alpn_protocol() {
        let tls = NodeTls::load(server_files(true)).unwrap();
        assert!(tls.enabled());
        assert_eq!(tls.config(Listener::Http).unwrap().alpn_protocols, [b"http/1.1".to_vec()]);
        assert_eq!(tls.config(Listener::Grpc).unwrap().alpn_protocols, [b"h2".to_vec()]);
        let plain = NodeTls::load(TlsFiles::default()).unwrap();
        assert!(!plain.enabled() && plain.config(Listener::Http).is_none());
    }

    #[test]
    fn bad_files_are_refused_naming_the_flag_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let huge = dir.path().join("huge.pem");
        std::fs::write(&huge, vec![b'A'; limits::TLS_PEM_FILE_BYTES_MAX as usize + 1]).unwrap();
        let missing = dir.path().join("missing.pem");
        for (files, expected) in [
            (TlsFiles { cert: Some(missing.clone()), ..server_files(false) }, "--tls-cert"),
            (TlsFiles { key: Some(missing.clone()), ..server_files(false) }, "--tls-key"),
            (TlsFiles { cert: Some(garbage.clone()), ..server_files(false) }, "no certificate in it"),
            (TlsFiles { key: Some(garbage.clone()), ..server_files(false) }, "no PEM private key"),
            (TlsFiles { key: Some(fixture("follower-7.key")), ..server_files(false) }, "does not match"),
            (TlsFiles { client_ca: Some(garbage.clone()), ..server_files(false) }, "--tls-client-ca"),
            (TlsFiles { client_ca: Some(huge.clone()), ..server_files(false) }, "TLS_PEM_FILE_BYTES_MAX"),
            (TlsFiles { key: None, ..server_files(false) }, "--tls-cert needs --tls-key"),
        ] {
            let error = NodeTls::load(files).err().expect("refused").to_string();
            assert!(error.contains(expected), "{error}");
        }
        let error = NodeTls::load(TlsFiles { cert: Some(missing.clone()), ..server_files(false) }).err().unwrap();
        assert!(error.to_string().contains(&missing.display().to_string()), "{error}");
        let error = tool_client_config(&garbage, None, Listener::Grpc).unwrap_err().to_string();
        assert!(error.starts_with("--tls-ca"), "{error}");
    }

    #[test]
    fn a_failed_reload_keeps_the_old_material_and_a_good_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair_in(dir.path(), "server");
        let tls = NodeTls::load(TlsFiles { cert: Some(cert.clone()), key: Some(key.clone()), ..TlsFiles::default() })
            .unwrap();
        let before = tls.config(Listener::Http).unwrap();
        std::fs::write(&key, "truncated").unwrap();
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.config(Listener::Http).unwrap()), "the old configuration stays");
        // A certificate and a key that do not belong together: refused too.
        std::fs::copy(fixture("node-3.key"), &key).unwrap();
        assert!(tls.reload().unwrap_err().to_string().contains("does not match"));
        assert!(Arc::ptr_eq(&before, &tls.config(Listener::Http).unwrap()));
        pair_in(dir.path(), "node-3");
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &tls.config(Listener::Http).unwrap()), "new connections get the new pair");
    }

    /// A handshake over loopback: the server side with `server`, a client
    /// trusting the fixtures' CA and presenting `client` (a fixture name).
    /// Returns what the server saw.
    fn handshake(
        server: Arc<rustls::ServerConfig>,
        listener: Listener,
        client: Option<&str>,
    ) -> Option<Option<Identity>> {
        let roots = files::read_roots("--tls-ca", &fixture("ca.pem")).unwrap();
        let identity = client
            .map(|name| files::CertifiedKey::read(&fixture(&format!("{name}.pem")), &fixture(&format!("{name}.key"))));
        let mut config = files::client_config(roots, identity.transpose().unwrap().as_ref()).unwrap();
        config.alpn_protocols = vec![files::alpn(listener).to_vec()];
        let config = Arc::new(config);
        crate::runtime::ensure_memlock(crate::runtime::MEMLOCK_BYTES_PER_EXECUTOR).unwrap();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let listener_socket = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener_socket.local_addr().unwrap();
                let client = glommio::spawn_local(async move {
                    let socket = glommio::net::TcpStream::connect(addr).await.unwrap();
                    let mut stream = connect(socket, config, addr.ip()).await.ok()?;
                    use futures_lite::AsyncWriteExt;
                    // TLS 1.3: a refused client certificate shows on the
                    // first read, after the client's handshake finished.
                    stream.write_all(b"ping").await.ok()?;
                    stream.flush().await.ok()?;
                    let mut answer = [0u8; 4];
                    use futures_lite::AsyncReadExt;
                    stream.read_exact(&mut answer).await.ok()?;
                    Some(answer)
                });
                let socket = listener_socket.accept().await.unwrap();
                let accepted = accept(socket, Some(server), listener).await;
                let seen = match accepted {
                    Some((mut stream, identity)) => {
                        assert!(stream.is_tls());
                        assert_eq!(stream.alpn_protocol(), Some(files::alpn(listener)));
                        use futures_lite::{AsyncReadExt, AsyncWriteExt};
                        let mut ping = [0u8; 4];
                        stream.read_exact(&mut ping).await.unwrap();
                        stream.write_all(b"pong").await.unwrap();
                        stream.flush().await.unwrap();
                        Some(identity)
                    }
                    None => None,
                };
                let answered = client.await;
                assert_eq!(answered.is_some(), seen.is_some(), "both sides agree on the outcome");
                seen
            })
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn mutual_tls_proves_who_the_client_is_and_refuses_the_rest() {
        let tls = NodeTls::load(server_files(true)).unwrap();
        let grpc = tls.config(Listener::Grpc).unwrap();
        let http = tls.config(Listener::Http).unwrap();
        assert_eq!(handshake(grpc.clone(), Listener::Grpc, Some("follower-7")), Some(Some(Identity::Follower(7))));
        assert_eq!(handshake(grpc.clone(), Listener::Grpc, Some("node-3")), Some(Some(Identity::Node(3))));
        let failures = handshake_failures(Listener::Grpc);
        assert_eq!(handshake(grpc.clone(), Listener::Grpc, None), None, "gRPC requires a certificate");
        assert_eq!(handshake(grpc, Listener::Grpc, Some("stranger")), None, "one from another CA is refused");
        assert!(handshake_failures(Listener::Grpc) >= failures + 2, "both counted");
        assert_eq!(handshake(http.clone(), Listener::Http, None), Some(None), "HTTP lets a client without one in");
        assert_eq!(handshake(http.clone(), Listener::Http, Some("follower-7")), Some(Some(Identity::Follower(7))));
        assert_eq!(handshake(http, Listener::Http, Some("stranger")), None, "but verifies one it is shown");
    }
}
