//! The tandem protocol (docs/PROTOCOL.md) as sans-IO state machines.
//!
//! Three roles exchange the plain structs of [`messages`]:
//! [`client::Client`] (C), [`model_server::ModelServer`] (S1) and
//! [`activation_server::ActivationServer`] (S2). No role touches a socket or
//! a clock; [`driver::run_query`] wires them together in-process, and the
//! gRPC servers and client do the same over the network.

pub mod activation_server;
pub mod client;
pub mod convert;
pub mod driver;
pub mod error;
pub mod messages;
pub mod model_server;
pub mod plan;
pub mod replay;

pub use activation_server::{ActivationServer, ActivationSession};
pub use client::{Client, ModelInfo, PendingQuery, PendingTicket};
pub use driver::{
    issue_ticket, online, preprocess, run_query, IssuedTicket, OfflineTranscript, OnlineTranscript, Transcript,
};
pub use error::{ProtocolError, Result};
pub use messages::*;
pub use model_server::{ModelServer, OnlineQuery, Prepared, Preprocessing};
pub use replay::ReplayLog;
