use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    #[error("invalid Paillier key: {0}")]
    InvalidKey(String),
    #[error("malformed ciphertext: {0}")]
    MalformedCiphertext(String),
    #[error("the sealed result failed authentication (tampered, or sealed for another session or seed)")]
    SealedResultRejected,
    #[error("bit budget exceeded: {0}")]
    Budget(String),
}
