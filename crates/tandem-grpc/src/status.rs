//! Mapping protocol and model errors to gRPC status codes. The messages are
//! the errors' own: written for whoever sent the bad input.

use tandem_core::CryptoError;
use tandem_core::{ProtocolError, TicketRefusal};
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
        | ProtocolError::Malformed(_)
        | ProtocolError::RingMismatch { .. } => Code::InvalidArgument,
        ProtocolError::ReplayedSeed => Code::AlreadyExists,
        ProtocolError::UnknownEpoch => Code::FailedPrecondition,
        ProtocolError::UnknownSeedSession => Code::FailedPrecondition,
        ProtocolError::UnknownOtSetup => Code::FailedPrecondition,
        ProtocolError::SeedSessionsFull { .. } => Code::ResourceExhausted,
        ProtocolError::KeyTooSmall { .. } => Code::FailedPrecondition,
        ProtocolError::TicketRefused(TicketRefusal::OtherOwner) => Code::PermissionDenied,
        ProtocolError::TicketRefused(_) => Code::InvalidArgument,
        ProtocolError::UnknownSession => Code::NotFound,
        ProtocolError::StoreFull { .. } => Code::ResourceExhausted,
    }
}

/// The status a peer sees for a protocol or decoding error: the one
/// mapping every shell uses.
pub fn status_from_protocol(e: &ProtocolError) -> Status {
    Status::new(code_of(e), e.to_string())
}

/// A decoding error: the field and what is accepted, in words.
pub(crate) fn invalid(msg: impl Into<String>) -> ProtocolError {
    ProtocolError::Malformed(msg.into())
}

/// `?` from a decoder or a protocol step into a shell's `Status`, through
/// [`status_from_protocol`].
pub trait OrStatus<T> {
    /// The error as the status a peer sees.
    fn or_status(self) -> Result<T, Status>;
}

impl<T> OrStatus<T> for Result<T, ProtocolError> {
    fn or_status(self) -> Result<T, Status> {
        self.map_err(|e| status_from_protocol(&e))
    }
}
