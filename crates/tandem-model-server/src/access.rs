//! Who may call the public service, and how often: API tokens and
//! per-client rate limits on `ModelService`.
//!
//! A shell concern, like TLS: nothing here knows the protocol. The
//! service asks [`Access::authenticate`] on every call and
//! [`Access::charge`] on every call that makes the model answer (a
//! one-shot `Infer`, or a `CreateTicket`); SECURITY.md ("API tokens and
//! rate limits") describes the policy.
//!
//! **Token file.** One client per line, `CLIENT-ID TOKEN` or
//! `CLIENT-ID sha256:HEX` (the SHA-256 of the token, so the server need not
//! hold the token itself); `#` starts a comment line. Only the SHA-256 of
//! each token is kept in memory, presented tokens are hashed and compared
//! with every entry in constant time, and no token is ever logged.
//!
//! **Rate limit.** A token bucket per client: `burst` queries at once, refilled
//! at `count` per `window`. Clients are keyed by their token's client id, or
//! by peer address (IPv6 by /64) when the service runs without tokens. The
//! table of buckets is bounded: a bucket that has refilled is forgotten (it
//! is the same as a new one), and when the table is full of clients still
//! paying off a burst, new clients are refused until one has refilled.

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use tandem_model::OutputMode;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::Status;

/// The metadata key clients send their token in.
pub const AUTHORIZATION: &str = "authorization";

/// Shortest token accepted in the file: anything shorter could be guessed
/// online (the comparison is constant time, but not the number of tries).
pub const MIN_TOKEN_LEN: usize = 16;

const HOW_TO: &str = "send gRPC metadata `authorization: Bearer <token>` with the token this server's operator \
                      issued you (tandem-client: --api-token or TANDEM_API_TOKEN)";

/// The clients allowed to call, by the SHA-256 of their token.
pub struct ApiTokens {
    entries: Vec<(Arc<str>, [u8; 32])>,
    /// Whether the file held any token itself (not only digests).
    plaintext: bool,
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.entries.iter().map(|(id, _)| &**id).collect();
        f.debug_struct("ApiTokens").field("clients", &ids).finish_non_exhaustive()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
}

impl ApiTokens {
    /// Reads a token file (format: module docs).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the API token file {}", path.display()))?;
        let tokens = Self::parse(&text).with_context(|| format!("API token file {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 && tokens.plaintext {
                    tracing::warn!(
                        file = %path.display(),
                        "the API token file holds plaintext tokens and is readable by other users; chmod 600 it, or store `sha256:HEX` digests instead"
                    );
                }
            }
        }
        Ok(tokens)
    }

    /// Parses the file's text. Errors name the line, never the token.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut entries: Vec<(Arc<str>, [u8; 32])> = Vec::new();
        let mut plaintext = false;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(id), Some(secret), None) = (parts.next(), parts.next(), parts.next()) else {
                bail!("line {n}: expected `CLIENT-ID TOKEN` or `CLIENT-ID sha256:HEX` (two fields)");
            };
            if !valid_id(id) {
                bail!("line {n}: client id {id:?} must be 1 to 64 characters of A-Z a-z 0-9 . _ @ -");
            }
            let d = match secret.strip_prefix("sha256:") {
                Some(hex_digest) => {
                    let mut d = [0u8; 32];
                    hex::decode_to_slice(hex_digest, &mut d).map_err(|_| {
                        anyhow::anyhow!("line {n} (client {id}): sha256: must be followed by 64 hex digits")
                    })?;
                    d
                }
                None => {
                    if secret.len() < MIN_TOKEN_LEN || !secret.bytes().all(|b| b.is_ascii_graphic()) {
                        bail!(
                            "line {n} (client {id}): a token must be at least {MIN_TOKEN_LEN} printable ASCII characters \
                             without spaces (e.g. `openssl rand -hex 32`)"
                        );
                    }
                    plaintext = true;
                    digest(secret.as_bytes())
                }
            };
            if entries.iter().any(|(other, _)| **other == *id) {
                bail!("line {n}: client id {id:?} appears twice");
            }
            if entries.iter().any(|(_, other)| *other == d) {
                bail!("line {n} (client {id}): this token is already given to another client");
            }
            entries.push((Arc::from(id), d));
        }
        if entries.is_empty() {
            bail!("no tokens: every call would be refused (omit --api-tokens to run without authentication)");
        }
        Ok(ApiTokens { entries, plaintext })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The client id the token belongs to. Every entry is compared, in
    /// constant time, so the timing says neither whether nor where it matched.
    pub fn identify(&self, token: &[u8]) -> Option<Arc<str>> {
        let d = digest(token);
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, (_, e)) in self.entries.iter().enumerate() {
            let eq = e.ct_eq(&d);
            index.conditional_assign(&(i as u32), eq);
            found |= eq;
        }
        bool::from(found).then(|| self.entries[index as usize].0.clone())
    }
}

/// A query rate: `count` per `window`, in bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub count: u32,
    pub window: Duration,
    pub burst: u32,
}

impl RateLimit {
    /// Parses `N`, `N/s`, `N/min`, `N/hour`, `N/day` or `N/Ks` (per K
    /// seconds); a bare `N` is per minute. `0` means no limit (`None`).
    /// The burst defaults to `N`.
    pub fn parse(spec: &str, burst: Option<u32>) -> Result<Option<RateLimit>, String> {
        let bad = || {
            format!("rate limit {spec:?}: expected N (per minute) or N/UNIT with UNIT one of s, min, hour, day, or Ks (per K seconds), e.g. 60/min or 5/10s")
        };
        let (n, unit) = match spec.trim().split_once('/') {
            Some((n, u)) => (n.trim(), u.trim()),
            None => (spec.trim(), "min"),
        };
        let count: u32 = n.parse().map_err(|_| bad())?;
        let secs: u64 = match unit {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86400,
            u => match u.strip_suffix('s').map(str::parse::<u64>) {
                Some(Ok(k)) if (1..=86400 * 365).contains(&k) => k,
                _ => return Err(bad()),
            },
        };
        if count == 0 {
            return Ok(None);
        }
        let burst = burst.unwrap_or(count);
        if burst == 0 {
            return Err(format!("rate limit {spec:?}: the burst must be at least 1"));
        }
        Ok(Some(RateLimit { count, window: Duration::from_secs(secs), burst }))
    }

    fn per_second(&self) -> f64 {
        self.count as f64 / self.window.as_secs_f64()
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.window.as_secs();
        let window = match s {
            1 => "second".to_string(),
            60 => "minute".to_string(),
            3600 => "hour".to_string(),
            86400 => "day".to_string(),
            s => format!("{s} s"),
        };
        let what = if self.count == 1 { "query" } else { "queries" };
        write!(f, "{} {what} per {window} (bursts of up to {})", self.count, self.burst)
    }
}

/// Whose budget a call is charged to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// The client id of a valid API token.
    Id(Arc<str>),
    /// The peer address when the service runs without tokens (IPv6: its /64).
    Ip(IpAddr),
    /// No peer address known (not over TCP).
    Unknown,
}

impl ClientKey {
    pub fn of_peer(peer: Option<SocketAddr>) -> ClientKey {
        match peer.map(|a| a.ip()) {
            None => ClientKey::Unknown,
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::Ip(IpAddr::V4(v4)),
                // One host usually holds a whole /64: limit the prefix, not each address in it.
                None => ClientKey::Ip(IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into())),
            },
            Some(v4) => ClientKey::Ip(v4),
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::Id(id) => write!(f, "{id:?}"),
            ClientKey::Ip(IpAddr::V6(v6)) => write!(f, "{v6}/64"),
            ClientKey::Ip(ip) => write!(f, "{ip}"),
            ClientKey::Unknown => f.write_str("(unknown peer)"),
        }
    }
}

/// Why a charge was refused.
#[derive(Clone, Debug, PartialEq)]
pub enum Denied {
    /// The client's bucket is empty; one query is affordable again after this long.
    Limited { retry_after: Duration },
    /// The table of clients is full of clients still paying off a burst.
    TooManyClients { retry_after: Duration },
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Table {
    buckets: HashMap<ClientKey, Bucket>,
}

/// Token buckets per client, at most `max_clients` of them.
pub struct RateLimiter {
    limit: RateLimit,
    max_clients: usize,
    table: Mutex<Table>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit, max_clients: usize) -> Self {
        RateLimiter { limit, max_clients: max_clients.max(1), table: Mutex::new(Table { buckets: HashMap::new() }) }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Buckets held now (the bound on the limiter's memory is `max_clients`).
    pub fn tracked(&self) -> usize {
        self.table.lock().map(|t| t.buckets.len()).unwrap_or(0)
    }

    fn refilled(&self, b: &Bucket, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + dt * self.limit.per_second()).min(self.limit.burst as f64)
    }

    fn wait_for(&self, tokens: f64, want: f64) -> Duration {
        Duration::from_secs_f64(((want - tokens).max(0.0) / self.limit.per_second()).min(1e9))
    }

    /// Takes one query from `key`'s budget at time `now`.
    pub fn charge(&self, key: &ClientKey, now: Instant) -> Result<(), Denied> {
        self.charge_cost(key, 1, now)
    }

    /// Takes `cost` queries from `key`'s budget at time `now` (a mode that
    /// tells more about the model may cost more than one, `--mode-cost`).
    pub fn charge_cost(&self, key: &ClientKey, cost: u32, now: Instant) -> Result<(), Denied> {
        let cost = f64::from(cost);
        let Ok(mut t) = self.table.lock() else {
            // A poisoned table must not turn into unlimited access.
            return Err(Denied::TooManyClients { retry_after: Duration::from_secs(1) });
        };
        if !t.buckets.contains_key(key) && t.buckets.len() >= self.max_clients {
            // Refilled buckets are the same as absent ones: dropping them loses nothing.
            let burst = self.limit.burst as f64;
            let mut soonest = f64::INFINITY;
            t.buckets.retain(|_, b| {
                let tokens = self.refilled(b, now);
                soonest = soonest.min(tokens);
                tokens < burst
            });
            if t.buckets.len() >= self.max_clients {
                return Err(Denied::TooManyClients { retry_after: self.wait_for(soonest, burst) });
            }
        }
        let burst = self.limit.burst as f64;
        let b = t.buckets.entry(key.clone()).or_insert(Bucket { tokens: burst, at: now });
        let tokens = self.refilled(b, now);
        if tokens >= cost {
            *b = Bucket { tokens: tokens - cost, at: now };
            Ok(())
        } else {
            Err(Denied::Limited { retry_after: self.wait_for(tokens, cost) })
        }
    }

    /// Gives back a query charged for a call that was then refused before
    /// any work (the server was at its concurrency limit).
    pub fn refund(&self, key: &ClientKey, now: Instant) {
        self.refund_cost(key, 1, now)
    }

    /// Gives back `cost` queries charged with [`RateLimiter::charge_cost`].
    pub fn refund_cost(&self, key: &ClientKey, cost: u32, now: Instant) {
        if let Ok(mut t) = self.table.lock() {
            if let Some(b) = t.buckets.get_mut(key) {
                let tokens = self.refilled(b, now);
                *b = Bucket { tokens: (tokens + f64::from(cost)).min(self.limit.burst as f64), at: now };
            }
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub key: ClientKey,
}

impl Caller {
    /// The API token's client id (None when the service runs without tokens).
    pub fn id(&self) -> Option<Arc<str>> {
        match &self.key {
            ClientKey::Id(id) => Some(id.clone()),
            _ => None,
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.key.fmt(f)
    }
}

/// What one query costs from a client's rate-limit budget, by output mode
/// (`--mode-cost logits=10,probabilities=4`; 1 when not set). Modes that
/// reveal more of the model per answer can be made dearer: a model falls to
/// about d+1 logits answers, but needs many more labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModeCosts {
    costs: Vec<(OutputMode, u32)>,
}

/// Most a single query may cost: far beyond any sensible weighting, and
/// small enough that costs times counts never overflow.
pub const MAX_MODE_COST: u32 = 1_000_000;

impl ModeCosts {
    /// Parses `MODE=N[,MODE=N...]` (empty: every mode costs 1).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut costs: Vec<(OutputMode, u32)> = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || {
                format!(
                    "mode cost {part:?}: expected MODE=N with MODE one of label, probabilities, logits, sigmoid and N from 1 to {MAX_MODE_COST}, e.g. logits=10"
                )
            };
            let (m, n) = part.split_once('=').ok_or_else(bad)?;
            let mode = OutputMode::parse(m.trim()).ok_or_else(bad)?;
            let n: u32 = n.trim().parse().map_err(|_| bad())?;
            if !(1..=MAX_MODE_COST).contains(&n) {
                return Err(bad());
            }
            if costs.iter().any(|(o, _)| *o == mode) {
                return Err(format!("mode cost: {mode} is given twice"));
            }
            costs.push((mode, n));
        }
        Ok(ModeCosts { costs })
    }

    pub fn of(&self, mode: OutputMode) -> u32 {
        self.costs.iter().find(|(m, _)| *m == mode).map_or(1, |(_, n)| *n)
    }

    pub fn is_default(&self) -> bool {
        self.costs.iter().all(|(_, n)| *n == 1)
    }

    /// The dearest mode, to check that a burst can afford it.
    pub fn max(&self) -> Option<(OutputMode, u32)> {
        self.costs.iter().copied().max_by_key(|(_, n)| *n)
    }
}

impl fmt::Display for ModeCosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.costs.iter().map(|(m, n)| format!("{m}={n}")).collect();
        f.write_str(&parts.join(","))
    }
}

/// The service's access policy: optional tokens, optional rate limit.
#[derive(Default)]
pub struct Access {
    pub tokens: Option<ApiTokens>,
    pub limiter: Option<RateLimiter>,
    pub mode_costs: ModeCosts,
}

impl Access {
    /// Checks the call's `authorization` metadata (when tokens are configured).
    pub fn authenticate(&self, metadata: &MetadataMap, peer: Option<SocketAddr>) -> Result<Caller, Status> {
        let Some(tokens) = &self.tokens else {
            return Ok(Caller { key: ClientKey::of_peer(peer) });
        };
        let refuse = |why: &str| {
            tracing::info!(peer = ?peer, "call refused: {why}");
            Status::unauthenticated(format!("{why}: {HOW_TO}"))
        };
        let Some(value) = metadata.get(AUTHORIZATION) else {
            return Err(refuse("this model server requires an API token"));
        };
        let bytes = value.as_bytes();
        let token = match bytes.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => bytes[7..].trim_ascii(),
            _ => return Err(refuse("the authorization metadata is not a Bearer token")),
        };
        match tokens.identify(token) {
            Some(id) => Ok(Caller { key: ClientKey::Id(id) }),
            None => Err(refuse("the API token is not valid for this model server")),
        }
    }

    /// Charges one query in `mode` to `caller` (its `--mode-cost`);
    /// RESOURCE_EXHAUSTED (with `retry-after` metadata, in whole seconds)
    /// when over the limit.
    pub fn charge(&self, caller: &Caller, mode: OutputMode, now: Instant) -> Result<(), Status> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        let limit = limiter.limit();
        let cost = self.mode_costs.of(mode);
        let (msg, retry_after) = match limiter.charge_cost(&caller.key, cost, now) {
            Ok(()) => return Ok(()),
            Err(Denied::Limited { retry_after }) => (
                format!(
                    "rate limit exceeded for client {caller}: this model server allows {limit} per client{}; retry in {:.1} s",
                    if cost == 1 { String::new() } else { format!(", and a {mode} query counts as {cost}") },
                    retry_after.as_secs_f64()
                ),
                retry_after,
            ),
            Err(Denied::TooManyClients { retry_after }) => (
                format!(
                    "the model server is rate-limiting its maximum number of clients and cannot take a new one; retry in {:.1} s",
                    retry_after.as_secs_f64()
                ),
                retry_after,
            ),
        };
        tracing::info!(client = %caller, "query refused: {msg}");
        Err(with_retry_after(Status::resource_exhausted(msg), retry_after))
    }

    /// Gives back what [`Access::charge`] took for a query in `mode`.
    pub fn refund(&self, caller: &Caller, mode: OutputMode, now: Instant) {
        if let Some(l) = &self.limiter {
            l.refund_cost(&caller.key, self.mode_costs.of(mode), now);
        }
    }
}

/// Adds `retry-after` (seconds, rounded up, as in HTTP) and gRPC's
/// `grpc-retry-pushback-ms` to a status.
pub fn with_retry_after(status: Status, after: Duration) -> Status {
    let mut md = MetadataMap::new();
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    md.insert("retry-after", MetadataValue::from(secs.max(1)));
    md.insert("grpc-retry-pushback-ms", MetadataValue::from(after.as_millis().min(u64::MAX as u128) as u64));
    Status::with_metadata(status.code(), status.message().to_string(), md)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# clients\n\
        alice  alice-token-0123456789\n\
        \n\
        bob sha256:1f4d4e6e0c3a7e1a6b6b3ad7f1c8b5d4a5e0b1f7c7d6a2a7e1b8f9c0d1e2f3a4\n";

    fn lim(count: u32, secs: u64, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimit { count, window: Duration::from_secs(secs), burst }, 3)
    }

    fn id(s: &str) -> ClientKey {
        ClientKey::Id(Arc::from(s))
    }

    #[test]
    fn token_file_parses_both_forms_and_identifies_clients() {
        let t = ApiTokens::parse(FILE).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.identify(b"alice-token-0123456789").as_deref(), Some("alice"));
        assert_eq!(t.identify(b"alice-token-012345678"), None);
        assert_eq!(t.identify(b""), None);
        let bob = format!("bob sha256:{}\n", hex::encode(digest(b"bobs-secret-token-xyz")));
        let t = ApiTokens::parse(&bob).unwrap();
        assert_eq!(t.identify(b"bobs-secret-token-xyz").as_deref(), Some("bob"));
        // The Debug form names clients, never a digest.
        let dbg = format!("{t:?}");
        assert!(dbg.contains("bob") && !dbg.contains(&hex::encode(digest(b"bobs-secret-token-xyz"))), "{dbg}");
    }

    #[test]
    fn token_file_errors_name_the_line_not_the_token() {
        for (text, want) in [
            ("alice short\n", "line 1 (client alice): a token must be at least 16"),
            ("alice\n", "line 1: expected `CLIENT-ID TOKEN`"),
            ("a b c\n", "two fields"),
            ("al ice-token-0123456789 x\n", "two fields"),
            ("bad/id tok-0123456789abcdef\n", "client id \"bad/id\""),
            ("a tok-0123456789abcdef\na tok-0123456789abcdeg\n", "line 2: client id \"a\" appears twice"),
            ("a tok-0123456789abcdef\nb tok-0123456789abcdef\n", "line 2 (client b): this token is already given"),
            ("a sha256:12\n", "64 hex digits"),
            ("# nothing\n\n", "no tokens"),
        ] {
            let e = format!("{:#}", ApiTokens::parse(text).unwrap_err());
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains("tok-0123456789"), "the error leaks a token: {e}");
        }
    }

    #[test]
    fn rate_specs_parse() {
        let p = |s: &str, b| RateLimit::parse(s, b).unwrap().unwrap();
        assert_eq!(p("60", None), RateLimit { count: 60, window: Duration::from_secs(60), burst: 60 });
        assert_eq!(p("5/s", Some(1)).window, Duration::from_secs(1));
        assert_eq!(p("100/hour", None).window, Duration::from_secs(3600));
        assert_eq!(p("2/10s", None).window, Duration::from_secs(10));
        assert_eq!(RateLimit::parse("0", None).unwrap(), None);
        for bad in ["x", "5/week", "5/0s", "-1", "5/", "1/1e3s"] {
            assert!(RateLimit::parse(bad, None).is_err(), "{bad}");
        }
        assert!(RateLimit::parse("5/min", Some(0)).unwrap_err().contains("burst"));
        assert_eq!(p("2/10s", Some(3)).to_string(), "2 queries per 10 s (bursts of up to 3)");
        assert_eq!(p("60", None).to_string(), "60 queries per minute (bursts of up to 60)");
    }

    #[test]
    fn bucket_allows_a_burst_then_refills_at_the_rate() {
        let l = lim(2, 10, 2); // one query per 5 s, two at once
        let t0 = Instant::now();
        let a = id("a");
        assert_eq!(l.charge(&a, t0), Ok(()));
        assert_eq!(l.charge(&a, t0), Ok(()));
        let Err(Denied::Limited { retry_after }) = l.charge(&a, t0) else { panic!("over the burst") };
        assert!((retry_after.as_secs_f64() - 5.0).abs() < 1e-6, "{retry_after:?}");
        // Half refilled: still refused, and told to wait the other half.
        let Err(Denied::Limited { retry_after }) = l.charge(&a, t0 + Duration::from_millis(2500)) else { panic!() };
        assert!((retry_after.as_secs_f64() - 2.5).abs() < 1e-6, "{retry_after:?}");
        assert_eq!(l.charge(&a, t0 + Duration::from_secs(5)), Ok(()));
        assert!(l.charge(&a, t0 + Duration::from_secs(5)).is_err());
        // Never more than the burst, however long the client was idle.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(l.charge(&a, later), Ok(()));
        assert_eq!(l.charge(&a, later), Ok(()));
        assert!(l.charge(&a, later).is_err());
    }

    #[test]
    fn clients_have_separate_budgets_and_refunds_give_one_back() {
        let l = lim(1, 60, 1);
        let t0 = Instant::now();
        assert_eq!(l.charge(&id("a"), t0), Ok(()));
        assert!(l.charge(&id("a"), t0).is_err());
        assert_eq!(l.charge(&id("b"), t0), Ok(()), "b's budget is its own");
        l.refund(&id("a"), t0);
        assert_eq!(l.charge(&id("a"), t0), Ok(()));
        // A refund never lifts a bucket above its burst.
        l.refund(&id("b"), t0);
        l.refund(&id("b"), t0);
        assert_eq!(l.charge(&id("b"), t0), Ok(()));
        assert!(l.charge(&id("b"), t0).is_err());
    }

    #[test]
    fn the_table_is_bounded_and_forgets_refilled_clients() {
        let l = lim(1, 10, 1); // max 3 clients
        let t0 = Instant::now();
        for c in ["a", "b", "c"] {
            assert_eq!(l.charge(&id(c), t0), Ok(()));
        }
        // Full of clients that still owe: a fourth is refused, told when a slot frees.
        let Err(Denied::TooManyClients { retry_after }) = l.charge(&id("d"), t0 + Duration::from_secs(4)) else {
            panic!("the table is full")
        };
        assert!((retry_after.as_secs_f64() - 6.0).abs() < 1e-6, "{retry_after:?}");
        // Known clients are still served by their own buckets.
        assert!(matches!(l.charge(&id("a"), t0), Err(Denied::Limited { .. })));
        // Once the buckets refill they are dropped, and new clients fit.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(l.charge(&id("d"), later), Ok(()));
        assert_eq!(l.tracked(), 1);
        for i in 0..1000 {
            let _ = l.charge(&ClientKey::Ip(IpAddr::from([10, 0, (i / 256) as u8, i as u8])), later);
        }
        assert!(l.tracked() <= 3);
    }

    #[test]
    fn peers_are_keyed_by_address_and_ipv6_by_prefix() {
        let k = |s: &str| ClientKey::of_peer(Some(s.parse().unwrap()));
        assert_eq!(k("192.0.2.1:5"), k("192.0.2.1:6"));
        assert_ne!(k("192.0.2.1:5"), k("192.0.2.2:5"));
        assert_eq!(k("[2001:db8:1:2::1]:5"), k("[2001:db8:1:2:ffff::9]:7"));
        assert_ne!(k("[2001:db8:1:2::1]:5"), k("[2001:db8:1:3::1]:5"));
        assert_eq!(k("[::ffff:192.0.2.1]:5"), k("192.0.2.1:9"));
        assert_eq!(k("[2001:db8:1:2::1]:5").to_string(), "2001:db8:1:2::/64");
        assert_eq!(ClientKey::of_peer(None), ClientKey::Unknown);
    }

    fn md(v: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert(AUTHORIZATION, v.parse().unwrap());
        m
    }

    #[test]
    fn authentication_statuses_say_what_is_expected() {
        let access = Access { tokens: Some(ApiTokens::parse(FILE).unwrap()), ..Default::default() };
        let peer = Some("127.0.0.1:1".parse().unwrap());
        let c = access.authenticate(&md("Bearer alice-token-0123456789"), peer).unwrap();
        assert_eq!(c.id().as_deref(), Some("alice"));
        assert_eq!(c.to_string(), "\"alice\"");
        assert!(access.authenticate(&md("bearer  alice-token-0123456789 "), peer).is_ok());
        for (m, want) in [
            (MetadataMap::new(), "requires an API token"),
            (md("Bearer nope-nope-nope-nope"), "not valid for this model server"),
            (md("Basic YWxpY2U6eA=="), "not a Bearer token"),
            (md("alice-token-0123456789"), "not a Bearer token"),
        ] {
            let s = access.authenticate(&m, peer).unwrap_err();
            assert_eq!(s.code(), tonic::Code::Unauthenticated);
            assert!(
                s.message().contains(want) && s.message().contains("authorization: Bearer <token>"),
                "{}",
                s.message()
            );
        }
        // Without tokens everyone is let in, keyed by address.
        let open = Access::default();
        let c = open.authenticate(&MetadataMap::new(), peer).unwrap();
        assert_eq!((c.id(), c.key), (None, ClientKey::Ip("127.0.0.1".parse().unwrap())));
    }

    #[test]
    fn over_the_limit_is_resource_exhausted_with_retry_after() {
        let access = Access { limiter: Some(lim(1, 60, 1)), ..Default::default() };
        let caller = Caller { key: id("alice") };
        let t0 = Instant::now();
        access.charge(&caller, OutputMode::Label, t0).unwrap();
        let s = access.charge(&caller, OutputMode::Label, t0 + Duration::from_millis(500)).unwrap_err();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(
            s.message().starts_with(
                "rate limit exceeded for client \"alice\": this model server allows 1 query per minute (bursts of up to 1) per client; retry in 59.5 s"
            ),
            "{}",
            s.message()
        );
        assert_eq!(s.metadata().get("retry-after").unwrap(), "60");
        assert_eq!(s.metadata().get("grpc-retry-pushback-ms").unwrap(), "59500");
    }

    #[test]
    fn mode_costs_parse_and_weigh_the_budget() {
        let c = ModeCosts::parse("logits=10, probabilities=4").unwrap();
        assert_eq!((c.of(OutputMode::Logits), c.of(OutputMode::Probabilities), c.of(OutputMode::Label)), (10, 4, 1));
        assert_eq!(c.max(), Some((OutputMode::Logits, 10)));
        assert_eq!(c.to_string(), "logits=10,probabilities=4");
        assert!(ModeCosts::parse("").unwrap().is_default());
        for bad in ["logits", "logits=0", "logits=x", "softmax=2", "logits=2,logits=3", "label=1000001"] {
            assert!(ModeCosts::parse(bad).is_err(), "{bad}");
        }

        // A burst of 10: one logits query (cost 10) empties it; labels still cost 1.
        let access = Access { limiter: Some(lim(10, 60, 10)), mode_costs: c, ..Default::default() };
        let alice = Caller { key: id("alice") };
        let t0 = Instant::now();
        access.charge(&alice, OutputMode::Logits, t0).unwrap();
        let s = access.charge(&alice, OutputMode::Label, t0).unwrap_err();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        // A refund gives back the mode's whole cost.
        access.refund(&alice, OutputMode::Logits, t0);
        for _ in 0..10 {
            access.charge(&alice, OutputMode::Label, t0).unwrap();
        }
        access.refund(&alice, OutputMode::Probabilities, t0);
        let s = access.charge(&alice, OutputMode::Logits, t0).unwrap_err();
        assert!(s.message().contains("and a logits query counts as 10; retry in 36.0 s"), "{}", s.message());
    }
}
