//! Mapping protocol and model errors to gRPC status codes. The messages are
//! the errors' own: written for whoever sent the bad input.

use tandem_core::CryptoError;
use tandem_core::ProtocolError;
use tandem_model::ModelError;
use tonic::{Code, Status};

/// The gRPC code for a protocol error raised while handling a peer's message.
pub fn code_of(e: &ProtocolError) -> Code {
    match e {
        ProtocolError::Model(m) => match m {
            ModelError::InputLength { .. }
            | ModelError::InputOutOfRange { .. }
            | ModelError::UnsupportedMode { .. }
            | ModelError::Invalid(_) => Code::InvalidArgument,
            ModelError::Budget { .. } => Code::FailedPrecondition,
            ModelError::File(_) | ModelError::UnknownLayer { .. } => Code::Internal,
        },
        ProtocolError::Crypto(c) => match c {
            CryptoError::MalformedCiphertext(_) | CryptoError::Budget(_) => Code::InvalidArgument,
            CryptoError::InvalidKey(_) => Code::FailedPrecondition,
            CryptoError::SealedResultRejected => Code::DataLoss,
        },
        ProtocolError::OutOfOrder { .. }
        | ProtocolError::LengthMismatch { .. }
        | ProtocolError::OutOfRange { .. }
        | ProtocolError::PeerMisbehaved(_)
        | ProtocolError::RingMismatch { .. } => Code::InvalidArgument,
        ProtocolError::ReplayedSeed => Code::AlreadyExists,
        ProtocolError::UnknownEpoch => Code::FailedPrecondition,
        ProtocolError::KeyTooSmall { .. } => Code::FailedPrecondition,
    }
}

pub fn status_from_protocol(e: &ProtocolError) -> Status {
    Status::new(code_of(e), e.to_string())
}

/// `Status::invalid_argument` with a formatted message.
pub fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}
