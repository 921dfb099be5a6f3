//! S2's replay log (PROTOCOL §4.2): which seeds it has served, bounded, in
//! epochs.
//!
//! A seed is derived under one [`SeedEpoch`] (docs/PROTOCOL.md §4.1). S2
//! keeps the replay tags of two epochs, the current one and the one before;
//! when the current epoch has recorded `per_epoch` seeds it becomes the
//! previous one, the oldest epoch is forgotten with all its tags, and a fresh
//! random epoch starts. So memory is bounded by `2·per_epoch` tags, and a
//! seed can never be served twice: a replayed ciphertext either names an
//! epoch S2 still holds, whose tags it still has, or an epoch S2 no longer
//! (or never) held, which is refused before anything is decrypted. A restart
//! draws a new epoch, so seeds recorded before it are refused the same way.
//!
//! The log is sans-IO: the caller passes the RNG that draws new epochs.
//! [`ReplayLog`] is what S2 needs of a log; [`BoundedReplayLog`] is the
//! in-memory implementation both the gRPC shell and the in-process driver
//! use (a deployment with several S2 replicas would put a shared one behind
//! the same trait).

use crate::error::{ProtocolError, Result};
use crate::seed::SeedEpoch;
use rand_core::RngCore;
use std::collections::HashSet;

/// Default number of seeds per epoch: 2^19 tags take about 20 MiB, so the
/// log stays under about 40 MiB; at 120,000 queries an hour an epoch lasts
/// more than four hours.
pub const DEFAULT_SEEDS_PER_EPOCH: usize = 1 << 19;

struct Epoch {
    id: SeedEpoch,
    tags: HashSet<[u8; 32]>,
}

/// What S2 needs of a replay log: a current epoch, a check of a named epoch
/// that depends on nothing secret, and recording a seed's tag exactly once.
pub trait ReplayLog {
    /// The epoch clients should derive new seeds under.
    fn current_epoch(&self) -> SeedEpoch;
    /// Refuses an epoch this log does not hold (before any decryption).
    fn check_epoch(&self, epoch: &SeedEpoch) -> Result<()>;
    /// Records a seed's replay tag under `epoch`; refuses a tag already
    /// recorded there; may move to a new epoch drawn from `rng`.
    fn record<G: RngCore + ?Sized>(&mut self, epoch: &SeedEpoch, tag: [u8; 32], rng: &mut G) -> Result<()>;
    /// Seeds recorded and still remembered.
    fn len(&self) -> usize;
    /// Whether no seed is recorded.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The bounded, epoch-rotating replay log.
pub struct BoundedReplayLog {
    current: Epoch,
    previous: Option<Epoch>,
    per_epoch: usize,
    rotations: u64,
}

fn fresh<G: RngCore + ?Sized>(rng: &mut G) -> Epoch {
    let mut id = [0u8; crate::seed::EPOCH_BYTES];
    rng.fill_bytes(&mut id);
    Epoch { id: SeedEpoch(id), tags: HashSet::new() }
}

impl BoundedReplayLog {
    /// A log with a fresh random epoch; `per_epoch` is at least 1.
    pub fn new<G: RngCore + ?Sized>(per_epoch: usize, rng: &mut G) -> Self {
        BoundedReplayLog { current: fresh(rng), previous: None, per_epoch: per_epoch.max(1), rotations: 0 }
    }

    /// How many times the log has moved to a new epoch.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    fn epoch_mut(&mut self, epoch: &SeedEpoch) -> Option<&mut Epoch> {
        if self.current.id == *epoch {
            return Some(&mut self.current);
        }
        self.previous.as_mut().filter(|e| e.id == *epoch)
    }
}

impl ReplayLog for BoundedReplayLog {
    fn current_epoch(&self) -> SeedEpoch {
        self.current.id
    }

    fn len(&self) -> usize {
        self.current.tags.len() + self.previous.as_ref().map_or(0, |e| e.tags.len())
    }

    /// The epoch travels in the clear, so the refusal depends on nothing
    /// secret.
    fn check_epoch(&self, epoch: &SeedEpoch) -> Result<()> {
        if self.current.id == *epoch || self.previous.as_ref().is_some_and(|e| e.id == *epoch) {
            Ok(())
        } else {
            Err(ProtocolError::UnknownEpoch)
        }
    }

    /// Rotates to a new epoch when the current one is full.
    fn record<G: RngCore + ?Sized>(&mut self, epoch: &SeedEpoch, tag: [u8; 32], rng: &mut G) -> Result<()> {
        let e = self.epoch_mut(epoch).ok_or(ProtocolError::UnknownEpoch)?;
        if !e.tags.insert(tag) {
            return Err(ProtocolError::ReplayedSeed);
        }
        if self.current.tags.len() >= self.per_epoch {
            let next = fresh(rng);
            self.previous = Some(std::mem::replace(&mut self.current, next));
            self.rotations += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn refuses_replays_and_forgets_only_with_the_epoch() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut log = BoundedReplayLog::new(3, &mut rng);
        let e0 = log.current_epoch();
        for t in 0..3u8 {
            log.record(&e0, [t; 32], &mut rng).unwrap();
        }
        // Full: the log moved on, but e0 is still held and still refuses replays.
        let e1 = log.current_epoch();
        assert_ne!(e0, e1);
        assert_eq!(log.check_epoch(&e0), Ok(()));
        assert_eq!(log.record(&e0, [1; 32], &mut rng), Err(ProtocolError::ReplayedSeed));
        // A late seed of the previous epoch is still accepted once.
        log.record(&e0, [9; 32], &mut rng).unwrap();
        for t in 0..3u8 {
            log.record(&e1, [t; 32], &mut rng).unwrap();
        }
        // Two rotations later e0 is gone: refused before decryption, so its
        // seeds can never be served again even though their tags are gone.
        assert_eq!(log.check_epoch(&e0), Err(ProtocolError::UnknownEpoch));
        assert_eq!(log.record(&e0, [1; 32], &mut rng), Err(ProtocolError::UnknownEpoch));
        assert_eq!(log.record(&e1, [0; 32], &mut rng), Err(ProtocolError::ReplayedSeed));
        assert!(log.len() <= 2 * 3);
        assert_eq!(log.rotations(), 2);
    }

    #[test]
    fn memory_stays_bounded() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let mut log = BoundedReplayLog::new(100, &mut rng);
        for i in 0..10_000u32 {
            let e = log.current_epoch();
            let mut tag = [0u8; 32];
            tag[..4].copy_from_slice(&i.to_le_bytes());
            log.record(&e, tag, &mut rng).unwrap();
            assert!(log.len() <= 200);
        }
    }

    #[test]
    fn a_new_log_never_holds_an_old_logs_epoch() {
        // A restart is a new log: nothing recorded before it can be resumed.
        let old = BoundedReplayLog::new(10, &mut ChaCha20Rng::seed_from_u64(3));
        let new = BoundedReplayLog::new(10, &mut ChaCha20Rng::seed_from_u64(4));
        assert_eq!(new.check_epoch(&old.current_epoch()), Err(ProtocolError::UnknownEpoch));
    }
}
