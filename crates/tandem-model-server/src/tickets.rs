//! Tickets: sessions preprocessed ahead of their input (docs/PROTOCOL.md
//! §4.0), kept until their one online query, bounded in number and age.
//!
//! A ticket holds only S1's blinding secrets for the session (no
//! ciphertexts). Its id is the session id, a random 16-byte value the
//! client also needs to open the sealed result; it is a bearer capability
//! for one online phase, worthless without the client's seed.
//!
//! The policy (limits, expiry, who may spend a ticket) is the core's
//! [`ExpiringStore`] and [`TicketTerms`], the same the in-process driver
//! runs; this module adds the lock, the clock and the statuses. Each client
//! (API token id, or peer address without tokens) may hold at most
//! `per_client` tickets, counting those still being preprocessed, so one
//! client cannot take every slot of the store.

use tandem_grpc::OrStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_core::{ExpiringStore, Prepared, StoreError, Taken, TicketRefusal, TicketTerms};
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
    pub terms: TicketTerms,
    pub prepared: AnyPrepared,
}

pub struct TicketStore {
    inner: Mutex<ExpiringStore<TicketEntry, ClientKey>>,
    origin: Instant,
}

/// A slot for a ticket being preprocessed; released if it is never filled.
pub struct Reservation {
    store: Arc<TicketStore>,
    slot: Option<tandem_core::Reservation<ClientKey>>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let (Some(slot), Ok(mut g)) = (self.slot.take(), self.store.inner.lock()) {
            g.cancel(slot);
        }
    }
}

fn poisoned<T>(_: T) -> Status {
    Status::internal("ticket store poisoned")
}

impl TicketStore {
    /// A store of at most `max` tickets, `per_client` of them per client.
    pub fn new(max: usize, per_client: usize, ttl: Duration) -> Arc<Self> {
        Arc::new(TicketStore { inner: Mutex::new(ExpiringStore::new(max, per_client, ttl)), origin: Instant::now() })
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    pub fn ttl(&self) -> Duration {
        self.inner.lock().map(|g| g.ttl()).unwrap_or_default()
    }

    /// Tickets ready and waiting.
    pub fn len(&self) -> usize {
        let now = self.now();
        self.inner.lock().map(|mut g| g.len(now)).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The one place store refusals become statuses.
    fn status(&self, e: Taken<ClientKey, TicketRefusal>, id: &[u8; 16]) -> Status {
        let ttl = self.ttl().as_secs();
        match e {
            Taken::Store(StoreError::HolderFull { holder, limit }) => Status::resource_exhausted(format!(
                "client {holder} holds its limit of {limit} outstanding tickets per client; use some (or let them expire after {ttl} s) before asking for more"
            )),
            Taken::Store(StoreError::Full { limit }) => Status::resource_exhausted(format!(
                "the model server holds its limit of {limit} outstanding tickets; use some (or let them expire after {ttl} s) before asking for more"
            )),
            Taken::Store(StoreError::Unknown) => Status::not_found(format!(
                "unknown ticket {}: it was already used, expired (tickets live {ttl} s), or the model server restarted; create a new ticket",
                hex::encode(&id[..8]),
            )),
            Taken::Refused(r) => tandem_grpc::status_from_protocol(&r.into()),
        }
    }

    /// Claims room for one more ticket of `holder` before any work is spent
    /// on it.
    pub fn reserve(self: &Arc<Self>, holder: &ClientKey) -> Result<Reservation, Status> {
        let now = self.now();
        let slot = self.inner.lock().map_err(poisoned)?.reserve(holder.clone(), now);
        match slot {
            Ok(slot) => Ok(Reservation { store: self.clone(), slot: Some(slot) }),
            Err(e) => Err(self.status(Taken::Store(e), &[0; 16])),
        }
    }

    /// Files a preprocessed session under its id.
    pub fn insert(&self, id: [u8; 16], terms: TicketTerms, prepared: AnyPrepared, mut r: Reservation) {
        let now = self.now();
        if let (Some(slot), Ok(mut g)) = (r.slot.take(), self.inner.lock()) {
            g.insert(id, TicketEntry { terms, prepared }, slot, now);
        }
    }

    /// Takes the ticket if it admits a query by `caller` on `model_id` in
    /// `asked` mode; a refused ticket stays usable by its owner.
    pub fn take(
        &self,
        id: &[u8],
        model_id: &str,
        asked: Option<OutputMode>,
        caller: Option<&str>,
    ) -> Result<TicketEntry, Status> {
        let key = tandem_grpc::session_id_from_bytes(id, "ticket_id").or_status()?;
        let now = self.now();
        let taken = self.inner.lock().map_err(poisoned)?.take(&key, now, |e| e.terms.admits(model_id, asked, caller));
        taken.map_err(|e| self.status(e, &key))
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
        let e = s.take(&[1; 16], "m", None, None).err().unwrap();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(e.message().contains("already used, expired"), "{}", e.message());
        let e = s.take(&[1; 3], "m", None, None).err().unwrap();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
