//! The engine-neutral core of tandem (docs/PROTOCOL.md), sans-IO.
//!
//! - [`ring`], [`seed`]: the ring `Z_{2^k}`, the seed PRG and result sealing;
//! - [`masking`]: the compact input mask's parameters and wire encoding;
//! - [`messages`]: the client's messages and the online messages;
//! - [`client`]: the thin client (quantize, mask, one seed encryption in
//!   pure Rust, open the sealed result);
//! - [`mod@online`]: S1's online half and the blinding secrets;
//! - [`activation`]: S2's online half, its keys-and-replay state;
//! - [`engine`]: the [`PreprocessingEngine`] trait the homomorphic
//!   preprocessing plugs in behind (Paillier: `tandem-paillier`);
//! - [`driver`]: an in-process driver for any engine.
//!
//! No GMP, no thread pool, no OS randomness: every function that draws
//! randomness takes the caller's CSPRNG, so a transcript replays exactly.

pub mod activation;
pub mod client;
pub mod convert;
pub mod crypto_error;
pub mod driver;
pub mod engine;
pub mod error;
pub mod messages;
pub mod masking;
pub mod model_info;
pub mod online;
pub mod replay;
pub mod ring;
pub mod seed;
pub mod seed_session;
pub mod store;

pub use activation::{ActivationServer, ActivationSession, Admitted};
pub use client::{Client, PendingQuery, PendingSeedSession, PendingTicket, SeedSession};
pub use crypto_error::CryptoError;
pub use driver::{
    issue_ticket, online, open_seed_session, preprocess, run_query, run_query_in_session, InProcess, IssuedTicket, TicketDesk, OnlineTranscript, PreprocessingTranscript,
    Transcript,
};
pub use engine::{PreprocessingEngine, S1Step, S2Step};
pub use error::{ProtocolError, Result};
pub use messages::*;
pub use masking::InputMasking;
pub use model_info::ModelInfo;
pub use online::{OnlineModel, OnlineQuery, Prepared};
pub use replay::{BoundedReplayLog, ReplayLog};
pub use ring::{Ring, U256};
pub use seed::{DecryptedSecret, Seed, SeedEpoch, SeedSecret, SessionKey};
pub use seed_session::{SeedSessionLimits, SeedSessions};
pub use store::{ExpiringStore, Reservation, StoreError, Taken, TicketRefusal, TicketTerms};
pub use tandem_paillier_pk as paillier_pk;
