//! Every way a protocol step can fail, typed. The gRPC shells map these to
//! status codes in one place (`tandem_grpc::status`); the messages are
//! written for whoever sent the bad input and never carry a secret.

use crate::crypto_error::CryptoError;
use crate::store::TicketRefusal;
use tandem_model::ModelError;
use thiserror::Error;

/// A protocol error.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ProtocolError {
    /// The model refused the input or mode.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A key, ciphertext or sealed result was refused.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A peer sent a message the session's state does not expect now.
    #[error("{got} arrived out of order")]
    OutOfOrder {
        /// What arrived.
        got: &'static str,
    },
    /// A peer's message has the wrong number of items.
    #[error("{field}: {got} items; expected {expected}")]
    LengthMismatch {
        /// Which field.
        field: &'static str,
        /// What the session needs.
        expected: usize,
        /// What arrived.
        got: usize,
    },
    /// A count or size outside what the server accepts.
    #[error("{field} is {got}; accepted {accepted}")]
    OutOfRange {
        /// Which field.
        field: &'static str,
        /// What arrived.
        got: u64,
        /// The accepted range, in words.
        accepted: String,
    },
    /// A message that does not decode: a field of the wrong width, an enum
    /// value the API does not define, a required field missing. The text
    /// names the field and what is accepted.
    #[error("{0}")]
    Malformed(String),
    /// A peer's message contradicts the session or the model (a ticket for
    /// another model, an aux of another mode, a permutation that is not one).
    #[error("{0}")]
    PeerMisbehaved(String),
    /// The seed was served before.
    #[error("this seed was already used: every query needs a fresh seed (replay refused)")]
    ReplayedSeed,
    /// The seed epoch named with `[secret]` is not one S2 holds (S2 restarted
    /// or rotated its replay log). Decided before any decryption.
    #[error("unknown seed epoch: the activation server restarted or started a new epoch; fetch the model info again and re-encrypt the seed")]
    UnknownEpoch,
    /// No seed session under this id: it expired, or S2 restarted. Decided
    /// before anything else; the client opens a new session.
    #[error("unknown seed session: it expired or the activation server restarted; open a new seed session (or send enc_seed)")]
    UnknownSeedSession,
    /// The lattice engine's OT setup named in a session start is not one S2
    /// holds (S2 restarted or dropped it); S1 runs a new setup.
    #[error("unknown OT setup: the activation server restarted or dropped it; the model server runs a new setup (SetupOt) and retries")]
    UnknownOtSetup,
    /// S2 holds its limit of seed sessions.
    #[error("the activation server holds its limit of {limit} seed sessions; send enc_seed for this query, or retry later")]
    SeedSessionsFull {
        /// The limit.
        limit: usize,
    },
    /// The model's ring is not the one this code path was instantiated for.
    #[error("ring size mismatch: the model uses k = {model}, this code path k = {code}")]
    RingMismatch {
        /// `k` of the model.
        model: u32,
        /// `k` of the code path.
        code: u32,
    },
    /// A ticket exists but was issued for another client, model or mode.
    #[error(transparent)]
    TicketRefused(#[from] TicketRefusal),
    /// No preprocessed session (ticket) under this id: never issued, already
    /// used, expired, or the server restarted.
    #[error("no preprocessed session under this id: it was already used, expired, or the server restarted")]
    UnknownSession,
    /// A server holds its limit of preprocessed sessions.
    #[error("the server holds its limit of {limit} preprocessed sessions; use some or let them expire")]
    StoreFull {
        /// The limit.
        limit: usize,
    },
    /// S2's key is too small for the model's homomorphic bit budget.
    #[error("the activation server's key has {key_bits} bits, too small for {layer}: {needed} bits per packing slot")]
    KeyTooSmall {
        /// The layer that does not fit.
        layer: String,
        /// Bits one packing slot needs.
        needed: u32,
        /// Bits of S2's key.
        key_bits: u32,
    },
}

/// `Result` with a [`ProtocolError`].
pub type Result<T> = std::result::Result<T, ProtocolError>;
