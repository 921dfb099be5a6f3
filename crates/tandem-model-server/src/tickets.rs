//! Tickets: sessions preprocessed ahead of their input (docs/PROTOCOL.md
//! §4.0), kept until their one online query, bounded in number and age.
//!
//! A ticket holds only S1's blinding secrets for the session (no
//! ciphertexts). Its id is the session id, a random 16-byte value the
//! client also needs to open the sealed result; it is a bearer capability
//! for one online phase, worthless without the client's seed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_crypto::U256;
use tandem_model::OutputMode;
use tandem_protocol::Prepared;
use tonic::Status;

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
    created: Instant,
    pub prepared: AnyPrepared,
}

struct Inner {
    map: HashMap<[u8; 16], TicketEntry>,
    /// Tickets being preprocessed now: they count against the limit so a
    /// burst of requests cannot overshoot it.
    pending: usize,
}

pub struct TicketStore {
    inner: Mutex<Inner>,
    max: usize,
    ttl: Duration,
}

/// A slot for a ticket being preprocessed; released if it is never filled.
pub struct Reservation {
    store: Arc<TicketStore>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Ok(mut g) = self.store.inner.lock() {
            g.pending -= 1;
        }
    }
}

fn poisoned<T>(_: T) -> Status {
    Status::internal("ticket store poisoned")
}

impl TicketStore {
    pub fn new(max: usize, ttl: Duration) -> Arc<Self> {
        Arc::new(TicketStore { inner: Mutex::new(Inner { map: HashMap::new(), pending: 0 }), max, ttl })
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
        g.map.retain(|_, e| e.created.elapsed() < ttl);
        g
    }

    /// Claims room for one more ticket before any work is spent on it.
    pub fn reserve(self: &Arc<Self>) -> Result<Reservation, Status> {
        let mut g = self.inner.lock().map_err(poisoned)?;
        let g = Self::purge(&mut g, self.ttl);
        if g.map.len() + g.pending >= self.max {
            return Err(Status::resource_exhausted(format!(
                "the model server holds its limit of {} outstanding tickets; use some (or let them expire after {} s) before asking for more",
                self.max,
                self.ttl.as_secs()
            )));
        }
        g.pending += 1;
        Ok(Reservation { store: self.clone() })
    }

    /// Files a preprocessed session under its id.
    pub fn insert(
        &self,
        id: [u8; 16],
        model_id: String,
        mode: OutputMode,
        owner: Option<Arc<str>>,
        prepared: AnyPrepared,
        r: Reservation,
    ) {
        if let Ok(mut g) = self.inner.lock() {
            g.map.insert(id, TicketEntry { model_id, mode, owner, created: Instant::now(), prepared });
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
        Ok(g.map.remove(&key).expect("present"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_count_against_the_limit_and_are_released() {
        let s = TicketStore::new(2, Duration::from_secs(60));
        let a = s.reserve().unwrap();
        let _b = s.reserve().unwrap();
        let e = s.reserve().err().unwrap();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(e.message().contains("limit of 2 outstanding tickets"), "{}", e.message());
        drop(a);
        assert!(s.reserve().is_ok(), "a dropped reservation frees its slot");
    }

    #[test]
    fn unknown_and_malformed_ids_are_clear_errors() {
        let s = TicketStore::new(2, Duration::from_secs(60));
        let e = s.take(&[1; 16], |_| Ok(())).err().unwrap();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(e.message().contains("already used, expired"), "{}", e.message());
        let e = s.take(&[1; 3], |_| Ok(())).err().unwrap();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
