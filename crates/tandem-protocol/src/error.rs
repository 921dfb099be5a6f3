use tandem_crypto::CryptoError;
use tandem_model::ModelError;
use thiserror::Error;

/// Every way a protocol step can fail. The gRPC shells map these to status
/// codes; the messages are written for the person who sent the bad input.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ProtocolError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A peer sent a message that does not fit the session.
    #[error("bad message: {0}")]
    BadMessage(String),
    #[error("this seed was already used: every query needs a fresh seed (replay refused)")]
    ReplayedSeed,
    /// The seed epoch named with `[secret]` is not one S2 holds (S2 restarted
    /// or rotated its replay log). Decided before any decryption.
    #[error("unknown seed epoch: the activation server restarted or started a new epoch; fetch the model info again and re-encrypt the seed")]
    UnknownEpoch,
    #[error("ring size mismatch: the model uses k = {model}, this code path k = {code}")]
    RingMismatch { model: u32, code: u32 },
    #[error("the activation server's key has {key_bits} bits, too small for {layer}: {needed} bits per packing slot")]
    KeyTooSmall { layer: String, needed: u32, key_bits: u32 },
}

pub type Result<T> = std::result::Result<T, ProtocolError>;
