//! The crate's error type. No variant carries a secret: only lengths, counts,
//! indices and public parameters.

use thiserror::Error;

/// Everything that can go wrong in `tandem-ot`. Messages say what was wrong
/// and what is accepted; none contains key material, choice bits, scalars,
/// values or shares.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// A message or buffer has the wrong length.
    #[error("{what}: got {got} bytes, expected exactly {expected}")]
    Length {
        /// Which message or field.
        what: &'static str,
        /// The length received.
        got: usize,
        /// The only length accepted.
        expected: usize,
    },
    /// A byte string that must be a whole number of fixed-size items is not.
    #[error("{what}: got {got} bytes, expected a multiple of {unit} (at most {max} bytes)")]
    NotMultiple {
        /// Which message.
        what: &'static str,
        /// The length received.
        got: usize,
        /// The item size.
        unit: usize,
        /// The largest length accepted.
        max: usize,
    },
    /// The base-OT reply carries the wrong number of points.
    #[error("base-OT reply: got {got} points, expected exactly {expected}")]
    PointCount {
        /// The number of points received.
        got: usize,
        /// The number of base OTs (128).
        expected: usize,
    },
    /// A point is not a canonical Ristretto255 encoding, or is the identity
    /// where the identity is refused.
    #[error("{what} (index {index}): not a valid compressed Ristretto255 point{extra}")]
    MalformedPoint {
        /// Which point (`A` or `B`).
        what: &'static str,
        /// Its index in the message (0 for `A`).
        index: usize,
        /// Extra detail (e.g. ", the identity is refused").
        extra: &'static str,
    },
    /// A session asks for more OTs than the hard cap.
    #[error("{requested} OTs requested in one session; at most {max} are accepted")]
    TooManyOts {
        /// The number requested.
        requested: u64,
        /// The cap ([`crate::MAX_OTS`]).
        max: u32,
    },
    /// A batch needs more OTs than the session has left.
    #[error("the batch needs {needed} OTs but only {remaining} of the session's {total} are left")]
    OtsExhausted {
        /// OTs this batch needs (`bits × count`).
        needed: u64,
        /// OTs not yet consumed.
        remaining: u64,
        /// OTs the request carried.
        total: u64,
    },
    /// A bit count outside `1..=128`.
    #[error("bit count {bits} is outside the accepted range 1..=128")]
    BitsOutOfRange {
        /// The bit count given.
        bits: u32,
    },
    /// A scalar does not fit its batch's bit count (the scalar itself is not shown).
    #[error("scalar number {index} of batch {batch} is not below 2^{bits} (batches accept 0 <= a < 2^bits)")]
    ScalarTooLarge {
        /// Index of the batch.
        batch: usize,
        /// Index of the scalar within the batch.
        index: usize,
        /// The batch's bit count.
        bits: u32,
    },
    /// S1's corrections for a batch have the wrong count.
    #[error("corrections: got {got} values, the batch expects {expected} ({count} scalars x {bits} bits)")]
    CorrectionCount {
        /// Values received.
        got: usize,
        /// Values expected.
        expected: usize,
        /// Scalars in the batch.
        count: usize,
        /// The batch's bit count.
        bits: u32,
    },
    /// `receive` was called after every batch of the session was answered.
    #[error("all {batches} batches of this session were already received")]
    NoBatchLeft {
        /// The number of batches the session had.
        batches: usize,
    },
}

/// `Result` with this crate's [`Error`](enum@Error).
pub type Result<T> = core::result::Result<T, Error>;
