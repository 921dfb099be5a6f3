//! Session policy both servers share (docs/PROTOCOL.md §4.0): sessions
//! preprocessed ahead of their input wait in an [`ExpiringStore`] until their
//! one online phase, bounded in number (overall and per holder) and in age,
//! and a ticket is spent only by the client, model and mode it was issued
//! for ([`TicketTerms::admits`]).
//!
//! The store is sans-IO: it never reads a clock. Every call takes `now`, a
//! point on the caller's monotonic clock (time since an origin the caller
//! chooses), so tests move time by hand and the in-process driver runs the
//! same code as the gRPC shells.

use crate::messages::SessionId;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;
use tandem_model::OutputMode;

/// Why a store refused a reservation or a lookup. The shells turn these
/// into statuses in one place, in their own words (a ticket on S1, a
/// preprocessed session on S2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError<H> {
    /// The store holds (or is preparing) its limit of entries.
    Full {
        /// The limit.
        limit: usize,
    },
    /// This holder holds (or is preparing) its limit of entries.
    HolderFull {
        /// Whose limit.
        holder: H,
        /// The limit.
        limit: usize,
    },
    /// No entry under this id: never stored, already taken, or expired.
    Unknown,
}

/// Room for one entry, claimed before any work is spent on it. Hand it back
/// to [`ExpiringStore::insert`] or [`ExpiringStore::cancel`]; the shells wrap
/// it in a guard that cancels on drop, so an abandoned preprocessing frees
/// its slot.
#[derive(Debug)]
#[must_use = "a reservation holds a slot until it is inserted or cancelled"]
pub struct Reservation<H> {
    holder: H,
}

impl<H> Reservation<H> {
    /// Whose allowance the slot counts against.
    pub fn holder(&self) -> &H {
        &self.holder
    }
}

struct Entry<T, H> {
    created: Duration,
    holder: H,
    value: T,
}

/// Entries under random 16-byte ids, at most `max` in all (counting
/// reservations), at most `per_holder` per holder, each dropped `ttl` after
/// it was stored.
pub struct ExpiringStore<T, H = ()> {
    entries: HashMap<SessionId, Entry<T, H>>,
    pending: usize,
    /// Entries held or reserved per holder; no zero counts.
    held: HashMap<H, usize>,
    max: usize,
    per_holder: usize,
    ttl: Duration,
}

impl<T, H: Clone + Eq + Hash> ExpiringStore<T, H> {
    /// An empty store; `max` and `per_holder` are at least 1.
    pub fn new(max: usize, per_holder: usize, ttl: Duration) -> Self {
        ExpiringStore {
            entries: HashMap::new(),
            pending: 0,
            held: HashMap::new(),
            max: max.max(1),
            per_holder: per_holder.max(1),
            ttl,
        }
    }

    /// How long an entry lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The overall limit.
    pub fn max(&self) -> usize {
        self.max
    }

    fn release(&mut self, holder: &H) {
        if let Some(n) = self.held.get_mut(holder) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(holder);
            }
        }
    }

    /// Drops every entry older than the TTL at `now`.
    pub fn purge(&mut self, now: Duration) {
        let ttl = self.ttl;
        let mut expired = Vec::new();
        self.entries.retain(|_, e| {
            let keep = now.saturating_sub(e.created) < ttl;
            if !keep {
                expired.push(e.holder.clone());
            }
            keep
        });
        for h in expired {
            self.release(&h);
        }
    }

    /// Entries stored and not expired at `now` (reservations not counted).
    pub fn len(&mut self, now: Duration) -> usize {
        self.purge(now);
        self.entries.len()
    }

    /// Whether no entry is stored at `now`.
    pub fn is_empty(&mut self, now: Duration) -> bool {
        self.len(now) == 0
    }

    /// Entries stored or reserved by `holder` at `now`.
    pub fn held_by(&mut self, holder: &H, now: Duration) -> usize {
        self.purge(now);
        self.held.get(holder).copied().unwrap_or(0)
    }

    /// Claims room for one more entry of `holder`. The holder's limit is
    /// checked first, so a client at its own limit is told so even when the
    /// store is full too.
    pub fn reserve(&mut self, holder: H, now: Duration) -> Result<Reservation<H>, StoreError<H>> {
        self.purge(now);
        if self.held.get(&holder).copied().unwrap_or(0) >= self.per_holder {
            return Err(StoreError::HolderFull { holder, limit: self.per_holder });
        }
        if self.entries.len() + self.pending >= self.max {
            return Err(StoreError::Full { limit: self.max });
        }
        self.pending += 1;
        *self.held.entry(holder.clone()).or_insert(0) += 1;
        Ok(Reservation { holder })
    }

    /// Gives a reservation's slot back unused.
    pub fn cancel(&mut self, r: Reservation<H>) {
        self.pending -= 1;
        self.release(&r.holder);
    }

    /// Files `value` under `id` in the reserved slot; it expires `ttl` after
    /// `now`. Ids are random 16 bytes; should one ever repeat, the replaced
    /// entry no longer counts against its holder.
    pub fn insert(&mut self, id: SessionId, value: T, r: Reservation<H>, now: Duration) {
        self.pending -= 1;
        if let Some(old) = self.entries.insert(id, Entry { created: now, holder: r.holder, value }) {
            self.release(&old.holder);
        }
    }

    /// The entry under `id`, left in place, if it has not expired at `now`.
    pub fn get_mut(&mut self, id: &SessionId, now: Duration) -> Option<&mut T> {
        let ttl = self.ttl;
        let alive = self.entries.get(id).is_some_and(|e| now.saturating_sub(e.created) < ttl);
        if !alive {
            // Expired entries go (and give their slots back) as in every call.
            self.purge(now);
            return None;
        }
        self.entries.get_mut(id).map(|e| &mut e.value)
    }

    /// Takes the entry under `id` if `check` accepts it. An entry `check`
    /// refuses stays stored and usable by whoever it was meant for.
    pub fn take<E>(
        &mut self,
        id: &SessionId,
        now: Duration,
        check: impl FnOnce(&T) -> Result<(), E>,
    ) -> Result<T, Taken<H, E>> {
        self.purge(now);
        let entry = self.entries.get(id).ok_or(Taken::Store(StoreError::Unknown))?;
        check(&entry.value).map_err(Taken::Refused)?;
        let entry = self.entries.remove(id).ok_or(Taken::Store(StoreError::Unknown))?;
        self.release(&entry.holder);
        Ok(entry.value)
    }
}

/// Why [`ExpiringStore::take`] returned nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Taken<H, E> {
    /// The store has no such entry.
    Store(StoreError<H>),
    /// The entry exists but the check refused it; it stays stored.
    Refused(E),
}

/// What a ticket was issued for: only this client may spend it, on this
/// model, in this mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketTerms {
    /// The model.
    pub model_id: String,
    /// The output mode it was preprocessed for.
    pub mode: OutputMode,
    /// The API token's client id that created it (`None` without tokens).
    pub owner: Option<Arc<str>>,
}

/// Why a ticket was refused to a query. The ticket stays usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TicketRefusal {
    /// Another client created it.
    #[error("the ticket was issued to another client; create your own with CreateTicket")]
    OtherOwner,
    /// It is for another model.
    #[error("the ticket is for model {ticket:?}, not {asked:?}")]
    OtherModel {
        /// The ticket's model.
        ticket: String,
        /// The query's model.
        asked: String,
    },
    /// It is for another mode.
    #[error("the ticket is for {ticket} mode, but the query asks for {asked}; leave mode unspecified or use the ticket's")]
    OtherMode {
        /// The ticket's mode.
        ticket: OutputMode,
        /// The query's mode.
        asked: OutputMode,
    },
}

impl TicketTerms {
    /// Whether a query by `caller` on `model_id`, asking for `asked` (`None`:
    /// the ticket's own mode), may spend this ticket. The owner is checked
    /// first, so another client learns nothing about the ticket's model or
    /// mode.
    pub fn admits(&self, model_id: &str, asked: Option<OutputMode>, caller: Option<&str>) -> Result<(), TicketRefusal> {
        if self.owner.as_deref() != caller {
            return Err(TicketRefusal::OtherOwner);
        }
        if self.model_id != model_id {
            return Err(TicketRefusal::OtherModel { ticket: self.model_id.clone(), asked: model_id.to_string() });
        }
        match asked {
            Some(m) if m != self.mode => Err(TicketRefusal::OtherMode { ticket: self.mode, asked: m }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn reservations_count_against_both_limits_and_are_released() {
        let mut s: ExpiringStore<u32, u8> = ExpiringStore::new(3, 2, MIN);
        let a1 = s.reserve(1, secs(0)).unwrap();
        let a2 = s.reserve(1, secs(0)).unwrap();
        assert_eq!(s.reserve(1, secs(0)).unwrap_err(), StoreError::HolderFull { holder: 1, limit: 2 });
        let b = s.reserve(2, secs(0)).unwrap();
        assert_eq!(s.reserve(3, secs(0)).unwrap_err(), StoreError::Full { limit: 3 });
        s.cancel(a1);
        assert_eq!(s.held_by(&1, secs(0)), 1, "a cancelled reservation frees its holder's slot");
        s.insert([1; 16], 10, a2, secs(0));
        s.insert([2; 16], 20, b, secs(0));
        assert_eq!(s.len(secs(0)), 2);
        let c = s.reserve(3, secs(0)).unwrap();
        s.cancel(c);
    }

    #[test]
    fn entries_expire_after_the_ttl_and_free_their_slots() {
        let mut s: ExpiringStore<u32, u8> = ExpiringStore::new(1, 1, MIN);
        let r = s.reserve(7, secs(100)).unwrap();
        s.insert([9; 16], 1, r, secs(100));
        assert_eq!(s.reserve(7, secs(159)).unwrap_err(), StoreError::HolderFull { holder: 7, limit: 1 });
        // At exactly ttl it is gone: the holder and the store have room again.
        let r = s.reserve(7, secs(160)).unwrap();
        assert_eq!(s.take(&[9; 16], secs(160), |_| Ok::<(), ()>(())), Err(Taken::Store(StoreError::Unknown)));
        s.cancel(r);
        assert!(s.is_empty(secs(160)));
    }

    #[test]
    fn a_refused_take_leaves_the_entry_and_a_taken_one_is_gone() {
        let mut s: ExpiringStore<u32> = ExpiringStore::new(4, 4, MIN);
        let r = s.reserve((), secs(0)).unwrap();
        s.insert([1; 16], 5, r, secs(0));
        assert_eq!(s.take(&[1; 16], secs(1), |_| Err("no")), Err(Taken::Refused("no")));
        assert_eq!(s.take(&[1; 16], secs(1), |v| if *v == 5 { Ok::<(), ()>(()) } else { Err(()) }), Ok(5));
        assert_eq!(s.take(&[1; 16], secs(1), |_| Ok::<(), ()>(())), Err(Taken::Store(StoreError::Unknown)));
        assert_eq!(s.held_by(&(), secs(1)), 0);
    }

    #[test]
    fn a_repeated_id_does_not_leak_its_holders_slot() {
        let mut s: ExpiringStore<u32, u8> = ExpiringStore::new(4, 4, MIN);
        let r = s.reserve(1, secs(0)).unwrap();
        s.insert([1; 16], 1, r, secs(0));
        let r = s.reserve(2, secs(0)).unwrap();
        s.insert([1; 16], 2, r, secs(0));
        assert_eq!(s.held_by(&1, secs(0)), 0);
        assert_eq!(s.held_by(&2, secs(0)), 1);
        assert_eq!(s.len(secs(0)), 1);
    }

    #[test]
    fn tickets_admit_only_their_owner_model_and_mode() {
        let t = TicketTerms { model_id: "m".into(), mode: OutputMode::Label, owner: Some("alice".into()) };
        assert_eq!(t.admits("m", None, Some("alice")), Ok(()));
        assert_eq!(t.admits("m", Some(OutputMode::Label), Some("alice")), Ok(()));
        assert_eq!(t.admits("m", None, Some("bob")), Err(TicketRefusal::OtherOwner));
        assert_eq!(t.admits("m", None, None), Err(TicketRefusal::OtherOwner));
        // The owner is checked before anything that would describe the ticket.
        assert_eq!(t.admits("x", Some(OutputMode::Logits), Some("bob")), Err(TicketRefusal::OtherOwner));
        assert_eq!(
            t.admits("x", None, Some("alice")),
            Err(TicketRefusal::OtherModel { ticket: "m".into(), asked: "x".into() })
        );
        assert_eq!(
            t.admits("m", Some(OutputMode::Logits), Some("alice")),
            Err(TicketRefusal::OtherMode { ticket: OutputMode::Label, asked: OutputMode::Logits })
        );
    }
}
