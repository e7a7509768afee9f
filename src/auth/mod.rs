//! Who may call the node, and how much (DESIGN.md section 10): bearer
//! tokens with scopes, follower and member identities from certificates,
//! a per-token ingest rate, and a cap on open connections per listener.
//!
//! The decisions are pure and tested without a socket: the token file and
//! the constant-time check of a secret ([`tokens`]), what every route and
//! method needs and the decision for one call ([`policy`]), the token
//! bucket ([`rate`]). The front doors (`http::server`, `services`) ask
//! before they read a request's body or first message, so a refused
//! caller costs the node a header parse and a hash, nothing large (the
//! header caps of hyper and h2 apply before that).
//!
//! [`Guard`] is the node-wide state every core shares: the tokens in
//! force (replaced whole on SIGHUP, [`Guard::reload_tokens`]), the refusal
//! counters and the connection limits. [`Local`] is one core's view: it
//! keeps the current token set and looks at a shared generation number
//! per call, so the hot path takes no lock and writes no shared cache
//! line. A reload is seen by the next call that starts on any core;
//! calls and streams already allowed keep going (a push stream opened
//! with a revoked token runs until it ends; its reconnect is refused).

pub mod connections;
pub mod policy;
pub mod rate;
pub mod tokens;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

pub use connections::{ConnectionLimit, ConnectionSlot};
pub use policy::{authorize, grpc_need, http_need, Grant, Need, Policy, Reason, Refusal, OTLP_LOGS_EXPORT};
pub use tokens::{Scope, TokenSet};

use crate::limits::{AUTH_SECRET_FILE_BYTES_MAX, AUTH_TOKEN_FILE_BYTES_MAX};
use crate::net::Identity;

/// How the node authenticates, from its configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `--auth-tokens FILE`.
    pub auth_tokens: Option<PathBuf>,
    /// `--tls-client-ca` was given: certificates name followers and members.
    pub mtls: bool,
    /// `--max-connections`, per listener.
    pub max_connections: usize,
}

/// The node-wide state of authentication, shared by every core.
#[derive(Debug)]
pub struct Guard {
    path: Option<PathBuf>,
    mtls: bool,
    tokens: RwLock<Option<Arc<TokenSet>>>,
    /// Bumped by every reload that took.
    generation: AtomicU64,
    failures: [AtomicU64; Reason::ALL.len()],
    /// The HTTP listener's connections.
    pub http_connections: Arc<ConnectionLimit>,
    /// The gRPC listener's connections.
    pub grpc_connections: Arc<ConnectionLimit>,
}

/// Reads and parses a token file; errors name the file.
pub fn load_tokens(path: &Path) -> Result<TokenSet, String> {
    let text = read_bounded(path, AUTH_TOKEN_FILE_BYTES_MAX, "AUTH_TOKEN_FILE_BYTES_MAX")
        .map_err(|error| format!("--auth-tokens {}: {error}", path.display()))?;
    TokenSet::parse(&text).map_err(|error| format!("--auth-tokens {}: {error}", path.display()))
}

fn read_bounded(path: &Path, bytes_max: u64, limit: &str) -> Result<String, String> {
    let metadata = std::fs::metadata(path).map_err(|error| error.to_string())?;
    if metadata.len() > bytes_max {
        return Err(format!("{} bytes, over {bytes_max} ({limit})", metadata.len()));
    }
    std::fs::read_to_string(path).map_err(|error| error.to_string())
}

/// Reads a secret from a file (`--peer-token-file`, `--token-file`): its
/// one line, surrounding whitespace dropped; visible ASCII only (it goes
/// into a header). Warns when others than the owner may read the file.
pub fn read_secret_file(flag: &str, path: &Path) -> Result<String, String> {
    let text = read_bounded(path, AUTH_SECRET_FILE_BYTES_MAX, "AUTH_SECRET_FILE_BYTES_MAX")
        .map_err(|error| format!("{flag} {}: {error}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() || !secret.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(format!(
            "{flag} {}: the file must hold one secret of visible ASCII (e.g. made by `openssl rand -hex 32`)",
            path.display()
        ));
    }
    {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::metadata(path).is_ok_and(|metadata| metadata.permissions().mode() & 0o077 != 0) {
            tracing::warn!("{flag} {}: others than its owner may read this secret (chmod 600 it)", path.display());
        }
    }
    Ok(secret.to_string())
}

impl Guard {
    /// The guard of a node configured with `settings`; reads the token
    /// file, whose errors stop the start.
    pub fn new(settings: &Settings) -> Result<Guard, String> {
        let tokens = match &settings.auth_tokens {
            Some(path) => {
                let tokens = load_tokens(path)?;
                if tokens.is_empty() {
                    tracing::warn!(
                        "--auth-tokens {}: no [[token]] tables: every call but /healthz is refused",
                        path.display()
                    );
                }
                tracing::info!(tokens = tokens.len(), "auth tokens loaded from {}", path.display());
                Some(Arc::new(tokens))
            }
            None => None,
        };
        Ok(Guard::build(settings, tokens))
    }

    fn build(settings: &Settings, tokens: Option<Arc<TokenSet>>) -> Guard {
        Guard {
            path: settings.auth_tokens.clone(),
            mtls: settings.mtls,
            tokens: RwLock::new(tokens),
            generation: AtomicU64::new(0),
            failures: Default::default(),
            http_connections: ConnectionLimit::new(settings.max_connections),
            grpc_connections: ConnectionLimit::new(settings.max_connections),
        }
    }

    /// A guard that allows everything (no tokens, no mTLS).
    pub fn open(max_connections: usize) -> Guard {
        Guard::build(&Settings { auth_tokens: None, mtls: false, max_connections }, None)
    }

    /// Reads the token file again (SIGHUP). The new tokens serve every
    /// call that starts from now on; a file that does not parse leaves the
    /// tokens in force as they are (and the error is logged and returned).
    /// Returns how many tokens are in force; `Ok(None)` without a file.
    pub fn reload_tokens(&self) -> Result<Option<usize>, String> {
        let Some(path) = &self.path else { return Ok(None) };
        let mut tokens = match load_tokens(path) {
            Ok(tokens) => tokens,
            Err(error) => {
                let kept = self.current().map_or(0, |tokens| tokens.len());
                tracing::error!("{error}; the {kept} tokens loaded before stay in force");
                return Err(error);
            }
        };
        let mut current = self.tokens.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(earlier) = current.as_ref() {
            tokens.keep_rates_of(earlier);
        }
        let count = tokens.len();
        *current = Some(Arc::new(tokens));
        self.generation.fetch_add(1, Ordering::AcqRel);
        drop(current);
        tracing::info!(tokens = count, "auth tokens reloaded from {}", path.display());
        Ok(Some(count))
    }

    fn current(&self) -> Option<Arc<TokenSet>> {
        self.tokens.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Neither tokens nor mTLS: every call is allowed.
    pub fn is_open(&self) -> bool {
        self.path.is_none() && !self.mtls
    }

    /// Counts a refusal.
    pub fn count(&self, reason: Reason) {
        let index = Reason::ALL.iter().position(|known| *known == reason).unwrap_or(0);
        self.failures[index].fetch_add(1, Ordering::Relaxed);
    }

    /// The counters, for `/metrics`.
    pub fn counters(&self) -> Counters {
        let failures = Reason::ALL
            .iter()
            .zip(&self.failures)
            .map(|(reason, count)| (reason.as_str(), count.load(Ordering::Relaxed)))
            .collect();
        let rate_limited = self
            .current()
            .map(|tokens| {
                tokens
                    .tokens()
                    .iter()
                    .filter_map(|token| token.rate.as_ref().map(|rate| (token.name.clone(), rate.limited())))
                    .collect()
            })
            .unwrap_or_default();
        let listener = |limit: &ConnectionLimit| (limit.open() as u64, limit.refused());
        Counters {
            failures,
            rate_limited,
            connections: [("http", listener(&self.http_connections)), ("grpc", listener(&self.grpc_connections))],
        }
    }
}

/// What `/metrics` shows of the guard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// `wormdb_auth_failures_total` by reason label.
    pub failures: Vec<(&'static str, u64)>,
    /// Requests refused (or pushed batches held back) over a token's rate,
    /// by token name; tokens with a rate only.
    pub rate_limited: Vec<(String, u64)>,
    /// Per listener: (connections open, connections refused at accept).
    pub connections: [(&'static str, (u64, u64)); 2],
}

/// One core's view of the [`Guard`].
#[derive(Debug)]
pub struct Local {
    guard: Arc<Guard>,
    seen: Cell<u64>,
    tokens: RefCell<Option<Arc<TokenSet>>>,
}

impl Local {
    /// A view of `guard` for the calling core.
    pub fn new(guard: Arc<Guard>) -> Local {
        let tokens = guard.current();
        let seen = guard.generation.load(Ordering::Acquire);
        Local { guard, seen: Cell::new(seen), tokens: RefCell::new(tokens) }
    }

    /// The shared guard.
    pub fn guard(&self) -> &Arc<Guard> {
        &self.guard
    }

    /// Decides a call that needs `need`, from its certificate's identity
    /// and its `Authorization` value; a refusal is counted and logged
    /// (never with the secret).
    pub fn authorize(
        &self,
        identity: Option<&Identity>,
        authorization: Option<&[u8]>,
        need: Need,
        call: &dyn std::fmt::Display,
        peer: Option<SocketAddr>,
    ) -> Result<Grant, Refusal> {
        if self.guard.is_open() {
            return Ok(Grant::open());
        }
        let generation = self.guard.generation.load(Ordering::Acquire);
        if generation != self.seen.get() {
            *self.tokens.borrow_mut() = self.guard.current();
            self.seen.set(generation);
        }
        let tokens = self.tokens.borrow();
        let policy = Policy { tokens: tokens.as_deref(), mtls: self.guard.mtls };
        authorize(policy, identity, authorization, need).inspect_err(|refusal| self.refused(refusal, call, peer))
    }

    /// Counts and logs a refusal decided elsewhere (a follower id checked
    /// once the call's first message named it).
    pub fn refused(&self, refusal: &Refusal, call: &dyn std::fmt::Display, peer: Option<SocketAddr>) {
        self.guard.count(refusal.reason);
        let peer = peer.map(|addr| addr.to_string()).unwrap_or_default();
        tracing::debug!(reason = refusal.reason.as_str(), %peer, "refused {call}: {}", refusal.message);
    }
}

/// Refuses a node that would listen beyond loopback with neither tokens
/// nor mTLS, unless `insecure` (DESIGN.md section 10): anyone who reaches
/// such a port could write, read everything and push as any follower.
/// `listeners` are (flag, address) pairs.
pub fn refuse_unsafe_default(
    listeners: &[(&str, SocketAddr)],
    tokens: bool,
    mtls: bool,
    insecure: bool,
) -> Result<(), String> {
    if tokens || mtls || insecure {
        return Ok(());
    }
    let exposed: Vec<String> = listeners
        .iter()
        .filter(|(_, addr)| !addr.ip().is_loopback())
        .map(|(flag, addr)| format!("{flag} {addr}"))
        .collect();
    if exposed.is_empty() {
        return Ok(());
    }
    Err(format!(
        "refusing to listen beyond loopback ({}) with neither --auth-tokens nor --tls-client-ca: anyone who can reach \
         the port could write, read every entry and push as any follower. Give --auth-tokens FILE (bearer tokens) \
         and/or --tls-client-ca FILE (mutual TLS), or --insecure to serve it open anyway",
        exposed.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_non_loopback_bind_needs_tokens_mtls_or_insecure() {
        let loopback = [("--http-addr", addr("127.0.0.1:8080")), ("--grpc-addr", addr("[::1]:50051"))];
        assert_eq!(refuse_unsafe_default(&loopback, false, false, false), Ok(()));
        let exposed = [("--http-addr", addr("127.0.0.1:8080")), ("--grpc-addr", addr("0.0.0.0:50051"))];
        let error = refuse_unsafe_default(&exposed, false, false, false).unwrap_err();
        for needle in ["--grpc-addr 0.0.0.0:50051", "--auth-tokens", "--tls-client-ca", "--insecure"] {
            assert!(error.contains(needle), "{needle}: {error}");
        }
        assert!(!error.contains("--http-addr"), "only the exposed listener is named: {error}");
        for (tokens, mtls, insecure) in [(true, false, false), (false, true, false), (false, false, true)] {
            assert_eq!(refuse_unsafe_default(&exposed, tokens, mtls, insecure), Ok(()));
        }
        let v6 = [("--http-addr", addr("[2001:db8::1]:80"))];
        assert!(refuse_unsafe_default(&v6, false, false, false).is_err());
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn token(name: &str, secret: &str, scopes: &str) -> String {
        format!(
            "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = {scopes}\n",
            tokens::to_hex(&tokens::digest(secret.as_bytes()))
        )
    }

    #[test]
    fn a_reload_takes_at_the_next_call_and_a_bad_file_keeps_the_old_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "tokens.toml", &token("old", "s-old", "[\"ingest\"]"));
        let guard = Arc::new(
            Guard::new(&Settings { auth_tokens: Some(path.clone()), mtls: false, max_connections: 10 }).unwrap(),
        );
        let local = Local::new(guard.clone());
        let ingest = Need::Scope(tokens::Scopes::of(Scope::Ingest));
        let call =
            |secret: &str| local.authorize(None, Some(format!("Bearer {secret}").as_bytes()), ingest, &"test", None);
        assert!(call("s-old").is_ok());
        assert_eq!(call("s-new").unwrap_err().reason, Reason::Unknown);

        write(dir.path(), "tokens.toml", &token("new", "s-new", "[\"ingest\"]"));
        assert_eq!(guard.reload_tokens(), Ok(Some(1)));
        assert_eq!(call("s-old").unwrap_err().reason, Reason::Unknown, "revoked at once");
        assert!(call("s-new").is_ok());

        write(dir.path(), "tokens.toml", "[[token]]\nname = \"broken\"\n");
        let error = guard.reload_tokens().unwrap_err();
        assert!(error.contains("tokens.toml") && error.contains("`sha256` is missing"), "{error}");
        assert!(call("s-new").is_ok(), "a bad file keeps the tokens in force");

        let counters = guard.counters();
        assert_eq!(counters.failures.iter().find(|(reason, _)| *reason == "unknown"), Some(&("unknown", 2)));
        assert_eq!(counters.failures.len(), Reason::ALL.len());
    }

    #[test]
    fn an_open_guard_allows_everything_and_counts_nothing() {
        let guard = Arc::new(Guard::open(5));
        let local = Local::new(guard.clone());
        assert!(local.authorize(None, None, Need::Member, &"test", None).is_ok());
        assert_eq!(guard.reload_tokens(), Ok(None));
        assert!(guard.counters().failures.iter().all(|(_, count)| *count == 0));
        assert_eq!(guard.http_connections.max(), 5);
    }

    #[test]
    fn secret_files_hold_one_line_of_visible_ascii() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "secret", "  abc123\n");
        assert_eq!(read_secret_file("--peer-token-file", &path), Ok("abc123".to_string()));
        for bad in ["", "\n", "two words\n", "caf\u{e9}\n"] {
            let path = write(dir.path(), "secret", bad);
            let error = read_secret_file("--peer-token-file", &path).unwrap_err();
            assert!(error.starts_with("--peer-token-file ") && error.contains("visible ASCII"), "{error}");
        }
        let error = read_secret_file("--token-file", &dir.path().join("absent")).unwrap_err();
        assert!(error.starts_with("--token-file "), "{error}");
        let big = write(dir.path(), "big", &"a".repeat(5000));
        assert!(read_secret_file("--token-file", &big).unwrap_err().contains("AUTH_SECRET_FILE_BYTES_MAX"));
    }
}
