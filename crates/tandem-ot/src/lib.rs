#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! Oblivious transfer and OT-based multiplication between tandem's two
//! servers: S1 (model server) and S2 (activation server), non-colluding and
//! honest-but-curious.
//!
//! Sans-IO: pure functions and state machines; the caller moves the
//! messages and passes the randomness (`RngCore + CryptoRng`).
//!
//! 1. **Setup**, once per S1–S2 pair: 128 Chou–Orlandi base OTs over
//!    Ristretto255 ([`s1_setup_request`] → [`s2_setup`] →
//!    [`s1_setup_finish`]), one request/response. S2 gets an
//!    [`OtSenderKey`] (the IKNP correlation `Δ`), S1 an [`OtReceiverKey`].
//! 2. **Per session**, with a public 16-byte session id `sid` that must be
//!    fresh for every session of a setup: IKNP extension to `M` OTs
//!    ([`receiver_extend`] → [`OleRequest`] → [`sender_extend`]), S1 the
//!    extension receiver, S2 the sender.
//! 3. **Gilboa multiplication**: per scalar `a_p` of S1 (`L` bits) and value
//!    `v_p` of S2, `L` OTs give S1 `x_p` and S2 `y_p` with
//!    `x_p + y_p = a_p·v_p (mod 2^128)` ([`OleSender::respond`] →
//!    [`Corrections`] → [`OleReceiver::receive`]).
//!
//! ```
//! use rand_chacha::ChaCha20Rng;
//! use rand_core::SeedableRng;
//! use tandem_ot::*;
//!
//! let mut rng1 = ChaCha20Rng::seed_from_u64(1); // S1's randomness
//! let mut rng2 = ChaCha20Rng::seed_from_u64(2); // S2's randomness
//! // Setup.
//! let (pending, req) = s1_setup_request(&mut rng1);
//! let (s2_key, reply) = s2_setup(&req, &mut rng2)?;
//! let s1_key = s1_setup_finish(pending, &reply)?;
//! // A session: S1 multiplies its 8-bit scalars by S2's values.
//! let sid = [7u8; 16];
//! let batches = [ScalarBatch { bits: 8, scalars: vec![3, 255] }];
//! let (mut rx, request) = receiver_extend(&s1_key, &sid, &batches)?;
//! let mut tx = sender_extend(&s2_key, &sid, &request)?;
//! let values = [10u128, u128::MAX];
//! let (y, corrections) = tx.respond(8, &values)?;
//! let x = rx.receive(&corrections)?;
//! assert_eq!(x[0].wrapping_add(y[0]), 30);
//! assert_eq!(x[1].wrapping_add(y[1]), 255u128.wrapping_mul(u128::MAX));
//! assert!(rx.is_done() && tx.remaining_ots() == 0);
//! # Ok::<(), tandem_ot::Error>(())
//! ```
//!
//! The security argument is in the workspace's `SECURITY.md`, section
//! "Oblivious transfer and OT-based multiplication (tandem-ot)".

mod base;
mod error;
mod hash;
mod iknp;
mod ole;
pub mod transpose;

pub use base::{
    s1_setup_finish, s1_setup_request, s2_setup, OtReceiverKey, OtSenderKey, S1SetupPending, SetupReply, SetupRequest,
    BASE_OTS,
};
pub use error::{Error, Result};
pub use ole::{receiver_extend, sender_extend, Corrections, OleReceiver, OleRequest, OleSender, ScalarBatch, MAX_OTS};
