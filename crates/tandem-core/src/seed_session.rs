//! S2's seed sessions (docs/PROTOCOL.md §4.1a): one Paillier-encrypted
//! secret per session instead of one per query.
//!
//! S2 decrypts a session's secret once, keeps the derived [`SessionKey`]
//! under a random public id, and derives query `i`'s seed as
//! `key.query_seed(i)`. It serves every counter at most once: it remembers
//! the highest counter served and which of the [`COUNTER_WINDOW`] counters
//! below it were served, and refuses anything older, so concurrent queries
//! of one client may arrive out of order while memory stays fixed per
//! session. Sessions are bounded in number, in queries and in lifetime; a
//! session S2 does not hold (expired, or S2 restarted) is refused before
//! anything else, and the client opens a new one.
//!
//! Sans-IO like [`crate::store`]: every call takes `now` on the caller's
//! monotonic clock.

use crate::error::{ProtocolError, Result};
use crate::crypto_error::CryptoError;
use crate::messages::{EncryptedSeed, OpenSeedSession, SeedSessionId, SeedSessionOpened};
use rand_core::{CryptoRng, RngCore};
use tandem_paillier_pk::PublicKey;
use crate::seed::{Seed, SessionKey};
use crate::store::{ExpiringStore, StoreError};
use std::time::Duration;

/// Seed sessions S2 holds at most, by default: each takes about 300 bytes,
/// so about 20 MiB in all.
pub const DEFAULT_MAX_SEED_SESSIONS: usize = 1 << 16;
/// Queries one seed session serves at most, by default.
pub const DEFAULT_QUERIES_PER_SESSION: u64 = 1 << 16;
/// How long S2 keeps a seed session, by default: one hour.
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(3600);
/// Counters more than this far below the highest one served are refused
/// (as replays): the bound on how far out of order a client's concurrent
/// queries may arrive.
pub const COUNTER_WINDOW: u64 = 1024;

const WORDS: usize = (COUNTER_WINDOW / 64) as usize;

/// Which counters of one session were served.
#[derive(Clone, Debug, Default)]
struct Served {
    /// The highest counter served, if any.
    highest: Option<u64>,
    /// Bit `j` (word `j / 64`, bit `j % 64`) set: counter `highest − j` was served.
    window: [u64; WORDS],
}

impl Served {
    fn bit(&self, j: u64) -> bool {
        self.window[(j / 64) as usize] >> (j % 64) & 1 == 1
    }
    fn set(&mut self, j: u64) {
        self.window[(j / 64) as usize] |= 1 << (j % 64);
    }
    /// Moves the window up by `by` counters.
    fn shift(&mut self, by: u64) {
        if by >= COUNTER_WINDOW {
            self.window = [0; WORDS];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        for i in (0..WORDS).rev() {
            let lo = i.checked_sub(words).map_or(0, |s| self.window[s]);
            let below = i.checked_sub(words + 1).map_or(0, |s| self.window[s]);
            self.window[i] = if bits == 0 { lo } else { (lo << bits) | (below >> (64 - bits)) };
        }
    }
    /// Records `c`; false if it was served before or is too old to tell.
    fn mark(&mut self, c: u64) -> bool {
        match self.highest {
            None => {
                self.highest = Some(c);
                self.set(0);
                true
            }
            Some(h) if c > h => {
                self.shift(c - h);
                self.highest = Some(c);
                self.set(0);
                true
            }
            Some(h) => {
                let j = h - c;
                if j >= COUNTER_WINDOW || self.bit(j) {
                    return false;
                }
                self.set(j);
                true
            }
        }
    }
}

struct SessionState {
    key: SessionKey,
    served: Served,
}

/// The seed sessions S2 holds.
pub struct SeedSessions {
    store: ExpiringStore<SessionState>,
    max_queries: u64,
}

/// Limits on seed sessions.
#[derive(Clone, Copy, Debug)]
pub struct SeedSessionLimits {
    /// Sessions held at once.
    pub max_sessions: usize,
    /// Queries per session (counters `0..max_queries`).
    pub queries_per_session: u64,
    /// Lifetime of a session from its opening.
    pub lifetime: Duration,
}

impl Default for SeedSessionLimits {
    fn default() -> Self {
        SeedSessionLimits {
            max_sessions: DEFAULT_MAX_SEED_SESSIONS,
            queries_per_session: DEFAULT_QUERIES_PER_SESSION,
            lifetime: DEFAULT_SESSION_LIFETIME,
        }
    }
}

impl SeedSessions {
    /// No sessions yet.
    pub fn new(limits: SeedSessionLimits) -> Self {
        SeedSessions {
            store: ExpiringStore::new(limits.max_sessions, limits.max_sessions, limits.lifetime),
            max_queries: limits.queries_per_session.max(1),
        }
    }

    /// Sessions held at `now`.
    pub fn len(&mut self, now: Duration) -> usize {
        self.store.len(now)
    }

    /// Whether no session is held at `now`.
    pub fn is_empty(&mut self, now: Duration) -> bool {
        self.len(now) == 0
    }

    /// The limit on sessions held at once.
    pub fn max_sessions(&self) -> usize {
        self.store.max()
    }

    /// Refuses, before any decryption, when no session could be stored.
    pub fn check_room(&mut self, now: Duration) -> Result<()> {
        let r = self.store.reserve((), now).map_err(full)?;
        self.store.cancel(r);
        Ok(())
    }

    /// Stores a new session under `id`.
    pub fn open(&mut self, id: SeedSessionId, key: SessionKey, now: Duration) -> Result<SeedSessionOpened> {
        let r = self.store.reserve((), now).map_err(full)?;
        self.store.insert(id, SessionState { key, served: Served::default() }, r, now);
        Ok(SeedSessionOpened {
            id,
            max_queries: self.max_queries,
            expires_in_seconds: u32::try_from(self.store.ttl().as_secs()).unwrap_or(u32::MAX),
        })
    }

    /// Query `counter`'s seed in session `id`, served at most once. Depends
    /// only on public values (the id, the counter, what was served).
    pub fn query_seed(&mut self, id: &SeedSessionId, counter: u64, now: Duration) -> Result<Seed> {
        if counter >= self.max_queries {
            return Err(ProtocolError::OutOfRange {
                field: "seed session counter",
                got: counter,
                accepted: format!("0..{} (open a new seed session)", self.max_queries),
            });
        }
        let s = self.store.get_mut(id, now).ok_or(ProtocolError::UnknownSeedSession)?;
        if !s.served.mark(counter) {
            return Err(ProtocolError::ReplayedSeed);
        }
        Ok(s.key.query_seed(counter))
    }
}

/// S1's part in opening a seed session: it relays the client's `[secret]`
/// to S2 rerandomized with full-size noise, like every ciphertext it sends
/// toward the key holder (S2 then cannot match it with what the client
/// sent). `pk` is S2's key, the one the client encrypted to.
pub fn relay_open_session<G: RngCore + CryptoRng + ?Sized>(
    pk: &PublicKey,
    msg: &OpenSeedSession,
    rng: &mut G,
) -> Result<OpenSeedSession> {
    let c = pk
        .rerandomize(&msg.enc_secret.0, rng)
        .map_err(|e| CryptoError::MalformedCiphertext(format!("enc_secret: {e}")))?;
    Ok(OpenSeedSession { enc_secret: EncryptedSeed(c), epoch: msg.epoch })
}

fn full(e: StoreError<()>) -> ProtocolError {
    match e {
        StoreError::Full { limit } | StoreError::HolderFull { limit, .. } => ProtocolError::SeedSessionsFull { limit },
        StoreError::Unknown => ProtocolError::UnknownSeedSession,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sessions(max: usize, queries: u64, secs: u64) -> SeedSessions {
        SeedSessions::new(SeedSessionLimits {
            max_sessions: max,
            queries_per_session: queries,
            lifetime: Duration::from_secs(secs),
        })
    }

    #[test]
    fn each_counter_once_in_any_order_and_sessions_are_bounded() {
        let mut s = sessions(2, 5000, 60);
        let t = Duration::ZERO;
        let key = SessionKey::from_bytes([1; 32]);
        s.open([1; 16], key.clone(), t).unwrap();
        assert_eq!(s.query_seed(&[1; 16], 3, t).unwrap(), key.query_seed(3));
        assert_eq!(s.query_seed(&[1; 16], 3, t), Err(ProtocolError::ReplayedSeed));
        assert!(s.query_seed(&[1; 16], 1, t).is_ok());
        assert!(s.query_seed(&[1; 16], 2000, t).is_ok());
        // 1 is now far below the window: refused even though 0 never ran.
        assert_eq!(s.query_seed(&[1; 16], 0, t), Err(ProtocolError::ReplayedSeed));
        assert!(matches!(s.query_seed(&[1; 16], 5000, t), Err(ProtocolError::OutOfRange { .. })));
        assert_eq!(s.query_seed(&[2; 16], 0, t), Err(ProtocolError::UnknownSeedSession));
        s.open([2; 16], key.clone(), t).unwrap();
        assert_eq!(s.open([3; 16], key.clone(), t), Err(ProtocolError::SeedSessionsFull { limit: 2 }));
        assert_eq!(s.check_room(t), Err(ProtocolError::SeedSessionsFull { limit: 2 }));
        // After the lifetime every session is gone, and there is room again.
        let later = Duration::from_secs(60);
        assert_eq!(s.query_seed(&[2; 16], 1, later), Err(ProtocolError::UnknownSeedSession));
        assert_eq!(s.len(later), 0);
        assert!(s.check_room(later).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Against a model that remembers every counter: the window never
        /// serves a counter twice, and it serves every fresh counter within
        /// `COUNTER_WINDOW` of the highest one served.
        #[test]
        fn the_window_matches_a_set_of_every_counter(counters in prop::collection::vec(0u64..3000, 1..400)) {
            let mut w = Served::default();
            let mut seen = std::collections::HashSet::new();
            let mut highest: Option<u64> = None;
            for c in counters {
                let fresh = !seen.contains(&c);
                let recent = highest.is_none_or(|h| c > h || h - c < COUNTER_WINDOW);
                prop_assert_eq!(w.mark(c), fresh && recent, "counter {}", c);
                if fresh && recent {
                    seen.insert(c);
                    highest = Some(highest.map_or(c, |h| h.max(c)));
                }
            }
        }
    }
}
