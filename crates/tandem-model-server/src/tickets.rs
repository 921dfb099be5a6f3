//! Tickets: sessions preprocessed ahead of their input (docs/PROTOCOL.md
//! §4.0), kept until their one online query, bounded in number and age.
//!
//! A ticket holds only S1's blinding secrets for the session (no
//! ciphertexts). Its id is the session id, a random 16-byte value the
//! client also needs to open the sealed result; it is a bearer capability
//! for one online phase, worthless without the client's seed.
//!
//! Each client (API token id, or peer address without tokens) may hold at
//! most `per_client` tickets, counting those still being preprocessed, so
//! one client cannot take every slot of the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_core::Prepared;
use tandem_model::OutputMode;
use tandem_paillier::U256;
use tonic::Status;

use crate::access::ClientKey;

/// A preprocessed session of either ring.
pub enum AnyPrepared {
    K128(Prepared<u128>),
    K256(Prepared<U256>),
}

pub struct TicketEntry {
    pub model_id: String,
    pub mode: OutputMode,
    /// The API token's client id that created it (None without tokens):
    /// only that client may spend it.
    pub owner: Option<Arc<str>>,
    /// Whose per-client allowance it counts against.
    holder: ClientKey,
    created: Instant,
    pub prepared: AnyPrepared,
}

struct Inner {
    map: HashMap<[u8; 16], TicketEntry>,
    /// Tickets being preprocessed now: they count against the limit so a
    /// burst of requests cannot overshoot it.
    pending: usize,
    /// Tickets held (ready or pending) per client; no zero entries.
    held: HashMap<ClientKey, usize>,
}

impl Inner {
    fn release(&mut self, holder: &ClientKey) {
        if let Some(n) = self.held.get_mut(holder) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(holder);
            }
        }
    }
}

pub struct TicketStore {
    inner: Mutex<Inner>,
    max: usize,
    per_client: usize,
    ttl: Duration,
}

/// A slot for a ticket being preprocessed; released if it is never filled.
pub struct Reservation {
    store: Arc<TicketStore>,
    holder: ClientKey,
    filled: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Ok(mut g) = self.store.inner.lock() {
            g.pending -= 1;
            if !self.filled {
                g.release(&self.holder);
            }
        }
    }
}

fn poisoned<T>(_: T) -> Status {
    Status::internal("ticket store poisoned")
}

impl TicketStore {
    /// A store of at most `max` tickets, `per_client` of them per client.
    pub fn new(max: usize, per_client: usize, ttl: Duration) -> Arc<Self> {
        let inner = Inner { map: HashMap::new(), pending: 0, held: HashMap::new() };
        Arc::new(TicketStore { inner: Mutex::new(inner), max, per_client: per_client.max(1), ttl })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Tickets ready and waiting.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|mut g| Self::purge(&mut g, self.ttl).map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn purge(g: &mut Inner, ttl: Duration) -> &mut Inner {
        let mut expired = Vec::new();
        g.map.retain(|_, e| {
            let keep = e.created.elapsed() < ttl;
            if !keep {
                expired.push(e.holder.clone());
            }
            keep
        });
        for h in expired {
            g.release(&h);
        }
        g
    }

    /// Claims room for one more ticket of `holder` before any work is spent
    /// on it.
    pub fn reserve(self: &Arc<Self>, holder: &ClientKey) -> Result<Reservation, Status> {
        let mut g = self.inner.lock().map_err(poisoned)?;
        let g = Self::purge(&mut g, self.ttl);
        if g.held.get(holder).copied().unwrap_or(0) >= self.per_client {
            return Err(Status::resource_exhausted(format!(
                "client {holder} holds its limit of {} outstanding tickets per client; use some (or let them expire after {} s) before asking for more",
                self.per_client,
                self.ttl.as_secs()
            )));
        }
        if g.map.len() + g.pending >= self.max {
            return Err(Status::resource_exhausted(format!(
                "the model server holds its limit of {} outstanding tickets; use some (or let them expire after {} s) before asking for more",
                self.max,
                self.ttl.as_secs()
            )));
        }
        g.pending += 1;
        *g.held.entry(holder.clone()).or_insert(0) += 1;
        Ok(Reservation { store: self.clone(), holder: holder.clone(), filled: false })
    }

    /// Files a preprocessed session under its id.
    pub fn insert(
        &self,
        id: [u8; 16],
        model_id: String,
        mode: OutputMode,
        owner: Option<Arc<str>>,
        prepared: AnyPrepared,
        mut r: Reservation,
    ) {
        if let Ok(mut g) = self.inner.lock() {
            let holder = r.holder.clone();
            let entry = TicketEntry { model_id, mode, owner, holder, created: Instant::now(), prepared };
            if let Some(old) = g.map.insert(id, entry) {
                // Session ids are random 16 bytes; should one ever repeat,
                // the replaced ticket no longer counts against its holder.
                g.release(&old.holder);
            }
            r.filled = true;
        }
        drop(r); // after the insert: the slot passes from pending to the map
    }

    /// Takes the ticket if `check` accepts it; a ticket refused by `check`
    /// (wrong model or mode) stays usable.
    pub fn take(
        &self,
        id: &[u8],
        check: impl FnOnce(&TicketEntry) -> Result<(), Status>,
    ) -> Result<TicketEntry, Status> {
        let key: [u8; 16] = id
            .try_into()
            .map_err(|_| Status::invalid_argument(format!("ticket_id has {} bytes; expected 16", id.len())))?;
        let mut g = self.inner.lock().map_err(poisoned)?;
        let g = Self::purge(&mut g, self.ttl);
        let entry = g.map.get(&key).ok_or_else(|| {
            Status::not_found(format!(
                "unknown ticket {}: it was already used, expired (tickets live {} s), or the model server restarted; create a new ticket",
                hex::encode(&key[..8]),
                self.ttl.as_secs()
            ))
        })?;
        check(entry)?;
        let entry = g.map.remove(&key).ok_or_else(|| Status::internal("ticket store changed under its lock"))?;
        g.release(&entry.holder);
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> ClientKey {
        ClientKey::Ip(std::net::IpAddr::from([192, 0, 2, last]))
    }

    #[test]
    fn reservations_count_against_the_limit_and_are_released() {
        let s = TicketStore::new(2, 2, Duration::from_secs(60));
        let a = s.reserve(&ip(1)).unwrap();
        let _b = s.reserve(&ip(2)).unwrap();
        let e = s.reserve(&ip(3)).err().unwrap();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(e.message().contains("limit of 2 outstanding tickets"), "{}", e.message());
        drop(a);
        assert!(s.reserve(&ip(3)).is_ok(), "a dropped reservation frees its slot");
    }

    #[test]
    fn one_client_cannot_hold_every_ticket() {
        let s = TicketStore::new(10, 2, Duration::from_secs(60));
        let a1 = s.reserve(&ip(1)).unwrap();
        let _a2 = s.reserve(&ip(1)).unwrap();
        let e = s.reserve(&ip(1)).err().unwrap();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(
            e.message().starts_with("client 192.0.2.1 holds its limit of 2 outstanding tickets per client"),
            "{}",
            e.message()
        );
        // Others still get theirs, and a freed slot is the client's again.
        assert!(s.reserve(&ip(2)).is_ok());
        drop(a1);
        let _a3 = s.reserve(&ip(1)).expect("a released reservation frees the client's slot");
        assert!(s.reserve(&ip(1)).is_err());
    }

    #[test]
    fn unknown_and_malformed_ids_are_clear_errors() {
        let s = TicketStore::new(2, 2, Duration::from_secs(60));
        let e = s.take(&[1; 16], |_| Ok(())).err().unwrap();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(e.message().contains("already used, expired"), "{}", e.message());
        let e = s.take(&[1; 3], |_| Ok(())).err().unwrap();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
