//! Errors of keys, ciphertexts and sealed results, whichever engine raised them.

use thiserror::Error;

/// A key, ciphertext or sealed result was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// A public or secret key is malformed or of a refused size.
    #[error("invalid Paillier key: {0}")]
    InvalidKey(String),
    /// A ciphertext is malformed (length, range, not a unit).
    #[error("malformed ciphertext: {0}")]
    MalformedCiphertext(String),
    /// The sealed result did not authenticate.
    #[error("the sealed result failed authentication (tampered, or sealed for another session or seed)")]
    SealedResultRejected,
    /// A packing layout or bit budget does not fit the key.
    #[error("bit budget exceeded: {0}")]
    Budget(String),
}
