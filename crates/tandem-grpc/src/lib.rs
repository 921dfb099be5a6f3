//! The tandem gRPC API (`proto/tandem/v1/*.proto`, package `tandem.v1`) and
//! the conversions between its protobuf messages and the plain message
//! structs of [`tandem_core::messages`].
//!
//! Nothing here does protocol math: every function only moves bytes between
//! the two representations and checks lengths. [`convert`] is engine-neutral
//! and all the client needs (no GMP); `convert_paillier` (feature
//! `paillier`, on with `server`) carries the Paillier engine's
//! preprocessing messages. Errors come back as [`tonic::Status`] whose
//! message says which field was wrong and what is accepted.

pub mod convert;
#[cfg(feature = "lattice")]
pub mod convert_lattice;
#[cfg(feature = "paillier")]
pub mod convert_paillier;
#[cfg(feature = "server")]
pub mod peer;
#[cfg(feature = "server")]
pub mod server;
pub mod status;
pub mod tls;

/// Generated protobuf messages and tonic clients/servers.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tandem.v1");
}

pub use convert::*;
#[cfg(feature = "lattice")]
pub use convert_lattice::*;
#[cfg(feature = "paillier")]
pub use convert_paillier::*;
pub use status::{status_from_protocol, OrStatus};

/// gRPC frames every message with 5 bytes (flag + length); byte counts in
/// this project are `encoded_len() + GRPC_FRAME_BYTES` per message.
pub const GRPC_FRAME_BYTES: usize = 5;

/// Bytes a message takes on the gRPC stream (protobuf + framing; TLS and
/// HTTP/2 overhead excluded).
pub fn wire_len<M: prost::Message>(m: &M) -> u64 {
    (m.encoded_len() + GRPC_FRAME_BYTES) as u64
}

/// Default limit on one decoded message between S1 and S2.
pub const DEFAULT_MAX_INTERNAL_MESSAGE_BYTES: usize = 256 << 20;
