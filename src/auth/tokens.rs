//! The token file of `--auth-tokens FILE` (DESIGN.md section 10): TOML,
//! one `[[token]]` table per token.
//!
//! ```toml
//! [[token]]
//! name = "shipper-eu"                  # for logs, errors and metrics
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! scopes = ["ingest"]                  # ingest, query, admin, metrics
//! follower_ids = [5, 6]                # optional: the follower ids it may push as
//! rate_entries_per_s = 50000           # optional: its ingest rate over the node
//! ```
//!
//! The file holds the sha256 of each secret, never the secret: a leaked
//! file (a backup, a config repository) grants nothing. A presented secret
//! is hashed, and the digest compared with every token's in constant time
//! ([`TokenSet::verify`]), so neither the time a call takes nor which token
//! it is compared with first says how much of a guess was right.
//!
//! Parsing is pure ([`TokenSet::parse`]) and every refusal names the table
//! (its position and name) and the field.

use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::rate::RateLimit;
use crate::limits::{
    AUTH_FOLLOWER_IDS_PER_TOKEN_MAX, AUTH_RATE_ENTRIES_PER_S_MAX, AUTH_TOKENS_MAX, AUTH_TOKEN_NAME_BYTES_MAX,
};

/// What a token may do. Each scope covers the routes and methods listed in
/// [`super::policy`]; `admin` also covers what `metrics` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Write entries: `POST /v1/entries`, `WormIngest.Write`, and (as the
    /// follower ids the token lists) pushes, replays and watermarks.
    Ingest,
    /// Read entries: `GET /v1/entries`, `GET /v1/tail`, `WormIngest.Query`.
    Query,
    /// Run the tier: membership changes, leadership transfers; the Raft
    /// service too when no mTLS is configured.
    Admin,
    /// Look at the node: `/metrics`, `/v1/stats`, `/v1/cluster`,
    /// `WormCluster.Status`.
    Metrics,
}

impl Scope {
    /// Every scope, in the order the docs list them.
    pub const ALL: [Scope; 4] = [Scope::Ingest, Scope::Query, Scope::Admin, Scope::Metrics];

    /// The name used in the token file.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Query => "query",
            Scope::Admin => "admin",
            Scope::Metrics => "metrics",
        }
    }

    fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == name)
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// No scope.
    pub const NONE: Scopes = Scopes(0);

    /// Exactly `scope`.
    pub const fn of(scope: Scope) -> Scopes {
        Scopes(scope.bit())
    }

    /// `self` and `scope`.
    pub const fn with(self, scope: Scope) -> Scopes {
        Scopes(self.0 | scope.bit())
    }

    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether the two sets share a scope.
    pub fn intersects(self, other: Scopes) -> bool {
        self.0 & other.0 != 0
    }

    /// The scopes in the set, in [`Scope::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |scope| self.contains(*scope))
    }
}

impl std::fmt::Debug for Scopes {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.debug_set().entries(self.iter().map(Scope::as_str)).finish()
    }
}

impl std::fmt::Display for Scopes {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::as_str).collect();
        out.write_str(&names.join(" or "))
    }
}

/// One token of the file. Its digest is kept private and never printed.
pub struct Token {
    /// Its `name`.
    pub name: String,
    digest: [u8; 32],
    /// Its `scopes`.
    pub scopes: Scopes,
    /// Its `follower_ids`: the ids it may push, replay and read watermarks
    /// as (`None`: any).
    pub follower_ids: Option<Arc<[u32]>>,
    /// Its ingest rate, shared by every core (`None`: unlimited).
    pub rate: Option<Arc<RateLimit>>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.debug_struct("Token")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("follower_ids", &self.follower_ids)
            .field("rate_entries_per_s", &self.rate.as_ref().map(|rate| rate.entries_per_s()))
            .finish_non_exhaustive()
    }
}

/// The tokens of one version of the file.
#[derive(Debug, Default)]
pub struct TokenSet {
    tokens: Vec<Token>,
}

/// Why a token file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not TOML, or not the shape of a token file (toml's message names the
    /// key and the line).
    #[error("{0}")]
    Syntax(String),
    /// A table's field is missing or wrong.
    #[error("[[token]] {position} ({name}): `{field}` {problem}")]
    Field {
        /// The table's position in the file, from 1.
        position: usize,
        /// Its name, quoted, or `no name`.
        name: String,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// More tables than [`AUTH_TOKENS_MAX`].
    #[error("{0} [[token]] tables, at most {AUTH_TOKENS_MAX} (AUTH_TOKENS_MAX)")]
    TooMany(usize),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    name: Option<String>,
    sha256: Option<String>,
    scopes: Option<Vec<String>>,
    follower_ids: Option<Vec<i64>>,
    rate_entries_per_s: Option<i64>,
}

/// The sha256 of `secret`.
pub fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// `bytes` as 64 lowercase hex digits (what `sha256sum` prints).
pub fn to_hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn from_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (index, pair) in text.chunks(2).enumerate() {
        let digit = |byte: u8| (byte as char).to_digit(16);
        out[index] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

impl TokenSet {
    /// Parses and checks a token file's text.
    pub fn parse(text: &str) -> Result<TokenSet, Error> {
        let file: File = toml::from_str(text).map_err(|error| Error::Syntax(error.to_string().trim().to_string()))?;
        if file.token.len() > AUTH_TOKENS_MAX {
            return Err(Error::TooMany(file.token.len()));
        }
        let mut tokens: Vec<Token> = Vec::with_capacity(file.token.len());
        for (index, table) in file.token.into_iter().enumerate() {
            let token = check_table(index + 1, table)?;
            if let Some(earlier) = tokens.iter().position(|other| other.name == token.name) {
                return Err(field_error(
                    index + 1,
                    Some(&token.name),
                    "name",
                    format!("repeats [[token]] {}", earlier + 1),
                ));
            }
            if let Some(earlier) = tokens.iter().position(|other| other.digest == token.digest) {
                return Err(field_error(
                    index + 1,
                    Some(&token.name),
                    "sha256",
                    format!(
                        "is also the digest of [[token]] {} ({:?}): one secret, two tokens",
                        earlier + 1,
                        tokens[earlier].name
                    ),
                ));
            }
            tokens.push(token);
        }
        Ok(TokenSet { tokens })
    }

    /// The token whose secret is `secret`, if any. Every token's digest is
    /// compared with the secret's, in constant time and with no early exit.
    pub fn verify(&self, secret: &[u8]) -> Option<&Token> {
        let presented = digest(secret);
        // Position + 1 of the matching token; 0 for none.
        let mut found = 0u32;
        for (index, token) in self.tokens.iter().enumerate() {
            let equal = token.digest.ct_eq(&presented);
            found = u32::conditional_select(&found, &(index as u32 + 1), equal);
        }
        found.checked_sub(1).map(|index| &self.tokens[index as usize])
    }

    /// The tokens, in file order.
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// No tokens: every call but `/healthz` is refused.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Takes over the rate buckets of `earlier` (the set this one replaces
    /// on a reload) for tokens of the same name and rate, so that a reload
    /// neither refills nor empties a client's bucket.
    pub fn keep_rates_of(&mut self, earlier: &TokenSet) {
        for token in &mut self.tokens {
            let Some(rate) = &token.rate else { continue };
            let same = earlier.tokens.iter().find(|old| old.name == token.name).and_then(|old| old.rate.as_ref());
            if let Some(old) = same.filter(|old| old.entries_per_s() == rate.entries_per_s()) {
                token.rate = Some(old.clone());
            }
        }
    }
}

fn field_error(position: usize, name: Option<&str>, field: &'static str, problem: impl Into<String>) -> Error {
    let name = name.map_or_else(|| "no name".to_string(), |name| format!("{name:?}"));
    Error::Field { position, name, field, problem: problem.into() }
}

fn check_table(position: usize, table: Table) -> Result<Token, Error> {
    let bad = |field, problem: String| field_error(position, table.name.as_deref(), field, problem);
    let name = match table.name.as_deref() {
        None => return Err(bad("name", "is missing".into())),
        Some(name) if name.is_empty() || name.len() > AUTH_TOKEN_NAME_BYTES_MAX => {
            return Err(bad(
                "name",
                format!("must be 1 to {AUTH_TOKEN_NAME_BYTES_MAX} bytes (AUTH_TOKEN_NAME_BYTES_MAX)"),
            ))
        }
        // It goes into a metric label and log lines as it is.
        Some(name) if !name.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-_.@".contains(&byte)) => {
            return Err(bad("name", "may hold letters, digits and - _ . @ only".into()))
        }
        Some(name) => name.to_string(),
    };
    let digest = match table.sha256.as_deref() {
        None => return Err(bad("sha256", "is missing".into())),
        Some(hex) => from_hex(hex.trim()).ok_or_else(|| {
            bad(
                "sha256",
                "must be 64 hex digits: the sha256 of the secret (printf %s \"$SECRET\" | sha256sum), not the secret"
                    .into(),
            )
        })?,
    };
    let mut scopes = Scopes::NONE;
    match &table.scopes {
        None => {
            return Err(bad("scopes", "is missing: give some of \"ingest\", \"query\", \"admin\", \"metrics\"".into()))
        }
        Some(names) if names.is_empty() => {
            return Err(bad("scopes", "is empty: give some of \"ingest\", \"query\", \"admin\", \"metrics\"".into()))
        }
        Some(names) => {
            for name in names {
                let scope = Scope::parse(name).ok_or_else(|| {
                    bad(
                        "scopes",
                        format!("{name:?} is not a scope: use \"ingest\", \"query\", \"admin\" or \"metrics\""),
                    )
                })?;
                if scopes.contains(scope) {
                    return Err(bad("scopes", format!("lists {name:?} twice")));
                }
                scopes = scopes.with(scope);
            }
        }
    }
    let follower_ids = match table.follower_ids {
        None => None,
        Some(ids) => {
            if !scopes.contains(Scope::Ingest) {
                return Err(bad("follower_ids", "needs the \"ingest\" scope, which pushes as those ids".into()));
            }
            if ids.is_empty() || ids.len() > AUTH_FOLLOWER_IDS_PER_TOKEN_MAX {
                return Err(bad(
                    "follower_ids",
                    format!("must list 1 to {AUTH_FOLLOWER_IDS_PER_TOKEN_MAX} ids (AUTH_FOLLOWER_IDS_PER_TOKEN_MAX)"),
                ));
            }
            let mut checked = Vec::with_capacity(ids.len());
            for id in ids {
                let id = u32::try_from(id)
                    .ok()
                    .filter(|id| *id != 0)
                    .ok_or_else(|| bad("follower_ids", format!("{id} is not a node id (1 to {})", u32::MAX)))?;
                checked.push(id);
            }
            checked.sort_unstable();
            checked.dedup();
            Some(Arc::from(checked))
        }
    };
    let rate = match table.rate_entries_per_s {
        None => None,
        Some(rate) => {
            if !scopes.contains(Scope::Ingest) {
                return Err(bad("rate_entries_per_s", "limits ingest: it needs the \"ingest\" scope".into()));
            }
            let rate = u64::try_from(rate).ok().filter(|rate| (1..=AUTH_RATE_ENTRIES_PER_S_MAX).contains(rate));
            let rate = rate.ok_or_else(|| {
                bad(
                    "rate_entries_per_s",
                    format!("must be between 1 and {AUTH_RATE_ENTRIES_PER_S_MAX} (AUTH_RATE_ENTRIES_PER_S_MAX)"),
                )
            })?;
            Some(Arc::new(RateLimit::new(rate)))
        }
    };
    Ok(Token { name, digest, scopes, follower_ids, rate })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_A: &str = "3f1c5a0d6e2b4c8a9f7e1d3b5a7c9e0f2a4b6c8d0e1f3a5b7c9d1e3f5a7b9c0d";

    fn table(name: &str, secret: &str, scopes: &str) -> String {
        format!(
            "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = {scopes}\n",
            to_hex(&digest(secret.as_bytes()))
        )
    }

    #[test]
    fn a_file_parses_and_verifies_secrets_by_their_digest() {
        let text = format!(
            "{}follower_ids = [7, 5, 7]\nrate_entries_per_s = 100\n{}",
            table("shipper", SECRET_A, "[\"ingest\"]"),
            table("ops", "other-secret", "[\"admin\", \"metrics\", \"query\"]")
        );
        let set = TokenSet::parse(&text).unwrap();
        assert_eq!(set.len(), 2);
        let shipper = set.verify(SECRET_A.as_bytes()).unwrap();
        assert_eq!(shipper.name, "shipper");
        assert_eq!(shipper.scopes, Scopes::of(Scope::Ingest));
        assert_eq!(shipper.follower_ids.as_deref(), Some(&[5, 7][..]), "sorted, repeats dropped");
        assert_eq!(shipper.rate.as_ref().unwrap().entries_per_s(), 100);
        let ops = set.verify(b"other-secret").unwrap();
        assert_eq!(ops.name, "ops");
        assert!(ops.scopes.contains(Scope::Admin) && ops.scopes.contains(Scope::Query));
        assert!(!ops.scopes.contains(Scope::Ingest));
        assert!(ops.follower_ids.is_none() && ops.rate.is_none());
        for wrong in ["", "other-secreT", "other-secret ", &SECRET_A[..63], &to_hex(&digest(SECRET_A.as_bytes()))] {
            assert!(set.verify(wrong.as_bytes()).is_none(), "{wrong:?}");
        }
        assert!(TokenSet::parse("").unwrap().is_empty(), "an empty file is valid: only /healthz is open");
    }

    #[test]
    fn the_digest_is_upper_or_lower_case_hex_and_never_printed() {
        let upper = to_hex(&digest(b"s")).to_uppercase();
        let set =
            TokenSet::parse(&format!("[[token]]\nname = \"a\"\nsha256 = \"{upper}\"\nscopes = [\"query\"]\n")).unwrap();
        assert!(set.verify(b"s").is_some());
        let printed = format!("{set:?}");
        assert!(!printed.contains(&to_hex(&digest(b"s"))) && !printed.contains(&upper), "{printed}");
        assert_eq!(
            to_hex(&digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "the sha256 of the secret's bytes, as sha256sum prints it"
        );
    }

    #[test]
    fn every_refusal_names_the_table_and_the_field() {
        let hex = to_hex(&digest(b"x"));
        for (text, expected) in [
            ("[[token]]\nsha256 = \"00\"\nscopes = [\"query\"]\n", "[[token]] 1 (no name): `name` is missing"),
            ("[[token]]\nname = \"\"\n", "`name` must be 1 to 128 bytes"),
            ("[[token]]\nname = \"a b\"\n", "`name` may hold letters"),
            ("[[token]]\nname = \"a\"\nscopes = [\"query\"]\n", "[[token]] 1 (\"a\"): `sha256` is missing"),
            ("[[token]]\nname = \"a\"\nsha256 = \"xyz\"\nscopes = [\"query\"]\n", "`sha256` must be 64 hex digits"),
            (&format!("[[token]]\nname = \"a\"\nsha256 = \"{}zz\"\n", &hex[..62]), "`sha256` must be 64 hex"),
            (&format!("[[token]]\nname = \"a\"\nsha256 = \"{hex}\"\n"), "`scopes` is missing"),
            (&format!("[[token]]\nname = \"a\"\nsha256 = \"{hex}\"\nscopes = []\n"), "`scopes` is empty"),
            (
                &format!("[[token]]\nname = \"a\"\nsha256 = \"{hex}\"\nscopes = [\"write\"]\n"),
                "`scopes` \"write\" is not a scope",
            ),
            (
                &format!("[[token]]\nname = \"a\"\nsha256 = \"{hex}\"\nscopes = [\"query\", \"query\"]\n"),
                "lists \"query\" twice",
            ),
            (
                &format!("[[token]]\nname = \"a\"\nsha256 = \"{hex}\"\nscopes = [\"query\"]\nfollower_ids = [1]\n"),
                "`follower_ids` needs the \"ingest\" scope",
            ),
            (
                &format!("[[token]]\nname = \"a\"\nsha256 = \"{hex}\"\nscopes = [\"ingest\"]\nfollower_ids = []\n"),
                "`follower_ids` must list 1 to",
            ),
            (
                &format!("[[token]]\nname = \"a\"\nsha256 = \"{hex}\"\nscopes = [\"ingest\"]\nfollower_ids = [0]\n"),
                "`follower_ids` 0 is not a node id",
            ),
            (
                &format!(
                    "[[token]]\nname = \"a\"\nsha256 = \"{hex}\"\nscopes = [\"ingest\"]\nfollower_ids = [4294967296]\n"
                ),
                "4294967296 is not a node id",
            ),
            (
                &format!(
                    "[[token]]\nname = \"a\"\nsha256 = \"{hex}\"\nscopes = [\"ingest\"]\nrate_entries_per_s = 0\n"
                ),
                "`rate_entries_per_s` must be between 1 and",
            ),
            (
                &format!("[[token]]\nname = \"a\"\nsha256 = \"{hex}\"\nscopes = [\"query\"]\nrate_entries_per_s = 5\n"),
                "`rate_entries_per_s` limits ingest",
            ),
            ("[[token]]\nname = \"a\"\nscope = [\"query\"]\n", "unknown field `scope`"),
            ("[[tokens]]\nname = \"a\"\n", "unknown field `tokens`"),
            ("[[token]]\nname = 5\n", "invalid type"),
            ("[[token]\n", "unclosed array table"),
        ] {
            let error = TokenSet::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        let second = format!("{}{}", table("a", "one", "[\"query\"]"), "[[token]]\nname = \"b\"\n");
        let error = TokenSet::parse(&second).unwrap_err().to_string();
        assert!(error.starts_with("[[token]] 2 (\"b\"): `sha256` is missing"), "{error}");
        let twice = format!("{}{}", table("a", "one", "[\"query\"]"), table("a", "two", "[\"query\"]"));
        assert!(TokenSet::parse(&twice).unwrap_err().to_string().contains("`name` repeats [[token]] 1"));
        let shared = format!("{}{}", table("a", "one", "[\"query\"]"), table("b", "one", "[\"ingest\"]"));
        let error = TokenSet::parse(&shared).unwrap_err().to_string();
        assert!(error.contains("[[token]] 2 (\"b\"): `sha256` is also the digest of [[token]] 1"), "{error}");
        assert!(!error.contains(&to_hex(&digest(b"one"))), "digests stay out of errors: {error}");
    }

    #[test]
    fn too_many_tables_are_refused() {
        let many: String = (0..=AUTH_TOKENS_MAX)
            .map(|index| table(&format!("t{index}"), &format!("s{index}"), "[\"query\"]"))
            .collect();
        assert_eq!(TokenSet::parse(&many).unwrap_err(), Error::TooMany(AUTH_TOKENS_MAX + 1));
    }

    #[test]
    fn a_reload_keeps_the_buckets_of_unchanged_rates() {
        let rated = |rate: u64| format!("{}rate_entries_per_s = {rate}\n", table("a", "one", "[\"ingest\"]"));
        let old = TokenSet::parse(&rated(100)).unwrap();
        let mut same = TokenSet::parse(&rated(100)).unwrap();
        same.keep_rates_of(&old);
        assert!(Arc::ptr_eq(same.tokens[0].rate.as_ref().unwrap(), old.tokens[0].rate.as_ref().unwrap()));
        let mut changed = TokenSet::parse(&rated(200)).unwrap();
        changed.keep_rates_of(&old);
        assert!(!Arc::ptr_eq(changed.tokens[0].rate.as_ref().unwrap(), old.tokens[0].rate.as_ref().unwrap()));
    }

    proptest::proptest! {
        #[test]
        fn only_the_exact_secret_verifies(secret in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
                                          other in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            let text = format!("[[token]]\nname = \"t\"\nsha256 = \"{}\"\nscopes = [\"query\"]\n", to_hex(&digest(&secret)));
            let set = TokenSet::parse(&text).unwrap();
            proptest::prop_assert!(set.verify(&secret).is_some());
            proptest::prop_assert_eq!(set.verify(&other).is_some(), other == secret);
        }
    }
}
