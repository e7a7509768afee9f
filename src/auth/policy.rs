//! Who may make which call: what every HTTP route and gRPC method needs
//! ([`http_need`], [`grpc_need`]) and the decision for one call
//! ([`authorize`]), pure.
//!
//! | call | needs |
//! |---|---|
//! | `GET /healthz` | nothing |
//! | `POST /v1/entries`, `WormIngest.Write` | `ingest` |
//! | `GET /v1/entries`, `GET /v1/tail`, `WormIngest.Query` | `query` |
//! | `GET /metrics`, `GET /v1/stats`, `GET /v1/cluster`, `WormCluster.Status` | `metrics` (or `admin`) |
//! | `WormCluster.Join`, `.Remove`, `.TransferLeader` | `admin` |
//! | `WormReplication.*` (push, replay, watermark) | a follower: `ingest`, as a listed follower id |
//! | `WormRaft.*` (the members' own service) | a member: a `node-<id>` certificate; without mTLS, `admin` |
//! | anything else (answered 404 / `UNIMPLEMENTED`) | any valid credential |
//!
//! `/v1/stats` and `/v1/cluster` are `metrics`: they are numbers and names
//! about the node and the tier (lags, watermarks, members, leases), the
//! same as `/metrics` shows, and no entry. `admin` covers them too, so an
//! operator's token sees what it changes.
//!
//! Credentials, in order: a certificate the TLS layer verified (a
//! [`Identity`]), then a bearer token. `node-<id>` may do anything a
//! member does, without a token. `follower-<id>` may push, replay and read
//! watermarks as `id` only, without a token; anything else it asks needs a
//! token. A certificate with another name proves a client of the CA: with
//! tokens configured it still needs one; with mTLS alone (no token file)
//! it gets the client scopes `ingest`, `query` and `metrics` but nothing
//! of a follower, a member or an operator.
//!
//! With neither tokens nor mTLS configured every call is allowed (the
//! loopback default, DESIGN.md sections 7-8); the node refuses to start
//! so on a non-loopback address unless told `--insecure`
//! ([`super::refuse_unsafe_default`]).

use std::sync::Arc;

use super::rate::RateLimit;
use super::tokens::{Scope, Scopes, TokenSet};
use crate::net::Identity;

/// What a call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing (`/healthz`).
    Open,
    /// One of these scopes.
    Scope(Scopes),
    /// A follower's call: `ingest`, and the follower id it names must be
    /// one the credential may act as ([`Grant::check_follower`]).
    Follower,
    /// A tier member's call (the Raft service).
    Member,
    /// Any valid credential (a route or method that does not exist).
    Authenticated,
}

const METRICS_OR_ADMIN: Scopes = Scopes::of(Scope::Metrics).with(Scope::Admin);

/// What HTTP `method` on `path` needs.
pub fn http_need(method: &str, path: &str) -> Need {
    match (method, path) {
        ("GET", "/healthz" | "/ready") => Need::Open,
        ("POST", "/v1/entries" | "/v1/logs" | "/loki/api/v1/push" | "/v1/jsonline") => {
            Need::Scope(Scopes::of(Scope::Ingest))
        }
        // The Elasticsearch API, probes included: shippers present their
        // ingest credentials on every call.
        (_, path) if path == "/es" || path.starts_with("/es/") => Need::Scope(Scopes::of(Scope::Ingest)),
        ("GET", "/v1/entries" | "/v1/tail") => Need::Scope(Scopes::of(Scope::Query)),
        ("GET", "/metrics" | "/v1/stats" | "/v1/cluster") => Need::Scope(METRICS_OR_ADMIN),
        _ => Need::Authenticated,
    }
}

/// The prefix of every method of the members' own service.
pub const RAFT_SERVICE_PREFIX: &str = "/wormdb.v1.WormRaft/";

/// OTLP's logs export, served on the gRPC port (DESIGN.md section 11).
pub const OTLP_LOGS_EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// What the gRPC method `path` (`/package.Service/Method`) needs.
pub fn grpc_need(path: &str) -> Need {
    match path {
        "/wormdb.v1.WormIngest/Write" | OTLP_LOGS_EXPORT => Need::Scope(Scopes::of(Scope::Ingest)),
        "/wormdb.v1.WormIngest/Query" => Need::Scope(Scopes::of(Scope::Query)),
        "/wormdb.v1.WormReplication/PushEntries"
        | "/wormdb.v1.WormReplication/Replicate"
        | "/wormdb.v1.WormReplication/GetWatermark"
        | "/wormdb.v1.WormReplication/ReplayFrom" => Need::Follower,
        "/wormdb.v1.WormCluster/Status" => Need::Scope(METRICS_OR_ADMIN),
        "/wormdb.v1.WormCluster/Join" | "/wormdb.v1.WormCluster/Remove" | "/wormdb.v1.WormCluster/TransferLeader" => {
            Need::Scope(Scopes::of(Scope::Admin))
        }
        path if path.starts_with(RAFT_SERVICE_PREFIX) => Need::Member,
        _ => Need::Authenticated,
    }
}

/// How the node authenticates: its tokens (`None`: no `--auth-tokens`) and
/// whether it verifies client certificates (`--tls-client-ca`).
#[derive(Clone, Copy, Debug)]
pub struct Policy<'a> {
    /// The tokens in force.
    pub tokens: Option<&'a TokenSet>,
    /// mTLS is configured.
    pub mtls: bool,
}

impl Policy<'_> {
    /// Neither tokens nor mTLS: every call is allowed.
    pub fn is_open(&self) -> bool {
        self.tokens.is_none() && !self.mtls
    }
}

/// Why a call was refused, as counted in `wormdb_auth_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No credential at all.
    Missing,
    /// An `Authorization` header that is not `Bearer SECRET`.
    Malformed,
    /// A secret no token has.
    Unknown,
    /// A credential whose scopes do not cover the call.
    Scope,
    /// A follower call naming an id the credential may not act as.
    FollowerId,
    /// A Raft call from a non-member.
    Member,
}

impl Reason {
    /// Every reason, in metric order.
    pub const ALL: [Reason; 6] =
        [Reason::Missing, Reason::Malformed, Reason::Unknown, Reason::Scope, Reason::FollowerId, Reason::Member];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::Unknown => "unknown",
            Reason::Scope => "scope",
            Reason::FollowerId => "follower_id",
            Reason::Member => "member",
        }
    }

    /// Whether the caller is unknown (HTTP 401, `UNAUTHENTICATED`) rather
    /// than known and refused (403, `PERMISSION_DENIED`).
    pub fn is_unauthenticated(self) -> bool {
        matches!(self, Reason::Missing | Reason::Malformed | Reason::Unknown)
    }
}

/// A refused call: why, and a message for the caller (which never holds a
/// secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: Reason,
    /// What to tell the caller.
    pub message: String,
}

impl Refusal {
    fn new(reason: Reason, message: impl Into<String>) -> Refusal {
        Refusal { reason, message: message.into() }
    }
}

/// Which follower ids a call may act as.
#[derive(Clone, Debug, PartialEq, Eq)]
enum FollowerIds {
    /// Any (an open node, a member, a token without `follower_ids`).
    Any,
    /// Only the id of its `follower-<id>` certificate.
    Certificate(u32),
    /// Only those its token lists.
    Listed(Arc<[u32]>),
}

/// What an allowed call may do beyond its route: the follower ids it may
/// act as, and its token's ingest rate.
#[derive(Clone, Debug)]
pub struct Grant {
    follower_ids: FollowerIds,
    rate: Option<Arc<RateLimit>>,
    holder: String,
}

impl Grant {
    /// Everything, unlimited: an open node, or a member.
    pub fn open() -> Grant {
        Grant { follower_ids: FollowerIds::Any, rate: None, holder: String::new() }
    }

    /// Who the credential is, for messages: `token "name"`, `certificate
    /// follower-7`, or empty on an open node.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The token's ingest rate, if it has one.
    pub fn rate(&self) -> Option<&Arc<RateLimit>> {
        self.rate.as_ref()
    }

    /// Whether the call may act as follower `id` (push, replay, read its
    /// watermarks).
    pub fn check_follower(&self, id: u32) -> Result<(), Refusal> {
        let allowed = match &self.follower_ids {
            FollowerIds::Any => true,
            FollowerIds::Certificate(own) => *own == id,
            FollowerIds::Listed(ids) => ids.binary_search(&id).is_ok(),
        };
        if allowed {
            return Ok(());
        }
        let may = match &self.follower_ids {
            FollowerIds::Certificate(own) => format!("only as follower {own}"),
            FollowerIds::Listed(ids) => format!("only as follower {}", list(ids)),
            FollowerIds::Any => String::new(),
        };
        Err(Refusal::new(Reason::FollowerId, format!("{} may not act as follower {id}: {may}", self.holder)))
    }
}

fn list(ids: &[u32]) -> String {
    let shown: Vec<String> = ids.iter().take(8).map(u32::to_string).collect();
    let more = if ids.len() > 8 { ", ..." } else { "" };
    format!("{}{more}", shown.join(", "))
}

/// The secret of an `Authorization` header value, `Bearer SECRET` (the
/// scheme in any case, RFC 7235; spaces around the secret ignored).
/// `None` when the value has another form.
pub fn bearer_secret(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let secret = value[7..].trim_ascii();
    let token68 = |byte: &u8| byte.is_ascii_graphic();
    (!secret.is_empty() && secret.iter().all(token68)).then_some(secret)
}

/// Decides one call that needs `need`, from its certificate's `identity`
/// (if the TLS layer verified one) and its `Authorization` value.
pub fn authorize(
    policy: Policy<'_>,
    identity: Option<&Identity>,
    authorization: Option<&[u8]>,
    need: Need,
) -> Result<Grant, Refusal> {
    if policy.is_open() || need == Need::Open {
        return Ok(Grant::open());
    }
    match identity {
        Some(Identity::Node(id)) => return Ok(Grant { holder: format!("certificate node-{id}"), ..Grant::open() }),
        Some(Identity::Follower(id)) if need == Need::Follower => {
            return Ok(Grant {
                follower_ids: FollowerIds::Certificate(*id),
                rate: None,
                holder: format!("certificate follower-{id}"),
            })
        }
        _ => {}
    }
    // A bearer token, when the node has a token file (without one, a
    // token proves nothing and is ignored).
    let token = match (policy.tokens, authorization) {
        (Some(tokens), Some(value)) => {
            let secret = bearer_secret(value)
                .ok_or_else(|| Refusal::new(Reason::Malformed, "the authorization header is not `Bearer SECRET`"))?;
            Some(tokens.verify(secret).ok_or_else(|| Refusal::new(Reason::Unknown, "unknown token"))?)
        }
        _ => None,
    };
    let Some(token) = token else {
        return without_token(policy, identity, need);
    };
    let holder = format!("token {:?}", token.name);
    let granted = |follower_ids| Ok(Grant { follower_ids, rate: token.rate.clone(), holder: holder.clone() });
    match need {
        Need::Open | Need::Authenticated => granted(FollowerIds::Any),
        Need::Scope(scopes) if token.scopes.intersects(scopes) => granted(FollowerIds::Any),
        Need::Scope(scopes) => {
            let has: Vec<&str> = token.scopes.iter().map(Scope::as_str).collect();
            Err(Refusal::new(Reason::Scope, format!("{holder} has no {scopes} scope (it has {})", has.join(", "))))
        }
        Need::Follower if token.scopes.contains(Scope::Ingest) => match &token.follower_ids {
            Some(ids) => granted(FollowerIds::Listed(ids.clone())),
            None => granted(FollowerIds::Any),
        },
        Need::Follower => Err(Refusal::new(Reason::Scope, format!("{holder} has no ingest scope: it may not push"))),
        Need::Member if !policy.mtls && token.scopes.contains(Scope::Admin) => granted(FollowerIds::Any),
        Need::Member if policy.mtls => Err(Refusal::new(
            Reason::Member,
            "only tier members may speak the Raft service: present a node-<id> certificate",
        )),
        Need::Member => Err(Refusal::new(
            Reason::Member,
            format!("only tier members may speak the Raft service: {holder} has no admin scope"),
        )),
    }
}

/// The decision for a call that brought no token.
fn without_token(policy: Policy<'_>, identity: Option<&Identity>, need: Need) -> Result<Grant, Refusal> {
    const CLIENT: Scopes = Scopes::of(Scope::Ingest).with(Scope::Query).with(Scope::Metrics);
    match identity {
        Some(Identity::Follower(id)) => Err(Refusal::new(
            if need == Need::Member { Reason::Member } else { Reason::Scope },
            format!("certificate follower-{id} may only push, replay and read watermarks as follower {id}"),
        )),
        Some(Identity::Other(name)) if policy.tokens.is_none() => {
            let holder = format!("certificate {name:?}");
            match need {
                Need::Open | Need::Authenticated => Ok(Grant { holder, ..Grant::open() }),
                Need::Scope(scopes) if scopes.intersects(CLIENT) => Ok(Grant { holder, ..Grant::open() }),
                Need::Member => Err(Refusal::new(
                    Reason::Member,
                    format!("only tier members may speak the Raft service: {holder} is not node-<id>"),
                )),
                _ => Err(Refusal::new(
                    Reason::Scope,
                    format!("{holder} may ingest, query and read metrics only (follower calls need follower-<id>)"),
                )),
            }
        }
        _ => Err(Refusal::new(
            Reason::Missing,
            if policy.tokens.is_some() {
                "this call needs a token: send `authorization: Bearer SECRET`"
            } else {
                "this call needs a client certificate"
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tokens::{digest, to_hex};

    fn tokens() -> TokenSet {
        let table = |name: &str, scopes: &str, extra: &str| {
            format!(
                "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = {scopes}\n{extra}",
                to_hex(&digest(format!("secret-{name}").as_bytes()))
            )
        };
        let text = [
            table("shipper", "[\"ingest\"]", "rate_entries_per_s = 10\n"),
            table("f7", "[\"ingest\"]", "follower_ids = [7, 70]\n"),
            table("reader", "[\"query\"]", ""),
            table("prom", "[\"metrics\"]", ""),
            table("ops", "[\"admin\"]", ""),
        ]
        .concat();
        TokenSet::parse(&text).unwrap()
    }

    fn bearer(name: &str) -> Vec<u8> {
        format!("Bearer secret-{name}").into_bytes()
    }

    const INGEST: Need = Need::Scope(Scopes::of(Scope::Ingest));

    #[test]
    fn every_route_and_method_is_classified() {
        let scope = |scope| Need::Scope(Scopes::of(scope));
        for (method, path, need) in [
            ("GET", "/healthz", Need::Open),
            ("POST", "/v1/entries", scope(Scope::Ingest)),
            ("GET", "/v1/entries", scope(Scope::Query)),
            ("GET", "/v1/tail", scope(Scope::Query)),
            ("GET", "/v1/stats", Need::Scope(METRICS_OR_ADMIN)),
            ("GET", "/v1/cluster", Need::Scope(METRICS_OR_ADMIN)),
            ("GET", "/metrics", Need::Scope(METRICS_OR_ADMIN)),
            ("POST", "/healthz", Need::Authenticated),
            ("DELETE", "/v1/entries", Need::Authenticated),
            ("GET", "/nowhere", Need::Authenticated),
        ] {
            assert_eq!(http_need(method, path), need, "{method} {path}");
        }
        for (path, need) in [
            ("/wormdb.v1.WormIngest/Write", scope(Scope::Ingest)),
            ("/wormdb.v1.WormIngest/Query", scope(Scope::Query)),
            ("/wormdb.v1.WormReplication/PushEntries", Need::Follower),
            ("/wormdb.v1.WormReplication/Replicate", Need::Follower),
            ("/wormdb.v1.WormReplication/GetWatermark", Need::Follower),
            ("/wormdb.v1.WormReplication/ReplayFrom", Need::Follower),
            ("/wormdb.v1.WormCluster/Status", Need::Scope(METRICS_OR_ADMIN)),
            ("/wormdb.v1.WormCluster/Join", scope(Scope::Admin)),
            ("/wormdb.v1.WormCluster/Remove", scope(Scope::Admin)),
            ("/wormdb.v1.WormCluster/TransferLeader", scope(Scope::Admin)),
            ("/wormdb.v1.WormRaft/Send", Need::Member),
            ("/wormdb.v1.WormRaft/AnythingLater", Need::Member),
            ("/wormdb.v1.WormIngest/Nope", Need::Authenticated),
        ] {
            assert_eq!(grpc_need(path), need, "{path}");
        }
    }

    #[test]
    fn an_open_node_allows_everything_and_healthz_is_always_open() {
        let open = Policy { tokens: None, mtls: false };
        for need in [Need::Member, Need::Follower, INGEST, Need::Authenticated] {
            let grant = authorize(open, None, None, need).unwrap();
            assert_eq!(grant.check_follower(12345), Ok(()));
            assert!(grant.rate().is_none());
        }
        let set = tokens();
        for mtls in [false, true] {
            assert!(authorize(Policy { tokens: Some(&set), mtls }, None, None, Need::Open).is_ok());
            assert!(authorize(Policy { tokens: None, mtls }, None, Some(b"garbage"), Need::Open).is_ok());
        }
    }

    #[test]
    fn tokens_are_checked_for_presence_form_secret_and_scope() {
        let set = tokens();
        let policy = Policy { tokens: Some(&set), mtls: false };
        let reason =
            |authorization: Option<&[u8]>, need| authorize(policy, None, authorization, need).unwrap_err().reason;
        assert_eq!(reason(None, INGEST), Reason::Missing);
        assert_eq!(reason(Some(b"Basic c2VjcmV0"), INGEST), Reason::Malformed);
        assert_eq!(reason(Some(b"Bearer "), INGEST), Reason::Malformed);
        assert_eq!(reason(Some(b"Bearer wrong"), INGEST), Reason::Unknown);
        assert_eq!(reason(Some(b"Bearer wrong"), Need::Authenticated), Reason::Unknown);
        assert_eq!(reason(Some(&bearer("reader")), INGEST), Reason::Scope);
        assert_eq!(reason(Some(&bearer("shipper")), Need::Scope(Scopes::of(Scope::Query))), Reason::Scope);
        assert_eq!(reason(Some(&bearer("reader")), Need::Follower), Reason::Scope);
        assert_eq!(reason(Some(&bearer("shipper")), Need::Member), Reason::Member);
        for (name, need) in [
            ("shipper", INGEST),
            ("reader", Need::Scope(Scopes::of(Scope::Query))),
            ("prom", Need::Scope(METRICS_OR_ADMIN)),
            ("ops", Need::Scope(METRICS_OR_ADMIN)),
            ("ops", Need::Scope(Scopes::of(Scope::Admin))),
            ("ops", Need::Member),
            ("prom", Need::Authenticated),
        ] {
            assert!(authorize(policy, None, Some(&bearer(name)), need).is_ok(), "{name} {need:?}");
        }
        assert!(
            authorize(policy, None, Some(b"bEaReR   secret-reader  "), Need::Scope(Scopes::of(Scope::Query))).is_ok()
        );
        let refusal = authorize(policy, None, Some(&bearer("reader")), INGEST).unwrap_err();
        assert_eq!(refusal.message, "token \"reader\" has no ingest scope (it has query)");
        assert!(reason(Some(b"Bearer secret-nobody"), INGEST).is_unauthenticated());
        assert!(!Reason::Scope.is_unauthenticated());
    }

    #[test]
    fn a_follower_token_acts_only_as_its_ids_and_carries_its_rate() {
        let set = tokens();
        let policy = Policy { tokens: Some(&set), mtls: false };
        let grant = authorize(policy, None, Some(&bearer("f7")), Need::Follower).unwrap();
        assert_eq!(grant.check_follower(7), Ok(()));
        assert_eq!(grant.check_follower(70), Ok(()));
        let refusal = grant.check_follower(8).unwrap_err();
        assert_eq!(refusal.reason, Reason::FollowerId);
        assert_eq!(refusal.message, "token \"f7\" may not act as follower 8: only as follower 7, 70");
        let any = authorize(policy, None, Some(&bearer("shipper")), Need::Follower).unwrap();
        assert_eq!(any.check_follower(8), Ok(()), "no follower_ids: any id");
        assert_eq!(any.rate().unwrap().entries_per_s(), 10);
    }

    #[test]
    fn certificates_name_members_and_followers() {
        let set = tokens();
        for policy in [Policy { tokens: Some(&set), mtls: true }, Policy { tokens: None, mtls: true }] {
            let node = Identity::Node(2);
            for need in [Need::Member, Need::Follower, INGEST, Need::Scope(Scopes::of(Scope::Admin))] {
                let grant = authorize(policy, Some(&node), None, need).unwrap();
                assert_eq!(grant.check_follower(99), Ok(()), "a member does anything a member does");
            }
            let follower = Identity::Follower(7);
            let grant = authorize(policy, Some(&follower), None, Need::Follower).unwrap();
            assert_eq!(grant.check_follower(7), Ok(()));
            assert_eq!(grant.check_follower(8).unwrap_err().reason, Reason::FollowerId);
            assert_eq!(authorize(policy, Some(&follower), None, INGEST).unwrap_err().reason, Reason::Scope);
            assert_eq!(authorize(policy, Some(&follower), None, Need::Member).unwrap_err().reason, Reason::Member);
            assert_eq!(authorize(policy, None, None, Need::Member).unwrap_err().reason, Reason::Missing);
        }
        // With mTLS, an admin token is no member.
        let policy = Policy { tokens: Some(&set), mtls: true };
        assert_eq!(authorize(policy, None, Some(&bearer("ops")), Need::Member).unwrap_err().reason, Reason::Member);
        // A follower certificate may use a token for what else it asks.
        let follower = Identity::Follower(7);
        assert!(
            authorize(policy, Some(&follower), Some(&bearer("reader")), Need::Scope(Scopes::of(Scope::Query))).is_ok()
        );
    }

    #[test]
    fn another_certificate_is_a_client_under_mtls_alone_and_needs_a_token_otherwise() {
        let client = Identity::Other("billing".into());
        let mtls_only = Policy { tokens: None, mtls: true };
        for need in [INGEST, Need::Scope(Scopes::of(Scope::Query)), Need::Scope(METRICS_OR_ADMIN), Need::Authenticated]
        {
            assert!(authorize(mtls_only, Some(&client), None, need).is_ok(), "{need:?}");
        }
        assert_eq!(
            authorize(mtls_only, Some(&client), None, Need::Scope(Scopes::of(Scope::Admin))).unwrap_err().reason,
            Reason::Scope
        );
        assert_eq!(authorize(mtls_only, Some(&client), None, Need::Follower).unwrap_err().reason, Reason::Scope);
        assert_eq!(authorize(mtls_only, Some(&client), None, Need::Member).unwrap_err().reason, Reason::Member);
        assert_eq!(authorize(mtls_only, None, None, INGEST).unwrap_err().reason, Reason::Missing);
        let set = tokens();
        let both = Policy { tokens: Some(&set), mtls: true };
        assert_eq!(authorize(both, Some(&client), None, INGEST).unwrap_err().reason, Reason::Missing);
        assert!(authorize(both, Some(&client), Some(&bearer("shipper")), INGEST).is_ok());
    }

    #[test]
    fn bearer_values_parse_strictly() {
        assert_eq!(bearer_secret(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_secret(b"bearer  abc "), Some(&b"abc"[..]));
        for bad in [&b"Bearer"[..], b"Bearer ", b"Bearer a b", b"Basic abc", b"Bearerabc", b"", b"Bearer \xff"] {
            assert_eq!(bearer_secret(bad), None, "{bad:?}");
        }
    }
}
